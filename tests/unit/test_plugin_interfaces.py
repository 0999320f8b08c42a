"""The family base classes name every method the core calls; describe() is a frozen dataclass."""

from __future__ import annotations

import dataclasses

import pytest

from network_plugins import base as network_base
from storage_backends import base as storage_base
from storage_backends import exception as storage_exception


class _Minimal(storage_base.StorageBackend):
    """Only the required methods: the optional abilities keep their defaults."""

    name = "minimal"

    def describe(self) -> storage_base.Description:
        return storage_base.Description(name=self.name, shared=False, formats=("raw",))

    def capacity(self) -> storage_base.Capacity:
        return storage_base.Capacity(total=0, free=0)

    def create_from_image(self, volume_id, image, size_gb, linked=True):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def create_volume(self, volume_id: str, size_gb: int) -> storage_base.Volume:
        raise NotImplementedError

    def get_volume(self, volume_id: str) -> storage_base.Volume:
        raise NotImplementedError

    def delete_volume(self, volume_id: str) -> None:
        raise NotImplementedError

    def disk_config(self, volume):  # type: ignore[no-untyped-def]
        raise NotImplementedError


def test_export_volume_is_part_of_the_storage_interface():
    # NOTE: the agent calls it (export_root_disk) when describe().export.
    assert "export_volume" in vars(storage_base.StorageBackend)
    assert "export" in storage_base.OPTIONAL_ABILITIES
    with pytest.raises(storage_exception.Unsupported, match="export"):
        _Minimal().export_volume("v", "/nonexistent/x.qcow2")


def test_every_optional_ability_is_a_field_of_the_description():
    fields = {f.name for f in dataclasses.fields(storage_base.Description)}
    assert set(storage_base.OPTIONAL_ABILITIES) <= fields
    described = _Minimal().describe()
    assert not any(getattr(described, ability) for ability in storage_base.OPTIONAL_ABILITIES)


@pytest.mark.parametrize(
    "description",
    [
        storage_base.Description(name="x", shared=True, formats=("raw",), details={"a": "b"}),
        network_base.Description(name="y", network_types=("flat",)),
    ],
)
def test_descriptions_are_frozen_and_plain_dicts_on_the_wire(description):
    with pytest.raises(dataclasses.FrozenInstanceError):
        description.name = "z"
    wire = description.to_wire()
    assert wire["name"] == description.name
    assert all(not isinstance(v, tuple) for v in wire.values())  # JSON-shaped
    if isinstance(description, storage_base.Description):
        assert wire["a"] == "b" and "details" not in wire


def test_each_plugin_reads_only_its_own_option_group():
    # NOTE: plugins are still handed the ConfigOpts (to register their group);
    # this holds them to reading only that group: what else they need is lent
    # through services (e.g. the iscsi backend's libvirt connection).
    import ast
    from pathlib import Path

    import network_plugins
    import storage_backends

    allowed = {"register_group", "register_opts"}
    for package in (network_plugins, storage_backends):
        for path in sorted(Path(package.__path__[0]).glob("*.py")):
            own = {path.stem, path.stem.removesuffix("_opts"), path.stem.removesuffix("_utils")}
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Attribute)
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "conf"
                ):
                    assert node.attr in allowed | own, "%s reads [%s]" % (path, node.attr)
