"""What the model store reads of the registry at a check: the card's history and the served
version's tags come from one consistent moment, whatever a concurrent alias move does."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from readmission.api.metrics import ApiMetrics
from readmission.api.model_store import ModelStore


class RollingBackRegistry:
    """A registry in which a rollback to v1 finishes (its tags, then its record, as
    `Registry._finish_rollback` writes them) just after the call named `finish_after`."""

    def __init__(self, finish_after: str) -> None:
        self.finish_after = finish_after
        self.tags: dict[str, str] = {}
        self.moves: list[SimpleNamespace] = []

    def _maybe_finish(self, call: str) -> None:
        if call == self.finish_after and not self.moves:
            self.tags["restore_reason"] = "tiers looked wrong on the ward"
            move = {"action": "rollback", "from_version": "2", "to_version": "1"}
            self.moves.insert(0, SimpleNamespace(to_dict=lambda: dict(move)))

    def champion(self):
        entry = SimpleNamespace(version="1", tags=dict(self.tags))  # read now, as MLflow does
        self._maybe_finish("champion")
        return entry

    def history(self) -> list:
        moves = list(self.moves)
        self._maybe_finish("history")
        return moves

    def entry(self, version: str):
        return SimpleNamespace(version=version, tags=dict(self.tags))

    def describe(self, entry) -> dict:
        return {"version": entry.version, "tags": dict(entry.tags)}


@pytest.mark.parametrize("finish_after", ["champion", "history"])
def test_a_history_showing_a_move_comes_with_the_tags_written_before_it(finish_after):
    registry = RollingBackRegistry(finish_after)
    store = ModelStore(registry, ApiMetrics())
    store.current = SimpleNamespace(version="1", described={}, loaded_at="")  # v1 serves
    for _ in range(2):
        store.check()
        described, _ = store.description()
        if store.history:
            assert described["tags"].get("restore_reason") == "tiers looked wrong on the ward"
    assert store.history  # the second check sees the finished rollback
