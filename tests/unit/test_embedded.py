"""`computectl demo --embedded`: scheduler + agent in one process over kombu's memory transport.

It covers the whole flow (import, create, ACTIVE, list, delete) with no
root and no daemons: SQLite in a temporary directory and libvirt's
``test:///default`` driver.
"""

from __future__ import annotations

import os
import subprocess


def test_embedded_demo_boots_and_cleans_up(bin_dir, repo_dir, tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))
    result = subprocess.run(
        [str(bin_dir / "computectl"), "demo", "--embedded"],
        cwd=repo_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ACTIVE on embedded-host" in result.stdout
    assert "removed the server and the image" in result.stdout
    assert "| vm_state" in result.stdout
    # The demo removes its working directory.
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("compute-driver-demo-")] == []
