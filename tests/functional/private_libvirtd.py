"""A private, privileged libvirtd for tests that must kill or restart it.

The system libvirtd is shared with other tests and people: it is never
stopped. This one runs in its own mount namespace, where its compiled-in
directories (/etc/libvirt, /run/libvirt, /var/lib/libvirt,
/var/cache/libvirt, /var/log/libvirt) are bind mounts of directories under
``root``, and it listens on a unix socket under ``root/sock`` (outside the
bind mounts, so clients in our namespace reach it). See
docs of the recipe: /work/shared/recipes/migration-two-hosts.md.

Restarting it with the same ``root`` keeps its state: a daemon killed with
SIGKILL leaves its QEMU processes running, and the next one reconnects to them.

Given a network namespace, the daemon runs inside it (``ip netns exec``):
the taps libvirt makes for its guests, and the bridges it puts them in,
are then that namespace's, as on a separate host. Its unix socket stays
reachable from here (sockets on a file system belong to no network
namespace).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time

import libvirt


def in_private_mounts(
    script: str, args: list[str], log_path: str, prefix: list[str] | None = None
) -> subprocess.Popen:
    """Run the bash ``script`` (with ``args`` as $1...) in a mount namespace of its own.

    Its mounts are private: nothing it mounts shows outside. Output goes to
    ``log_path``; ``prefix`` is a command that execs what follows it (such as
    ``ip netns exec NS``). NOTE: unshare without --fork, bash's exec and such
    a prefix all exec in place: the PID returned is that of what the script
    execs last.
    """
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [
                *(prefix or []),
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "bash",
                "-ec",
                script,
                "bash",
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


_DIRS = {
    "etc": "/etc/libvirt",
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "cache": "/var/cache/libvirt",
    "log": "/var/log/libvirt",
}

LIBVIRTD_CONF = """\
unix_sock_dir = "{root}/sock"
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
listen_tls = 0
listen_tcp = 0
log_outputs = "3:file:{root}/libvirtd.log"
"""

# NOTE: stdio_handler "file": the system virtlogd socket is hidden by the
# bind mount of /run/libvirt. No cgroup controllers: both daemons would put
# their guests in the same /machine cgroups.
QEMU_CONF = """\
stdio_handler = "file"
cgroup_controllers = [ ]
"""


def usable() -> str | None:
    """Why a private libvirtd cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (privileged libvirtd, mount namespace)"
    for tool in ("unshare", "libvirtd"):
        if shutil.which(tool) is None:
            return "%s is not installed" % tool
    return None


class PrivateLibvirtd:
    """One privileged libvirtd in a private mount namespace; kill it by its PID only."""

    def __init__(self, netns: str | None = None, binds: dict[str, str] | None = None) -> None:
        """:param netns: a network namespace (under /run/netns) to run the daemon in.
        :param binds: more bind mounts of its namespace, {source directory: target}
            (e.g. a simulated host's OVS run directory on /run/openvswitch).
        """
        self.netns = netns
        self.binds = dict(binds or {})
        self.root = tempfile.mkdtemp(prefix="cd-libvirtd-")
        # NOTE: QEMU runs as libvirt-qemu and must traverse these directories.
        os.chmod(self.root, 0o755)
        for name in [*_DIRS, "sock"]:
            os.makedirs(os.path.join(self.root, name), mode=0o755)
        with open(os.path.join(self.root, "etc", "libvirtd.conf"), "w") as f:
            f.write(LIBVIRTD_CONF.format(root=self.root))
        with open(os.path.join(self.root, "etc", "qemu.conf"), "w") as f:
            f.write(QEMU_CONF)
        self.socket = os.path.join(self.root, "sock", "libvirt-sock")
        self.uri = "qemu+unix:///system?socket=" + self.socket
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> None:
        """Start the daemon and wait until it answers on its socket."""
        script = "".join(
            "mount --bind %s %s\n" % (os.path.join(self.root, name), target)
            for name, target in _DIRS.items()
        )
        script += "".join(
            "mkdir -p %s\nmount --bind %s %s\n" % (target, source, target)
            for source, target in self.binds.items()
        )
        script += 'exec libvirtd -f "$1" -p "$2"\n'
        # NOTE: ip netns exec execs in place too, and mounts a /sys of that
        # namespace, where libvirt looks up bridges and taps.
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.proc = in_private_mounts(
            script,
            [
                os.path.join(self.root, "etc", "libvirtd.conf"),
                os.path.join(self.root, "libvirtd.pid"),
            ],
            os.path.join(self.root, "stdout.log"),
            prefix,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    "private libvirtd exited (%s):\n%s" % (self.proc.returncode, self.log_tail())
                )
            try:
                libvirt.open(self.uri).close()
                return
            except libvirt.libvirtError:
                time.sleep(0.1)
        raise RuntimeError(
            "private libvirtd did not answer within %s s:\n%s" % (timeout, self.log_tail())
        )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the daemon (by PID) and wait for it to exit."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def cleanup(self) -> None:
        """Stop its guests and the daemon, and remove every file of it."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                conn = libvirt.open(self.uri)
            except libvirt.libvirtError:
                conn = None
            for dom in conn.listAllDomains() if conn is not None else []:
                try:
                    if dom.isActive():
                        dom.destroy()
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
                except libvirt.libvirtError:
                    pass  # the QEMU is killed by PID below
            if conn is not None:
                conn.close()
        self.kill(signal.SIGTERM)
        # Guests of a daemon that died: their QEMU PIDs are in its state directory.
        for pidfile in glob.glob(os.path.join(self.root, "run", "qemu", "*.pid")):
            name = os.path.basename(pidfile)[: -len(".pid")]
            try:
                with open(pidfile) as f:
                    pid = int(f.read().strip())
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    cmdline = f.read()
                # NOTE: only a QEMU of that guest: the PID may have been reused.
                if b"qemu-system" in cmdline and ("guest=%s," % name).encode() in cmdline:
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass
        # NOTE: the bind mounts live only in the daemon's namespace, which
        # went away with its last process; nothing to unmount here.
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for name in ("stdout.log", "libvirtd.log"):
            try:
                with open(os.path.join(self.root, name), errors="replace") as f:
                    text += "--- %s\n%s" % (name, "".join(f.readlines()[-lines:]))
            except OSError:
                pass
        return text
