"""Server and power states: one definition for the scheduler, the agent, the
driver and the RPC schemas.

A neutral module: it imports nothing of ours.
"""

from __future__ import annotations

#: The power states a driver reports for a guest.
POWER_STATES = ("running", "paused", "shutdown", "crashed", "suspended", "nostate")

#: The vm_states of a server record.
VM_STATES = ("active", "stopped", "paused", "suspended", "error")

#: vm_states in which a server stays until someone acts.
STABLE_STATES = VM_STATES

#: The vm_state a server is in when its hypervisor shows this power state.
VM_STATE_OF_POWER = {
    "running": "active",
    "paused": "paused",
    "suspended": "suspended",
    "shutdown": "stopped",
    "crashed": "stopped",
    "nostate": "stopped",
}

#: Server states a volume can be attached in or detached from.
ATTACH_STATES = frozenset({"active", "stopped", "paused"})
