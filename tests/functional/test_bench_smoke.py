"""Every benchmark in bench/ runs in its smoke mode and prints its JSON figures.

A benchmark nothing runs rots: bench/rpc_overhead.py once called
``transport.get_server`` with an argument the function no longer took, and
nobody noticed until someone wanted the figure. So each one runs here with
``--smoke`` (tiny sizes, seconds), in a process of its own with this
interpreter, against the same real daemons its full run uses (RabbitMQ,
libvirtd and QEMU, OVS; Ceph, nfs-ganesha, tgt and PostgreSQL are started by
the bench itself). The test asserts the exit status and that the last line of
stdout is a JSON object with the bench's key figures as numbers; it does not
judge the figures, which at these sizes mean nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest
from cloud_env import require_services

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH_DIR = os.path.join(REPO, "bench")

#: bench script -> the figures its last line must carry (numbers, not null).
KEY_FIGURES: dict[str, tuple[str, ...]] = {
    "clone.py": ("dir_clone_ms", "rbd_clone_ms", "dir_size_ratio", "rbd_size_ratio"),
    "faults.py": ("host_down_refusals", "refused", "not_active", "max_recovery_s"),
    "lb_plug.py": ("speedup_vs_subprocess", "pyroute2_s", "subprocess_s"),
    "ovs_plug.py": ("ratio_vs_raw_txn", "speedup_vs_vsctl", "ms_per_port", "resync_ms_per_port"),
    "rpc_overhead.py": ("rpc_call_ratio", "ours_ms", "bare_ms"),
    "schedule.py": ("servers_per_s", "p50_s", "p99_s", "two_schedulers_servers_per_s"),
    "spawn.py": ("qemu_ratio", "test_driver_overhead_ms", "ours_cpu_ms_per_server"),
    "state_sync.py": ("bulk_ms", "per_domain_ms"),
    "topology.py": ("converge_ms", "overhead_ratio", "bare_casts_ms"),
    "volume_io.py": (
        "dir_ratio",
        "nfs_ratio",
        "iscsi_ratio",
        "rbd_ratio",
        "nfs_server_start_s",
        "rbd_server_start_s",
    ),
}
#: Seconds a smoke run may take before it counts as hung (they take 1-30 s).
SMOKE_TIMEOUT = 600
#: Seconds a hung bench gets to clean up after SIGINT before its group is killed.
CLEANUP_TIMEOUT = 60


def _run(script: str) -> subprocess.CompletedProcess[str]:
    """Run ``bench/<script> --smoke``; on a hang, interrupt it, then kill its group."""
    proc = subprocess.Popen(
        [sys.executable, os.path.join(BENCH_DIR, script), "--smoke"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # NOTE: a session of its own, so that a hung bench's daemons and
        # agent processes can be killed with it.
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=SMOKE_TIMEOUT)
    except subprocess.TimeoutExpired:
        # NOTE: SIGINT first: the benches remove their vhosts, namespaces
        # and domains in finally blocks, which a KeyboardInterrupt runs.
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=CLEANUP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        pytest.fail(
            "bench/%s --smoke did not finish in %d s\n%s\n%s"
            % (script, SMOKE_TIMEOUT, out[-3000:], err[-3000:])
        )
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_every_bench_has_a_smoke_run() -> None:
    scripts = {name for name in os.listdir(BENCH_DIR) if name.endswith(".py")}
    assert scripts == set(KEY_FIGURES)


@pytest.mark.parametrize("script", sorted(KEY_FIGURES))
def test_bench_smoke_run_prints_its_figures(script: str) -> None:
    require_services()
    done = _run(script)
    assert done.returncode == 0, "exit %d\n%s\n%s" % (
        done.returncode,
        done.stdout[-3000:],
        done.stderr[-3000:],
    )
    lines = done.stdout.strip().splitlines()
    assert lines, "no output; stderr:\n%s" % done.stderr[-3000:]
    figures: Any = json.loads(lines[-1])
    assert isinstance(figures, dict), lines[-1]
    for key in KEY_FIGURES[script]:
        value = figures.get(key)
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, lines[-1])
