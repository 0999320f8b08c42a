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


#: Snapshot tasks: the vm_states each is allowed from, and the task it sets.
SNAPSHOT_TASKS: dict[str, tuple[frozenset[str], str]] = {
    "create": (frozenset({"active", "paused", "stopped"}), "snapshotting"),
    "revert": (frozenset({"active", "stopped"}), "reverting"),
    "delete": (frozenset({"active", "stopped"}), "deleting-snapshot"),
}

#: Server actions: the vm_states each is allowed from, and the task it sets.
SERVER_ACTIONS: dict[str, tuple[frozenset[str], str]] = {
    "stop": (frozenset({"active", "paused"}), "powering-off"),
    "start": (frozenset({"stopped"}), "powering-on"),
    "reboot": (frozenset({"active"}), "rebooting"),
    "hard-reboot": (frozenset({"active", "stopped", "paused", "suspended"}), "rebooting-hard"),
    "pause": (frozenset({"active"}), "pausing"),
    "unpause": (frozenset({"paused"}), "unpausing"),
    "suspend": (frozenset({"active"}), "suspending"),
    "resume": (frozenset({"suspended"}), "resuming"),
}
