"""RPC payload schemas refuse what a hostile or buggy caller sends, naming method and field."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compute_driver import exception
from compute_driver.rpc import schemas

UUID = "0b0c3a4e-1b6e-4a55-9d0e-2f9f3c1d7a10"
IMAGE_UUID = "9e8d7c6b-5a49-4382-b1c0-d9e8f7a6b5c4"

FLAVOR = {"name": "m1.tiny", "vcpus": 1, "memory_mb": 512, "root_gb": 1}
VOLUME_UUID = "3c2b1a09-8f7e-4d6c-9b5a-493827160504"
VOLUME = {
    "id": VOLUME_UUID,
    "backend": "rbd",
    "size_gb": 10,
    "format": "raw",
    "location": "volumes/%s" % VOLUME_UUID,
    "target_dev": "vdb",
}
NETWORK = {
    "id": VOLUME_UUID,
    "name": "net-1",
    "type": "vlan",
    "segment": 100,
    "physnet": "physnet1",
    "mtu": 1500,
}
PORT = {
    "id": UUID,
    "network": NETWORK,
    "mac": "fa:16:3e:00:00:01",
    "address": "10.0.0.2/24",
    "gateway": "10.0.0.1",
}
IMAGE = {
    "uuid": IMAGE_UUID,
    "name": "cirros-0.6",
    "disk_format": "qcow2",
    "virtual_size": 117440512,
    "kernel": True,
    "cmdline": "console=ttyS0 root=/dev/vda",
}

SIGNATURE = {"timestamp": 1700000000, "hmac": "0" * 64}

#: One payload per method with every field set (optional ones included).
FULL: dict[str, dict[str, dict[str, Any]]] = {
    "scheduler": {
        "ping": {},
        "create_server": {
            "uuid": UUID,
            "name": "web-1",
            "flavor": "m1.tiny",
            "image": "cirros",
            "project": "demo",
            "host": "compute-1.example",
            "user_data": "aGVsbG8K",
            "root_clone": "full",
            "root_backend": "rbd",
            "boot_volume": "boot-1",
            "networks": ["net-1", "net-2"],
            "availability_zone": "az1",
            "group": "web",
        },
        "create_volume": {
            "uuid": VOLUME_UUID,
            "name": "data-1",
            "size_gb": 10,
            "backend": "nfs",
            "project": "demo",
            "image": "cirros",
            "host": "compute-1",
        },
        "create_network": {
            "uuid": VOLUME_UUID,
            "name": "net-1",
            "type": "vlan",
            "cidr": "10.0.0.0/24",
            "project": "demo",
            "segment": 100,
            "physnet": "physnet1",
            "gateway": "10.0.0.1",
            "mtu": 1500,
        },
        "list_networks": {"project": "demo"},
        "create_aggregate": {"name": "rack1", "availability_zone": "az1"},
        "set_aggregate": {
            "aggregate": "rack1",
            "availability_zone": "az1",
            "no_availability_zone": False,
            "properties": {"ssd": "true"},
        },
        "add_aggregate_host": {"aggregate": "rack1", "host": "compute-1"},
        "remove_aggregate_host": {"aggregate": "rack1", "host": "compute-1"},
        "list_aggregates": {},
        "show_aggregate": {"aggregate": "rack1"},
        "delete_aggregate": {"aggregate": "rack1"},
        "create_server_group": {
            "uuid": UUID,
            "name": "web",
            "policy": "soft-anti-affinity",
            "project": "demo",
        },
        "list_server_groups": {"project": "demo"},
        "show_server_group": {"group": "web"},
        "delete_server_group": {"group": "web"},
        "attach_interface": {"server": "web-1", "network": "net-1"},
        "detach_interface": {"server": "web-1", "port": UUID},
        "list_interfaces": {"server": "web-1"},
        "show_network": {"network": "net-1"},
        "delete_network": {"network": "net-1"},
        "list_volumes": {"project": "demo"},
        "show_volume": {"volume": "data-1"},
        "delete_volume": {"volume": VOLUME_UUID},
        "attach_volume": {"server": "web-1", "volume": "data-1"},
        "detach_volume": {"server": "web-1", "volume": "data-1"},
        "resize_volume": {"volume": "data-1", "size_gb": 20},
        "volume_snapshot": {"volume": "data-1", "action": "create", "name": "s1"},
        "list_servers": {"project": "demo", "host": "compute-1"},
        "show_server": {"server": "web-1"},
        "delete_server": {"server": UUID},
        "server_console_log": {"server": "web-1", "lines": 10},
        "server_action": {"server": "web-1", "action": "hard-reboot"},
        "create_server_snapshot": {
            "server": "web-1",
            "name": "before-upgrade",
            "kind": "external",
            "quiesce": True,
            "description": "pre 2.0",
        },
        "list_server_snapshots": {"server": "web-1"},
        "server_diagnostics": {"server": "web-1"},
        "create_image_from_server": {"uuid": IMAGE_UUID, "name": "golden", "server": "web-1"},
        "revert_server_snapshot": {"server": "web-1", "name": "before-upgrade"},
        "delete_server_snapshot": {"server": "web-1", "name": "before-upgrade"},
        "set_host_enabled": {"host": "compute-1", "enabled": False, "reason": "maintenance"},
        "list_hosts": {},
        "show_host": {"host": "compute-1"},
        "list_flavors": {},
        "create_flavor": dict(FLAVOR),
        "delete_flavor": {"flavor": "m1.tiny"},
        "import_image": {
            "uuid": IMAGE_UUID,
            "name": "cirros",
            "file": "cirros/disk.qcow2",
            "kernel": "cirros/vmlinuz",
            "initrd": "cirros/initrd",
            "disk_format": "qcow2",
            "cmdline": "console=ttyS0",
        },
        "list_images": {},
        "show_image": {"image": "cirros"},
        "delete_image": {"image": IMAGE_UUID},
    },
    "agent_reports": {
        "report_host": {
            "host": "compute-1",
            "resources": {"vcpus": 8, "memory_mb": 16384, "disk_gb": 200},
            "capabilities": {
                "virt_type": "kvm",
                "arch": "x86_64",
                "hypervisor": "QEMU",
                "hypervisor_version": "8.2.0",
                "network_plugins": ["noop"],
                "storage_backends": ["dir", "rbd"],
                "shared_storage_backends": ["rbd"],
                "tunnel_ip": "192.0.2.10",
            },
            "instances": [{"uuid": UUID, "power_state": "running"}],
            "signature": SIGNATURE,
        },
        "instance_update": {
            "host": "compute-1",
            "uuid": UUID,
            "vm_state": "error",
            "power_state": "shutdown",
            "fault": "disk full",
            "signature": SIGNATURE,
        },
        "set_host_enabled": {
            "host": "compute-1",
            "enabled": False,
            "reason": "hypervisor: gone",
            "signature": SIGNATURE,
        },
        "instance_deleted": {"host": "compute-1", "uuid": UUID, "signature": SIGNATURE},
        "instance_power_changed": {
            "host": "compute-1",
            "uuid": UUID,
            "power_state": "shutdown",
            "signature": SIGNATURE,
        },
        "host_instances": {"host": "compute-1", "signature": SIGNATURE},
        "host_networks": {"host": "compute-1", "signature": SIGNATURE},
    },
    "compute": {
        "ping": {},
        "build_instance": {
            "instance": {
                "uuid": UUID,
                "name": "web-1",
                "project": "demo",
                "flavor": dict(FLAVOR),
                "image": dict(IMAGE),
                "user_data": "aGVsbG8K",
                "root_clone": "linked",
                "root_backend": "rbd",
                "boot_volume": dict(VOLUME, target_dev="vda"),
                "volumes": [dict(VOLUME)],
                "ports": [dict(PORT)],
                "created_at": "2026-01-02T03:04:05Z",
            }
        },
        "delete_instance": {"uuid": UUID, "ports": [dict(PORT)]},
        "update_topology": {"network": dict(NETWORK), "remote_endpoints": ["192.0.2.11"]},
        "attach_interface": {"uuid": UUID, "port": dict(PORT)},
        "detach_interface": {"uuid": UUID, "port": dict(PORT)},
        "get_console_output": {"uuid": UUID, "lines": 100},
        "get_instance_info": {"uuid": UUID},
        "stop_instance": {"uuid": UUID, "timeout": 30},
        "start_instance": {"uuid": UUID},
        "reboot_instance": {"uuid": UUID, "hard": False},
        "pause_instance": {"uuid": UUID},
        "unpause_instance": {"uuid": UUID},
        "suspend_instance": {"uuid": UUID},
        "resume_instance": {"uuid": UUID},
        "snapshot_create_instance": {
            "uuid": UUID,
            "name": "s1",
            "kind": "internal",
            "quiesce": False,
            "description": "",
        },
        "snapshot_revert_instance": {"uuid": UUID, "name": "s1"},
        "snapshot_delete_instance": {"uuid": UUID, "name": "s1"},
        "list_instance_snapshots": {"uuid": UUID},
        "get_diagnostics": {"uuid": UUID},
        "export_root_disk": {"uuid": UUID, "image": IMAGE_UUID},
        "create_volume": {
            "volume": {"id": VOLUME_UUID, "backend": "dir", "size_gb": 1},
            "image": dict(IMAGE),
        },
        "delete_volume": {"volume": dict(VOLUME)},
        "resize_volume": {"volume": dict(VOLUME), "size_gb": 20, "uuid": UUID},
        "attach_volume": {"uuid": UUID, "volume": dict(VOLUME)},
        "detach_volume": {"uuid": UUID, "volume": dict(VOLUME)},
        "volume_snapshot": {"volume": dict(VOLUME), "action": "revert", "name": "s1"},
    },
}

METHODS = {
    "scheduler": schemas.SCHEDULER_METHODS,
    "agent_reports": schemas.REPORT_METHODS,
    "compute": schemas.COMPUTE_METHODS,
}
ALL = [(api, method) for api, methods in METHODS.items() for method in methods]

NAME_PATTERN = schemas.NAME["pattern"]
BAD_NAMES = [
    "a/b",
    "..",
    "../etc/passwd",
    "a\x00b",
    "a<b",
    "a&b",
    "<x>",
    "",
    " a",
    ".hidden",
    "-rf",
    "a b",
    "a\nb",
    "caf\u00e9",
]
BAD_PATHS = ["relative/disk", "/a\x00b", "", "/"]


def _ids(case: tuple) -> str:
    return ".".join(str(part) for part in case)


def _validate(api: str, method: str, payload: dict[str, Any]) -> None:
    schemas.validate(api, method, METHODS[api][method], payload)


def _refused(api: str, method: str, payload: dict[str, Any], *mentions: str) -> str:
    with pytest.raises(exception.InvalidPayload) as exc:
        _validate(api, method, payload)
    message = exc.value.message
    assert "%s.%s" % (api, method) in message, message
    for text in mentions:
        assert text in message, (text, message)
    assert exc.value.code == "invalid_payload"
    return message


# --- walking a schema beside a valid payload ---------------------------------------


def _branch(schema: dict[str, Any]) -> dict[str, Any]:
    """The non-null branch of an ``anyOf: [X, null]``."""
    if "anyOf" in schema:
        return next(s for s in schema["anyOf"] if s.get("type") != "null")
    return schema


def _walk(
    schema: dict[str, Any], value: Any, path: tuple = ()
) -> Iterator[tuple[tuple, dict, Any]]:
    """(path, schema, value) of every node of ``value``, objects and arrays included."""
    schema = _branch(schema)
    yield path, schema, value
    if schema.get("type") == "object":
        for key, sub in schema.get("properties", {}).items():  # maps (PROPERTIES) have none
            if key in value:
                yield from _walk(sub, value[key], path + (key,))
    elif schema.get("type") == "array":
        for i, item in enumerate(value):
            yield from _walk(schema["items"], item, path + (i,))


def _replace(payload: dict[str, Any], path: tuple, new: Any) -> dict[str, Any]:
    payload = copy.deepcopy(payload)
    node = payload
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = new
    return payload


def _nodes(kind: str) -> list[tuple]:
    cases = []
    for api, method in ALL:
        for path, schema, value in _walk(METHODS[api][method], FULL[api][method]):
            # NOTE: maps (PROPERTIES) are open by design: only records are closed.
            if kind == "object" and schema.get("type") == "object" and "properties" in schema:
                cases.append((api, method, path, schema, value))
            elif kind == "leaf" and path and schema.get("type") not in ("object", "array"):
                cases.append((api, method, path, schema, value))
            elif kind == "field" and path and not isinstance(path[-1], int):
                cases.append((api, method, path, schema, value))
    return cases


def _case_id(case: tuple) -> str:
    api, method, path = case[:3]
    return "%s.%s:%s" % (api, method, "/".join(str(p) for p in path) or "(payload)")


def _where(path: tuple) -> str:
    return "/".join(str(p) for p in path)


# --- the schemas themselves --------------------------------------------------------


def test_every_method_has_an_example():
    assert {api: sorted(methods) for api, methods in METHODS.items()} == {
        api: sorted(FULL[api]) for api in FULL
    }


@pytest.mark.parametrize(("api", "method"), ALL, ids=_ids)
def test_schema_is_valid_draft_2020_12(api, method):
    jsonschema.Draft202012Validator.check_schema(METHODS[api][method])


@pytest.mark.parametrize(("api", "method"), ALL, ids=_ids)
def test_full_and_minimal_payloads_pass(api, method):
    schema = METHODS[api][method]
    _validate(api, method, FULL[api][method])
    minimal = {k: v for k, v in FULL[api][method].items() if k in schema["required"]}
    _validate(api, method, minimal)


@pytest.mark.parametrize("case", _nodes("object"), ids=_case_id)
def test_every_object_is_closed(case):
    api, method, path, schema, _value = case
    assert schema.get("additionalProperties") is False


# --- what is refused -----------------------------------------------------------------


@pytest.mark.parametrize("case", _nodes("object"), ids=_case_id)
def test_unknown_field_is_refused(case):
    api, method, path, _schema, value = case
    widened = dict(value, zz_unknown=1)
    payload = _replace(FULL[api][method], path, widened) if path else widened
    _refused(api, method, payload, "'zz_unknown'", _where(path) or "(payload)")


@pytest.mark.parametrize(
    ("api", "method"), [c for c in ALL if METHODS[c[0]][c[1]]["required"]], ids=_ids
)
def test_missing_required_field_is_refused(api, method):
    field = METHODS[api][method]["required"][0]
    payload = {k: v for k, v in FULL[api][method].items() if k != field}
    _refused(api, method, payload, "'%s'" % field)


def _wrong_type(schema: dict[str, Any]) -> list[Any]:
    kind = schema.get("type")
    if kind == "string":
        return [12345, None, ["x"]]
    if kind == "integer":
        return ["1", 1.5, True, None]
    if kind == "array":
        return ["noop", {"0": "x"}]
    if kind == "object":
        return ["{}", []]
    return [12345, "no-such-value"]  # enums


@pytest.mark.parametrize("case", _nodes("field"), ids=_case_id)
def test_wrong_type_is_refused(case):
    api, method, path, schema, _value = case
    for wrong in _wrong_type(schema):
        if "anyOf" in _parent_schema(api, method, path) and wrong is None:
            continue  # null is allowed there
        _refused(api, method, _replace(FULL[api][method], path, wrong), _where(path))


def _parent_schema(api: str, method: str, path: tuple) -> dict[str, Any]:
    """The schema of ``path`` as written (before taking an anyOf branch)."""
    schema = METHODS[api][method]
    for key in path:
        schema = _branch(schema)
        schema = schema["items"] if isinstance(key, int) else schema["properties"][key]
    return schema


@pytest.mark.parametrize("case", [c for c in _nodes("leaf") if "maxLength" in c[3]], ids=_case_id)
def test_too_long_string_is_refused(case):
    api, method, path, schema, value = case
    too_long = value + "a" * (schema["maxLength"] + 1 - len(value))
    _refused(api, method, _replace(FULL[api][method], path, too_long), _where(path))


@pytest.mark.parametrize(
    ("api", "method", "field", "length"),
    [("scheduler", "show_host", "host", 256), ("agent_reports", "instance_update", "fault", 1025)],
)
def test_too_long_string_message_says_why(api, method, field, length):
    payload = dict(FULL[api][method], **{field: "a" * length})
    _refused(api, method, payload, field + ": ", "too long")


@pytest.mark.parametrize(
    "case", [c for c in _nodes("leaf") if c[3].get("pattern") == NAME_PATTERN], ids=_case_id
)
def test_unsafe_name_is_refused(case):
    api, method, path, _schema, _value = case
    for bad in BAD_NAMES:
        _refused(api, method, _replace(FULL[api][method], path, bad), _where(path))


@pytest.mark.parametrize(
    "case", [c for c in _nodes("leaf") if c[3] is schemas.ABS_PATH], ids=_case_id
)
def test_relative_or_nul_path_is_refused(case):
    api, method, path, _schema, _value = case
    for bad in BAD_PATHS:
        _refused(api, method, _replace(FULL[api][method], path, bad), _where(path))


@pytest.mark.parametrize(
    "case", [c for c in _nodes("leaf") if c[3] is schemas.CMDLINE], ids=_case_id
)
def test_cmdline_with_nul_or_newline_is_refused(case):
    api, method, path, _schema, _value = case
    for bad in ["console=ttyS0\x00init=/bin/sh", "console=ttyS0\ninit=/bin/sh"]:
        _refused(api, method, _replace(FULL[api][method], path, bad), _where(path))


#: Control characters that drive a terminal or fake a line: ESC (CSI, OSC),
#: BEL, CR, LF, DEL, and the one-character C1 CSI.
CONTROLS = ["a\x1b[2Jb", "a\x1b]0;t\x07", "a\nb", "a\rb", "a\x7fb", "a\x9b31mb", "a\tb"]
#: Free text typed by people, by name: issue 12 item 7 (these must stay covered).
FREE_TEXT_FIELDS = [
    ("scheduler", "set_host_enabled", ("reason",)),
    ("scheduler", "create_server_snapshot", ("description",)),
    ("compute", "snapshot_create_instance", ("description",)),
]


@pytest.mark.parametrize(("api", "method", "path"), FREE_TEXT_FIELDS)
def test_free_text_with_control_characters_is_refused(api, method, path):
    good = _replace(FULL[api][method], path, "disk swap, back at 14:00 (ticket #42) é")
    _validate(api, method, good)
    for bad in CONTROLS:
        _refused(api, method, _replace(FULL[api][method], path, bad), _where(path))


@pytest.mark.parametrize(
    "case",
    [c for c in _nodes("leaf") if c[3].get("pattern") == schemas.FREE_TEXT_PATTERN],
    ids=_case_id,
)
def test_every_free_text_field_refuses_control_characters(case):
    api, method, path, _schema, _value = case
    for bad in CONTROLS:
        _refused(api, method, _replace(FULL[api][method], path, bad), _where(path))


def test_a_fault_may_span_lines():
    """An agent's fault is a hypervisor's message, often several lines: refusing it
    would lose the report that a build failed (it is escaped when shown)."""
    tables = [getattr(schemas, n, {}) for n in ("SCHEDULER_METHODS", "REPORT_METHODS")]
    schema = next(t["instance_update"] for t in tables if "instance_update" in t)
    fault = "internal error: qemu unexpectedly closed the monitor:\n2026-12-07 char device"
    payload = {"host": "compute-1", "uuid": UUID, "vm_state": "error", "fault": fault}
    schemas.validate("test", "instance_update_fault", schema, payload)


def test_free_text_makes_a_service_message_fit():
    text = schemas.free_text("internal error: qemu died\r\n\x1b[1mcore\x9b dumped\n" * 100)
    assert text.startswith("internal error: qemu died [1mcore  dumped internal error")
    assert len(text) == 1024
    assert re.fullmatch(schemas.FREE_TEXT_PATTERN, text)


@pytest.mark.parametrize("case", [c for c in _nodes("leaf") if "minimum" in c[3]], ids=_case_id)
def test_negative_or_below_minimum_number_is_refused(case):
    api, method, path, schema, _value = case
    for bad in sorted({-1, schema["minimum"] - 1}):
        _refused(api, method, _replace(FULL[api][method], path, bad), _where(path))


@pytest.mark.parametrize("case", [c for c in _nodes("leaf") if "maximum" in c[3]], ids=_case_id)
def test_above_maximum_number_is_refused(case):
    api, method, path, schema, _value = case
    _refused(api, method, _replace(FULL[api][method], path, schema["maximum"] + 1), _where(path))


@pytest.mark.parametrize("case", [c for c in _nodes("leaf") if c[3] is schemas.UUID], ids=_case_id)
def test_malformed_uuid_is_refused(case):
    api, method, path, _schema, value = case
    for bad in [value.upper(), value.replace("-", ""), value + "0", "../" + value[3:], ""]:
        _refused(api, method, _replace(FULL[api][method], path, bad), _where(path))


def test_long_value_is_cut_in_the_message():
    payload = dict(FULL["scheduler"]["create_server"], user_data="A" * 100000)
    message = _refused("scheduler", "create_server", payload, "user_data")
    assert len(message) < 400


# --- anything at all -----------------------------------------------------------------

JSON_SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=80)
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
FIELD_NAMES = sorted(
    {
        key
        for api, method in ALL
        for path, _s, _v in _walk(METHODS[api][method], FULL[api][method])
        for key in path
        if isinstance(key, str)
    }
)
KEYS = st.sampled_from(FIELD_NAMES) | st.text(max_size=12)


@st.composite
def payloads(draw: st.DrawFn) -> tuple[str, str, dict[str, Any]]:
    api, method = draw(st.sampled_from(ALL))
    start: dict[str, Any] = copy.deepcopy(FULL[api][method]) if draw(st.booleans()) else {}
    start.update(draw(st.dictionaries(KEYS, JSON, max_size=6)))
    return api, method, start


@settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(payloads())
def test_random_payload_passes_or_raises_invalid_payload(case):
    api, method, payload = case
    try:
        _validate(api, method, payload)
    except exception.InvalidPayload as exc:
        assert "%s.%s" % (api, method) in exc.message
        assert "\n" not in exc.message.split(": ", 1)[0]
