"""Fixtures of the agent's unit tests (see agent_fakes)."""

from agent_fakes import make_host

__all__ = ["make_host"]
