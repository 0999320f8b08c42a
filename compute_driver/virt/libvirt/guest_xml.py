"""Writes the checked guest settings into a domain: CPU, NUMA, tuning, devices, disks.

The second pure step of :mod:`.guest_config` (no I/O and no libvirt calls):
:func:`apply` turns a :class:`~.guest_config.GuestSettings` into the typed
builder objects of a :class:`~.xml.Domain`, replacing whatever it owns so
that applying twice gives the same domain.
"""

from __future__ import annotations

from compute_driver.virt.libvirt import xml as lvxml
from compute_driver.virt.libvirt.guest_config import IOTUNE_LIMITS, GuestSettings
from compute_driver.virt.libvirt.host_facts import format_cpuset

QGA_CHANNEL = "org.qemu.guest_agent.0"
RNG_BACKEND = "/dev/urandom"
WATCHDOG_MODEL = "i6300esb"
_DEV_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "ide": "hd"}


def apply(domain: lvxml.Domain, settings: GuestSettings, disks: list[lvxml.Disk]) -> None:
    """Write ``settings`` into ``domain``: CPU, NUMA, tuning, memory backing, devices, disks.

    Replaces what it owns (``cpu``, ``vcpu_cpuset``, ``cputune``, ``numatune``,
    ``memory_backing``, any rng, memballoon, watchdog, guest agent channel
    and virtio-scsi controller), so calling it twice gives the same domain.

    :param domain: a domain with the flavor's vCPUs and memory; its
        metadata's volume target names follow renamed disks.
    :param settings: from :func:`.guest_config.guest_settings` for the same flavor.
    :param disks: the instance's disks (already in ``domain.devices``); cdroms
        are left alone.
    :raises ValueError: ``domain`` was sized from another flavor.
    """
    if (domain.vcpus, domain.memory_kib) != (settings.vcpus, settings.memory_kib):
        raise ValueError(
            f"domain has {domain.vcpus} vCPUs and {domain.memory_kib} KiB, "
            f"settings are for {settings.vcpus} and {settings.memory_kib}"
        )
    domain.cpu = _cpu(settings)
    domain.vcpu_cpuset = format_cpuset(settings.shared_cpus) if settings.shared_cpus else None
    domain.cputune = None
    if settings.vcpu_pins:
        domain.cputune = lvxml.CPUTune(
            vcpupins=[
                lvxml.VCPUPin(vcpu=vcpu, cpuset=str(cpu))
                for vcpu, cpu in enumerate(settings.vcpu_pins)
            ],
            emulatorpin_cpuset=format_cpuset(settings.vcpu_pins),
        )
    domain.numatune = None
    if settings.memory_host_nodes:
        domain.numatune = lvxml.NUMATune(
            memory_mode="strict",
            memory_nodeset=format_cpuset(settings.memory_host_nodes),
            memnodes=[
                lvxml.NUMAMemNode(cellid=c.id, mode="strict", nodeset=format_cpuset(c.host_nodes))
                for c in settings.numa_cells
                if c.host_nodes
            ],
        )
    domain.memory_backing = (
        lvxml.MemoryBacking(hugepage_kib=settings.hugepage_kib) if settings.hugepage_kib else None
    )
    _apply_disks(domain, settings, disks)
    domain.devices = [dev for dev in domain.devices if not _owned(dev)] + _devices(settings)


def _cpu(settings: GuestSettings) -> lvxml.CPU | None:
    mode = None if settings.cpu_mode == "none" else settings.cpu_mode
    if mode is None and settings.topology is None and not settings.numa_cells:
        return None
    sockets, cores, threads = settings.topology or (None, None, None)
    return lvxml.CPU(
        mode=mode,
        model=settings.cpu_model,
        topology_sockets=sockets,
        topology_cores=cores,
        topology_threads=threads,
        numa_cells=[
            lvxml.NUMACell(id=c.id, cpus=format_cpuset(c.vcpus), memory_kib=c.memory_kib)
            for c in settings.numa_cells
        ],
    )


def _owned(dev: lvxml.XMLBuilder) -> bool:
    if isinstance(dev, lvxml.Rng | lvxml.MemBalloon | lvxml.Watchdog):
        return True
    if isinstance(dev, lvxml.Channel):
        return dev.target_name == QGA_CHANNEL
    return isinstance(dev, lvxml.Controller) and (dev.type, dev.model) == ("scsi", "virtio-scsi")


def _devices(settings: GuestSettings) -> list[lvxml.XMLBuilder]:
    devices: list[lvxml.XMLBuilder] = []
    if settings.disk_bus == "scsi":
        devices.append(lvxml.Controller(type="scsi", index=0, model="virtio-scsi"))
    if settings.qemu_guest_agent:
        # NOTE: no source path: libvirt makes one under its channel directory.
        devices.append(lvxml.Channel(type="unix", target_type="virtio", target_name=QGA_CHANNEL))
    if settings.rng:
        devices.append(
            lvxml.Rng(
                model="virtio",
                rate_bytes=settings.rng_rate_bytes,
                rate_period=settings.rng_rate_period,
                backend_model="random",
                backend_path=RNG_BACKEND,
            )
        )
    if settings.watchdog_action is not None:
        devices.append(lvxml.Watchdog(model=WATCHDOG_MODEL, action=settings.watchdog_action))
    if settings.mem_stats_period == 0:
        devices.append(lvxml.MemBalloon(model="none"))
    elif settings.mem_stats_period is not None:
        devices.append(lvxml.MemBalloon(model="virtio", stats_period=settings.mem_stats_period))
    return devices


def _apply_disks(domain: lvxml.Domain, settings: GuestSettings, disks: list[lvxml.Disk]) -> None:
    taken = {d.target_dev for d in domain.devices_of(lvxml.Disk)}
    for disk in disks:
        if disk.device not in (None, "disk"):
            continue
        old = disk.target_dev
        prefix = _DEV_PREFIX[settings.disk_bus]
        if old is not None and not old.startswith(prefix):
            new = _free_dev(prefix, old[2:], taken)
            taken.discard(old)
            taken.add(new)
            disk.target_dev = new
            for volume in domain.metadata.volumes if domain.metadata is not None else []:
                if volume.target_dev == old:
                    volume.target_dev = new
        disk.target_bus = settings.disk_bus
        disk.cache = settings.disk_cache or disk.cache or "none"
        disk.io = settings.disk_io or disk.io
        disk.discard = settings.disk_discard or disk.discard
        disk.detect_zeroes = settings.disk_detect_zeroes or disk.detect_zeroes
        if settings.disk_iotune:  # the flavor's limits replace the storage's
            for limit in IOTUNE_LIMITS:
                setattr(disk, limit, dict(settings.disk_iotune).get(limit))
        if disk.io == "native" and disk.cache not in ("none", "directsync"):
            disk.io = None  # the storage asked for native, the image for a buffered cache


def _free_dev(prefix: str, suffix: str, taken: set[str | None]) -> str:
    if prefix + suffix not in taken:
        return prefix + suffix
    letters = "abcdefghijklmnopqrstuvwxyz"
    return next(prefix + c for c in letters if prefix + c not in taken)
