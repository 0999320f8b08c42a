"""Who may call which scheduler method: the one table, checked before each runs.

Every call carries a context: ``project`` (the project it acts for),
``user`` (for the logs), ``admin`` (an operator), ``request_id`` and
``global_request_id`` (for the logs; rpc/context.py checks them all).
NOTE: the context is what the bus client asserts. The bus credential and,
with ``[agent_reports] secret`` set, the client key's signature over the
call and its context (``[client] key``, rpc/report_signing.py) are the
authentication: tenants and agents never hold the key (an agent's credential
reaches this topic's queue through the default exchange); the upstream API
that does authenticates its users and names their project. ``computectl`` without
``--project`` acts as the operator (admin, every project).

Every scheduler method is one of:

* **open** (``ping``): any caller.
The compute agents' reports are not scheduler methods: they have their own
topic and endpoint (``agent_reports``, scheduler/reports.py), guarded by the
broker's permissions and the per-host signatures.

* **admin**: only a context with the admin flag: hosts (list, show,
  enable, disable), flavors (create, delete), aggregates, image import.
* **project**: every other method. The context must name a project (or be
  admin).

What a project method sees is the context's project only:

* servers, volumes, networks, server groups and the images made from a
  server belong to one project; flavors and imported images are public
  (every project sees them; only an admin changes them).
* names resolve within the context's project (an admin of no project: in
  every project), so another project's object of the same name changes
  nothing; a UUID finds only what the context sees. Image names are unique
  among the public images and within a project (not over the cloud); a
  project's own image wins over a public one of the same name; for an
  admin of no project the public one wins (several projects' images of the
  name and no public one: a ``conflict`` listing their UUIDs).
* another project's object is ``not_found``, with the message a missing one
  has; listings show the context's project. An admin lists every project
  (``all_projects``, or an admin context of no project) or one (``project``);
  for anyone else these filters are ``forbidden`` unless they name its own.
* a create makes its object in the context's project. ``project`` in the
  payload is accepted for older callers when it names that project (an
  admin may name any); another is ``forbidden``. A create repeating the
  UUID of another project's object is a ``conflict`` (its record is not
  returned).

``docs/rpc-api.md`` prints this text and the table (``rpc/apidoc.py``).
"""

from __future__ import annotations

from typing import Any

from compute_driver import exception
from compute_driver.rpc.context import RequestContext

OPEN = frozenset({"ping"})
ADMIN = frozenset(
    {
        "list_hosts",
        "show_host",
        "set_host_enabled",
        "create_flavor",
        "delete_flavor",
        "import_image",
        "create_aggregate",
        "set_aggregate",
        "add_aggregate_host",
        "remove_aggregate_host",
        "list_aggregates",
        "show_aggregate",
        "delete_aggregate",
    }
)
#: Payload fields of project methods that only an admin may give.
# NOTE: as Neutron's provider attributes: a project that picks a segment
# learns (segment_in_use) which ones other projects hold, and a physnet or a
# flat network reaches the operator's physical networks.
ADMIN_FIELDS: dict[str, tuple[str, ...]] = {
    "create_server": ("host",),
    "create_volume": ("host",),
    "create_network": ("segment", "physnet"),
}
#: Payload values of project methods that only an admin may give: a flat
#: network is a physnet's untagged LAN (one per physnet).
ADMIN_VALUES: dict[str, dict[str, tuple[str, ...]]] = {
    "create_network": {"type": ("flat",)},
}
#: The rules of each kind, as docs/rpc-api.md states them.
RULES = {
    "open": "any caller",
    "admin": "a context with the admin flag only",
    "project": "a context that names a project (or admin); sees that project only",
}


def kind(method: str) -> str:
    """``open``, ``admin`` or ``project``."""
    if method in OPEN:
        return "open"
    if method in ADMIN:
        return "admin"
    return "project"


def check(method: str, context: RequestContext, payload: dict[str, Any]) -> None:
    """Refuse ``method`` for ``context`` unless the table allows it.

    :raises Forbidden: (nothing has been read or changed yet).
    """
    rule = kind(method)
    if rule == "open" or context.admin:
        return
    action = "scheduler.%s" % method
    if rule == "admin":
        raise exception.Forbidden(action=action, reason="it needs an admin context")
    if context.project is None:
        raise exception.Forbidden(action=action, reason="the request context names no project")
    for field in ADMIN_FIELDS.get(method, ()):
        if payload.get(field) is not None:
            raise exception.Forbidden(action=action, reason="%s needs an admin context" % field)
    for field, values in ADMIN_VALUES.get(method, {}).items():
        if payload.get(field) in values:
            raise exception.Forbidden(
                action=action, reason="%s %s needs an admin context" % (field, payload[field])
            )
