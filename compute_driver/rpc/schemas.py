"""JSON schemas of every RPC payload, and the check run on arrival.

Each RPC method takes keyword arguments only; the schema describes that
object. ``additionalProperties`` is false everywhere: an unknown field is
an error, not something silently dropped. Strings have bounded lengths so
that hostile payloads cannot make us store or log megabytes. Patterns end
in ``\\Z``, not ``$``: Python's ``re`` (which jsonschema uses) lets ``$``
match before a final newline, so ``"web-1\\n"`` would pass as a name.
"""

from __future__ import annotations

import re
import reprlib
from typing import Any

import jsonschema

from compute_driver import disk_image, exception, states

UUID = {
    "type": "string",
    "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\\Z",
}
#: Names of servers, flavors, images, hosts: printable, no path or XML metacharacters.
NAME = {
    "type": "string",
    "minLength": 1,
    "maxLength": 63,
    "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*\\Z",
}
HOST = {
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*\\Z",
}
NAME_OR_UUID = {
    "type": "string",
    "minLength": 1,
    "maxLength": 63,
    "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*\\Z",
}
PROJECT = {
    "type": "string",
    "minLength": 1,
    "maxLength": 64,
    "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*\\Z",
}
ABS_PATH = {"type": "string", "minLength": 2, "maxLength": 4096, "pattern": "^/[^\\x00]*\\Z"}
#: A file in the scheduler's import directory, named relative to it (the
#: scheduler refuses absolute names, '..' and symlinks with invalid_image).
IMPORT_NAME = {
    "type": "string",
    "minLength": 1,
    "maxLength": 1024,
    "pattern": "^[^\\x00-\\x1f\\x7f]*\\Z",
}
TIMESTAMP = {"type": "string", "maxLength": 40}
#: User data travels base64-encoded; 64 KiB of data is about 87,400 characters.
USER_DATA_B64 = {"type": "string", "maxLength": 87400, "pattern": "^[A-Za-z0-9+/=]*\\Z"}
#: Free text a person or a service wrote (reasons, descriptions): no C0 or
#: C1 control characters and no DEL, so that what is stored can neither
#: drive an operator's terminal (ESC, CSI, BEL) nor fake table rows or log
#: lines (CR, LF). :func:`free_text` makes a service's own text fit.
FREE_TEXT_PATTERN = "^[^\\x00-\\x1f\\x7f-\\x9f]*\\Z"
REASON = {"type": "string", "maxLength": 1024, "pattern": FREE_TEXT_PATTERN}
#: What went wrong with a server, as an agent reports it (hypervisor and
#: storage messages span lines); shown escaped, never raw.
FAULT = {"type": "string", "maxLength": 1024, "pattern": "^[^\\x00]*\\Z"}
SNAPSHOT_NAME = {
    "type": "string",
    "minLength": 1,
    "maxLength": 64,
    "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*\\Z",
}
SNAPSHOT_KIND = {"enum": ["internal", "external"]}
DESCRIPTION = {"type": "string", "maxLength": 255, "pattern": FREE_TEXT_PATTERN}
#: A kernel command line: no control characters (guest_properties.check_image
#: says so again for callers that skip the schemas).
CMDLINE = {"type": "string", "maxLength": 2047, "pattern": FREE_TEXT_PATTERN}
#: A string a hypervisor reports about itself (type, architecture, version).
HOST_FACT = {"type": "string", "maxLength": 64, "pattern": FREE_TEXT_PATTERN}
#: How a root disk is made from its image: a linked clone or a full copy.
ROOT_CLONE = {"enum": ["linked", "full"]}
POWER_STATE = {"enum": list(states.POWER_STATES)}
VOLUME_SIZE_GB = {"type": "integer", "minimum": 1, "maximum": 65536}
#: A volume as a backend names it (the scheduler uses the volume's UUID).
BACKEND_VOLUME_ID = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,127}\\Z"}
#: A disk's name in the guest: vdX (virtio), sdX (scsi, sata), hdX (ide).
TARGET_DEV = {"type": "string", "pattern": "^(vd|sd|hd)[a-z]{1,2}\\Z"}
#: The most ports a server may have: refused beyond it at create and at
#: attach, so every payload that lists a server's ports (build, hard
#: reboot, delete) can take them all.
MAX_PORTS = 16
#: The most data volumes a server may have attached, likewise.
MAX_VOLUMES = 24


#: Flavor extra specs and image properties: short keys, string values.
PROPERTIES = {
    "type": "object",
    "maxProperties": 64,
    "propertyNames": {"pattern": "^[a-z][a-z0-9_:.-]{0,63}\\Z"},
    "additionalProperties": {"type": "string", "maxLength": 255, "pattern": "^[^\\x00]*\\Z"},
}


def obj(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A closed object schema."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


FLAVOR = obj(
    {
        "name": NAME,
        "vcpus": {"type": "integer", "minimum": 1, "maximum": 256},
        "memory_mb": {"type": "integer", "minimum": 16, "maximum": 4 * 1024 * 1024},
        "root_gb": {"type": "integer", "minimum": 0, "maximum": 65536},
        "extra_specs": PROPERTIES,
    },
    ("name", "vcpus", "memory_mb", "root_gb"),
)

#: An image as the scheduler hands it to an agent. NOTE: no paths: the agent
#: finds the disk (and, with ``kernel``, the kernel and initrd) in its own
#: ``[image] store_path`` under the UUID, so no message names a file.
IMAGE = obj(
    {
        "uuid": UUID,
        "name": NAME,
        "disk_format": {"enum": ["qcow2", "raw"]},
        "virtual_size": {"type": "integer", "minimum": 0},
        "kernel": {"type": "boolean"},
        "cmdline": {"anyOf": [CMDLINE, {"type": "null"}]},
        "properties": PROPERTIES,
    },
    ("uuid", "name", "disk_format"),
)

#: A volume as the scheduler hands it to an agent: what the backend said of it.
VOLUME = obj(
    {
        "id": BACKEND_VOLUME_ID,
        "backend": NAME,
        "size_gb": VOLUME_SIZE_GB,
        "format": {"enum": ["qcow2", "raw"]},
        "location": {"type": "string", "maxLength": 1024, "pattern": "^[^\\x00]*\\Z"},
        "target_dev": TARGET_DEV,
    },
    ("id", "backend"),
)

NETWORK_TYPE = {"enum": ["flat", "vlan", "vxlan", "geneve"]}
IPV4 = {
    "type": "string",
    "maxLength": 15,
    "pattern": "^(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])){3}\\Z",
}
IPV4_CIDR = {"type": "string", "maxLength": 18, "pattern": "^[0-9.]{7,15}/[0-9]{1,2}\\Z"}
MAC = {"type": "string", "pattern": "^[0-9a-f]{2}(:[0-9a-f]{2}){5}\\Z"}
MTU = {"type": "integer", "minimum": 576, "maximum": 65535}

#: A network as the scheduler hands it to an agent.
NETWORK = obj(
    {
        "id": UUID,
        "name": NAME,
        "type": NETWORK_TYPE,
        "segment": {
            "anyOf": [{"type": "integer", "minimum": 1, "maximum": 2**24 - 1}, {"type": "null"}]
        },
        "physnet": {"anyOf": [NAME, {"type": "null"}]},
        "mtu": MTU,
        "revision": {"type": "integer", "minimum": 0},
    },
    ("id", "name", "type", "mtu"),
)

#: A port of an instance as the scheduler hands it to an agent.
PORT = obj(
    {
        "id": UUID,
        "network": NETWORK,
        "mac": MAC,
        "address": IPV4_CIDR,
        "gateway": {"anyOf": [IPV4, {"type": "null"}]},
    },
    ("id", "network", "mac", "address"),
)
PORTS = {"type": "array", "items": PORT, "maxItems": MAX_PORTS}

#: The instance as the scheduler hands it to an agent.
INSTANCE = obj(
    {
        "uuid": UUID,
        "name": NAME,
        "project": PROJECT,
        "flavor": FLAVOR,
        "image": IMAGE,
        "user_data": {"anyOf": [USER_DATA_B64, {"type": "null"}]},
        "root_clone": ROOT_CLONE,
        "root_backend": NAME,
        "boot_volume": VOLUME,
        "volumes": {"type": "array", "items": VOLUME, "maxItems": MAX_VOLUMES},
        "ports": PORTS,
        "created_at": TIMESTAMP,
    },
    ("uuid", "name", "project", "flavor", "image", "created_at"),
)

HOST_RESOURCES = obj(
    {
        "vcpus": {"type": "integer", "minimum": 0, "maximum": 65536},
        # NOTE: bounded so that every value fits a 64-bit SQL integer.
        "memory_mb": {"type": "integer", "minimum": 0, "maximum": 2**40},
        "disk_gb": {"type": "integer", "minimum": 0, "maximum": 2**40},
    },
    ("vcpus", "memory_mb", "disk_gb"),
)

HOST_CAPABILITIES = obj(
    {
        "virt_type": {**HOST_FACT, "maxLength": 32},
        "arch": {**HOST_FACT, "maxLength": 32},
        "hypervisor": HOST_FACT,
        "hypervisor_version": HOST_FACT,
        "network_plugins": {"type": "array", "items": NAME, "maxItems": 16},
        "storage_backends": {"type": "array", "items": NAME, "maxItems": 16},
        "shared_storage_backends": {"type": "array", "items": NAME, "maxItems": 16},
        "tunnel_ip": IPV4,
    }
)

#: The RPC context every request carries: who asks (see rpc/context.py).
#: NOTE: closed and bounded like a payload: a context of megabytes, or one
#: that smuggles other keys, is refused before any method runs.
REQUEST_ID = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9._:-]+\\Z"}
CONTEXT = obj(
    {
        "request_id": REQUEST_ID,
        "project": {"anyOf": [PROJECT, {"type": "null"}]},
        # NOTE: for the logs only; an e-mail address is a user name too.
        "user": {
            "anyOf": [
                {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 64,
                    "pattern": "^[A-Za-z0-9][A-Za-z0-9._@+-]*\\Z",
                },
                {"type": "null"},
            ]
        },
        "admin": {"type": "boolean"},
        # NOTE: oslo.messaging's own: the caller's timeout, added on receipt.
        "client_timeout": {
            "anyOf": [{"type": "number", "minimum": 0, "maximum": 86400}, {"type": "null"}]
        },
    }
)

INSTANCE_POWER = obj({"uuid": UUID, "power_state": POWER_STATE}, ("uuid", "power_state"))

#: The actions of ``server_action`` (the table is states.SERVER_ACTIONS).
SERVER_ACTION_NAMES = tuple(states.SERVER_ACTIONS)

#: Scheduler API (topic "scheduler"), version 1.0.
SCHEDULER_METHODS: dict[str, dict[str, Any]] = {
    "ping": obj({}),
    "create_server": obj(
        {
            "uuid": UUID,
            "name": NAME,
            "flavor": NAME_OR_UUID,
            "image": NAME_OR_UUID,
            "project": PROJECT,
            "host": HOST,
            "user_data": USER_DATA_B64,
            "root_clone": ROOT_CLONE,
            "root_backend": NAME,
            "boot_volume": NAME_OR_UUID,
            "networks": {"type": "array", "items": NAME_OR_UUID, "maxItems": MAX_PORTS},
            "availability_zone": NAME,
            "group": NAME_OR_UUID,
        },
        ("uuid", "name", "flavor", "image"),
    ),
    "list_servers": obj({"project": PROJECT, "host": HOST, "all_projects": {"type": "boolean"}}),
    "show_server": obj({"server": NAME_OR_UUID}, ("server",)),
    "delete_server": obj({"server": NAME_OR_UUID}, ("server",)),
    "server_console_log": obj(
        {"server": NAME_OR_UUID, "lines": {"type": "integer", "minimum": 1, "maximum": 100000}},
        ("server",),
    ),
    "server_action": obj(
        {"server": NAME_OR_UUID, "action": {"enum": sorted(SERVER_ACTION_NAMES)}},
        ("server", "action"),
    ),
    "set_host_enabled": obj(
        {
            "host": HOST,
            "enabled": {"type": "boolean"},
            "reason": REASON,
        },
        ("host", "enabled"),
    ),
    "create_server_snapshot": obj(
        {
            "server": NAME_OR_UUID,
            "name": SNAPSHOT_NAME,
            "kind": SNAPSHOT_KIND,
            "quiesce": {"type": "boolean"},
            "description": DESCRIPTION,
        },
        ("server", "name"),
    ),
    "list_server_snapshots": obj({"server": NAME_OR_UUID}, ("server",)),
    "revert_server_snapshot": obj(
        {"server": NAME_OR_UUID, "name": SNAPSHOT_NAME}, ("server", "name")
    ),
    "delete_server_snapshot": obj(
        {"server": NAME_OR_UUID, "name": SNAPSHOT_NAME}, ("server", "name")
    ),
    "server_diagnostics": obj({"server": NAME_OR_UUID}, ("server",)),
    "create_volume": obj(
        {
            "uuid": UUID,
            "name": NAME,
            "size_gb": VOLUME_SIZE_GB,
            "backend": NAME,
            "project": PROJECT,
            "image": NAME_OR_UUID,
            "host": HOST,
        },
        ("uuid", "name", "size_gb", "backend"),
    ),
    "list_volumes": obj({"project": PROJECT, "all_projects": {"type": "boolean"}}),
    "show_volume": obj({"volume": NAME_OR_UUID}, ("volume",)),
    "delete_volume": obj({"volume": NAME_OR_UUID}, ("volume",)),
    "attach_volume": obj({"server": NAME_OR_UUID, "volume": NAME_OR_UUID}, ("server", "volume")),
    "detach_volume": obj({"server": NAME_OR_UUID, "volume": NAME_OR_UUID}, ("server", "volume")),
    "resize_volume": obj(
        {"volume": NAME_OR_UUID, "size_gb": VOLUME_SIZE_GB}, ("volume", "size_gb")
    ),
    "volume_snapshot": obj(
        {
            "volume": NAME_OR_UUID,
            "action": {"enum": ["create", "list", "revert", "delete"]},
            "name": SNAPSHOT_NAME,
        },
        ("volume", "action"),
    ),
    "create_network": obj(
        {
            "uuid": UUID,
            "name": NAME,
            "type": NETWORK_TYPE,
            "cidr": IPV4_CIDR,
            "project": PROJECT,
            "segment": {"type": "integer", "minimum": 0, "maximum": 2**24 - 1},
            "physnet": NAME,
            "gateway": IPV4,
            "mtu": MTU,
        },
        ("uuid", "name", "type", "cidr"),
    ),
    "list_networks": obj({"project": PROJECT, "all_projects": {"type": "boolean"}}),
    "attach_interface": obj(
        {"server": NAME_OR_UUID, "network": NAME_OR_UUID}, ("server", "network")
    ),
    "detach_interface": obj({"server": NAME_OR_UUID, "port": UUID}, ("server", "port")),
    "list_interfaces": obj({"server": NAME_OR_UUID}, ("server",)),
    "show_network": obj({"network": NAME_OR_UUID}, ("network",)),
    "delete_network": obj({"network": NAME_OR_UUID}, ("network",)),
    "create_aggregate": obj({"name": NAME, "availability_zone": NAME}, ("name",)),
    "set_aggregate": obj(
        {
            "aggregate": NAME,
            "availability_zone": NAME,
            "no_availability_zone": {"type": "boolean"},
            "properties": PROPERTIES,
        },
        ("aggregate",),
    ),
    "add_aggregate_host": obj({"aggregate": NAME, "host": HOST}, ("aggregate", "host")),
    "remove_aggregate_host": obj({"aggregate": NAME, "host": HOST}, ("aggregate", "host")),
    "list_aggregates": obj({}),
    "show_aggregate": obj({"aggregate": NAME}, ("aggregate",)),
    "delete_aggregate": obj({"aggregate": NAME}, ("aggregate",)),
    "create_server_group": obj(
        {
            "uuid": UUID,
            "name": NAME,
            "policy": {
                "enum": ["affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity"]
            },
            "project": PROJECT,
        },
        ("uuid", "name", "policy"),
    ),
    "list_server_groups": obj({"project": PROJECT, "all_projects": {"type": "boolean"}}),
    "show_server_group": obj({"group": NAME_OR_UUID}, ("group",)),
    "delete_server_group": obj({"group": NAME_OR_UUID}, ("group",)),
    "list_hosts": obj({}),
    "show_host": obj({"host": HOST}, ("host",)),
    "list_flavors": obj({}),
    "create_flavor": FLAVOR,
    "delete_flavor": obj({"flavor": NAME}, ("flavor",)),
    "import_image": obj(
        {
            "uuid": UUID,
            "name": NAME,
            "file": IMPORT_NAME,
            "kernel": IMPORT_NAME,
            "initrd": IMPORT_NAME,
            "disk_format": {"enum": list(disk_image.KNOWN_FORMATS)},
            "cmdline": CMDLINE,
            "properties": PROPERTIES,
        },
        ("uuid", "name", "file"),
    ),
    "create_image_from_server": obj(
        {"uuid": UUID, "name": NAME, "server": NAME_OR_UUID}, ("uuid", "name", "server")
    ),
    "list_images": obj({}),
    "show_image": obj({"image": NAME_OR_UUID}, ("image",)),
    "delete_image": obj({"image": NAME_OR_UUID}, ("image",)),
}

#: Every report's proof that its host sent it (see compute_driver/rpc/report_signing.py).
SIGNATURE = obj(
    {
        "timestamp": {"type": "integer", "minimum": 0, "maximum": 2**40},
        "hmac": {"type": "string", "pattern": "^[0-9a-f]{64}\\Z"},
    },
    ("timestamp", "hmac"),
)


def _report(properties: dict[str, Any], required: tuple[str, ...]) -> dict[str, Any]:
    """A report method's schema: its fields and the optional ``signature``."""
    return obj({**properties, "signature": SIGNATURE}, required)


#: Agent reports API (topic "agent_reports", served by the scheduler), version 1.0.
#: Only agents publish here (the broker's topic permissions say so).
REPORT_METHODS: dict[str, dict[str, Any]] = {
    "report_host": _report(
        {
            "host": HOST,
            "resources": HOST_RESOURCES,
            "capabilities": HOST_CAPABILITIES,
            "instances": {"type": "array", "items": INSTANCE_POWER, "maxItems": 100000},
        },
        ("host", "resources", "capabilities", "instances"),
    ),
    "instance_update": _report(
        {
            "host": HOST,
            "uuid": UUID,
            "vm_state": {"enum": list(states.VM_STATES)},
            "power_state": POWER_STATE,
            "fault": FAULT,
        },
        ("host", "uuid", "vm_state"),
    ),
    "set_host_enabled": _report(
        {"host": HOST, "enabled": {"type": "boolean"}, "reason": REASON},
        ("host", "enabled", "reason"),
    ),
    "instance_deleted": _report({"host": HOST, "uuid": UUID}, ("host", "uuid")),
    "instance_power_changed": _report(
        {"host": HOST, "uuid": UUID, "power_state": POWER_STATE}, ("host", "uuid", "power_state")
    ),
    "host_instances": _report({"host": HOST}, ("host",)),
    "host_networks": _report({"host": HOST}, ("host",)),
}

#: Scheduler methods sent as casts (no answer); all others are calls.
SCHEDULER_CASTS: frozenset[str] = frozenset()

#: Report methods sent as casts (no answer); all others are calls.
REPORT_CASTS = frozenset(
    {
        "report_host",
        "instance_update",
        "set_host_enabled",
        "instance_deleted",
        "instance_power_changed",
    }
)

#: Compute API (topic "compute", server = host), version 1.0.
COMPUTE_METHODS: dict[str, dict[str, Any]] = {
    "ping": obj({}),
    "build_instance": obj({"instance": INSTANCE}, ("instance",)),
    "delete_instance": obj({"uuid": UUID, "ports": PORTS}, ("uuid",)),
    "attach_interface": obj({"uuid": UUID, "port": PORT}, ("uuid", "port")),
    "detach_interface": obj({"uuid": UUID, "port": PORT}, ("uuid", "port")),
    "update_topology": obj(
        {
            "network": NETWORK,
            "remote_endpoints": {"type": "array", "items": IPV4, "maxItems": 4096},
        },
        ("network", "remote_endpoints"),
    ),
    "get_console_output": obj(
        {"uuid": UUID, "lines": {"type": "integer", "minimum": 1, "maximum": 100000}},
        ("uuid",),
    ),
    "get_instance_info": obj({"uuid": UUID}, ("uuid",)),
    "get_diagnostics": obj({"uuid": UUID}, ("uuid",)),
    "export_root_disk": obj({"uuid": UUID, "image": UUID}, ("uuid", "image")),
    "stop_instance": obj(
        {"uuid": UUID, "timeout": {"type": "integer", "minimum": 0, "maximum": 3600}}, ("uuid",)
    ),
    "start_instance": obj({"uuid": UUID}, ("uuid",)),
    "reboot_instance": obj(
        {"uuid": UUID, "hard": {"type": "boolean"}, "instance": INSTANCE}, ("uuid", "hard")
    ),
    "pause_instance": obj({"uuid": UUID}, ("uuid",)),
    "unpause_instance": obj({"uuid": UUID}, ("uuid",)),
    "suspend_instance": obj({"uuid": UUID}, ("uuid",)),
    "resume_instance": obj({"uuid": UUID}, ("uuid",)),
    "snapshot_create_instance": obj(
        {
            "uuid": UUID,
            "name": SNAPSHOT_NAME,
            "kind": SNAPSHOT_KIND,
            "quiesce": {"type": "boolean"},
            "description": DESCRIPTION,
        },
        ("uuid", "name", "kind"),
    ),
    "snapshot_revert_instance": obj({"uuid": UUID, "name": SNAPSHOT_NAME}, ("uuid", "name")),
    "snapshot_delete_instance": obj({"uuid": UUID, "name": SNAPSHOT_NAME}, ("uuid", "name")),
    "list_instance_snapshots": obj({"uuid": UUID}, ("uuid",)),
    "create_volume": obj(
        {
            "volume": obj(
                {"id": BACKEND_VOLUME_ID, "backend": NAME, "size_gb": VOLUME_SIZE_GB},
                ("id", "backend", "size_gb"),
            ),
            "image": IMAGE,
        },
        ("volume",),
    ),
    "delete_volume": obj({"volume": VOLUME}, ("volume",)),
    "resize_volume": obj(
        {"volume": VOLUME, "size_gb": VOLUME_SIZE_GB, "uuid": UUID}, ("volume", "size_gb")
    ),
    "attach_volume": obj({"uuid": UUID, "volume": VOLUME}, ("uuid", "volume")),
    "detach_volume": obj({"uuid": UUID, "volume": VOLUME}, ("uuid", "volume")),
    "volume_snapshot": obj(
        {
            "volume": VOLUME,
            "action": {"enum": ["create", "list", "revert", "delete"]},
            "name": SNAPSHOT_NAME,
        },
        ("volume", "action"),
    ),
}


_CONTROL = re.compile("[\\x00-\\x1f\\x7f-\\x9f]+")


def free_text(text: str, limit: int = 1024) -> str:
    """``text`` as a :data:`REASON` a service may send: control runs become one space.

    NOTE: for the services' own texts (a hypervisor's error message spans
    lines); what a person typed is refused instead, so they see why.
    """
    return _CONTROL.sub(" ", text)[:limit]


# NOTE: every request to an agent may carry the scheduler's signature
# (compute_driver/rpc/report_signing.py); an agent with a key requires it.
for _schema in COMPUTE_METHODS.values():
    _schema["properties"]["signature"] = SIGNATURE

# NOTE: and every public scheduler call may carry a client's signature, over
# its context too (report_signing.sign_call); a scheduler with a secret requires it.
# A copy of each: some are shared (create_flavor's is the FLAVOR inside
# build_instance's instance), and a flavor has no signature.
for _name, _schema in list(SCHEDULER_METHODS.items()):
    SCHEDULER_METHODS[_name] = {
        **_schema,
        "properties": {**_schema["properties"], "signature": SIGNATURE},
    }

#: Longest reason an invalid_payload error carries.
MAX_REASON = 500

_SHORT = reprlib.Repr()
_SHORT.maxstring = 60
_SHORT.maxother = 60

_validators: dict[tuple[str, str], jsonschema.Draft202012Validator] = {}


def _validator(api: str, method: str, schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    # NOTE: building a validator costs far more than using one; RPC methods
    # are few and their schemas fixed, so each is built once.
    key = (api, method)
    validator = _validators.get(key)
    if validator is None:
        validator = _validators[key] = jsonschema.Draft202012Validator(schema)
    return validator


#: Compute methods sent as casts (no answer); all others are calls.
COMPUTE_CASTS = frozenset(
    {
        "build_instance",
        "delete_instance",
        "update_topology",
        "stop_instance",
        "start_instance",
        "reboot_instance",
        "pause_instance",
        "unpause_instance",
        "suspend_instance",
        "resume_instance",
        "snapshot_create_instance",
        "snapshot_revert_instance",
        "snapshot_delete_instance",
    }
)


def validate(api: str, method: str, schema: dict[str, Any], payload: dict[str, Any]) -> None:
    """Check ``payload`` against ``schema``.

    :raises InvalidPayload: naming the method and the first offending field.
    """
    validator = _validator(api, method, schema)
    if validator.is_valid(payload):
        return
    error = jsonschema.exceptions.best_match(validator.iter_errors(payload))
    if error is None:
        return
    where = "/".join(str(p) for p in error.absolute_path) or "(payload)"
    message = error.message
    if len(repr(error.instance)) > 60:
        # NOTE: jsonschema's message starts with the value; a huge value
        # would push the reason out of any sane message length.
        message = message.replace(repr(error.instance), _SHORT.repr(error.instance))
    if len(message) > MAX_REASON:
        # NOTE: unknown keys are listed whole; thousands of them (or one huge
        # one) must not make a message of megabytes, logged on every refusal.
        message = message[:MAX_REASON] + "... (%d characters)" % len(message)
    raise exception.InvalidPayload(
        method="%s.%s" % (api, method), reason="%s: %s" % (where, message)
    )
