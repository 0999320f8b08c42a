"""JSON schemas of every RPC payload, and the check run on arrival.

Each RPC method takes keyword arguments only; the schema describes that
object, built from the fields and objects of :mod:`compute_driver.wire_schemas`
(re-exported here: ``schemas.INSTANCE`` is the server an agent is sent).
``additionalProperties`` is false everywhere: an unknown field is an error,
not something silently dropped.
"""

from __future__ import annotations

from typing import Any

from compute_driver import disk_image, states
from compute_driver.wire_schemas import (
    ABS_PATH as ABS_PATH,
)
from compute_driver.wire_schemas import (
    BACKEND_VOLUME_ID as BACKEND_VOLUME_ID,
)
from compute_driver.wire_schemas import (
    CMDLINE as CMDLINE,
)
from compute_driver.wire_schemas import (
    DESCRIPTION as DESCRIPTION,
)
from compute_driver.wire_schemas import (
    FAULT as FAULT,
)
from compute_driver.wire_schemas import (
    FLAVOR as FLAVOR,
)
from compute_driver.wire_schemas import (
    FREE_TEXT_PATTERN as FREE_TEXT_PATTERN,
)
from compute_driver.wire_schemas import (
    HOST as HOST,
)
from compute_driver.wire_schemas import (
    HOST_CAPABILITIES as HOST_CAPABILITIES,
)
from compute_driver.wire_schemas import (
    HOST_FACT as HOST_FACT,
)
from compute_driver.wire_schemas import (
    HOST_REPORT as HOST_REPORT,
)
from compute_driver.wire_schemas import (
    HOST_RESOURCES as HOST_RESOURCES,
)
from compute_driver.wire_schemas import (
    IMAGE as IMAGE,
)
from compute_driver.wire_schemas import (
    IMPORT_NAME as IMPORT_NAME,
)
from compute_driver.wire_schemas import (
    INSTANCE as INSTANCE,
)
from compute_driver.wire_schemas import (
    INSTANCE_POWER as INSTANCE_POWER,
)
from compute_driver.wire_schemas import (
    IPV4 as IPV4,
)
from compute_driver.wire_schemas import (
    IPV4_CIDR as IPV4_CIDR,
)
from compute_driver.wire_schemas import (
    MAC as MAC,
)
from compute_driver.wire_schemas import (
    MAX_PORTS as MAX_PORTS,
)
from compute_driver.wire_schemas import (
    MAX_REASON as MAX_REASON,
)
from compute_driver.wire_schemas import (
    MAX_VOLUMES as MAX_VOLUMES,
)
from compute_driver.wire_schemas import (
    MTU as MTU,
)
from compute_driver.wire_schemas import (
    NAME as NAME,
)
from compute_driver.wire_schemas import (
    NAME_OR_UUID as NAME_OR_UUID,
)
from compute_driver.wire_schemas import (
    NETWORK as NETWORK,
)
from compute_driver.wire_schemas import (
    NETWORK_TYPE as NETWORK_TYPE,
)
from compute_driver.wire_schemas import (
    PORT as PORT,
)
from compute_driver.wire_schemas import (
    PORTS as PORTS,
)
from compute_driver.wire_schemas import (
    POWER_STATE as POWER_STATE,
)
from compute_driver.wire_schemas import (
    PROJECT as PROJECT,
)
from compute_driver.wire_schemas import (
    PROPERTIES as PROPERTIES,
)
from compute_driver.wire_schemas import (
    REASON as REASON,
)
from compute_driver.wire_schemas import (
    REQUEST_ID as REQUEST_ID,
)
from compute_driver.wire_schemas import (
    ROOT_CLONE as ROOT_CLONE,
)
from compute_driver.wire_schemas import (
    SIGNATURE as SIGNATURE,
)
from compute_driver.wire_schemas import (
    SNAPSHOT_KIND as SNAPSHOT_KIND,
)
from compute_driver.wire_schemas import (
    SNAPSHOT_NAME as SNAPSHOT_NAME,
)
from compute_driver.wire_schemas import (
    TARGET_DEV as TARGET_DEV,
)
from compute_driver.wire_schemas import (
    TIMESTAMP as TIMESTAMP,
)
from compute_driver.wire_schemas import (
    USER_DATA_B64 as USER_DATA_B64,
)
from compute_driver.wire_schemas import (
    UUID as UUID,
)
from compute_driver.wire_schemas import (
    VOLUME as VOLUME,
)
from compute_driver.wire_schemas import (
    VOLUME_SIZE_GB as VOLUME_SIZE_GB,
)
from compute_driver.wire_schemas import (
    free_text as free_text,
)
from compute_driver.wire_schemas import (
    obj as obj,
)
from compute_driver.wire_schemas import (
    validate as validate,
)

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


def _report(properties: dict[str, Any], required: tuple[str, ...]) -> dict[str, Any]:
    """A report method's schema: its fields and the optional ``signature``."""
    return obj({**properties, "signature": SIGNATURE}, required)


#: Agent reports API (topic "agent_reports", served by the scheduler), version 1.0.
#: Only agents publish here (the broker's topic permissions say so).
REPORT_METHODS: dict[str, dict[str, Any]] = {
    "report_host": _report(HOST_REPORT["properties"], tuple(HOST_REPORT["required"])),
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
