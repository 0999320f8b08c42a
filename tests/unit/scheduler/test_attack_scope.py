"""Attacks on project scope after issue 12 (the attack branch).

Image names are unique over the whole cloud (``images.name`` is a unique
column), so a project learns the names of another project's private images
(``DuplicateName``: "an image named img-a exists") and can squat a name
before the operator imports a public image of that name.
"""

from __future__ import annotations

import uuid as uuidlib
from pathlib import Path

import pytest

from compute_driver import exception
from tests.unit.scheduler import test_project_scope as matrix
from tests.unit.scheduler.test_project_scope import ADMIN, OTHER, OWN, World, call

# NOTE: the project matrix's world (a's and b's objects of the same names).
template = matrix.template
world = matrix.world


def test_another_projects_image_name_is_no_oracle(world: World) -> None:
    # b makes an image from its own stopped server, naming it like a's private image.
    try:
        call(
            world.manager,
            OTHER,
            "create_image_from_server",
            uuid=str(uuidlib.uuid4()),
            name=world.a["image"]["name"],
            server=world.b["stopped"]["uuid"],
        )
    except exception.DuplicateName as dup:
        raise AssertionError("b learnt that a has a private image: %s" % dup.message) from None


# --- provider attributes: an admin's, as in Neutron ---------------------------------
#
# A project could pick its network's segment (and learn from segment_in_use
# which VNIs and VLANs other projects hold), its physnet, or make a flat
# network (the physnet's untagged LAN, one per physnet: squatted, the
# operator's provider network cannot be made); and place a volume on a host
# it names (NoValidHost "no up host named X" is an oracle of host names).

PROVIDER = [
    pytest.param("create_network", {"type": "vxlan", "segment": 9000}, id="vxlan-segment"),
    pytest.param("create_network", {"type": "vlan", "segment": 100}, id="vlan-segment"),
    pytest.param("create_network", {"type": "vlan", "physnet": "physnet1"}, id="vlan-physnet"),
    pytest.param("create_network", {"type": "flat"}, id="flat"),
    pytest.param("create_volume", {"host": "h1"}, id="volume-host"),
]


def _payload(method: str, extra: dict) -> dict:
    base = {"uuid": str(uuidlib.uuid4()), "name": "prov-" + uuidlib.uuid4().hex[:6]}
    if method == "create_network":
        return {**base, "cidr": "10.77.0.0/24", **extra}
    return {**base, "size_gb": 1, "backend": "dir", **extra}


@pytest.mark.parametrize(("method", "extra"), PROVIDER)
def test_provider_attributes_need_an_admin(world: World, method: str, extra: dict) -> None:
    with pytest.raises(exception.Forbidden):
        call(world.manager, OTHER, method, **_payload(method, extra))


@pytest.mark.parametrize(("method", "extra"), PROVIDER)
def test_an_admin_gives_provider_attributes(world: World, method: str, extra: dict) -> None:
    made = call(world.manager, ADMIN, method, project="b", **_payload(method, extra))
    assert made["project"] == "b"


# --- image names: unique per owner (the public images, each project) -----------


def _image_from(world: World, caller: dict, name: str, server: str = "stopped") -> dict:
    return call(
        world.manager,
        caller,
        "create_image_from_server",
        uuid=str(uuidlib.uuid4()),
        name=name,
        server=server,
    )


def test_two_projects_have_images_of_one_name(world: World) -> None:
    mine = world.a["image"]
    theirs = _image_from(world, OTHER, mine["name"])
    assert theirs["project"] == "b"
    # Each project's name finds its own image.
    assert call(world.manager, OWN, "show_image", image=mine["name"])["uuid"] == mine["uuid"]
    assert call(world.manager, OTHER, "show_image", image=mine["name"])["uuid"] == theirs["uuid"]
    # An admin of no project sees both: the name is ambiguous, the UUIDs are listed.
    with pytest.raises(exception.Conflict) as conflict:
        call(world.manager, ADMIN, "show_image", image=mine["name"])
    assert mine["uuid"] in conflict.value.message and theirs["uuid"] in conflict.value.message


def test_a_projects_image_of_a_public_name_wins_for_that_project_only(world: World) -> None:
    public = call(world.manager, OWN, "show_image", image="public")
    assert public["project"] is None
    own = _image_from(world, OTHER, "public")
    assert call(world.manager, OTHER, "show_image", image="public")["uuid"] == own["uuid"]
    assert call(world.manager, OWN, "show_image", image="public")["uuid"] == public["uuid"]
    # b's image does not take the operator's name either.
    assert call(world.manager, ADMIN, "show_image", image="public")["uuid"] == public["uuid"]
    # A server b creates from "public" boots b's image; a's boots the public one.
    made = call(
        world.manager,
        OTHER,
        "create_server",
        uuid=str(uuidlib.uuid4()),
        name="x",
        flavor="t.one",
        image="public",
    )
    assert made["image"] == own["uuid"]
    # The UUID still finds the public image for b.
    assert call(world.manager, OTHER, "show_image", image=public["uuid"])["uuid"] == public["uuid"]


def test_a_project_cannot_squat_a_public_name(world: World, tmp_path: Path) -> None:
    # b named an image first; the operator still imports a public one of that name.
    squat = _image_from(world, OTHER, "ubuntu")
    public = call(
        world.manager,
        ADMIN,
        "import_image",
        uuid=str(uuidlib.uuid4()),
        name="ubuntu",
        file=matrix._raw_disk(tmp_path),
    )
    assert public["project"] is None
    assert call(world.manager, OWN, "show_image", image="ubuntu")["uuid"] == public["uuid"]
    assert call(world.manager, OTHER, "show_image", image="ubuntu")["uuid"] == squat["uuid"]


def test_an_image_name_is_unique_within_its_project(world: World, tmp_path: Path) -> None:
    _image_from(world, OTHER, "twice")
    with pytest.raises(exception.DuplicateName):
        _image_from(world, OTHER, "twice")
    # b's own older image (the world's) too.
    with pytest.raises(exception.DuplicateName):
        _image_from(world, OTHER, world.b["image"]["name"])
    # And among the public images.
    with pytest.raises(exception.DuplicateName):
        call(
            world.manager,
            ADMIN,
            "import_image",
            uuid=str(uuidlib.uuid4()),
            name="public",
            file=matrix._raw_disk(tmp_path),
        )
    names = [i["name"] for i in call(world.manager, OTHER, "list_images")]
    assert names.count("twice") == 1
