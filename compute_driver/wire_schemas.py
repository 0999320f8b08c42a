"""JSON schemas of what crosses the bus, and the check run on it.

The fields and objects every RPC payload is made of (names, UUIDs, a
flavor, an image, a volume, a network, a port, a server, a host report,
the request context); ``compute_driver/rpc/schemas.py`` builds the
methods' payloads from them, and :mod:`compute_driver.objects` checks its
``from_wire`` with them. A neutral module: it imports nothing of ours but
the other neutral modules, so the objects, and the plugins that use them,
stay below the RPC layer.

``additionalProperties`` is false everywhere: an unknown field is an error,
not something silently dropped. Strings have bounded lengths so that
hostile payloads cannot make us store or log megabytes. Patterns end in
``\\Z``, not ``$``: Python's ``re`` (which jsonschema uses) lets ``$`` match
before a final newline, so ``"web-1\\n"`` would pass as a name.
"""

from __future__ import annotations

import re
import reprlib
from typing import Any

import jsonschema

from compute_driver import exception, states

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

#: A request id, as the RPC context (rpc/context.py) carries it.
REQUEST_ID = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9._:-]+\\Z"}

INSTANCE_POWER = obj({"uuid": UUID, "power_state": POWER_STATE}, ("uuid", "power_state"))

#: A host as its agent reports it (``report_host``, without its signature).
HOST_REPORT = obj(
    {
        "host": HOST,
        "resources": HOST_RESOURCES,
        "capabilities": HOST_CAPABILITIES,
        "instances": {"type": "array", "items": INSTANCE_POWER, "maxItems": 100000},
    },
    ("host", "resources", "capabilities", "instances"),
)

#: Every report's proof that its host sent it (see compute_driver/rpc/report_signing.py).
SIGNATURE = obj(
    {
        "timestamp": {"type": "integer", "minimum": 0, "maximum": 2**40},
        "hmac": {"type": "string", "pattern": "^[0-9a-f]{64}\\Z"},
    },
    ("timestamp", "hmac"),
)


_CONTROL = re.compile("[\\x00-\\x1f\\x7f-\\x9f]+")


def free_text(text: str, limit: int = 1024) -> str:
    """``text`` as a :data:`REASON` a service may send: control runs become one space.

    NOTE: for the services' own texts (a hypervisor's error message spans
    lines); what a person typed is refused instead, so they see why.
    """
    return _CONTROL.sub(" ", text)[:limit]


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
