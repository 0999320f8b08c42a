"""Project scope: what one request may see, in one place.

Every scheduler method wears :func:`scheduler_method` (the payload schema,
then, when the scheduler has ``[agent_reports] secret``, the client's
signature over the call and its context, then ``rpc/policy.py``'s table);
every lookup by reference goes through ``database.find_by_ref`` or the
image lookup with the request's context, which apply :func:`sees` and
:func:`name_condition`; listings take their project filter from
:func:`list_project`, creates their owner from :func:`owner`. The rules (``docs/rpc-api.md``):

* a context sees the objects of its project; an admin sees every project's;
  images of no project (imported by an admin) are public.
* names resolve within the context's project only (with public images for
  images): another project's object of the same name changes nothing.
  Image names are unique per owner (the public images, each project); a
  project's own image wins over a public one of its name (catalog.py).
* an object the context does not see is ``not_found``, with the message a
  missing one has.

NOTE: a lookup without a context (``context=None``) is the scheduler's own
(an agent's report, a reschedule, by a UUID from its own records); every
method a caller reaches passes its context, which the project matrix in
tests/unit/scheduler/test_project_scope.py checks method by method.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from compute_driver import exception
from compute_driver.rpc import policy, report_signing, schemas
from compute_driver.rpc.context import RequestContext
from compute_driver.rpc.endpoint import rpc_method


def scheduler_method(func: Callable) -> Callable:
    """Expose a scheduler method: its schema, the client's signature, the policy
    table, then ``func``."""
    name = func.__name__

    @functools.wraps(func)
    def checked(self: Any, context: RequestContext, /, **kwargs: Any) -> Any:
        # NOTE: with a secret, only a holder of the client key may call: an
        # agent's credential can put a message into this topic's queue (the
        # default exchange), and its context would claim what it likes.
        secret = self.conf.agent_reports.secret
        if secret:
            report_signing.verify_call(secret, name, context.to_wire(), kwargs, self.conf.host)
        kwargs.pop("signature", None)
        policy.check(name, context, kwargs)
        return func(self, context, **kwargs)

    return rpc_method("scheduler", schemas.SCHEDULER_METHODS)(checked)


def sees(context: RequestContext | None, owner: str | None, public: bool = False) -> bool:
    """Whether ``context`` may see an object of project ``owner``.

    :param public: an object of no project is everyone's (images).
    """
    if context is None or context.admin:
        return True
    return owner == context.project or (public and owner is None)


def is_admin(context: RequestContext | None) -> bool:
    """An admin's context, or the scheduler's own lookup."""
    return context is None or context.admin


def name_condition(
    context: RequestContext | None, project_column: Any, public: bool = False
) -> Any:
    """The condition a lookup by name adds: the context's project (or None:
    no condition, for the scheduler itself and an admin of no project)."""
    if context is None or context.project is None:
        if context is not None and not context.admin:
            return sa.false()  # no project, no names (the policy refuses first)
        return None
    mine = project_column == context.project
    return sa.or_(mine, project_column.is_(None)) if public else mine


def repeated(context: RequestContext | None, owner: str | None, uuid: str) -> None:
    """A create named the UUID of an existing object: a repeat returns it,
    unless it is an object ``context`` does not see.

    :raises Conflict: another project's (its record is not returned).
    """
    if not sees(context, owner, public=True):
        raise exception.Conflict(reason="UUID %s is taken; a create needs a new one" % uuid)


def list_project(
    context: RequestContext, project: str | None = None, all_projects: bool = False
) -> str | None:
    """The project a listing shows (None: every project).

    :raises Forbidden: a non-admin asked for another project or all of them.
    """
    if context.admin:
        if project is not None or all_projects:
            return project
        return context.project
    if all_projects or (project is not None and project != context.project):
        raise exception.Forbidden(
            action="listing another project", reason="it needs an admin context"
        )
    return context.project


def owner(context: RequestContext, project: str | None, method: str) -> str:
    """The project a new object belongs to: the context's.

    ``project`` in the payload is kept for older callers: the same project,
    or any for an admin.

    :raises Forbidden: a non-admin named another project.
    :raises InvalidPayload: an admin of no project named none.
    """
    if project is None:
        if context.project is None:
            raise exception.InvalidPayload(
                method="scheduler.%s" % method,
                reason="project: required (the request context names none)",
            )
        return context.project
    if project != context.project and not context.admin:
        raise exception.Forbidden(
            action="creating in another project", reason="it needs an admin context"
        )
    return project
