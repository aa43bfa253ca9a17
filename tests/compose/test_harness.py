"""The compose test's harness, checked without Docker (part of the plain `make test` run):
its stand-ins cover exactly the images that cannot be built here, its override files touch
only what they replace, and it builds what `make images` builds."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.compose import stack, standins
from tests.deploy.test_images import IMAGES, base_of, dockerfile, parse_stages, stage_name

ROOT = stack.ROOT


def third_party_images() -> set[str]:
    """Bases of the project's Dockerfiles and the images the runtime Compose files pull."""
    found = set()
    for image in IMAGES:
        stages = parse_stages(dockerfile(image))
        names = {stage_name(s) for s in stages}
        found |= {base_of(s) for s in stages if base_of(s) not in names}
    for file in stack.PROJECTS:
        services = yaml.safe_load((ROOT / file).read_text())["services"]
        for service in services.values():
            if "build" not in service:
                found.add(service["image"])
    return found


def test_every_image_that_cannot_be_built_here_is_pulled_stood_in_or_left_out():
    stood_in = {s.image for s in standins.STANDINS if s.pullable}
    replaced = {stack.service_image(stack.RESTO, s) for s in stack.S3_SERVICES}
    left_out = {stack.service_image(stack.RESTO, stack.GRAFANA_SERVICE)}
    assert third_party_images() == stood_in | replaced | left_out


@pytest.mark.parametrize("standin", standins.STANDINS, ids=lambda s: s.dockerfile)
def test_each_stand_in_says_what_it_stands_for_and_what_it_does_not_reproduce(standin):
    described = standin.description()
    assert described.startswith("Stand-in for "), described
    if standin.pullable:
        assert described.startswith(f"Stand-in for {standin.image}"), described
    assert "Not reproduced:" in described
    lines = (standins.HERE / standin.dockerfile).read_text().splitlines()
    comments = [i for i, line in enumerate(lines) if line.startswith("#")]
    assert comments == list(range(len(comments))), "one comment, at the top"


def test_the_override_files_touch_only_what_they_replace():
    s3 = yaml.safe_load(stack.S3_STANDIN.read_text())["services"]
    assert set(s3) == set(stack.S3_SERVICES)
    assert {service["image"] for service in s3.values()} == {standins.S3_IMAGE}
    no_grafana = yaml.safe_load(stack.NO_GRAFANA.read_text())["services"]
    assert no_grafana == {stack.GRAFANA_SERVICE: {"profiles": ["grafana-image-unavailable"]}}
    resto = yaml.safe_load((ROOT / stack.RESTO).read_text())["services"]
    for name, service in s3.items():  # same ports, credentials, dependencies as the real one
        assert "ports" not in service
        assert "environment" not in service
        assert name in resto


def test_the_harness_builds_what_make_images_builds():
    builds = stack.image_builds()
    assert [(b.dockerfile, b.ref.split("/")[-1].split("-mlops-p3")[0]) for b in builds] == [
        (i.dockerfile, i.name) for i in IMAGES
    ]


def test_the_python_stand_in_satisfies_the_locks_python_floor():
    """Debian's python3.11 (3.11.2) cannot install the lock's pins for the images' 3.11.16
    (soupsieve needs >= 3.11.5): the stand-in copies a newer CPython, checked against the
    lock's own markers."""
    assert standins.lock_python_floor() >= (3, 11, 5)
    lock = (ROOT / "requirements" / "lock.txt").read_text()
    assert re.search(r"python_full_version >= '3\.11\.5'", lock)
