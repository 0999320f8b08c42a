"""Attacks on project scope after issue 12 (the attack branch).

Image names are unique over the whole cloud (``images.name`` is a unique
column), so a project learns the names of another project's private images
(``DuplicateName``: "an image named img-a exists") and can squat a name
before the operator imports a public image of that name.
"""

from __future__ import annotations

import uuid as uuidlib

from compute_driver import exception
from tests.unit.scheduler import test_project_scope as matrix
from tests.unit.scheduler.test_project_scope import OTHER, World, call

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
