"""A rollback over the served API: the older version answers within the poll interval, and
the alias' moves are shown by GET /model/history and the model card."""

from __future__ import annotations

import pytest

from readmission import pipeline
from readmission.api.schemas import EXAMPLE
from readmission.registry import Registry
from tests.support.pgserver import free_port

pytestmark = pytest.mark.slow


def _served(world) -> str:
    return world.client.get("/ready").json()["model"]["version"]


def test_a_rollback_is_served_within_the_poll_interval_and_recorded(world):
    first = _served(world)
    result = pipeline.train_and_promote(["logistic_regression"], "quick", world.settings)
    second = result["decision"]["version"]
    Registry.from_settings(world.settings).promote(second, reason="test: a new version serves")
    world.wait_for(lambda: _served(world) == second, timeout=10)

    move = pipeline.rollback(reason="tiers looked wrong on the ward", settings=world.settings)
    assert (move["from_version"], move["to_version"]) == (second, first)
    world.wait_for(lambda: _served(world) == first, timeout=10)  # polled every 0.3 s
    answer = world.client.post("/predict", json=EXAMPLE)
    assert answer.status_code == 200
    assert answer.json()["model"]["version"] == first

    history = world.client.get("/model/history").json()
    assert history["alias"] == "production"
    moves = [(m["action"], m["from_version"], m["to_version"]) for m in history["moves"]]
    assert moves[0] == ("rollback", second, first)
    assert moves[-1] == ("promote", None, first)
    assert ("promote", first, second) in moves
    assert history["moves"][0]["reason"] == "tiers looked wrong on the ward"
    assert history["moves"][0]["by"] == "cli"

    # The card's history is the one read at the last registry check: the rollback's record
    # is written just after the alias moves, so it may show up one poll after the swap.
    def card_shows_the_rollback():
        card = world.client.get("/model/card").json()
        return card if card["production_history"][:1] == history["moves"][:1] else None

    card = world.wait_for(card_shows_the_rollback, timeout=10)
    assert card["model"]["version"] == first
    assert [m["number"] for m in card["production_history"]] == [
        m["number"] for m in history["moves"] if first in (m["from_version"], m["to_version"])
    ]
    assert card["decision"]["restore_reason"] == "tiers looked wrong on the ward"
    text = world.client.get("/model/card", params={"format": "markdown"}).text
    assert "## In production" in text
    assert f"| rollback | v{second} | v{first} | tiers looked wrong on the ward | cli |" in text

    versions = {v["version"]: v for v in world.client.get("/model/versions").json()["versions"]}
    assert versions[second]["stage"] == "Archived"
    assert versions[second]["tags"]["rolled_back_to"] == first


def test_history_is_a_503_when_the_registry_is_unreachable(world):
    store = world.server.app.state.services.store
    serving_registry = store.registry
    store.registry = Registry(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    try:
        answer = world.client.get("/model/history")
    finally:
        store.registry = serving_registry
    assert answer.status_code == 503
    assert answer.json()["detail"].startswith("model registry unreachable")
