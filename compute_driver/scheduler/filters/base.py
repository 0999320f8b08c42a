"""The interface of a placement filter."""

from __future__ import annotations

import abc
from typing import ClassVar

from oslo_config import cfg

from compute_driver.scheduler.host_state import HostState, RequestSpec


class BaseHostFilter(abc.ABC):
    """Drops hosts that cannot take a request, and says why.

    A filter is built once per placement with the service's configuration
    and reads its options then; :meth:`why_not` is called once per
    (host, request) and must not do I/O: everything it needs is in the
    :class:`HostState` and the :class:`RequestSpec`.
    """

    #: The entry-point name, used in config and in "no valid host" messages.
    name: ClassVar[str]

    #: True when :meth:`why_not` reads ``host.num_instances`` (counting them
    #: costs a read of every server, so placement does it only on demand).
    needs_instance_counts: ClassVar[bool] = False

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        """
        :param conf: the service's configuration, ``[scheduler]`` registered.
        """
        self.conf = conf

    @abc.abstractmethod
    def why_not(self, host: HostState, request: RequestSpec) -> str | None:
        """Whether ``host`` can take ``request``.

        :param host: one host, as its agent last reported it, with its claims.
        :param request: what the server needs.
        :returns: None when the host passes; else why not, in a few words
            without the host's name (e.g. "needs 2 vCPUs, 1 free").
        :raises: nothing on purpose; an exception is a bug and fails the request.
        """
