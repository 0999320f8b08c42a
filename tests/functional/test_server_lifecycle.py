"""Servers through the real bus onto real QEMU guests, driven with computectl."""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid

import libvirt
from cloud_env import Cloud, wait_for_console

from compute_driver import domain_xml as lvxml

USER_DATA = b"#!/bin/sh\necho CD-TEST user-data ran\n"


def _create(cloud: Cloud, name: str, image: dict, *extra: str) -> dict:
    return cloud.create_server(name, image["uuid"], *extra, user_data=USER_DATA)


def _domain_xml(conn: libvirt.virConnect, uuid_: str) -> str:
    return conn.lookupByUUIDString(uuid_).XMLDesc()


def test_server_create_boot_list_show_delete(cloud: Cloud, guest_image: dict, libvirt_conn) -> None:
    used_before = cloud.ok("host", "show", cloud.host)["memory_mb_used"]
    server = _create(cloud, "ft-vm1", guest_image)
    assert server["vm_state"] == "active"
    assert server["host"] == cloud.host
    assert server["power_state"] == "running"

    listed = {s["uuid"]: s for s in cloud.ok("server", "list", "--project", "ft")}
    assert server["uuid"] in listed
    assert cloud.ok("server", "show", "ft-vm1")["uuid"] == server["uuid"]

    # The guest read its config drive (instance id, hostname) and ran its user data.
    console = wait_for_console(cloud, server["uuid"], "CD-GUEST ready")
    assert "CD-GUEST cidata instance-id=%s hostname=ft-vm1" % server["uuid"] in console
    assert "CD-TEST user-data ran" in console

    # libvirt alone tells what the instance is: our metadata is on the domain.
    xml = _domain_xml(libvirt_conn, server["uuid"])
    meta = lvxml.InstanceMetadata.from_domain_xml(xml)
    assert meta is not None and meta.uuid == server["uuid"] and meta.project == "ft"
    assert meta.flavor.name == "m1.tiny"
    assert [v.target_dev for v in meta.volumes] == ["vda"]
    assert "type='qemu'" in xml or 'type="qemu"' in xml

    # What libvirt holds (our XML after libvirt filled in its defaults) is valid.
    with tempfile.NamedTemporaryFile("w", suffix=".xml") as f:
        f.write(xml)
        f.flush()
        subprocess.run(["virt-xml-validate", f.name, "domain"], check=True, capture_output=True)

    instance_dir = os.path.join(cloud.state, "instances", server["uuid"])
    volume = os.path.join(cloud.state, "volumes", server["uuid"] + "_root.qcow2")
    assert os.path.exists(instance_dir) and os.path.exists(volume)
    info = subprocess.run(
        ["qemu-img", "info", "--force-share", volume], capture_output=True, text=True, check=True
    ).stdout
    assert "backing file:" in info  # a linked clone of the cached image, not a copy

    assert cloud.ok("server", "delete", server["uuid"], "--wait") is None
    missing = cloud.ctl("server", "show", server["uuid"])
    assert missing.rc == 3 and "instance_not_found" in missing.stderr
    try:
        libvirt_conn.lookupByUUIDString(server["uuid"])
        raise AssertionError("the domain is still defined")
    except libvirt.libvirtError as exc:
        assert exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN
    assert not os.path.exists(instance_dir) and not os.path.exists(volume)

    # Deleting again changes nothing and is not an error.
    assert cloud.ctl("server", "delete", server["uuid"]).rc == 0
    assert cloud.ok("host", "show", cloud.host)["memory_mb_used"] == used_before  # claim released


def test_agent_killed_and_restarted_loses_no_instance(
    cloud: Cloud, guest_image: dict, libvirt_conn
) -> None:
    server = _create(cloud, "ft-survivor", guest_image)
    cloud.stop("compute-agent", signal_kill := 9)  # noqa: F841 - SIGKILL: no goodbye
    cloud.wait_for_host("down", timeout=30)
    assert libvirt_conn.lookupByUUIDString(server["uuid"]).isActive()

    cloud.start("compute-agent")
    cloud.wait_for_host("up")
    after = cloud.ok("server", "show", server["uuid"])
    assert after["vm_state"] == "active" and after["power_state"] == "running"
    assert after["host"] == cloud.host

    # The restarted agent still owns it: delete goes through it.
    cloud.ok("server", "delete", server["uuid"], "--wait")
    try:
        libvirt_conn.lookupByUUIDString(server["uuid"])
        raise AssertionError("the domain survived its delete")
    except libvirt.libvirtError as exc:
        assert exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN


def test_repeated_create_with_same_uuid_makes_one_server(cloud: Cloud, guest_image: dict) -> None:
    from compute_driver import client as client_mod
    from compute_driver import config

    conf = config.load(
        ["--config-file", cloud.config_file], "functional-test", default_config_files=[]
    )
    client = client_mod.Client(conf, admin=True)
    used_before = client.show_host(cloud.host)["memory_mb_used"]
    server_uuid = str(uuid.uuid4())
    first = client.create_server(
        "ft-twice", "m1.tiny", guest_image["uuid"], project="ft", uuid=server_uuid
    )
    second = client.create_server(
        "ft-twice", "m1.tiny", guest_image["uuid"], project="ft", uuid=server_uuid
    )
    assert first["uuid"] == second["uuid"] == server_uuid
    client.wait_for_server(server_uuid, timeout=120)
    assert [s["uuid"] for s in client.list_servers(project="ft") if s["name"] == "ft-twice"] == [
        server_uuid
    ]
    host = client.show_host(cloud.host)
    assert host["memory_mb_used"] == used_before + 512  # claimed once
    client.delete_server(server_uuid)
    client.wait_for_delete(server_uuid)


def test_no_valid_host_says_why(cloud: Cloud, guest_image: dict) -> None:
    cloud.ok("flavor", "create", "ft.huge", "--vcpus", "256", "--ram", "4000000", "--disk", "1")
    try:
        result = cloud.ctl(
            "server",
            "create",
            "ft-too-big",
            "--flavor",
            "ft.huge",
            "--image",
            guest_image["uuid"],
            "--project",
            "ft",
        )
        assert result.rc == 1
        assert "no_valid_host" in result.stderr and cloud.host in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        record = cloud.ok("server", "show", "ft-too-big")
        assert record["vm_state"] == "error" and "No valid host" in record["fault"]
        cloud.ok("server", "delete", "ft-too-big", "--wait")
    finally:
        cloud.ok("flavor", "delete", "ft.huge")


def test_agent_chose_qemu_and_said_why(cloud: Cloud) -> None:
    with open(cloud.log_path("compute-agent")) as f:
        log = f.read()
    assert "virt_type auto: using " in log
    host = cloud.ok("host", "show", cloud.host)
    with open("/proc/cpuinfo") as f:
        has_vmx = any(flag in f.read().split() for flag in ("vmx", "svm"))
    if not has_vmx:
        assert host["capabilities"]["virt_type"] == "qemu"
        assert "neither vmx nor svm" in log


def test_malformed_payloads_get_typed_errors_and_change_nothing(cloud: Cloud, libvirt_conn) -> None:
    import oslo_messaging as messaging

    from compute_driver import config, exception
    from compute_driver.rpc import transport

    # NOTE: the scheduler's credential: only the scheduler may publish to an agent.
    conf = config.load(
        cloud.config_args("compute-scheduler"), "functional-test", default_config_files=[]
    )
    rpc = transport.get_transport(conf)
    before_servers = cloud.ok("server", "list")

    # NOTE: only this cloud's domains: other runs may share the system libvirtd.
    def ours() -> set[str]:
        found = set()
        for dom in libvirt_conn.listAllDomains():
            try:
                if cloud.state in dom.XMLDesc():
                    found.add(dom.UUIDString())
            except libvirt.libvirtError:
                continue  # gone meanwhile: not ours to count
        return found

    before_domains = ours()

    scheduler = messaging.get_rpc_client(
        rpc, messaging.Target(topic="scheduler", version="1.0"), timeout=30
    )
    compute = messaging.get_rpc_client(
        rpc, messaging.Target(topic="compute", server=cloud.host, version="1.0"), timeout=30
    )
    bad_requests = [
        (
            scheduler,
            "create_server",
            {
                "uuid": str(uuid.uuid4()),
                "name": "../etc",
                "flavor": "m1.tiny",
                "image": "x",
                "project": "ft",
            },
        ),
        (
            scheduler,
            "create_server",
            {
                "uuid": "not-a-uuid",
                "name": "ok",
                "flavor": "m1.tiny",
                "image": "x",
                "project": "ft",
            },
        ),
        (
            scheduler,
            "create_server",
            {
                "uuid": str(uuid.uuid4()),
                "name": "ok",
                "flavor": "m1.tiny",
                "image": "x",
                "project": "ft",
                "surprise": 1,
            },
        ),
        (scheduler, "show_server", {"server": "<script>"}),
        (scheduler, "create_flavor", {"name": "neg", "vcpus": -1, "memory_mb": 64, "root_gb": 1}),
        (compute, "build_instance", {"instance": {"uuid": str(uuid.uuid4()), "name": "x"}}),
        (compute, "delete_instance", {"uuid": "'; drop table"}),
        (compute, "get_console_output", {"uuid": str(uuid.uuid4()), "lines": "all"}),
    ]
    # NOTE: the clients' 30 s timeout is the hang guard (a request nobody
    # answers ends in MessagingTimeout, which fails the test); how fast the
    # refusal comes is not asserted, it moves with the host's load.
    for client, method, payload in bad_requests:
        try:
            client.call({}, method, **payload)
            raise AssertionError("%s accepted %r" % (method, payload))
        except exception.InvalidPayload as exc:
            assert exc.code == "invalid_payload" and method in exc.message

    assert cloud.ok("server", "list") == before_servers
    assert ours() == before_domains
    assert "neg" not in [f["name"] for f in cloud.ok("flavor", "list")]
