#!/usr/bin/env bash
# Install the system packages compute-driver needs (Debian 12) and build the
# project virtualenv.  Idempotent: packages are installed only when missing,
# the venv is created only when absent and pip runs only when setup.cfg,
# pyproject.toml or the set of top-level packages changed since the last
# successful install (fingerprint in $VENV/.installed).
#
# Environment:
#   VENV   virtualenv path (default: <repo>/.venv)
#
# This script never starts, stops or restarts a daemon; see
# tools/start-services.sh for that.
set -euo pipefail

# ---------------------------------------------------------------------------
# Package list (the only place packages are named).
# ---------------------------------------------------------------------------

# libvirt storage backends.  libvirtd loads storage backends only when it
# starts, so these are installed in a separate apt run BEFORE the packages
# that ship (and, on a systemd host, start) libvirtd.  They pull in
# libvirt-daemon (the binary) but no service unit.
EARLY_PACKAGES=(
    libvirt-daemon-driver-storage-rbd          # <pool type='rbd'>
    libvirt-daemon-driver-storage-iscsi-direct # <pool type='iscsi-direct'>
)

PACKAGES=(
    # Hypervisor: libvirt + QEMU (TCG), block drivers for rbd/nfs/iscsi
    libvirt-daemon-system
    libvirt-daemon-driver-qemu
    libvirt-clients
    libxml2-utils       # xmllint, which virt-xml-validate runs
    qemu-system-x86
    qemu-utils
    qemu-block-extra
    # Build deps for pip packages (libvirt-python is built from source)
    libvirt-dev
    pkg-config
    gcc
    python3-dev
    # Python / virtualenv (Debian's /usr/bin/python3)
    python3-venv
    python3-pip
    # Message bus between scheduler and agents
    rabbitmq-server
    # Networking: OVS and host tools used by the network plugins and tests
    openvswitch-switch
    iproute2
    ethtool
    iputils-ping
    # linux_bridge anti-spoofing: libnftables and its Python binding (Debian
    # only; the venv sees it through --system-site-packages), nft to inspect
    python3-nftables
    nftables
    # Test guest builder (tools/build-test-guest.sh: apt-get download,
    # dpkg-deb, depmod, cpio, xz kernel)
    cpio
    kmod
    xz-utils
    e2fsprogs           # mke2fs for the guest's data disk, debugfs for the quiesce test
    # Ceph Python bindings: packaged by Debian only (PyPI has none); the
    # venv sees them through --system-site-packages
    python3-rados
    python3-rbd
    # A throw-away single-node Ceph (mon + memstore OSD) for the rbd tests
    # and bench; nothing is started by installing them
    ceph-mon
    ceph-osd
    ceph-common
    # iSCSI: libiscsi (QEMU's client and the iscsi backend's, through ctypes)
    # and tgt, the target the functional tests start
    libiscsi7
    tgt
    # NFS: libnfs (QEMU's client and the nfs backend's, through ctypes) and
    # nfs-ganesha, the userspace server the functional tests start
    libnfs13
    nfs-ganesha
    nfs-ganesha-vfs
    # PostgreSQL: the multi-scheduler store (psycopg2 for SQLAlchemy's
    # postgresql+psycopg2 URLs) and the server the scheduler tests start
    python3-psycopg2
    postgresql-15
)

# ---------------------------------------------------------------------------

log() { printf 'install-deps: %s\n' "$*"; }
die() { printf 'install-deps: ERROR: %s\n' "$*" >&2; exit 1; }

REPO_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$REPO_TOP/.venv}
VENV=$(realpath -m -- "$VENV")  # relative VENV: relative to the caller's cwd
SYSTEM_PYTHON=/usr/bin/python3
STAMP=$VENV/.installed
LIBVIRT_BACKEND_DIR=/usr/lib/x86_64-linux-gnu/libvirt/storage-backend

is_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

missing_of() {
    local p
    for p in "$@"; do
        is_installed "$p" || printf '%s\n' "$p"
    done
}

# Without systemd (containers, CI) package maintainer scripts would try to
# start rabbitmq-server/openvswitch-switch/tgt/... through their init scripts,
# which can fail and abort the install (e.g. no openvswitch kernel module).
# tools/start-services.sh starts what is needed, so while apt runs, a
# temporary policy-rc.d (exit 101 = "action forbidden") blocks those starts.
# An existing policy-rc.d, or a systemd host, is left alone.
POLICY_RC=/usr/sbin/policy-rc.d
POLICY_RC_CREATED=0
remove_policy_rc() {
    if [ "$POLICY_RC_CREATED" -eq 1 ]; then
        rm -f -- "$POLICY_RC"
        POLICY_RC_CREATED=0
        log "removed temporary $POLICY_RC"
    fi
}
trap remove_policy_rc EXIT

block_service_starts() {
    if [ ! -d /run/systemd/system ] && [ ! -e "$POLICY_RC" ]; then
        log "no systemd: creating temporary $POLICY_RC so package scripts start no daemons"
        printf '#!/bin/sh\n# temporary, created by compute-driver tools/install-deps.sh\nexit 101\n' >"$POLICY_RC"
        chmod 0755 "$POLICY_RC"
        POLICY_RC_CREATED=1
    fi
}

APT_UPDATED=0
apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        die "packages missing ($*); run this script as root (e.g. sudo make venv)"
    fi
    block_service_starts
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "running apt-get update"
        apt-get -o DPkg::Lock::Timeout=600 update
        APT_UPDATED=1
    fi
    log "installing: $*"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
        install -y --no-install-recommends "$@"
}

libvirtd_pid() {
    # Oldest process whose executable name is exactly "libvirtd".
    pgrep -o -x libvirtd 2>/dev/null || true
}

# --- 1. system packages -----------------------------------------------------

mapfile -t missing_early < <(missing_of "${EARLY_PACKAGES[@]}")
mapfile -t missing_rest < <(missing_of "${PACKAGES[@]}")

if [ "${#missing_early[@]}" -eq 0 ] && [ "${#missing_rest[@]}" -eq 0 ]; then
    log "all $(( ${#EARLY_PACKAGES[@]} + ${#PACKAGES[@]} )) Debian packages already installed"
else
    if [ "${#missing_early[@]}" -gt 0 ]; then
        lv_pid=$(libvirtd_pid)
        apt_install "${missing_early[@]}"
        if [ -n "$lv_pid" ]; then
            log "WARNING: libvirtd (pid $lv_pid) was already running before the libvirt storage" \
                "backends were installed; it will not offer rbd/iscsi-direct pools until it is" \
                "restarted (systemctl restart libvirtd, or stop it and rerun tools/start-services.sh)"
        fi
    fi
    if [ "${#missing_rest[@]}" -gt 0 ]; then
        apt_install "${missing_rest[@]}"
    fi
    remove_policy_rc
    mapfile -t still_missing < <(missing_of "${EARLY_PACKAGES[@]}" "${PACKAGES[@]}")
    [ "${#still_missing[@]}" -eq 0 ] || die "still not installed after apt-get: ${still_missing[*]}"
    log "Debian packages installed"
fi

for so in rbd iscsi-direct; do
    [ -e "$LIBVIRT_BACKEND_DIR/libvirt_storage_backend_$so.so" ] ||
        die "libvirt storage backend $so missing: $LIBVIRT_BACKEND_DIR/libvirt_storage_backend_$so.so"
done

# --- 2. virtualenv ------------------------------------------------------------

[ -x "$SYSTEM_PYTHON" ] || die "$SYSTEM_PYTHON not found (package python3)"

venv_ok() {
    # The venv must be built on Debian's interpreter with system site-packages,
    # otherwise the Debian-only rados/rbd bindings are invisible.
    local cfg=$VENV/pyvenv.cfg
    [ -x "$VENV/bin/python" ] && [ -f "$cfg" ] || return 1
    grep -Eq '^home *= */usr/bin *$' "$cfg" || return 1
    grep -Eq '^include-system-site-packages *= *true *$' "$cfg" || return 1
    "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1
}

if [ -e "$VENV" ] && ! venv_ok; then
    log "existing $VENV was not created by '$SYSTEM_PYTHON -m venv --system-site-packages' (or is broken); recreating it"
    rm -rf -- "$VENV"
fi

if [ ! -e "$VENV" ]; then
    log "creating virtualenv $VENV ($SYSTEM_PYTHON, --system-site-packages)"
    "$SYSTEM_PYTHON" -m venv --system-site-packages "$VENV"
    log "upgrading pip, setuptools, wheel in $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip setuptools wheel
else
    log "virtualenv $VENV exists"
fi

[ -f "$REPO_TOP/setup.cfg" ] || die "$REPO_TOP/setup.cfg not found; cannot install the project"

# The stamp holds a fingerprint of what the install depends on: the
# interpreter, setup.cfg, pyproject.toml and the set of top-level packages
# (the editable install maps each top-level package once, at install time).
# Content, not mtimes, so a fresh clone or checkout is judged correctly.
fingerprint() {
    {
        "$VENV/bin/python" -c 'import sys; print(sys.version)'
        local f
        for f in setup.cfg pyproject.toml; do
            if [ -f "$REPO_TOP/$f" ]; then
                (cd "$REPO_TOP" && sha256sum -- "$f")
            fi
        done
        (cd "$REPO_TOP" && shopt -s nullglob && printf '%s\n' */__init__.py)
    } | sha256sum | cut -d' ' -f1
}
FINGERPRINT=$(fingerprint)

needs_pip=1
if [ -f "$STAMP" ] && [ "$(cat -- "$STAMP")" = "$FINGERPRINT" ]; then
    needs_pip=0
fi

if [ "$needs_pip" -eq 1 ]; then
    log "pip install -e '.[test]' into $VENV"
    rm -f -- "$STAMP"
    (cd "$REPO_TOP" && "$VENV/bin/python" -m pip install --disable-pip-version-check -e '.[test]')
    printf '%s\n' "$FINGERPRINT" >"$STAMP"
else
    log "project already installed in $VENV (setup.cfg, pyproject.toml and packages unchanged since last install, see $STAMP); skipping pip"
fi

# --- 3. sanity check --------------------------------------------------------------

if "$VENV/bin/python" -c 'import rados, rbd, libvirt' 2>/dev/null; then
    log "OK: $VENV/bin/python imports rados, rbd, libvirt"
else
    "$VENV/bin/python" -c 'import rados, rbd, libvirt' || true
    die "$VENV/bin/python cannot import rados, rbd and libvirt. rados/rbd come from the Debian packages" \
        "python3-rados/python3-rbd and need a venv made by '$SYSTEM_PYTHON -m venv --system-site-packages';" \
        "libvirt comes from pip (libvirt-python). Remove $VENV and rerun this script."
fi
log "done"
