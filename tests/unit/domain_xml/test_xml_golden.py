"""Golden files: serialize, parse back, cover every property, validate with libvirt's schema."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from lxml import etree

from compute_driver import domain_xml as lvxml
from compute_driver.domain_xml.base import XMLBuilder

# NOTE: regenerate after a deliberate change with UPDATE_GOLDEN=1, then review the diff.
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
SCHEMA = Path("/usr/share/libvirt/schemas/domain.rng")


def test_serializes_to_golden(golden_case: tuple[str, lvxml.Domain, Path]) -> None:
    name, dom, path = golden_case
    text = dom.to_string()
    if UPDATE:
        path.write_text(text)
    assert text == path.read_text(), f"{name}: output differs from {path.name}"


def test_golden_parses_back_equal(golden_case: tuple[str, lvxml.Domain, Path]) -> None:
    _, dom, path = golden_case
    parsed = lvxml.Domain.parse(path.read_text())
    assert parsed == dom
    assert parsed.to_string() == path.read_text()


def test_no_stale_golden_files(golden_dir: Path, golden_domains: dict[str, lvxml.Domain]) -> None:
    assert sorted(p.stem for p in golden_dir.glob("*.xml")) == sorted(golden_domains)


def _builder_classes() -> list[type[XMLBuilder]]:
    found: list[type[XMLBuilder]] = []
    todo = [XMLBuilder]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        # NOTE: <domainsnapshot> builders have their own goldens (test_snapshots.py).
        if (
            cls.XML_NAME
            and cls.__module__.startswith("compute_driver.domain_xml")
            and cls.__module__ != "compute_driver.domain_xml.snapshot"
        ):
            found.append(cls)
    return found


def test_every_declared_property_is_exercised(golden_domains: dict[str, lvxml.Domain]) -> None:
    """Each declared member must hold a non-default value in at least one golden."""
    declared = {(m.owner, m.name) for cls in _builder_classes() for m in cls.members()}
    used = {
        (m.owner, m.name)
        for dom in golden_domains.values()
        for builder in dom.walk()
        for m in builder.members()
        if m.name in builder.non_default()
    }
    assert not declared - used, f"never exercised by a golden: {sorted(declared - used)}"


def _xmllint_available() -> bool:
    return shutil.which("virt-xml-validate") is not None and shutil.which("xmllint") is not None


def test_golden_validates_against_libvirt_schema(
    golden_case: tuple[str, lvxml.Domain, Path],
) -> None:
    _, _, path = golden_case
    if _xmllint_available():
        result = subprocess.run(
            ["virt-xml-validate", str(path), "domain"], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
    elif SCHEMA.exists():
        # NOTE: virt-xml-validate is `xmllint --relaxng` on this same schema; without
        # xmllint (libxml2-utils) run the identical check through lxml.
        schema = etree.RelaxNG(etree.parse(str(SCHEMA)))
        assert schema.validate(etree.parse(str(path))), str(schema.error_log)
    else:
        pytest.skip("neither virt-xml-validate+xmllint nor libvirt's domain.rng is installed")
