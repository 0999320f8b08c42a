#!/usr/bin/env bash
# Start the host daemons compute-driver needs, unless they already run:
# virtlogd, libvirtd, RabbitMQ and Open vSwitch.  Idempotent.  A daemon that
# already runs/answers is left alone: this script never stops or restarts
# anything.  Works with systemd (systemctl start) and without it (daemons are
# started directly, as on CI containers).
set -euo pipefail

STATE_DIR=/var/lib/compute-driver
LIBVIRT_BACKEND_DIR=/usr/lib/x86_64-linux-gnu/libvirt/storage-backend
RBD_BACKEND=$LIBVIRT_BACKEND_DIR/libvirt_storage_backend_rbd.so
OVS_CTL=/usr/share/openvswitch/scripts/ovs-ctl
RABBIT_LOG=/var/log/rabbitmq/rabbit@$(hostname -s 2>/dev/null || hostname).log

log() { printf 'start-services: %s\n' "$*"; }
warn() { printf 'start-services: WARNING: %s\n' "$*" >&2; }
die() { printf 'start-services: ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (e.g. sudo make services)"

if [ -d /run/systemd/system ]; then
    SYSTEMD=1
    log "systemd detected: using systemctl"
else
    SYSTEMD=0
    log "no systemd: starting daemons directly"
fi

# wait_until TIMEOUT_S CMD...: poll CMD (output discarded) every 0.5 s.
wait_until() {
    local timeout=$1
    shift
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            return 1
        fi
        sleep 0.5
    done
}

# log hint for a failed daemon
log_hint() {
    local unit=$1 file=$2
    if [ "$SYSTEMD" -eq 1 ]; then
        printf '%s (and: journalctl -u %s)' "$file" "$unit"
    else
        printf '%s' "$file"
    fi
}

require_cmd() {
    command -v "$1" >/dev/null 2>&1 || die "$1 not found; run tools/install-deps.sh first"
}

# --- virtlogd -------------------------------------------------------------------

virtlogd_up() { timeout 10 virt-admin -c virtlogd:///system version; }

start_virtlogd() {
    require_cmd virtlogd
    if virtlogd_up >/dev/null 2>&1; then
        log "virtlogd: already running"
        return
    fi
    if [ "$SYSTEMD" -eq 1 ]; then
        log "virtlogd: systemctl start virtlogd"
        systemctl start virtlogd
    elif pgrep -x virtlogd >/dev/null; then
        log "virtlogd: process exists but does not answer yet; waiting"
    else
        log "virtlogd: starting 'virtlogd -d'"
        virtlogd -d
    fi
    wait_until 30 virtlogd_up ||
        die "virtlogd did not come up within 30 s; see $(log_hint virtlogd /var/log/libvirt/virtlogd.log)"
    log "virtlogd: up"
}

# --- /dev/kvm --------------------------------------------------------------------

# Without udev (containers, micro-VMs) /dev/kvm stays root:root 0600. libvirtd
# then finds its QEMU capability cache stale on every call and re-probes QEMU,
# which makes each define/start take a minute or more. Give it the owner and
# mode Debian's udev rule gives it. (Guests still run type='qemu' unless the
# agent's own KVM probe passes; see compute_driver/virt/libvirt/kvm_probe.py.)
fix_kvm_device() {
    [ -c /dev/kvm ] || return 0
    getent group kvm >/dev/null || return 0
    if [ "$(stat -c %G:%a /dev/kvm)" != "kvm:660" ]; then
        log "/dev/kvm: setting group kvm, mode 0660 (what udev would do)"
        chgrp kvm /dev/kvm
        chmod 0660 /dev/kvm
    else
        log "/dev/kvm: group kvm, mode 0660 already"
    fi
}

# --- libvirtd -------------------------------------------------------------------

libvirtd_up() { timeout 20 virsh -c qemu:///system version; }

start_libvirtd() {
    require_cmd libvirtd
    require_cmd virsh
    if libvirtd_up >/dev/null 2>&1; then
        log "libvirtd: already running (qemu:///system answers)"
        return
    fi
    if [ "$SYSTEMD" -eq 1 ]; then
        log "libvirtd: systemctl start libvirtd"
        systemctl start libvirtd
    elif pgrep -x libvirtd >/dev/null; then
        log "libvirtd: process exists but qemu:///system does not answer yet; waiting"
    else
        log "libvirtd: starting 'libvirtd -d'"
        libvirtd -d
    fi
    wait_until 60 libvirtd_up ||
        die "libvirtd did not answer on qemu:///system within 60 s; see $(log_hint libvirtd /var/log/libvirt/libvirtd.log)"
    log "libvirtd: up"
}

# Warn (never restart) when the running libvirtd predates the rbd backend:
# libvirtd loads storage backends only at start.
check_libvirt_backends() {
    local caps pid start_epoch installed_epoch
    [ -e "$RBD_BACKEND" ] || {
        warn "$RBD_BACKEND is missing; install libvirt-daemon-driver-storage-rbd (tools/install-deps.sh)"
        return
    }
    # Ground truth: ask libvirtd which pool types it supports.
    if caps=$(timeout 20 virsh -c qemu:///system pool-capabilities 2>/dev/null); then
        if grep -q "type='rbd' supported='yes'" <<<"$caps" &&
            grep -q "type='iscsi-direct' supported='yes'" <<<"$caps"; then
            log "libvirtd: rbd and iscsi-direct storage backends loaded"
            return
        fi
    fi
    # Explain why: compare the daemon's start time with the install time of
    # the backend. dpkg keeps the package's build mtime on the .so, so the
    # install time is the inode change time (ctime), not the mtime.
    pid=$(pgrep -o -x libvirtd || true)
    if [ -n "$pid" ]; then
        start_epoch=$(($(date +%s) - $(ps -o etimes= -p "$pid" | tr -d ' ')))
        installed_epoch=$(stat -c %Z "$RBD_BACKEND")
        if [ "$start_epoch" -lt "$installed_epoch" ]; then
            warn "libvirtd (pid $pid) started $(date -d "@$start_epoch" '+%F %T') BEFORE the libvirt" \
                "storage backends were installed ($(date -d "@$installed_epoch" '+%F %T'));"
            warn "rbd/iscsi-direct pools will fail with 'missing backend for pool type'."
            warn "Fix: restart libvirtd (systemctl restart libvirtd, or stop it and rerun this script)."
            return
        fi
    fi
    warn "libvirtd does not report rbd and iscsi-direct storage pools as supported" \
        "(virsh pool-capabilities); restarting libvirtd usually fixes this"
}

# --- RabbitMQ -------------------------------------------------------------------

rabbit_port_open() { timeout 3 bash -c '</dev/tcp/127.0.0.1/5672'; }

start_rabbitmq() {
    require_cmd rabbitmqctl
    if rabbit_port_open >/dev/null 2>&1; then
        log "rabbitmq: already running (127.0.0.1:5672 accepts connections)"
        return
    fi
    if [ "$SYSTEMD" -eq 1 ]; then
        log "rabbitmq: systemctl start rabbitmq-server"
        systemctl start rabbitmq-server
    elif pgrep -u rabbitmq -x beam.smp >/dev/null; then
        log "rabbitmq: Erlang node exists but port 5672 is closed; waiting for it to finish booting"
    else
        log "rabbitmq: starting 'rabbitmq-server -detached'"
        rabbitmq-server -detached
    fi
    # -detached returns before the node is reachable; await_startup fails
    # fast while the node is not up, so poll it within an overall bound.
    log "rabbitmq: waiting for startup (up to 120 s)"
    wait_until 120 rabbitmqctl -q await_startup --timeout 10 ||
        die "RabbitMQ did not start within 120 s; see $(log_hint rabbitmq-server "$RABBIT_LOG") and /var/log/rabbitmq/startup_err"
    wait_until 30 rabbit_port_open ||
        die "RabbitMQ started but 127.0.0.1:5672 does not accept connections; see $(log_hint rabbitmq-server "$RABBIT_LOG")"
    log "rabbitmq: up"
}

# --- Open vSwitch ---------------------------------------------------------------

ovsdb_up() { ovs-vsctl --timeout=5 show; }
vswitchd_up() { ovs-appctl --timeout=5 -t ovs-vswitchd version; }
ovs_up() { ovsdb_up >/dev/null 2>&1 && vswitchd_up >/dev/null 2>&1; }

start_ovs() {
    require_cmd ovs-vsctl
    if ovs_up; then
        log "openvswitch: already running (ovsdb-server and ovs-vswitchd answer)"
        return
    fi
    if [ "$SYSTEMD" -eq 1 ]; then
        log "openvswitch: systemctl start openvswitch-switch"
        systemctl start openvswitch-switch
    else
        # ovs-ctl itself skips whichever of the two daemons already runs.
        [ -x "$OVS_CTL" ] || die "$OVS_CTL not found; install openvswitch-switch"
        log "openvswitch: $OVS_CTL start --system-id=random"
        "$OVS_CTL" start --system-id=random ||
            die "ovs-ctl start failed; see $(log_hint openvswitch-switch /var/log/openvswitch/ovsdb-server.log) and /var/log/openvswitch/ovs-vswitchd.log"
    fi
    wait_until 30 ovsdb_up ||
        die "ovsdb-server did not answer within 30 s; see $(log_hint ovsdb-server /var/log/openvswitch/ovsdb-server.log)"
    wait_until 30 vswitchd_up ||
        die "ovs-vswitchd did not answer within 30 s; see $(log_hint ovs-vswitchd /var/log/openvswitch/ovs-vswitchd.log)"
    log "openvswitch: up"
}

# --- main -----------------------------------------------------------------------

start_virtlogd
fix_kvm_device
start_libvirtd
check_libvirt_backends
start_rabbitmq
start_ovs

if [ -d "$STATE_DIR" ]; then
    log "$STATE_DIR exists"
else
    log "creating $STATE_DIR"
fi
install -d -m 0755 "$STATE_DIR"

log "all services up"
