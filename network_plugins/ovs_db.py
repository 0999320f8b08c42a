"""OVSDB access of the ``ovs`` plugin, through ovsdbapp's native IDL (never ``ovs-vsctl``).

Every write is one ovsdbapp transaction with ``check_error=True``, one per
logical change; ovsdbapp's Open_vSwitch transactions also wait until
ovs-vswitchd has applied it (``cur_cfg`` reaches ``next_cfg``), so a
returned write is in effect. Reads come from the IDL's in-memory replica.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ovsdbapp import exceptions as ovsdbapp_exc
from ovsdbapp.backend.ovs_idl import command as ovs_command
from ovsdbapp.backend.ovs_idl import connection, idlutils
from ovsdbapp.schema.open_vswitch import impl_idl

TABLES = ("Open_vSwitch", "Bridge", "Port", "Interface")


def ofport_of(iface: Any | None) -> int | None:
    """An interface row's OpenFlow port, None when it has none (yet)."""
    if iface is None or not iface.ofport or iface.ofport[0] < 1:
        return None
    return int(iface.ofport[0])


class OvsDbError(Exception):
    """OVSDB cannot be reached, or a transaction failed."""


class PlugPortCommand(ovs_command.BaseCommand):
    """Create or update port ``name`` (one interface of the same name) on ``bridge``.

    The same writes as ``ovs-vsctl --may-exist add-port BR NAME -- set Port
    NAME ... -- set Interface NAME ...``, but without ovsdbapp's add_port
    check that the interface got an OpenFlow port: a guest's tap only
    appears when libvirt starts the guest, after the plug.
    """

    def __init__(
        self,
        api: Any,
        bridge: str,
        name: str,
        port_columns: dict[str, Any],
        iface_columns: dict[str, Any],
    ) -> None:
        super().__init__(api)
        self.bridge = bridge
        self.name = name
        self.port_columns = port_columns
        self.iface_columns = iface_columns

    def run_idl(self, txn: Any) -> None:
        bridge = idlutils.row_by_value(self.api.idl, "Bridge", "name", self.bridge)
        port = idlutils.row_by_value(self.api.idl, "Port", "name", self.name, None)
        if port is None:
            port = txn.insert(self.api._tables["Port"])
            port.name = self.name
            bridge.addvalue("ports", port)
            iface = txn.insert(self.api._tables["Interface"])
            iface.name = self.name
            port.interfaces = [iface]
        else:
            if port not in bridge.ports:
                raise OvsDbError(f"port {self.name} exists on another bridge")
            iface = port.interfaces[0]
        self.set_columns(port, **self.port_columns)
        for column, value in self.iface_columns.items():
            if column == "external_ids":  # merge: libvirt may have added its own keys
                merged = dict(getattr(iface, "external_ids", {}) or {})
                merged.update(value)
                value = merged
            self.set_column(iface, column, value)
        self.result = port.uuid


class MovePortCommand(ovs_command.BaseCommand):
    """Port ``name`` from bridge ``source`` to bridge ``target``: the same Port and
    Interface rows, every column kept (its VLAN, ``ofport_request``, MTU)."""

    def __init__(self, api: Any, name: str, source: str, target: str) -> None:
        super().__init__(api)
        self.name, self.source, self.target = name, source, target

    def run_idl(self, txn: Any) -> None:
        port = idlutils.row_by_value(self.api.idl, "Port", "name", self.name)
        source = idlutils.row_by_value(self.api.idl, "Bridge", "name", self.source)
        target = idlutils.row_by_value(self.api.idl, "Bridge", "name", self.target)
        if port in source.ports:
            source.delvalue("ports", port)
        if port not in target.ports:
            target.addvalue("ports", port)


class ReplaceMapCommand(ovs_command.BaseCommand):
    """Map column ``column`` of row ``name`` of ``table`` becomes exactly ``value``.

    NOTE: ovsdbapp's db_set merges a map into what is there, and its
    db_remove is a mutation sent apart from it: a rename of keys (remove
    some, add others) in one transaction is a whole new value.
    """

    def __init__(self, api: Any, table: str, name: str, column: str, value: dict[str, str]) -> None:
        super().__init__(api)
        self.table, self.name, self.column, self.value = table, name, column, value

    def run_idl(self, txn: Any) -> None:
        row = idlutils.row_by_value(self.api.idl, self.table, "name", self.name)
        row.verify(self.column)
        self.set_column(row, self.column, dict(self.value))


class OvsDb:
    """One IDL connection to ovsdb-server (opened on first use, thread-safe)."""

    def __init__(self, connection_string: str, timeout: int) -> None:
        self.connection_string = connection_string
        self.timeout = timeout
        self._api: impl_idl.OvsdbIdl | None = None
        self._lock = threading.Lock()

    @property
    def api(self) -> impl_idl.OvsdbIdl:
        with self._lock:
            if self._api is None:
                try:
                    idl = connection.OvsdbIdl.from_server(
                        self.connection_string, "Open_vSwitch", helper_tables=TABLES
                    )
                    # NOTE: ovsdbapp keeps the connection in a class attribute
                    # (one OVSDB per class and process); a class of our own per
                    # instance lets one process talk to several servers (tests
                    # simulate several hosts, each with its own ovsdb-server).
                    api_class = type("OvsdbIdl", (impl_idl.OvsdbIdl,), {"_ovsdb_connection": None})
                    self._api = api_class(connection.Connection(idl, self.timeout))
                except Exception as exc:  # ovs raises bare Exception for a missing socket
                    raise OvsDbError(
                        f"cannot reach OVSDB at {self.connection_string}: {exc}"
                    ) from exc
            return self._api

    def close(self) -> None:
        with self._lock:
            if self._api is not None:
                self._api.ovsdb_connection.stop(timeout=self.timeout)
                self._api = None

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """One transaction; its errors (and ovs-vswitchd not applying it) as OvsDbError."""
        api = self.api
        try:
            with api.transaction(check_error=True, log_errors=False) as txn:
                yield txn
        except OvsDbError:
            raise
        except (ovsdbapp_exc.OvsdbAppException, RuntimeError, idlutils.RowNotFound) as exc:
            raise OvsDbError(f"OVSDB transaction failed: {exc}") from exc

    # --- reads from the replica ------------------------------------------------------

    def _rows(self, table: str) -> list[Any]:
        return list(self.api.tables[table].rows.values())

    def bridge(self, name: str) -> Any | None:
        return idlutils.row_by_value(self.api.idl, "Bridge", "name", name, None)

    def bridge_external_ids(self, name: str) -> dict[str, str]:
        bridge = self.bridge(name)
        return dict(bridge.external_ids) if bridge is not None else {}

    def interfaces(self, bridge_name: str) -> list[Any]:
        bridge = self.bridge(bridge_name)
        if bridge is None:
            return []
        return [iface for port in bridge.ports for iface in port.interfaces]

    def bridge_of(self, port_name: str) -> str | None:
        """The name of the bridge that has port ``port_name``, or None."""
        port = self.port(port_name)
        if port is None:
            return None
        return next((b.name for b in self._rows("Bridge") if port in b.ports), None)

    def port(self, name: str) -> Any | None:
        """The Port row ``name``, or None."""
        return idlutils.row_by_value(self.api.idl, "Port", "name", name, None)

    def interface(self, name: str) -> Any | None:
        """(NOTE: an indexed lookup; ovsdbapp indexes Interface by name.)"""
        return idlutils.row_by_value(self.api.idl, "Interface", "name", name, None)

    def ofport(self, name: str, wait: float = 0.0) -> int | None:
        """The OpenFlow port ovs-vswitchd gave interface ``name`` (None: none yet).

        :param wait: seconds to wait for one to appear.
        """
        deadline = time.monotonic() + wait
        while True:
            number = ofport_of(self.interface(name))
            if number is not None or time.monotonic() >= deadline:
                return number
            time.sleep(0.02)

    def vswitchd_cfg(self) -> int:
        """``cur_cfg``: the last configuration ovs-vswitchd applied."""
        rows = self._rows("Open_vSwitch")
        return int(rows[0].cur_cfg) if rows else 0
