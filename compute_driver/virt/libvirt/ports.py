"""Checks of a started guest's network interfaces."""

from __future__ import annotations

import os

from lxml import etree

SYS_CLASS_NET = "/sys/class/net"


def unwired_interfaces(live_xml: str, sys_class_net: str = SYS_CLASS_NET) -> list[str]:
    """The NICs of a started (paused) domain that are not wired yet.

    A NIC is wired when libvirt made its host device (``<target dev>``) and,
    for ``type='bridge'``, that device is a port of its bridge (the bridge
    is its sysfs ``master``; OVS ports, ``<virtualport type='openvswitch'>``,
    are OVS's to check, and a ``type='ethernet'`` tap with ``managed='no'`` is
    the network plugin's, switch port included).

    :returns: one description per unwired NIC, by MAC.
    """
    unwired = []
    root = etree.fromstring(live_xml.encode())
    for nic in root.findall("./devices/interface"):
        mac_el = nic.find("./mac")
        mac = mac_el.get("address") if mac_el is not None else "?"
        target = nic.find("./target")
        dev = target.get("dev") if target is not None else None
        if not dev or not os.path.exists(os.path.join(sys_class_net, dev)):
            unwired.append("%s (no host device)" % mac)
            continue
        source = nic.find("./source")
        bridge = source.get("bridge") if source is not None else None
        if nic.get("type") != "bridge" or not bridge or nic.find("./virtualport") is not None:
            continue
        master = os.path.join(sys_class_net, dev, "master")
        if not os.path.islink(master) or os.path.basename(os.readlink(master)) != bridge:
            unwired.append("%s (%s not in bridge %s)" % (mac, dev, bridge))
    return unwired
