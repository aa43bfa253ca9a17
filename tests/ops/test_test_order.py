"""How the tests are handed out to pytest-xdist's workers (`make test TEST_WORKERS=2`)."""

from __future__ import annotations

from types import SimpleNamespace

from tests.conftest import LONGEST_MODULES, PROJECT_ROOT, longest_first


def _items(*nodeids: str) -> list:
    return [SimpleNamespace(nodeid=nodeid) for nodeid in nodeids]


def test_the_longest_modules_come_first_then_the_others_by_their_number_of_tests():
    replay, training = LONGEST_MODULES[0], LONGEST_MODULES[1]
    items = _items(
        "tests/a/test_one.py::test_a",
        f"{training}::test_x",
        "tests/b/test_three.py::test_a",
        "tests/b/test_three.py::test_b",
        f"{replay}::test_replay",
        "tests/b/test_three.py::test_c",
        f"{training}::test_y",
        "tests/a/test_one.py::test_b[1]",
    )
    assert [item.nodeid for item in longest_first(items)] == [
        f"{replay}::test_replay",
        f"{training}::test_x",
        f"{training}::test_y",
        "tests/b/test_three.py::test_a",
        "tests/b/test_three.py::test_b",
        "tests/b/test_three.py::test_c",
        "tests/a/test_one.py::test_a",
        "tests/a/test_one.py::test_b[1]",
    ]


def test_every_module_named_longest_exists():
    """A module renamed or moved would silently lose its place at the front."""
    missing = [module for module in LONGEST_MODULES if not (PROJECT_ROOT / module).is_file()]
    assert missing == []
