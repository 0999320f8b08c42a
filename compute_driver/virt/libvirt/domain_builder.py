"""The libvirt domain of an instance, as a typed builder (no I/O, no libvirt call).

What the driver defines: identity and size from the flavor, our
``<metadata>`` (so the agent can rebuild its view from libvirt), the disks
from the storage backends, the config drive, the NICs from the network
plugin, a logged serial console (not on the test driver, which runs no
guest), then the settings :mod:`.guest_config` checks, written by
:mod:`.guest_xml` (CPU, NUMA, tuning, devices). Every
document built here is validated with ``virt-xml-validate`` in the tests
(``tests/unit/virt/libvirt/test_driver_xml.py``).
"""

from __future__ import annotations

from compute_driver import domain_xml as lvxml
from compute_driver.virt import base
from compute_driver.virt.libvirt import guest_config, guest_xml, host_facts, snapshots

CONFIG_DRIVE_DEV = "hdc"


def domain_name(uuid: str) -> str:
    """The libvirt name of an instance's domain (unique: built from its UUID)."""
    return "cd-" + uuid


def build_domain(
    instance: base.InstanceSpec,
    disks: list,
    interfaces: list,
    volumes: list[base.VolumeRef],
    config_drive: str,
    *,
    host: host_facts.HostFacts,
    virt_type: str,
    console_log: str,
) -> lvxml.Domain:
    """The domain of ``instance``.

    :param disks: disk builders, root disk first.
    :param interfaces: interface builders, in port order.
    :param volumes: what ``disks`` are (``volumes[i]`` is ``disks[i]``),
        recorded in the metadata and written on each disk as its alias and serial.
    :param config_drive: the config drive ISO's path.
    :param host: this host's facts (CPUs, dedicated set, huge pages).
    :param virt_type: the domain type (kvm, qemu or test).
    :param console_log: where the serial console is logged.
    :raises GuestConfigError: the flavor's extra specs or the image's
        properties are unknown, conflict, or cannot be met on this host.
    """
    image, flavor = instance.image, instance.flavor
    settings = guest_config.guest_settings(flavor, image.properties, host, virt_type)
    domain = lvxml.Domain(
        type=virt_type,
        name=domain_name(instance.uuid),
        uuid=instance.uuid,
        memory_kib=flavor.memory_mb * 1024,
        vcpus=flavor.vcpus,
        on_poweroff="destroy",
        on_reboot="restart",
        on_crash="destroy",
    )
    domain.title = instance.name
    if image.kernel_path:
        domain.os = lvxml.OS(
            type="hvm",
            arch="x86_64",
            machine="pc",
            kernel=image.kernel_path,
            initrd=image.initrd_path,
            cmdline=image.cmdline,
        )
    else:
        domain.os = lvxml.OS(type="hvm", arch="x86_64", machine="pc", boot_devices=["hd"])
    domain.features = lvxml.Features(acpi=True, apic=True)
    domain.metadata = lvxml.InstanceMetadata(
        uuid=instance.uuid,
        name=instance.name,
        project=instance.project,
        user_data_size=len(instance.user_data),
        flavor=lvxml.FlavorRef(
            name=flavor.name,
            vcpus=flavor.vcpus,
            memory_mb=flavor.memory_mb,
            root_gb=flavor.root_gb,
        ),
        image_uuid=image.uuid,
        require_quiesce=snapshots.image_requires_quiesce(image.properties, image.name) or None,
        created_at=instance.created_at,
        ports=[lvxml.PortRef(id=p.id, network=p.network.id, mac=p.mac) for p in instance.ports],
        volumes=[
            lvxml.VolumeRef(id=v.id, backend=v.backend, target_dev=v.target_dev) for v in volumes
        ],
    )
    for disk, volume in zip(disks, volumes, strict=True):
        # NOTE: every disk carries its volume's alias and serial from its
        # first definition on, so that a hot attach, a redefine and a
        # detach all find (and the guest sees) the same disk.
        guest_xml.identify(disk, volume.id)
        domain.devices.append(disk)
    domain.devices.append(
        lvxml.Disk(
            type="file",
            device="cdrom",
            driver_name="qemu",
            driver_type="raw",
            source_file=config_drive,
            target_dev=CONFIG_DRIVE_DEV,
            target_bus="ide",
            readonly=True,
        )
    )
    for interface in interfaces:
        domain.devices.append(interface)
    if virt_type != "test":
        domain.devices.append(
            lvxml.Serial(
                type="pty",
                target_port=0,
                log_file=console_log,
                log_append=False,
            )
        )
        domain.devices.append(lvxml.Console(type="pty", target_type="serial", target_port=0))
    # CPU, NUMA, pinning, huge pages, disk tuning, rng, balloon, agent, watchdog.
    guest_xml.apply(
        domain, settings, [d for d in domain.devices_of(lvxml.Disk) if d.device == "disk"]
    )
    return domain
