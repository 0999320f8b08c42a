"""Hostile payloads through the real dispatch path of both RPC APIs.

One embedded cloud serves the whole module, as ``computectl demo --embedded``
runs it: the scheduler and the agent as threads of this process, talking
over kombu's in-memory transport, a SQLite store, libvirt's
``test:///default`` driver and the ``noop`` network plugin. Requests go
through our own RPC clients (oslo.messaging RPC client, the bus, the
server's dispatcher, ``rpc_method``, the endpoint).

For every request the tests check what the caller gets (a typed error with
a stable code, never ``internal_error`` and never a timeout) and what the
cloud keeps (every store row, the libvirt domains and the files under the
state directory are exactly as before). The bugs the fuzzing found have
tests of their own at the end, so they stay fixed.

Hypothesis runs derandomized when ``CI`` (or ``FUZZ_RPC_DERANDOMIZE``) is
set, so a failure there replays the same way on any machine.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import time
import uuid as uuidlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fuzz_strategies as fs
import oslo_messaging as messaging
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, assume, event, given, note, settings
from hypothesis import strategies as st
from oslo_config import cfg
from oslo_messaging import _utils as messaging_utils

from compute_driver import conf as cd_conf
from compute_driver import config, exception
from compute_driver.agent.service import AgentService
from compute_driver.rpc import schemas, transport
from compute_driver.rpc.agent_reports_api import AgentReportsAPI
from compute_driver.rpc.client import RPCClientBase
from compute_driver.rpc.compute_api import ComputeAPI
from compute_driver.rpc.context import RequestContext
from compute_driver.rpc.scheduler_api import SchedulerAPI
from compute_driver.scheduler.service import SchedulerService

HOST = "fuzz-host"
FLAVOR = "m1.nano"
IMAGE_NAME = "fuzz-image"
SERVER_NAME = "fuzz-server"
#: Seconds a call may take before the test calls it a hang.
CALL_TIMEOUT = 20
ADMIN = RequestContext(admin=True)

settings.register_profile(
    "fuzz-rpc",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile("fuzz-rpc-ci", settings.get_profile("fuzz-rpc"), derandomize=True)
FUZZ = settings.get_profile(
    "fuzz-rpc-ci" if os.environ.get("CI") or os.environ.get("FUZZ_RPC_DERANDOMIZE") else "fuzz-rpc"
)

#: Every stable code a caller may see, less the two that mean "our fault".
KNOWN_CODES = {cls.code for cls in exception.all_error_classes()}
NEVER = {"internal_error", "messaging_timeout", "error"}

EMBEDDED_CONFIG = """\
[DEFAULT]
transport_url = kombu+memory:////
state_path = {workdir}
host = {host}

[database]
connection = sqlite:///{workdir}/scheduler.sqlite

[libvirt]
uri = test:///default

[agent]
network_plugins = noop
# NOTE: one report at start only: a periodic report would change the host
# row while the tests compare the store before and after each request.
report_interval = 3600
rpc_workers = 12

[scheduler]
rpc_workers = 6
"""


def _register_messaging_opts(conf: cfg.ConfigOpts) -> None:
    """Options oslo.messaging registers on the global ``cfg.CONF`` only.

    NOTE: its RPC client reads them from whatever conf it was given, so a
    private ConfigOpts needs them too (the services themselves use cfg.CONF).
    """
    from oslo_messaging._metrics import client as metrics
    from oslo_messaging._tracing import client as tracing

    conf.register_opts(metrics.oslo_messaging_metrics, group="oslo_messaging_metrics")
    conf.register_opts(tracing.oslo_messaging_tracing, group="oslo_messaging_tracing")


@dataclasses.dataclass
class Outcome:
    """What one request got back: a result, or a typed error."""

    result: Any = None
    error: exception.ComputeDriverError | None = None

    @property
    def code(self) -> str:
        return self.error.code if self.error is not None else "ok"

    def __str__(self) -> str:
        if self.error is None:
            return "ok: %.200r" % (self.result,)
        return "%s: %.300s" % (self.code, self.error.message)


class Cloud:
    """The embedded scheduler and agent, with our clients pointed at them."""

    def __init__(self, conf: cfg.ConfigOpts, workdir: Path) -> None:
        self.conf = conf
        self.workdir = workdir
        self.scheduler = SchedulerService(conf)
        self.agent = AgentService(conf)
        self.clients: dict[str, RPCClientBase] = {
            # NOTE: an admin's context: the fuzz reaches every method.
            "scheduler": SchedulerAPI(conf, timeout=CALL_TIMEOUT, context=ADMIN),
            "agent_reports": AgentReportsAPI(conf, timeout=CALL_TIMEOUT),
            "compute": ComputeAPI(conf, timeout=CALL_TIMEOUT),
        }
        self.server: dict[str, Any] = {}
        self.image: dict[str, Any] = {}

    def call(
        self,
        api: str,
        method: str,
        payload: dict[str, Any],
        version: str = "1.0",
        client: RPCClientBase | None = None,
    ) -> Outcome:
        """Send ``method`` as a call (casts too: a call brings back the answer)."""
        client = client or self.clients[api]
        host = HOST if api == "compute" else None
        try:
            return Outcome(result=client._call(method, payload, host=host, version=version))
        except exception.ComputeDriverError as exc:
            return Outcome(error=exc)

    def uncapped(self, api: str) -> RPCClientBase:
        """A client of ``api`` that sends any version (no ``version_cap``)."""
        client = type(self.clients[api])(self.conf, timeout=CALL_TIMEOUT, context=ADMIN)
        target = messaging.Target(topic=client.TOPIC)
        client._client = messaging.get_rpc_client(
            transport.get_transport(self.conf), target, timeout=CALL_TIMEOUT
        )
        return client

    def state(self) -> dict[str, Any]:
        """Every store row, every libvirt domain and every file we could change."""
        with self.scheduler.store.db.engine.connect() as conn:
            rows = {
                table: conn.execute(sa.text('SELECT * FROM "%s" ORDER BY 1' % table)).all()
                for table in sa.inspect(conn).get_table_names()
            }
        libvirt_conn = self.agent.driver.host.get_connection()
        domains = sorted(
            (d.name(), d.UUIDString(), d.info()[0], tuple(sorted(d.snapshotListNames())))
            for d in libvirt_conn.listAllDomains()
        )
        files = sorted(
            str(Path(root, name).relative_to(self.workdir))
            for root, dirs, names in os.walk(self.workdir)
            for name in dirs + names
            if not name.startswith("scheduler.sqlite")
        )
        return {"rows": rows, "domains": domains, "files": files}

    def wait_for(self, what: str, check: Any, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError("timed out waiting for %s" % what)

    def ok(self, api: str, method: str, payload: dict[str, Any]) -> Any:
        outcome = self.call(api, method, payload)
        assert outcome.error is None, "%s.%s: %s" % (api, method, outcome)
        return outcome.result

    def settle(self) -> dict[str, Any]:
        """The state once asynchronous casts have landed (two equal looks in a row)."""
        last = self.state()
        for _ in range(50):
            time.sleep(0.2)
            now = self.state()
            if now == last:
                return now
            last = now
        raise AssertionError("the cloud never settled")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    workdir = tmp_path_factory.mktemp("fuzz-rpc")
    conf_file = workdir / "embedded.conf"
    conf_file.write_text(EMBEDDED_CONFIG.format(workdir=workdir, host=HOST))
    conf = cfg.ConfigOpts()
    cd_conf.register_opts(conf)
    _register_messaging_opts(conf)
    config.load(["--config-file", str(conf_file)], "fuzz-rpc", conf=conf, default_config_files=[])
    # NOTE: in the scheduler's import directory ([image] import_path), by name.
    (workdir / "import").mkdir()
    disk = workdir / "import" / "tiny.raw"
    with open(disk, "wb") as f:
        f.truncate(1024 * 1024)
    cloud = Cloud(conf, workdir)
    cloud.scheduler.start()
    cloud.agent.start()
    try:
        cloud.wait_for(
            "the agent's first report",
            lambda: [h for h in cloud.ok("scheduler", "list_hosts", {}) if h["name"] == HOST],
        )
        cloud.image = cloud.ok(
            "scheduler",
            "import_image",
            {"uuid": str(uuidlib.uuid4()), "name": IMAGE_NAME, "file": disk.name},
        )
        created = cloud.ok(
            "scheduler",
            "create_server",
            {
                "uuid": str(uuidlib.uuid4()),
                "name": SERVER_NAME,
                "flavor": FLAVOR,
                "image": cloud.image["uuid"],
                "project": "fuzz",
            },
        )
        cloud.server = cloud.wait_for(
            "the server to be ACTIVE",
            lambda: (
                lambda s: s if s["vm_state"] == "active" and s["task_state"] is None else None
            )(cloud.ok("scheduler", "show_server", {"server": created["uuid"]})),
        )
        cloud.settle()
        yield cloud
    finally:
        try:
            if cloud.server:
                cloud.call("scheduler", "delete_server", {"server": cloud.server["uuid"]})
                cloud.wait_for(
                    "the server to go",
                    lambda: (
                        cloud.call(
                            "scheduler", "show_server", {"server": cloud.server["uuid"]}
                        ).code
                        == "instance_not_found"
                    ),
                )
            if cloud.image:
                cloud.call("scheduler", "delete_image", {"image": cloud.image["uuid"]})
        finally:
            cloud.agent.stop()
            cloud.scheduler.stop()
            transport.cleanup()


def _assert_typed(outcome: Outcome) -> None:
    if outcome.error is not None:
        assert outcome.code in KNOWN_CODES, str(outcome)
        assert outcome.code not in NEVER, str(outcome)


def _assert_unchanged(cloud: Cloud, before: dict[str, Any]) -> None:
    after = cloud.state()
    for part in before:
        assert after[part] == before[part], "side effect in %s" % part


# --- malformed payloads: every method, one node broken -------------------------------


@pytest.mark.parametrize("api", sorted(fs.METHODS))
@settings(FUZZ, max_examples=500)
@given(data=st.data())
def test_malformed_payload_is_refused_and_changes_nothing(cloud, api, data):
    method = data.draw(st.sampled_from(sorted(fs.METHODS[api])), label="method")
    how, payload = data.draw(fs.mutated(api, method), label="payload")
    # NOTE: the schema is the oracle: a mutation that happens to stay valid
    # (a "." inserted inside a name) is not a malformed payload.
    assume(not fs.is_valid(api, method, payload))
    note("%s.%s: %s" % (api, method, how))
    event(how.split(" at ")[0])
    before = cloud.state()
    outcome = cloud.call(api, method, payload)
    assert outcome.code == "invalid_payload", str(outcome)
    assert "%s.%s" % (api, method) in outcome.error.message
    _assert_unchanged(cloud, before)


def test_valid_strategies_match_the_schemas():
    """The oracle above only means something if ``fs.valid`` draws valid payloads."""

    @settings(FUZZ, max_examples=300)
    @given(
        st.sampled_from(fs.ALL_METHODS).flatmap(
            lambda am: st.tuples(st.just(am), fs.valid(fs.METHODS[am[0]][am[1]]))
        )
    )
    def check(case):
        (api, method), payload = case
        assert fs.is_valid(api, method, payload), (api, method, payload)

    check()


# --- well-formed requests naming things that do not exist ---------------------------

UUIDS = st.uuids().map(str)
NAMES = st.from_regex(schemas.NAME["pattern"], fullmatch=True).filter(
    lambda s: len(s) <= 63 and s not in (FLAVOR, IMAGE_NAME, SERVER_NAME, HOST)
)
REFS = UUIDS | NAMES
ABSENT_FILE = NAMES.map(lambda n: "nonexistent-fuzz-dir/" + n)
B64 = st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode())


def _optional(**fields: st.SearchStrategy) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


def _with(required: dict[str, st.SearchStrategy], **optional: st.SearchStrategy):
    return st.fixed_dictionaries(required, optional=optional)


def _instance_payloads() -> st.SearchStrategy[dict[str, Any]]:
    """Build payloads (valid to the schema) whose image is not in the store
    (a random UUID: the agent derives the file from it)."""
    image = fs.valid(schemas.IMAGE).map(lambda i: dict(i, kernel=False, cmdline=None))
    return st.builds(
        lambda uuid, base, image, user_data: dict(
            base, uuid=uuid, image=image, user_data=user_data
        ),
        UUIDS,
        fs.valid(schemas.INSTANCE),
        image,
        st.none() | B64,
    )


NOT_FOUND = {"instance_not_found"}
SNAP = schemas.SNAPSHOT_NAME

#: (api, method, payloads, outcomes allowed): "ok" is an idempotent no-op answer.
UNKNOWN_REFS: list[tuple[str, str, st.SearchStrategy, set[str]]] = [
    ("scheduler", "show_server", _with({"server": REFS}), NOT_FOUND),
    ("scheduler", "delete_server", _with({"server": REFS}), NOT_FOUND),
    ("scheduler", "list_server_snapshots", _with({"server": REFS}), NOT_FOUND),
    ("scheduler", "server_diagnostics", _with({"server": REFS}), NOT_FOUND),
    (
        "scheduler",
        "server_console_log",
        _with({"server": REFS}, lines=st.integers(1, 100000)),
        NOT_FOUND,
    ),
    (
        "scheduler",
        "server_action",
        _with({"server": REFS, "action": st.sampled_from(schemas.SERVER_ACTION_NAMES)}),
        NOT_FOUND,
    ),
    (
        "scheduler",
        "create_server_snapshot",
        _with(
            {"server": REFS, "name": fs.valid(SNAP)},
            kind=fs.valid(schemas.SNAPSHOT_KIND),
            quiesce=st.booleans(),
            description=fs.valid(schemas.DESCRIPTION),
        ),
        NOT_FOUND,
    ),
    (
        "scheduler",
        "revert_server_snapshot",
        _with({"server": REFS, "name": fs.valid(SNAP)}),
        NOT_FOUND,
    ),
    (
        "scheduler",
        "delete_server_snapshot",
        _with({"server": REFS, "name": fs.valid(SNAP)}),
        NOT_FOUND,
    ),
    (
        "scheduler",
        "create_image_from_server",
        _with({"uuid": UUIDS, "name": NAMES, "server": REFS}),
        NOT_FOUND,
    ),
    ("scheduler", "show_host", _with({"host": NAMES}), {"host_not_found"}),
    (
        "scheduler",
        "set_host_enabled",
        _with(
            {"host": NAMES, "enabled": st.booleans()},
            reason=fs.valid(schemas.REASON),
        ),
        {"host_not_found"},
    ),
    ("scheduler", "delete_flavor", _with({"flavor": NAMES}), {"flavor_not_found"}),
    ("scheduler", "show_image", _with({"image": REFS}), {"image_not_found"}),
    ("scheduler", "delete_image", _with({"image": REFS}), {"image_not_found"}),
    (
        "scheduler",
        "create_server",
        _with({"uuid": UUIDS, "name": NAMES, "flavor": NAMES, "image": REFS, "project": NAMES}),
        {"flavor_not_found"},
    ),
    (
        "scheduler",
        "create_server",
        _with(
            {
                "uuid": UUIDS,
                "name": NAMES,
                "flavor": st.just(FLAVOR),
                "image": REFS,
                "project": NAMES,
            }
        ),
        {"image_not_found"},
    ),
    (
        "scheduler",
        "create_server",
        _with(
            {
                "uuid": UUIDS,
                "name": NAMES,
                "flavor": st.just(FLAVOR),
                "image": st.just(IMAGE_NAME),
                "project": NAMES,
                "host": NAMES,
            },
            user_data=B64,
        ),
        {"host_not_found"},
    ),
    (
        "scheduler",
        "import_image",
        st.one_of(
            _with({"uuid": UUIDS, "name": NAMES, "file": ABSENT_FILE}),
            _with(
                {
                    "uuid": UUIDS,
                    "name": NAMES,
                    "file": ABSENT_FILE,
                    "kernel": ABSENT_FILE,
                    "initrd": ABSENT_FILE,
                },
                cmdline=fs.valid(schemas.CMDLINE),
            ),
        ),
        {"invalid_image"},
    ),
    (
        "agent_reports",
        "instance_update",
        _with(
            {
                "host": NAMES,
                "uuid": UUIDS,
                "vm_state": st.sampled_from(
                    schemas.REPORT_METHODS["instance_update"]["properties"]["vm_state"]["enum"]
                ),
            },
            power_state=fs.valid(schemas.POWER_STATE),
            fault=fs.valid(schemas.REASON),
        ),
        {"ok"},
    ),
    ("agent_reports", "instance_deleted", _with({"host": NAMES, "uuid": UUIDS}), {"ok"}),
    (
        "agent_reports",
        "instance_power_changed",
        _with({"host": NAMES, "uuid": UUIDS, "power_state": fs.valid(schemas.POWER_STATE)}),
        {"ok"},
    ),
    ("agent_reports", "host_instances", _with({"host": NAMES}), {"ok"}),
    ("agent_reports", "host_networks", _with({"host": NAMES}), {"ok"}),
    (
        "agent_reports",
        "set_host_enabled",
        _with({"host": NAMES, "enabled": st.booleans(), "reason": fs.valid(schemas.REASON)}),
        {"host_not_found"},
    ),
    ("scheduler", "list_servers", _optional(project=NAMES, host=NAMES), {"ok"}),
    ("compute", "get_instance_info", _with({"uuid": UUIDS}), NOT_FOUND),
    ("compute", "get_diagnostics", _with({"uuid": UUIDS}), NOT_FOUND),
    ("compute", "list_instance_snapshots", _with({"uuid": UUIDS}), NOT_FOUND),
    (
        "compute",
        "get_console_output",
        _with({"uuid": UUIDS}, lines=st.integers(1, 100000)),
        NOT_FOUND,
    ),
    ("compute", "export_root_disk", _with({"uuid": UUIDS, "image": UUIDS}), NOT_FOUND),
    ("compute", "delete_instance", _with({"uuid": UUIDS}), {"ok"}),
    ("compute", "stop_instance", _with({"uuid": UUIDS}, timeout=st.integers(0, 3600)), {"ok"}),
    ("compute", "start_instance", _with({"uuid": UUIDS}), {"ok"}),
    ("compute", "pause_instance", _with({"uuid": UUIDS}), {"ok"}),
    ("compute", "unpause_instance", _with({"uuid": UUIDS}), {"ok"}),
    ("compute", "suspend_instance", _with({"uuid": UUIDS}), {"ok"}),
    ("compute", "resume_instance", _with({"uuid": UUIDS}), {"ok"}),
    (
        "compute",
        "reboot_instance",
        _with({"uuid": UUIDS, "hard": st.booleans()}, instance=_instance_payloads()),
        {"ok"},
    ),
    (
        "compute",
        "snapshot_create_instance",
        _with(
            {"uuid": UUIDS, "name": fs.valid(SNAP), "kind": fs.valid(schemas.SNAPSHOT_KIND)},
            quiesce=st.booleans(),
            description=fs.valid(schemas.DESCRIPTION),
        ),
        {"ok"},
    ),
    ("compute", "snapshot_revert_instance", _with({"uuid": UUIDS, "name": fs.valid(SNAP)}), {"ok"}),
    ("compute", "snapshot_delete_instance", _with({"uuid": UUIDS, "name": fs.valid(SNAP)}), {"ok"}),
    ("compute", "build_instance", _with({"instance": _instance_payloads()}), {"ok"}),
]


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_unknown_reference_gets_a_typed_answer_and_changes_nothing(cloud, data):
    api, method, payloads, allowed = data.draw(st.sampled_from(UNKNOWN_REFS), label="case")
    payload = data.draw(payloads, label="payload")
    note("%s.%s" % (api, method))
    assert fs.is_valid(api, method, payload), payload  # well-formed: only the names are strangers
    before = cloud.state()
    outcome = cloud.call(api, method, payload)
    _assert_typed(outcome)
    assert outcome.code in allowed, str(outcome)
    # NOTE: an agent that found nothing still casts its report to the
    # scheduler; it must change nothing either, so wait for it to land.
    if api == "compute":
        cloud.ok("compute", "ping", {})
        cloud.ok("scheduler", "ping", {})
    _assert_unchanged(cloud, before)


#: Well-formed, these make or list things by design; the malformed fuzz covers them.
MAKERS = {
    ("scheduler", "ping"),
    ("scheduler", "create_flavor"),
    ("agent_reports", "report_host"),
    ("scheduler", "list_hosts"),
    ("scheduler", "list_flavors"),
    ("scheduler", "list_images"),
    ("compute", "ping"),
}


def test_every_method_is_fuzzed_with_unknown_references():
    covered = {(api, method) for api, method, _s, _a in UNKNOWN_REFS}
    assert covered | MAKERS <= set(fs.ALL_METHODS), "a method in this file is gone"
    missing = sorted(set(fs.ALL_METHODS) - covered - MAKERS)
    if missing:
        # NOTE: a warning, not a failure: a new method is already in the
        # malformed-payload fuzz (built from the schemas); it needs a line in
        # UNKNOWN_REFS (or MAKERS) to be fuzzed with unknown names as well.
        warnings.warn("not fuzzed with unknown references: %s" % missing, stacklevel=1)


# --- unknown methods and versions ---------------------------------------------------

#: Attributes of the endpoints that are not RPC methods.
INTERNALS = [
    "",
    "__init__",
    "__class__",
    "__dict__",
    "target",
    "store",
    "compute",
    "conf",
    "scheduler",
    "driver",
    "check_hosts",
    "report",
    "reconcile",
    "handle_virt_event",
    "handle_host_state",
    "_delete",
    "_spawn",
    "_act",
    "_payload",
    "_placed",
    "oslo_rpc_server_ping",
    "PING",
    "ping\x00",
    "ping ",
    "../ping",
]


@settings(FUZZ, max_examples=200)
@given(
    api=st.sampled_from(sorted(fs.METHODS)),
    method=st.sampled_from(INTERNALS)
    | st.text(max_size=64)
    | st.text(min_size=1000, max_size=5000),
    payload=st.dictionaries(
        st.text(max_size=8).filter(lambda k: k not in fs.RESERVED_KEYS), fs.JSON, max_size=3
    ),
)
def test_unknown_method_is_refused(cloud, api, method, payload):
    assume(method not in fs.METHODS[api])
    before = cloud.state()
    outcome = cloud.call(api, method, payload)
    assert outcome.code == "unknown_method", str(outcome)
    assert len(outcome.error.message) < 200
    _assert_unchanged(cloud, before)


def _compatible(version: str) -> bool:
    try:
        return messaging_utils.version_is_compatible("1.0", version)
    except (IndexError, ValueError):
        return False


#: Well-formed versions: oslo.messaging's client refuses any other before sending.
VERSIONS = st.from_regex(r"\A[0-9]{1,3}\.[0-9]{1,3}(\.[0-9]{1,3})?\Z")


@settings(FUZZ, max_examples=100)
@given(
    api=st.sampled_from(sorted(fs.METHODS)),
    method=st.sampled_from(["ping", "delete_instance", "delete_server", "report_host"]),
    version=VERSIONS,
)
def test_unknown_version_is_refused(cloud, api, method, version):
    assume(not _compatible(version))
    before = cloud.state()
    outcome = cloud.call(api, method, {}, version=version, client=cloud.uncapped(api))
    assert outcome.code == "unsupported_version", str(outcome)
    _assert_unchanged(cloud, before)


@pytest.mark.parametrize("version", ["", "1.a", "one"])
def test_malformed_version_gets_a_typed_error(cloud, version):
    client = cloud.uncapped("scheduler")
    outcome = cloud.call("scheduler", "ping", {}, version=version, client=client)
    assert outcome.code == "messaging_error", str(outcome)


# --- envelopes no client of ours sends ------------------------------------------------


def _raw(cloud: Cloud, api: str, message: dict[str, Any]) -> BaseException | Any:
    target = messaging.Target(topic=api, server=HOST if api == "compute" else None)
    try:
        return transport.get_transport(cloud.conf)._send(
            target, {"request_id": "req-raw"}, message, wait_for_reply=True, timeout=CALL_TIMEOUT
        )
    except Exception as exc:  # noqa: BLE001 - the test looks at what came back
        return exc


ENVELOPES = [
    {"method": "ping", "args": [1, 2], "version": "1.0"},
    {"method": ["ping"], "args": {}, "version": "1.0"},
    {"args": {}, "version": "1.0"},
    {"method": "ping", "args": {}, "version": "1.x"},
    {"method": "ping", "args": {}, "version": "1.0", "namespace": "other"},
]


@pytest.mark.parametrize("api", sorted(fs.METHODS))
@pytest.mark.parametrize("message", ENVELOPES, ids=lambda m: repr(m)[:40])
def test_malformed_envelope_is_answered_and_changes_nothing(cloud, api, message):
    # NOTE: oslo.messaging's dispatcher alone would fail on these with
    # builtins errors (TypeError, ValueError) and a traceback; ours refuses
    # them first with a typed error.
    before = cloud.state()
    answer = _raw(cloud, api, message)
    assert isinstance(answer, exception.Invalid), repr(answer)
    _assert_unchanged(cloud, before)


@pytest.mark.parametrize("api", sorted(fs.METHODS))
@pytest.mark.parametrize("key", ["self", "ctxt"])
def test_reserved_field_name_is_refused_as_invalid_payload(cloud, api, key):
    method = "ping" if "ping" in fs.METHODS[api] else "host_instances"
    answer = _raw(cloud, api, {"method": method, "args": {key: 1}, "version": "1.0"})
    assert isinstance(answer, exception.InvalidPayload), repr(answer)


# --- bugs the fuzzing found once (each fixed; these keep them fixed) -------------------


@pytest.mark.parametrize("field", ["memory_mb", "disk_gb"])
def test_report_host_with_a_huge_resource_is_refused(cloud, field):
    resources = {"vcpus": 1, "memory_mb": 1024, "disk_gb": 10, field: 2**63}
    payload = {"host": "fuzz-other", "resources": resources, "capabilities": {}, "instances": []}
    before = cloud.state()
    outcome = cloud.call("agent_reports", "report_host", payload)
    _assert_unchanged(cloud, before)
    _assert_typed(outcome)


def test_build_with_undecodable_user_data_is_answered(cloud):
    payload = {
        "instance": {
            "uuid": str(uuidlib.uuid4()),
            "name": "bad-user-data",
            "project": "fuzz",
            "flavor": {"name": FLAVOR, "vcpus": 1, "memory_mb": 128, "root_gb": 1},
            "image": {k: cloud.image[k] for k in ("uuid", "name", "disk_format")},
            "created_at": "2026-01-01T00:00:00",
            "user_data": "A",
        }
    }
    assert fs.is_valid("compute", "build_instance", payload)
    before = cloud.state()
    outcome = cloud.call("compute", "build_instance", payload)
    _assert_unchanged(cloud, before)
    _assert_typed(outcome)


@pytest.mark.parametrize(
    ("api", "method", "payload"),
    [
        ("scheduler", "show_server", {"server": SERVER_NAME + "\n"}),
        ("scheduler", "show_image", {"image": IMAGE_NAME + "\n"}),
        ("scheduler", "delete_flavor", {"flavor": "no-such-flavor\n"}),
        ("compute", "get_instance_info", {"uuid": "0b0c3a4e-1b6e-4a55-9d0e-2f9f3c1d7a10\n"}),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_trailing_newline_in_a_name_is_refused(cloud, api, method, payload):
    before = cloud.state()
    outcome = cloud.call(api, method, payload)
    _assert_unchanged(cloud, before)
    assert outcome.code == "invalid_payload", str(outcome)


@pytest.mark.parametrize(
    "payload",
    [{"k%d" % i: 1 for i in range(2000)}, {"k" * 100_000: 1}],
    ids=["many-keys", "long-key"],
)
def test_refusal_message_stays_short(cloud, payload):
    outcome = cloud.call("scheduler", "ping", payload)
    assert outcome.code == "invalid_payload", str(outcome)
    assert len(outcome.error.message) < 2000


# --- and afterwards -------------------------------------------------------------------


def test_each_embedded_service_has_its_own_pool_size(cloud):
    # oslo.messaging's own pool-size option is one for the whole process.
    assert cloud.scheduler.server._work_executor._max_workers == 6
    assert cloud.agent.server._work_executor._max_workers == 12


def _hostile_batch(cloud: Cloud) -> None:
    """One request of each hostile kind above; each must be answered, whatever the answer."""
    for api in sorted(fs.METHODS):
        for message in ENVELOPES:
            assert not isinstance(_raw(cloud, api, message), messaging.MessagingTimeout)
        for key in ("self", "ctxt"):
            _raw(cloud, api, {"method": "ping", "args": {key: 1}, "version": "1.0"})
        _assert_typed(cloud.call(api, "_spawn", {"x": 1}))
        _assert_typed(cloud.call(api, "ping", {}, version="9.0", client=cloud.uncapped(api)))
        _assert_typed(cloud.call(api, "ping", {"k" * 100_000: 1}))
    _assert_typed(cloud.call("scheduler", "show_server", {"server": SERVER_NAME + "\n"}))
    _assert_typed(
        cloud.call("scheduler", "ping", {}, version="1.a", client=cloud.uncapped("scheduler"))
    )
    resources = {"vcpus": 1, "memory_mb": 2**63, "disk_gb": 10}
    payload = {"host": "fuzz-other", "resources": resources, "capabilities": {}, "instances": []}
    _assert_typed(cloud.call("scheduler", "report_host", payload))


def test_services_survive_and_still_serve(cloud):
    """After hostile requests of every kind, the servers, their threads and real requests work.

    NOTE: it sends its own hostile batch first rather than relying on running
    after the fuzz tests of this module, so it means the same in any order.
    """
    before = cloud.state()
    _hostile_batch(cloud)
    _assert_unchanged(cloud, before)
    assert cloud.scheduler.periodic.is_alive() and cloud.agent.reporter.is_alive()
    assert cloud.ok("scheduler", "ping", {})["service"] == "compute-scheduler"
    assert cloud.ok("compute", "ping", {})["host"] == HOST
    assert (
        cloud.ok("compute", "get_instance_info", {"uuid": cloud.server["uuid"]})["power_state"]
        == "running"
    )
    server = cloud.ok("scheduler", "show_server", {"server": SERVER_NAME})
    assert (server["vm_state"], server["task_state"]) == ("active", None)
    flavor = {"name": "fuzz-after", "vcpus": 1, "memory_mb": 64, "root_gb": 0}
    assert cloud.ok("scheduler", "create_flavor", flavor)["name"] == "fuzz-after"
    cloud.ok("scheduler", "delete_flavor", {"flavor": "fuzz-after"})
