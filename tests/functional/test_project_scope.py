"""Project -> project, against the real broker, scheduler and agent (issue 12, item 5).

Project ``pa`` owns a running server, a volume and a network; project ``pb``
tries everything the issue found it could do to them, through ``computectl
--project pb`` and through the Python client an upstream API embeds. Every
attempt is ``not_found`` (exit 3), exactly as for an object that does not
exist, and changes nothing. Then ``pb`` makes its own server of the same name,
and ``pa``'s lookups by name still find ``pa``'s.
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

from cloud_env import Cloud

A = ("--project", "pa")
B = ("--project", "pb")


def _not_found(cloud: Cloud, *args: str) -> str:
    """Run computectl as pb; require exit 3 (not found); return the message."""
    result = cloud.ctl(*B, *args)
    assert result.rc == 3, "pb ran `%s`: rc %d, %s%s" % (
        " ".join(args),
        result.rc,
        result.stdout[:300],
        result.stderr,
    )
    return result.stderr.strip()


def _state(cloud: Cloud) -> list[Any]:
    """What the operator sees of everything (pa's objects included)."""
    return [
        [
            {k: v for k, v in r.items() if k not in ("updated_at", "power_state")}
            for r in cloud.ok(group, "list")
        ]
        for group in ("server", "volume", "network", "image")
    ]


def test_another_project_cannot_see_or_touch_a_projects_objects(
    cloud: Cloud, guest_image: dict
) -> None:
    made: dict[str, dict[str, Any]] = {}
    try:
        made["server"] = server = cloud.ok(
            *A,
            "server",
            "create",
            "ft-srvA",
            "--flavor",
            "m1.tiny",
            "--image",
            guest_image["uuid"],
            "--wait",
        )
        assert server["project"] == "pa" and server["vm_state"] == "active"
        made["volume"] = volume = cloud.ok(
            *A, "volume", "create", "ft-volA", "--size", "1", "--backend", "dir"
        )
        made["network"] = network = cloud.ok(
            *A, "network", "create", "ft-netA", "--type", "vxlan", "--cidr", "10.77.0.0/24"
        )
        assert volume["project"] == network["project"] == "pa"

        # pb lists nothing of pa's, and may not ask for pa's listings.
        for group in ("server", "volume", "network"):
            listed = cloud.ok(*B, group, "list")
            assert all(r["project"] == "pb" for r in listed), listed
        refused = cloud.ctl(*B, "server", "list", "--project", "pa")
        assert refused.rc == 2 and "forbidden" in refused.stderr

        before = _state(cloud)
        for ref in (server["name"], server["uuid"]):
            message = _not_found(cloud, "server", "show", ref)
            assert message == "computectl: instance_not_found: Server %s not found" % ref
            _not_found(cloud, "server", "console-log", ref)
            _not_found(cloud, "server", "diagnostics", ref)
            _not_found(cloud, "server", "stop", ref)
            _not_found(cloud, "server", "start", ref)
            _not_found(cloud, "server", "snapshot", "create", ref, "stolen")
            _not_found(cloud, "server", "snapshot", "list", ref)
            _not_found(cloud, "server", "interface", "list", ref)
            _not_found(cloud, "server", "delete", ref)
            _not_found(cloud, "image", "create", "ft-stolen", "--server", ref)
        # The same answer as for a server that never existed.
        missing = str(uuidlib.uuid4())
        assert _not_found(cloud, "server", "show", missing).endswith(
            "Server %s not found" % missing
        )
        for ref in (volume["name"], volume["uuid"]):
            _not_found(cloud, "volume", "show", ref)
            _not_found(cloud, "volume", "snapshot", "create", ref, "stolen")
            _not_found(cloud, "volume", "resize", ref, "--size", "2")
            _not_found(cloud, "volume", "delete", ref)
            _not_found(cloud, "volume", "attach", server["uuid"], ref)
        for ref in (network["name"], network["uuid"]):
            _not_found(cloud, "network", "show", ref)
            _not_found(cloud, "network", "delete", ref)
        # pb's own server cannot reach pa's network or volume either.
        _not_found(
            cloud,
            "server",
            "create",
            "ft-spy",
            "--flavor",
            "m1.tiny",
            "--image",
            guest_image["uuid"],
            "--network",
            network["uuid"],
        )
        assert _state(cloud) == before, "a refused request changed something"
        assert cloud.ok(*A, "server", "show", "ft-srvA")["vm_state"] == "active"
        assert "ft-stolen" not in [i["name"] for i in cloud.ok("image", "list")]

        # An upstream API: one client, a view per project.
        from compute_driver import client as client_mod
        from compute_driver import config, exception

        conf = config.load(
            ["--config-file", cloud.config_file], "functional-test", default_config_files=[]
        )
        upstream = client_mod.Client(conf)
        made["client"] = {}
        as_b = upstream.for_project("pb", user="mallory")
        for call in (
            lambda: as_b.show_server(server["uuid"]),
            lambda: as_b.delete_server(server["uuid"]),
            lambda: as_b.create_image_from_server("ft-stolen", server["uuid"]),
        ):
            try:
                call()
                raise AssertionError("pb reached pa's server through the client")
            except exception.InstanceNotFound:
                pass
        assert upstream.for_project("pa").show_server("ft-srvA")["uuid"] == server["uuid"]
        try:
            upstream.list_servers()  # no project, not admin
            raise AssertionError("a context of no project listed servers")
        except exception.Forbidden:
            pass

        # Name squatting: pb's own ft-srvA (it finds no host: a huge flavor)
        # changes nothing for pa.
        cloud.ok("flavor", "create", "ft-huge", "--vcpus", "256", "--ram", "4194304", "--disk", "1")
        squat = cloud.ctl(
            *B, "server", "create", "ft-srvA", "--flavor", "ft-huge", "--image", guest_image["uuid"]
        )
        assert squat.rc == 1 and "no_valid_host" in squat.stderr
        squatter = cloud.ok(*B, "server", "show", "ft-srvA")
        made["squatter"] = squatter
        assert squatter["project"] == "pb" and squatter["uuid"] != server["uuid"]
        assert cloud.ok(*A, "server", "show", "ft-srvA")["uuid"] == server["uuid"]
        assert cloud.ok(*A, "server", "console-log", "ft-srvA") is not None
        assert [s["uuid"] for s in cloud.ok(*A, "server", "list")].count(server["uuid"]) == 1
    finally:
        for key in ("squatter", "server"):
            if key in made:
                cloud.ctl("server", "delete", made[key]["uuid"], "--wait")
        if "volume" in made:
            cloud.ctl("volume", "delete", made["volume"]["uuid"])
        if "network" in made:
            cloud.ctl("network", "delete", made["network"]["uuid"])
        cloud.ctl("flavor", "delete", "ft-huge")
        if "client" in made:
            from compute_driver.rpc import transport

            transport.cleanup()  # no consumer of this process outlives the test's vhost
