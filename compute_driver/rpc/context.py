"""Who a request comes from: the typed RPC context every call carries.

The caller (``compute_driver.client``, ``computectl``, an upstream API that
embeds the client) fills it; the endpoint decorator (``rpc/endpoint.py``)
checks it against ``schemas.CONTEXT`` and hands methods this object, never
the raw dict.

NOTE: the context is what the caller asserts. The bus credential and the
client key's signature over the context (``rpc/report_signing.sign_call``,
checked by ``scheduler/scope.py`` when the scheduler has a secret) are the
authentication: tenants never hold them; the upstream API that does
authenticates its users and names their project here. What a context may
do is decided by the scheduler (``scheduler/scope.py``).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from typing import Any

import jsonschema

from compute_driver import exception
from compute_driver.rpc import schemas

_VALIDATOR = jsonschema.Draft202012Validator(schemas.CONTEXT)
_WHAT = {
    "additionalProperties": "unknown keys",
    "type": "wrong type",
    "anyOf": "not a name",
    "pattern": "characters a name may not have",
    "maxLength": "too long",
    "minLength": "empty",
}


def new_request_id() -> str:
    return "req-" + str(uuid.uuid4())


@dataclasses.dataclass(frozen=True)
class RequestContext:
    """The caller of one request.

    :param project: the project it acts for: the owner of what it creates,
        the one scope its names resolve in. None only for an admin (all
        projects) or a service that acts for no project.
    :param user: who, for the logs (not checked).
    :param admin: an operator: sees every project, may change hosts,
        flavors, aggregates and public images.
    """

    request_id: str = dataclasses.field(default_factory=new_request_id)
    project: str | None = None
    user: str | None = None
    admin: bool = False

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any] | None) -> RequestContext:
        """The context of a received request.

        :raises InvalidContext: not an object of the known keys, or a value
            out of bounds (nothing else is looked at).
        """
        wire = {} if wire is None else wire
        if not isinstance(wire, Mapping):
            raise exception.InvalidContext(reason="not an object")
        wire = dict(wire)
        if not _VALIDATOR.is_valid(wire):
            error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(wire))
            where = "/".join(str(p) for p in error.absolute_path) if error else ""
            what = _WHAT.get(str(error.validator), "invalid") if error else "invalid"
            # NOTE: the key, not the value: a hostile value is never echoed.
            raise exception.InvalidContext(reason="%s: %s" % (where or "(context)", what))
        return cls(
            request_id=wire.get("request_id") or new_request_id(),
            project=wire.get("project"),
            user=wire.get("user"),
            admin=bool(wire.get("admin", False)),
        )

    def to_wire(self) -> dict[str, Any]:
        """The context as it travels (``schemas.CONTEXT``)."""
        wire: dict[str, Any] = {"request_id": self.request_id, "admin": self.admin}
        if self.project is not None:
            wire["project"] = self.project
        if self.user is not None:
            wire["user"] = self.user
        return wire

    def for_request(self) -> RequestContext:
        """The same caller with a fresh request id (one per call)."""
        return dataclasses.replace(self, request_id=new_request_id())
