"""Writes the checked guest settings into a domain: CPU, NUMA, tuning, devices, disks.

The second pure step of :mod:`.guest_config` (no I/O and no libvirt calls):
:func:`apply` turns a :class:`~.guest_config.GuestSettings` into the typed
builder objects of a :class:`~.xml.Domain`, replacing whatever it owns so
that applying twice gives the same domain.
"""

from __future__ import annotations

import itertools
import string

from compute_driver import domain_xml as lvxml
from compute_driver import exception
from compute_driver.virt.libvirt.guest_config import IOTUNE_LIMITS, DiskSettings, GuestSettings
from compute_driver.virt.libvirt.host_facts import format_cpuset

QGA_CHANNEL = "org.qemu.guest_agent.0"
RNG_BACKEND = "/dev/urandom"
WATCHDOG_MODEL = "i6300esb"
_DEV_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "ide": "hd"}
#: libvirt takes user aliases only with the "ua-" prefix.
VOLUME_ALIAS_PREFIX = "ua-vol-"
#: virtio-blk shows the guest at most 20 bytes of a disk's serial.
SERIAL_LENGTH = 20


def apply(domain: lvxml.Domain, settings: GuestSettings, disks: list[lvxml.Disk]) -> None:
    """Write ``settings`` into ``domain``: CPU, NUMA, tuning, memory backing, devices, disks.

    Replaces what it owns (``cpu``, ``vcpu_cpuset``, ``cputune``, ``numatune``,
    ``memory_backing``, any rng, memballoon, watchdog, guest agent channel
    and virtio-scsi controller), so calling it twice gives the same domain.

    :param domain: a domain with the flavor's vCPUs and memory; its
        metadata's volume target names follow renamed disks (found by
        alias), and it records the disk settings for later hot attaches.
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
    wanted = settings.disks
    prefix = target_prefix(wanted.bus)
    refs = {str(v.id): v for v in (domain.metadata.volumes if domain.metadata else [])}
    taken = {d.target_dev for d in domain.devices_of(lvxml.Disk) if d.target_dev}
    for disk in disks:
        if disk.device not in (None, "disk"):
            continue
        old = disk.target_dev
        if old is not None and not old.startswith(prefix):
            new = prefix + old[2:] if prefix + old[2:] not in taken else None
            new = new or next_target_dev(taken, prefix)
            taken.discard(old)
            taken.add(new)
            disk.target_dev = new
            # NOTE: only the entry of this very disk (found by its alias)
            # follows the rename: another disk may have had the same old
            # name (a volume attached as vda beside a root renamed from vda).
            ref = refs.get(volume_of(disk) or "")
            if ref is not None:
                ref.target_dev = new
        apply_disk_settings(disk, wanted)
    if domain.metadata is not None:
        domain.metadata.disks = disk_policy(wanted)


# --- one disk: identity, name, settings -------------------------------------


def volume_alias(volume_id: str) -> str:
    """The user alias of a volume's disk: how libvirt (and DEVICE_REMOVED) names it."""
    return VOLUME_ALIAS_PREFIX + volume_id


def volume_serial(volume_id: str) -> str:
    """The serial the guest sees (``/dev/disk/by-id/virtio-<serial>``)."""
    return volume_id[:SERIAL_LENGTH]


def volume_of(disk: lvxml.Disk) -> str | None:
    """The volume id in ``disk``'s alias, or None for a disk we did not name."""
    alias = disk.alias or ""
    return alias[len(VOLUME_ALIAS_PREFIX) :] if alias.startswith(VOLUME_ALIAS_PREFIX) else None


def identify(disk: lvxml.Disk, volume_id: str) -> None:
    """Name ``disk`` as the disk of ``volume_id``, for its whole life.

    NOTE: the alias and serial are how a disk is found (by us) and known (by
    the guest), at define, hot attach and every redefine; the target name
    is not: a change of bus renames it.
    """
    disk.alias = volume_alias(volume_id)
    disk.serial = disk.serial or volume_serial(volume_id)


def target_prefix(bus: str) -> str:
    """The device name prefix of disks on ``bus`` (``vd``, ``sd``, ``hd``)."""
    return _DEV_PREFIX[bus]


def next_target_dev(used: set[str], prefix: str = "vd") -> str:
    """The first free ``<prefix>X`` (then ``<prefix>aa``...) name not in ``used``.

    :raises Invalid: all 702 names are taken.
    """
    letters = string.ascii_lowercase
    for name in itertools.chain(
        (prefix + a for a in letters), (prefix + a + b for a in letters for b in letters)
    ):
        if name not in used:
            return name
    raise exception.Invalid(reason="no free disk name left")


def apply_disk_settings(disk: lvxml.Disk, wanted: DiskSettings) -> None:
    """Write the flavor's and image's disk settings into ``disk`` (a root disk or a volume)."""
    disk.target_bus = wanted.bus
    disk.cache = wanted.cache or disk.cache or "none"
    disk.io = wanted.io or disk.io
    disk.discard = wanted.discard or disk.discard
    disk.detect_zeroes = wanted.detect_zeroes or disk.detect_zeroes
    if wanted.iotune:  # the flavor's limits replace the storage's
        for limit in IOTUNE_LIMITS:
            setattr(disk, limit, dict(wanted.iotune).get(limit))
    if disk.io == "native" and disk.cache not in ("none", "directsync"):
        disk.io = None  # the storage asked for native, the image for a buffered cache


def disk_policy(wanted: DiskSettings) -> lvxml.DiskPolicy:
    """``wanted`` as our metadata keeps it."""
    limits = dict(wanted.iotune)
    return lvxml.DiskPolicy(
        bus=wanted.bus,
        cache=wanted.cache,
        io=wanted.io,
        discard=wanted.discard,
        detect_zeroes=wanted.detect_zeroes,
        **{limit: limits.get(limit) for limit in IOTUNE_LIMITS},
    )


def disk_settings_of(policy: lvxml.DiskPolicy) -> DiskSettings:
    """The settings our metadata kept (:func:`disk_policy` read back)."""
    return DiskSettings(
        bus=policy.bus or "virtio",
        cache=policy.cache,
        io=policy.io,
        discard=policy.discard,
        detect_zeroes=policy.detect_zeroes,
        iotune=tuple(
            (limit, value)
            for limit in IOTUNE_LIMITS
            if (value := getattr(policy, limit)) is not None
        ),
    )
