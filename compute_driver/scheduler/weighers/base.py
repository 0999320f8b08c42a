"""The interface of a placement weigher."""

from __future__ import annotations

import abc
from typing import ClassVar

from oslo_config import cfg

from compute_driver.scheduler.host_state import HostState, RequestSpec


class BaseHostWeigher(abc.ABC):
    """Says how good a host is for a request; more is better.

    Placement scales each weigher's values to 0..1 across the hosts the
    filters kept (the best host 1, the worst 0, all 0 when they are equal),
    multiplies by :attr:`multiplier` and sums over the weighers. So a
    weigher only has to order hosts, not agree on units with the others.
    """

    #: The entry-point name, used in config.
    name: ClassVar[str]
    #: The ``[scheduler]`` option holding this weigher's multiplier.
    multiplier_option: ClassVar[str]

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        """
        :param conf: the service's configuration, ``[scheduler]`` registered.
        """
        self.conf = conf
        self.multiplier: float = getattr(conf.scheduler, self.multiplier_option)

    @abc.abstractmethod
    def weigh(self, host: HostState, request: RequestSpec) -> float:
        """The raw value of ``host`` for ``request``, before scaling.

        :param host: one host the filters kept.
        :param request: what the server needs.
        :returns: any finite number; higher is better for a positive multiplier.
        :raises: nothing on purpose; an exception is a bug and fails the request.
        """
