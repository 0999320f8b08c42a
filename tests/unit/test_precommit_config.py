"""The pre-commit hooks run the same checks as ``make lint``."""

from __future__ import annotations

import pathlib
import re

import yaml

TOP = pathlib.Path(__file__).resolve().parents[2]


def _hook_entries() -> dict[str, str]:
    config = yaml.safe_load((TOP / ".pre-commit-config.yaml").read_text())
    return {hook["id"]: hook["entry"] for repo in config["repos"] for hook in repo["hooks"]}


def _make_recipe(target: str) -> str:
    makefile = (TOP / "Makefile").read_text()
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert match, f"no {target} target in the Makefile"
    return match.group(1)


def test_every_lint_step_has_a_hook() -> None:
    hooks = _hook_entries()
    lint = _make_recipe("lint")
    assert "ruff check" in lint and "ruff check" in hooks["ruff"]
    assert "ruff format --check" in lint and "ruff format --check" in hooks["ruff-format"]
    assert "lint-imports" in lint and "lint-imports" in hooks["import-linter"]
    # One definition of the two mypy runs, shared by make lint and the hook.
    assert re.search(r"^lint: .*lint-mypy", (TOP / "Makefile").read_text(), re.M)
    assert hooks["mypy"] == "make lint-mypy"
    mypy = _make_recipe("lint-mypy")
    assert "mypy compute_driver network_plugins storage_backends" in mypy
    assert "mypy --strict $(STRICT_PATHS)" in mypy
