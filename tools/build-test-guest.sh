#!/usr/bin/env bash
# build-test-guest.sh OUTDIR
#
# Builds a tiny bootable test guest from Debian packages only:
#
#   OUTDIR/vmlinuz      the Debian kernel (linux-image-amd64's current image)
#   OUTDIR/initrd.img   a busybox initramfs whose /init reads a NoCloud
#                       config drive (label "cidata") and prints
#                       "CD-GUEST ..." marker lines on the serial console
#   OUTDIR/disk.qcow2   a small qcow2 holding an empty ext4 file system
#                       labelled "cd-data" (the image's root disk); /init
#                       mounts it at /data ("CD-GUEST data dev=...")
#   OUTDIR/guest.json   manifest: file names, kernel cmdline, kernel version,
#                       build version
#
# Boot it with direct kernel boot, cmdline "console=ttyS0 panic=-1", and
# <domain type='qemu'> (TCG): KVM guests hang on nested hosts.
#
# The guest runs the QEMU guest agent (Debian's qemu-guest-agent: qemu-ga,
# its shared libraries and the dynamic loader, as the host resolves them)
# when the domain has the virtio channel org.qemu.guest_agent.0, and prints
# "CD-GUEST qga started pid=N".  The ext4 file system on /data gives
# guest-fsfreeze-freeze something to freeze.  The first 1024 bytes of the
# disk are outside the file system (ext4 boot block): tests may write raw
# markers there.
#
# Idempotent: if OUTDIR already holds a complete build of this script's
# BUILD version, nothing is rebuilt; an older build is replaced.
# The build happens in a temporary directory next to OUTDIR and is moved into
# place at the end (the manifest last), so a crash never leaves a build that
# looks complete.  Runs as root on Debian 12 (it may run `apt-get update`, and
# `apt-get install` of kmod/qemu-utils/cpio/e2fsprogs, and of the shared
# libraries qemu-guest-agent depends on, when they are missing).
#
# Environment knobs:
#   CD_GUEST_KERNEL_PKG  kernel package to take the kernel from
#                        (default: linux-image-amd64, resolved to its image)
#   CD_GUEST_DISK_SIZE   virtual size of disk.qcow2 (default: 64M)
set -euo pipefail

PROG=build-test-guest
log() { printf '%s: %s\n' "$PROG" "$*"; }
die() { printf '%s: ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }

if [ $# -ne 1 ] || [ -z "$1" ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi

KERNEL_PKG=${CD_GUEST_KERNEL_PKG:-linux-image-amd64}
DISK_SIZE=${CD_GUEST_DISK_SIZE:-64M}
CMDLINE="console=ttyS0 panic=-1"
FILES="vmlinuz initrd.img disk.qcow2"
# Bump when the guest changes, so that existing builds are replaced.
#   1: busybox, config drive, network, user-data, acpid
#   2: qemu-ga on org.qemu.guest_agent.0; ext4 "cd-data" on disk.qcow2 at /data
BUILD=2

OUT=$(realpath -m -- "$1")
[ "$OUT" != "/" ] || die "refusing to build into /"
PARENT=$(dirname -- "$OUT")
NAME=$(basename -- "$OUT")

is_complete() {
    local d=$1 f
    [ -s "$d/guest.json" ] || return 1
    grep -q '"kernel_version"' "$d/guest.json" || return 1
    grep -q "\"build\": ${BUILD}[,}]" "$d/guest.json" || return 1
    for f in $FILES; do
        [ -s "$d/$f" ] || return 1
    done
    return 0
}

if is_complete "$OUT"; then
    log "$OUT already holds a complete guest, build $BUILD ($(sed -n 's/.*"kernel_version": *"\([^"]*\)".*/\1/p' "$OUT/guest.json")); nothing to do"
    exit 0
fi

# --- host tools -------------------------------------------------------------
host_install() {  # host_install PKG...: apt-get install (as root), update and retry once
    [ "$(id -u)" -eq 0 ] || die "missing host packages: $* (run as root to install them)"
    log "installing missing host packages: $*"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"; then
        log "apt-get install failed; running apt-get update and retrying"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
    fi
}
need_pkgs=""
command -v apt-get >/dev/null || die "apt-get not found: this script needs Debian"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found: this script needs Debian"
command -v depmod >/dev/null || [ -x /sbin/depmod ] || need_pkgs="$need_pkgs kmod"
command -v qemu-img >/dev/null || need_pkgs="$need_pkgs qemu-utils"
command -v cpio >/dev/null || need_pkgs="$need_pkgs cpio"
command -v gzip >/dev/null || need_pkgs="$need_pkgs gzip"
command -v ldd >/dev/null || need_pkgs="$need_pkgs libc-bin"
command -v mke2fs >/dev/null || [ -x /sbin/mke2fs ] || need_pkgs="$need_pkgs e2fsprogs"
if [ -n "$need_pkgs" ]; then
    # shellcheck disable=SC2086
    host_install $need_pkgs
fi
DEPMOD=$(command -v depmod || echo /sbin/depmod)
MKE2FS=$(command -v mke2fs || echo /sbin/mke2fs)

# --- one build at a time per parent directory ----------------------------
mkdir -p -- "$PARENT"
exec 9<"$PARENT"
flock 9
if is_complete "$OUT"; then
    log "$OUT was completed by a concurrent run; nothing to do"
    exit 0
fi

# Staging dirs of builds that were killed (we hold the lock: none is live).
for stale in "$PARENT/.$NAME.partial."*; do
    [ -d "$stale" ] || continue
    log "removing stale staging dir $stale"
    rm -rf -- "$stale"
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/$PROG.XXXXXX")
STAGE=$(mktemp -d "$PARENT/.$NAME.partial.XXXXXX")
cleanup() { rm -rf -- "$WORK" "$STAGE"; }
trap cleanup EXIT
log "building $OUT (work dir $WORK, staging dir $STAGE)"

# --- download the packages -----------------------------------------------
apt_download() {
    # As root, apt's download sandbox user (_apt) cannot write to the
    # private work dir; download as root instead of printing a warning.
    (cd "$WORK" && apt-get download -q -o APT::Sandbox::User=root "$@")
}
fetch() {
    if ! apt_download "$@"; then
        [ "$(id -u)" -eq 0 ] || die "apt-get download $* failed (run 'apt-get update' or run as root)"
        log "apt-get download failed; running apt-get update and retrying"
        apt-get update -q
        apt_download "$@"
    fi
}

log "downloading $KERNEL_PKG busybox-static qemu-guest-agent"
fetch "$KERNEL_PKG" busybox-static qemu-guest-agent
KDEB=$(ls "$WORK"/"${KERNEL_PKG}"_*.deb)
# A meta package (linux-image-amd64) ships no kernel: follow its first Depends.
# (awk reads the whole listing: grep -q would SIGPIPE dpkg-deb under pipefail)
if ! dpkg-deb -c "$KDEB" | awk '/\/boot\/vmlinuz-/ { found = 1 } END { exit !found }'; then
    KIMG=$(dpkg-deb -f "$KDEB" Depends | sed -e 's/,.*//' -e 's/|.*//' -e 's/(.*//' -e 's/[[:space:]]//g')
    [ -n "$KIMG" ] || die "$KERNEL_PKG ships no kernel and depends on nothing"
    log "$KERNEL_PKG is a meta package; downloading $KIMG"
    fetch "$KIMG"
    KDEB=$(ls "$WORK"/"${KIMG}"_*.deb)
fi

log "unpacking $(basename "$KDEB")"
dpkg-deb -x "$KDEB" "$WORK/k"
log "unpacking $(basename "$WORK"/busybox-static_*.deb)"
dpkg-deb -x "$WORK"/busybox-static_*.deb "$WORK/b"
[ -x "$WORK/b/bin/busybox" ] || die "busybox-static did not contain /bin/busybox"
QDEB=$(ls "$WORK"/qemu-guest-agent_*.deb)
log "unpacking $(basename "$QDEB")"
dpkg-deb -x "$QDEB" "$WORK/q"
[ -x "$WORK/q/usr/sbin/qemu-ga" ] || die "qemu-guest-agent did not contain /usr/sbin/qemu-ga"
QGA_VERSION=$(dpkg-deb -f "$QDEB" Version)

# Debian keeps modules in /lib/modules (bookworm) or /usr/lib/modules (later).
MODBASE=""
for cand in "$WORK/k/lib/modules" "$WORK/k/usr/lib/modules"; do
    if [ -d "$cand" ]; then MODBASE=$cand; break; fi
done
[ -n "$MODBASE" ] || die "no modules directory in the kernel package"
KVER=$(find "$MODBASE" -mindepth 1 -maxdepth 1 -type d -printf "%f\n" | sort | head -n1)
[ -n "$KVER" ] || die "cannot tell the kernel version"
VMLINUZ="$WORK/k/boot/vmlinuz-$KVER"
[ -s "$VMLINUZ" ] || die "kernel package has no /boot/vmlinuz-$KVER"
MD="$MODBASE/$KVER"
log "kernel $KVER: generating modules.dep with depmod"
# The package ships no modules.dep: it is generated on install.
"$DEPMOD" -b "$(dirname "$(dirname "$MODBASE")")" "$KVER"
[ -s "$MD/modules.dep" ] || die "depmod produced no modules.dep"

# --- root filesystem of the initramfs ---------------------------------------
R="$WORK/root"
mkdir -p "$R/bin" "$R/dev" "$R/proc" "$R/sys" "$R/mnt" "$R/etc/acpi/PWRF" \
         "$R/lib/modules" "$R/tmp" "$R/root" "$R/run" "$R/var/log" "$R/data" "$R/usr/sbin"
chmod 1777 "$R/tmp"
ln -s ../run "$R/var/run"
cp "$WORK/b/bin/busybox" "$R/bin/busybox"
ln -s busybox "$R/bin/sh"
if [ "$(id -u)" -eq 0 ]; then
    mknod -m 600 "$R/dev/console" c 5 1
    mknod -m 666 "$R/dev/null" c 1 3
fi

# --- the QEMU guest agent ---------------------------------------------------
# qemu-ga from the package, with the shared libraries and the loader that
# ldd resolves on this (Debian) host: the same release, so the same ABI.
# Missing libraries are installed from the package's Depends first.
qga_libs_missing() { ldd "$WORK/q/usr/sbin/qemu-ga" 2>&1 | grep -q 'not found'; }
if qga_libs_missing; then
    qga_deps=$(dpkg-deb -f "$QDEB" Depends | tr ',' '\n' \
        | sed -e 's/|.*//' -e 's/(.*//' -e 's/[[:space:]]//g' | grep -v '^$')
    # shellcheck disable=SC2086
    host_install $qga_deps
    ! qga_libs_missing || die "qemu-ga needs libraries this host cannot provide: $(ldd "$WORK/q/usr/sbin/qemu-ga" 2>&1 | grep 'not found' | tr -s ' \t\n' ' ')"
fi
cp "$WORK/q/usr/sbin/qemu-ga" "$R/usr/sbin/qemu-ga"
# ldd lines: "libx.so.N => /path (addr)" for libraries, "/path (addr)" for the loader.
for lib in $(ldd "$WORK/q/usr/sbin/qemu-ga" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
    mkdir -p "$R$(dirname "$lib")"
    cp -L "$lib" "$R$lib"
done
[ -e "$R/lib64/ld-linux-x86-64.so.2" ] || die "ldd did not name the dynamic loader of qemu-ga"
log "qemu-ga $QGA_VERSION with $(ldd "$WORK/q/usr/sbin/qemu-ga" | grep -c '/') shared objects"

# Modules the guest loads, with their dependencies, in load order.
# REQUIRED: virtio disk/NIC, IDE/ATA cdrom (the config drive), iso9660,
# ACPI power button + evdev (acpid), virtio_console (the guest agent's
# port), ext4 for /data (crc32c_generic first: ext4 checksums need it and
# the guest has no modprobe to load it on demand).  OPTIONAL: other buses
# tests may pick.
REQUIRED_MODS="virtio_pci virtio_blk virtio_net ata_piix sr_mod isofs button evdev virtio_console crc32c_generic ext4"
OPTIONAL_MODS="virtio_scsi ahci ata_generic virtio_rng"
MODLIST="$R/etc/cd-guest-modules"
: > "$MODLIST"

mod_path() {  # module name -> path relative to $MD (from modules.dep), or empty
    awk -F: -v want="$1" '{
        n = $1; sub(/.*\//, "", n); sub(/\.ko(\.(xz|zst|gz))?$/, "", n); gsub(/-/, "_", n)
        if (n == want) { print $1; exit }
    }' "$MD/modules.dep"
}
mod_deps() {  # module path -> its dependencies, one a line, as listed
    awk -v want="$1:" '$1 == want { for (i = 2; i <= NF; i++) print $i; exit }' "$MD/modules.dep"
}
is_builtin() {
    [ -f "$MD/modules.builtin" ] || return 1
    awk -v want="$1" '{
        n = $0; sub(/.*\//, "", n); sub(/\.ko$/, "", n); gsub(/-/, "_", n)
        if (n == want) { found = 1; exit }
    } END { exit !found }' "$MD/modules.builtin"
}
install_module() {  # module path relative to $MD -> copied (decompressed) into the initramfs
    local rel=$1 base
    base=$(basename "$rel")
    case "$base" in
        *.ko.xz)  base=${base%.xz};  xz -dc "$MD/$rel" > "$R/lib/modules/$base" ;;
        *.ko.zst) base=${base%.zst}; zstd -qdc "$MD/$rel" > "$R/lib/modules/$base" ;;
        *.ko.gz)  base=${base%.gz};  gzip -dc "$MD/$rel" > "$R/lib/modules/$base" ;;
        *.ko)     grep -qx "$base" "$MODLIST" || cp "$MD/$rel" "$R/lib/modules/$base" ;;
        *) die "unexpected module file $rel" ;;
    esac
    grep -qx "$base" "$MODLIST" || echo "$base" >> "$MODLIST"
}
add_module() {  # name required|optional
    local name=$1 kind=$2 path dep
    path=$(mod_path "$name")
    if [ -z "$path" ]; then
        if is_builtin "$name"; then
            log "  $name: built into the kernel"
            return 0
        fi
        [ "$kind" = optional ] && { log "  $name: not in this kernel (optional, skipped)"; return 0; }
        die "module $name is neither a module nor built into $KVER"
    fi
    # modules.dep lists dependencies so that loading them in reverse order works.
    for dep in $(mod_deps "$path" | tac); do
        install_module "$dep"
    done
    install_module "$path"
    log "  $name: $path"
}
log "selecting kernel modules"
for m in $REQUIRED_MODS; do add_module "$m" required; done
for m in $OPTIONAL_MODS; do add_module "$m" optional; done
log "$(wc -l < "$MODLIST") module files in the initramfs"

# ACPI power button handler (busybox acpid maps KEY_POWER to PWRF/00000080).
cat > "$R/etc/acpi/PWRF/00000080" <<'ACPI'
#!/bin/sh
echo "CD-GUEST acpi-poweroff" > /dev/console
sync
umount /data 2>/dev/null
poweroff -f
ACPI
chmod 755 "$R/etc/acpi/PWRF/00000080"

# Network-config (NoCloud v1) reader: first physical entry's MAC, name and
# first static subnet; nameservers from "type: nameserver" entries and from
# that subnet's dns_nameservers.  Prints "key value" lines.
cat > "$R/etc/cd-guest-netcfg.awk" <<'AWK'
# Reads a NoCloud network-config version 1 and prints "key value" lines:
#   mac/name  of the first "type: physical" entry,
#   addr/mask/gw  of that entry's first static subnet,
#   ns  nameservers (that subnet's dns_nameservers, "type: nameserver" entries).
# Keys are matched at their exact YAML column, so routes and other nested
# mappings are not mistaken for subnet keys.
function trim(v) { sub(/^[ \t]+/, "", v); sub(/[ \t\r]+$/, "", v); return v }
function unq(v) {
    v = trim(v)
    if (v ~ /^"/) { v = substr(v, 2); sub(/".*$/, "", v); return v }
    if (v ~ /^'/) { v = substr(v, 2); sub(/'.*$/, "", v); return v }
    sub(/[ \t]+#.*$/, "", v)
    return v
}
function inline_list(v,   n, i, parts, r) {
    v = trim(v); sub(/^\[/, "", v); sub(/\].*$/, "", v)
    n = split(v, parts, ","); r = ""
    for (i = 1; i <= n; i++) if (unq(parts[i]) != "") r = r " " unq(parts[i])
    return r
}
function out(k, v) { if (v != "" && v !~ /[ \t'"`$\\;|&<>(){}*?]/) print k, v }
BEGIN { in_cfg = 0; item_ind = -1; e = 0; open_ = 0 }
{
    line = $0; sub(/\r$/, "", line)
    if (line ~ /^[ \t]*(#.*)?$/) next
    match(line, /^ */); ind = RLENGTH; c = substr(line, ind + 1)
    dash = 0; col = ind
    if (c ~ /^-( |$)/) { dash = 1; match(c, /^- */); col = ind + RLENGTH; c = substr(c, RLENGTH + 1) }
    iskey = (c ~ /^[A-Za-z0-9_-]+:([ \t]|$)/)
    k = ""; v = ""
    if (iskey) { k = c; sub(/:.*/, "", k); v = c; sub(/^[^:]*:/, "", v); v = trim(v) }

    if (!dash && iskey && (!open_ || ind < key_ind) && (!in_cfg || ind <= cfg_ind)) {
        # a key outside the entries: "config:" opens them (also under "network:")
        in_cfg = (k == "config"); cfg_ind = ind; item_ind = -1; open_ = 0
        next
    }
    if (!in_cfg) next
    if (dash && item_ind < 0) item_ind = ind
    if (dash && ind == item_ind) {                      # a new entry of config:
        e++; open_ = 1; key_ind = col; sect = ""; listkey = ""; sub_dash = -1; s = 0
    }
    if (!open_) next
    if (iskey && col == key_ind && (!dash || ind == item_ind)) {   # a key of the entry
        sect = ""; listkey = ""
        if (k == "type") etype[e] = unq(v)
        else if (k == "mac_address") emac[e] = tolower(unq(v))
        else if (k == "name") ename[e] = unq(v)
        else if (k == "subnets") sect = "subnets"
        else if (k == "address") {
            if (v == "") listkey = "ns"
            else if (v ~ /^\[/) ens[e] = ens[e] inline_list(v)
            else ens[e] = ens[e] " " unq(v)
        }
        next
    }
    if (sect == "subnets" && dash && iskey && (sub_dash < 0 || ind == sub_dash)) {
        sub_dash = ind; s++; nsub[e] = s; sub_key = col; listkey = ""
    }
    if (sect == "subnets" && s > 0 && iskey && col == sub_key && (!dash || ind == sub_dash)) {
        listkey = ""
        if (k == "type") st[e "_" s] = unq(v)
        else if (k == "address") sa[e "_" s] = unq(v)
        else if (k == "netmask") sm[e "_" s] = unq(v)
        else if (k == "gateway") sg[e "_" s] = unq(v)
        else if (k == "dns_nameservers") {
            if (v == "") listkey = "subns"
            else if (v ~ /^\[/) sns[e "_" s] = sns[e "_" s] inline_list(v)
            else sns[e "_" s] = sns[e "_" s] " " unq(v)
        }
        next
    }
    if (dash && !iskey && listkey == "ns") ens[e] = ens[e] " " unq(c)
    else if (dash && !iskey && listkey == "subns") sns[e "_" s] = sns[e "_" s] " " unq(c)
}
END {
    for (i = 1; i <= e; i++) if (etype[i] == "physical") break
    if (i <= e) {
        out("mac", emac[i]); out("name", ename[i])
        for (j = 1; j <= nsub[i]; j++) {
            t = st[i "_" j]
            if ((t == "static" || t == "static6") && sa[i "_" j] != "") {
                out("addr", sa[i "_" j]); out("mask", sm[i "_" j]); out("gw", sg[i "_" j])
                n = split(sns[i "_" j], parts, " ")
                for (x = 1; x <= n; x++) out("ns", parts[x])
                break
            }
        }
    }
    for (i = 1; i <= e; i++) if (etype[i] == "nameserver") {
        n = split(ens[i], parts, " ")
        for (x = 1; x <= n; x++) out("ns", parts[x])
    }
}
AWK

# /init: busybox sh, PID 1.
cat > "$R/init" <<'INIT'
#!/bin/sh
# compute-driver test guest /init (busybox).  Markers: "CD-GUEST ...".
/bin/busybox --install -s /bin
export PATH=/bin HOME=/root TERM=vt100
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /run /tmp
mount -t tmpfs tmpfs /run
exec </dev/console >/dev/console 2>&1
# Kernel messages would interleave with the markers; keep only emergencies
# (boot with cdguest.verbose to keep them).
grep -q 'cdguest.verbose' /proc/cmdline || dmesg -n 1
mark() { echo "CD-GUEST $*"; }
note() { echo "cd-guest: $*"; }
mark init-start

for m in $(cat /etc/cd-guest-modules); do
    insmod "/lib/modules/$m" 2>/tmp/insmod.err || grep -q 'File exists' /tmp/insmod.err \
        || note "insmod $m failed: $(cat /tmp/insmod.err)"
done

# --- config drive --------------------------------------------------------
iso_label() {  # volume label of an ISO 9660 device (primary volume descriptor, sector 16)
    dd if="$1" of=/tmp/pvd bs=2048 skip=16 count=1 2>/dev/null || return 1
    [ "$(dd if=/tmp/pvd bs=1 skip=1 count=5 2>/dev/null)" = CD001 ] || return 1
    dd if=/tmp/pvd bs=1 skip=40 count=32 2>/dev/null | tr -d ' \000'
}
find_cidata() {
    findfs LABEL=cidata 2>/dev/null && return 0
    findfs LABEL=CIDATA 2>/dev/null && return 0
    # busybox's findfs misses devices smaller than 68 KiB (e.g. small ISOs
    # made without padding): read the ISO 9660 label directly.
    for d in /dev/sr* /dev/vd? /dev/sd?; do
        [ -b "$d" ] || continue
        case "$(iso_label "$d")" in cidata|CIDATA) echo "$d"; return 0 ;; esac
    done
    return 1
}
CD=""
i=0
while [ $i -lt 100 ]; do
    CD=$(find_cidata) && [ -n "$CD" ] && break
    CD=""
    i=$((i + 1))
    sleep 0.1
done
HAVE_CD=0
if [ -n "$CD" ]; then
    if mount -t iso9660 -o ro "$CD" /mnt 2>/dev/null || mount -o ro "$CD" /mnt; then
        HAVE_CD=1
    else
        note "cannot mount $CD"
    fi
fi

yval() {  # yval KEY FILE: first top-level "KEY: value", quotes removed
    sed -n "s/^$1:[[:space:]]*//p" "$2" 2>/dev/null | head -n1 | tr -d '\r' \
        | sed -e 's/[[:space:]]*$//' -e 's/^"\(.*\)"$/\1/' -e "s/^'\(.*\)'$/\1/"
}

IID=""
HN=""
if [ "$HAVE_CD" = 1 ]; then
    IID=$(yval instance-id /mnt/meta-data)
    HN=$(yval local-hostname /mnt/meta-data)
    [ -n "$HN" ] || HN=$(yval hostname /mnt/meta-data)
else
    mark no-cidata
fi
hostname "${HN:-cd-guest}"
echo "${HN:-cd-guest}" > /etc/hostname
printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "${HN:-cd-guest}" > /etc/hosts
[ "$HAVE_CD" = 1 ] && mark "cidata instance-id=$IID hostname=$HN"

# --- /data: the ext4 file system on the image's disk -------------------------
DATA=$(findfs LABEL=cd-data 2>/dev/null) || DATA=""
if [ -n "$DATA" ]; then
    # noinit_itable: no background writes to the disk after mounting.
    if mount -t ext4 -o noinit_itable "$DATA" /data 2>/tmp/mount.err; then
        mark "data dev=$DATA"
    else
        note "mount $DATA /data failed: $(cat /tmp/mount.err)"
    fi
fi

# --- QEMU guest agent, when the domain has its channel ---------------------
# No udev here: find the port by name and make udev's /dev/virtio-ports link.
QGA_NAME=org.qemu.guest_agent.0
qga_port() {
    for p in /sys/class/virtio-ports/*; do
        [ "$(cat "$p/name" 2>/dev/null)" = "$QGA_NAME" ] && { echo "/dev/${p##*/}"; return 0; }
    done
    return 1
}
QGA_DEV=""
if [ -n "$(ls /sys/class/virtio-ports 2>/dev/null)" ]; then
    # Port names arrive from the host shortly after the device: wait for them.
    i=0
    while [ $i -lt 30 ]; do
        QGA_DEV=$(qga_port) && break
        QGA_DEV=""
        i=$((i + 1))
        sleep 0.1
    done
fi
if [ -n "$QGA_DEV" ]; then
    mkdir -p /dev/virtio-ports
    ln -sf "$QGA_DEV" "/dev/virtio-ports/$QGA_NAME"
    # NOTE: in the background rather than -d: with -d the parent exits before
    # the agent opens its port, so a failure there would go unseen.
    /usr/sbin/qemu-ga -m virtio-serial -p "/dev/virtio-ports/$QGA_NAME" \
        -l /var/log/qemu-ga.log -f /run/qemu-ga.pid -t /run </dev/null &
    QGA_PID=$!
    sleep 1
    if kill -0 "$QGA_PID" 2>/dev/null; then
        mark "qga started pid=$QGA_PID"
    else
        note "qemu-ga exited: $(tail -n 5 /var/log/qemu-ga.log 2>/dev/null)"
    fi
fi

# --- network -------------------------------------------------------------
ip link set lo up
NET_DONE=0
if [ "$HAVE_CD" = 1 ] && [ -f /mnt/network-config ]; then
    awk -f /etc/cd-guest-netcfg.awk /mnt/network-config > /tmp/netcfg 2>/tmp/netcfg.err \
        || note "network-config: $(cat /tmp/netcfg.err)"
    MAC=""; NAME=""; ADDR=""; MASK=""; GW=""; NS=""
    while read -r k v; do
        case "$k" in
            mac) MAC=$v ;;
            name) NAME=$v ;;
            addr) ADDR=$v ;;
            mask) MASK=$v ;;
            gw) GW=$v ;;
            ns) NS="$NS $v" ;;
        esac
    done < /tmp/netcfg
    IF=""
    if [ -n "$MAC" ]; then
        i=0
        while [ -z "$IF" ] && [ $i -lt 50 ]; do
            for d in /sys/class/net/*; do
                [ "$(tr 'A-F' 'a-f' < "$d/address" 2>/dev/null)" = "$MAC" ] && IF=${d##*/}
            done
            [ -n "$IF" ] || { i=$((i + 1)); sleep 0.1; }
        done
        [ -n "$IF" ] || note "no NIC with MAC $MAC"
    elif [ -n "$NAME" ] && [ -e "/sys/class/net/$NAME" ]; then
        IF=$NAME
    fi
    if [ -n "$IF" ]; then
        ip link set "$IF" up
        if [ -n "$ADDR" ]; then
            ok=1
            case "$ADDR" in
                */*) ip addr add "$ADDR" dev "$IF" || ok=0 ;;
                *) if [ -n "$MASK" ]; then
                       ifconfig "$IF" "$ADDR" netmask "$MASK" up || ok=0
                   else
                       ip addr add "$ADDR" dev "$IF" || ok=0
                   fi ;;
            esac
            if [ -n "$GW" ] && [ $ok = 1 ]; then
                ip route add default via "$GW" dev "$IF" || note "default route via $GW failed"
            fi
            if [ $ok = 1 ]; then
                mark "net if=$IF addr=$ADDR"
                NET_DONE=1
            else
                note "configuring $ADDR on $IF failed"
            fi
        fi
    fi
    : > /etc/resolv.conf
    for n in $NS; do echo "nameserver $n" >> /etc/resolv.conf; done
fi
[ $NET_DONE = 1 ] || mark "net none"

# --- user-data -----------------------------------------------------------
if [ "$HAVE_CD" = 1 ] && [ "$(head -c 2 /mnt/user-data 2>/dev/null)" = "#!" ]; then
    cp /mnt/user-data /tmp/user-data
    chmod 755 /tmp/user-data
    (cd / && /tmp/user-data </dev/null)
    mark "user-data rc=$?"
fi

# --- ACPI power button -> poweroff --------------------------------------
acpid -c /etc/acpi -l /var/log/acpid.log || note "acpid failed to start"
mark ready

while :; do sleep 3600; done
INIT
chmod 755 "$R/init"

# --- assemble the outputs in the staging dir ----------------------------
log "packing initrd.img"
(cd "$R" && find . -print | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -9n > "$STAGE/initrd.img"
cp "$VMLINUZ" "$STAGE/vmlinuz"
log "creating disk.qcow2 ($DISK_SIZE, ext4 labelled cd-data)"
# NOTE: -T small gives 1 KiB blocks: the first 1024 bytes stay outside the
# file system.  Inode tables and journal are zeroed here (not lazily by the
# guest kernel), and the zeros cost nothing in the qcow2.
qemu-img create -q -f raw "$WORK/disk.raw" "$DISK_SIZE"
"$MKE2FS" -q -F -t ext4 -T small -L cd-data -m 0 \
    -E lazy_itable_init=0,lazy_journal_init=0,nodiscard "$WORK/disk.raw"
qemu-img convert -q -f raw -O qcow2 "$WORK/disk.raw" "$STAGE/disk.qcow2"
cat > "$STAGE/guest.json" <<JSON
{"kernel": "vmlinuz", "initrd": "initrd.img", "disk": "disk.qcow2", "cmdline": "$CMDLINE", "kernel_version": "$KVER", "qemu_guest_agent": "$QGA_VERSION", "build": $BUILD}
JSON
chmod 0644 "$STAGE"/*
chmod 0755 "$STAGE"
sync "$STAGE"/* 2>/dev/null || sync

# --- move into place -----------------------------------------------------
if [ ! -e "$OUT" ]; then
    mv -T -- "$STAGE" "$OUT"
else
    [ -d "$OUT" ] || die "$OUT exists and is not a directory"
    # OUTDIR exists (e.g. created empty by the caller, or an older or broken
    # build): drop its manifest first, rename the files in, manifest last.
    rm -f -- "$OUT/guest.json"
    for f in $FILES; do mv -f -- "$STAGE/$f" "$OUT/$f"; done
    mv -f -- "$STAGE/guest.json" "$OUT/guest.json"
fi
is_complete "$OUT" || die "build finished but $OUT is incomplete"
log "built $OUT: kernel $KVER, vmlinuz $(stat -c %s "$OUT/vmlinuz") B, initrd.img $(stat -c %s "$OUT/initrd.img") B"
