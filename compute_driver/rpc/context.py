"""Who a request comes from: the typed RPC context every call carries.

The caller (``compute_driver.client``, ``computectl``, an upstream API that
embeds the client) fills it; the endpoint decorator (``rpc/endpoint.py``)
checks it (at most :data:`MAX_CONTEXT_BYTES` of JSON, then :data:`CONTEXT`)
and hands methods this object, never the raw dict. A context that fails
either is refused with ``invalid_context`` before the method runs.

NOTE: the context is what the caller asserts. The bus credential and the
client key's signature over the context (``rpc/report_signing.sign_call``,
checked by ``scheduler/scope.py`` when the scheduler has a secret) are the
authentication: tenants never hold them; the upstream API that does
authenticates its users and names their project here. What a context may
do is decided by the scheduler (``scheduler/scope.py``).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Mapping
from typing import Any

import jsonschema

from compute_driver import exception
from compute_driver.rpc import schemas

#: Largest context accepted, in bytes of compact JSON. The largest valid
#: one (every key at its longest) is about 400 bytes.
MAX_CONTEXT_BYTES = 2048

#: What a context may hold (oslo.messaging's ``ctxt``): a closed object.
CONTEXT = schemas.obj(
    {
        # NOTE: the caller's id of this one request, for the logs and the
        # error replies; one is made on arrival when there is none.
        "request_id": schemas.REQUEST_ID,
        # NOTE: oslo.context's form, the id an upstream API gave the request
        # its user made, carried through for the logs.
        "global_request_id": {
            "anyOf": [
                {"type": "string", "pattern": "^req-[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}\\Z"},
                {"type": "null"},
            ]
        },
        "project": {"anyOf": [schemas.PROJECT, {"type": "null"}]},
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

_VALIDATOR = jsonschema.Draft202012Validator(CONTEXT)
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
    :param global_request_id: the upstream request this one serves
        (oslo.context's ``req-<uuid>``), for the logs.
    """

    request_id: str = dataclasses.field(default_factory=new_request_id)
    project: str | None = None
    user: str | None = None
    admin: bool = False
    global_request_id: str | None = None

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any] | None) -> RequestContext:
        """The context of a received request.

        :raises InvalidContext: not an object of the known keys, larger than
            :data:`MAX_CONTEXT_BYTES`, or a value out of bounds (nothing else
            is looked at).
        """
        wire = {} if wire is None else wire
        if not isinstance(wire, Mapping):
            raise exception.InvalidContext(reason="not an object")
        wire = dict(wire)
        # NOTE: the size first, so that a hostile context costs one encoding
        # and no schema walk; the reply says how large, never what.
        try:
            size = len(json.dumps(wire, separators=(",", ":")).encode())
        except (TypeError, ValueError):
            raise exception.InvalidContext(reason="not JSON") from None
        if size > MAX_CONTEXT_BYTES:
            raise exception.InvalidContext(
                reason="%d bytes, more than the %d allowed" % (size, MAX_CONTEXT_BYTES)
            )
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
            global_request_id=wire.get("global_request_id"),
        )

    def to_wire(self) -> dict[str, Any]:
        """The context as it travels (:data:`CONTEXT`)."""
        wire: dict[str, Any] = {"request_id": self.request_id, "admin": self.admin}
        if self.project is not None:
            wire["project"] = self.project
        if self.user is not None:
            wire["user"] = self.user
        if self.global_request_id is not None:
            wire["global_request_id"] = self.global_request_id
        return wire

    def for_request(self) -> RequestContext:
        """The same caller with a fresh request id (one per call)."""
        return dataclasses.replace(self, request_id=new_request_id())
