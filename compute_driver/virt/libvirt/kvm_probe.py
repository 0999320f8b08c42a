"""Does KVM really run guest code here? A 3-instruction probe.

``/dev/kvm`` can exist on hosts where KVM guests never make progress
(nested or restricted virtualization): the domain reaches "running" and
spins. So before choosing ``type='kvm'`` we run a real-mode program of
three instructions (``mov al, 0x42; out 0x10, al; hlt``) through the KVM
ioctls and expect its port write back. The probe runs in a child process
(``python -m compute_driver.virt.libvirt.kvm_probe``) so that a hung
``KVM_RUN`` is killed by a timeout instead of hanging the agent.

NOTE: the probe is necessary, not sufficient. On the nested hosts we test
on, the CPU hides vmx/svm, /dev/kvm exists, this probe even passes, and yet
full guests hang; the CPU flag check is what rules KVM out there. Both
must pass before we choose kvm.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import mmap
import os
import struct
import subprocess
import sys

LOG = logging.getLogger(__name__)

KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_GET_VCPU_MMAP_SIZE = 0xAE04
KVM_CREATE_VCPU = 0xAE41
KVM_SET_USER_MEMORY_REGION = 0x4020AE46
KVM_RUN = 0xAE80
KVM_SET_REGS = 0x4090AE82
KVM_GET_SREGS = 0x8138AE83
KVM_SET_SREGS = 0x4138AE84
KVM_EXIT_IO = 2

GUEST_CODE = bytes([0xB0, 0x42, 0xE6, 0x10, 0xF4])  # mov al,0x42; out 0x10,al; hlt
CODE_ADDR = 0x1000
PROBE_PORT = 0x10
PROBE_BYTE = 0x42


def cpu_has_virt_extensions(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU advertises vmx (Intel) or svm (AMD)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return "vmx" in flags or "svm" in flags
    except OSError:
        pass
    return False


def run_probe_in_process(device: str = "/dev/kvm") -> None:
    """Run the guest program; raise RuntimeError unless it wrote its byte."""
    kvm = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    if fcntl.ioctl(kvm, KVM_GET_API_VERSION) != 12:
        raise RuntimeError("unexpected KVM API version")
    vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
    memory = mmap.mmap(-1, 0x4000)
    memory[CODE_ADDR : CODE_ADDR + len(GUEST_CODE)] = GUEST_CODE
    address = ctypes.addressof(ctypes.c_char.from_buffer(memory))
    region = struct.pack("IIQQQ", 0, 0, 0, len(memory), address)
    fcntl.ioctl(vm, KVM_SET_USER_MEMORY_REGION, region)
    vcpu = fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)
    run_size = fcntl.ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE)
    run = mmap.mmap(vcpu, run_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    sregs = bytearray(fcntl.ioctl(vcpu, KVM_GET_SREGS, bytes(312)))
    struct.pack_into("Q", sregs, 0, 0)  # cs.base = 0
    struct.pack_into("H", sregs, 12, 0)  # cs.selector = 0
    fcntl.ioctl(vcpu, KVM_SET_SREGS, bytes(sregs))
    regs = bytearray(144)
    struct.pack_into("Q", regs, 16 * 8, CODE_ADDR)  # rip
    struct.pack_into("Q", regs, 17 * 8, 0x2)  # rflags
    fcntl.ioctl(vcpu, KVM_SET_REGS, bytes(regs))
    fcntl.ioctl(vcpu, KVM_RUN, 0)
    exit_reason = struct.unpack_from("I", run, 8)[0]
    if exit_reason != KVM_EXIT_IO:
        raise RuntimeError("guest exited with reason %d, not an I/O write" % exit_reason)
    _direction, _size, port, _count, data_offset = struct.unpack_from("BBHIQ", run, 32)
    if port != PROBE_PORT or run[data_offset] != PROBE_BYTE:
        raise RuntimeError("guest wrote to the wrong port or the wrong byte")


def kvm_usable(timeout: float, device: str = "/dev/kvm") -> tuple[bool, str]:
    """Whether KVM can run guests here, and why (for the log)."""
    if not cpu_has_virt_extensions():
        return False, "the CPU advertises neither vmx nor svm"
    if not os.path.exists(device):
        return False, "%s does not exist" % device
    try:
        result = subprocess.run(
            [sys.executable, "-m", __name__, device],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return False, "the KVM probe guest made no progress in %s s" % timeout
    if result.returncode != 0:
        return False, "the KVM probe failed: %s" % (result.stderr.strip().splitlines() or ["?"])[-1]
    return True, "the KVM probe guest ran"


if __name__ == "__main__":
    run_probe_in_process(sys.argv[1] if len(sys.argv) > 1 else "/dev/kvm")
