"""Rollback and the audit trail of the `production` alias, against a real, throwaway MLflow
(SQLite store, artifacts in tmp_path), with the small models of the registry's own tests."""

from __future__ import annotations

import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pytest

from readmission import registry
from readmission.__main__ import main
from readmission.registry import MODEL_NAME, PRODUCTION_ALIAS, RollbackError
from tests.registry.test_registry_mlflow import fit_model, log_candidate


def _versions(model_registry, count: int) -> list[str]:
    """`count` registered versions, none promoted."""
    return [
        model_registry.register(
            log_candidate(fit_model(1.0 / (i + 1), seed=i), 0.4 + i / 100)
        ).version
        for i in range(count)
    ]


def _state(version: str) -> tuple[str, list[str], dict]:
    entry = mlflow.MlflowClient().get_model_version(MODEL_NAME, version)
    return entry.current_stage, list(entry.aliases), dict(entry.tags)


def _files_gone(model_registry, version: str) -> None:
    source = model_registry.describe(model_registry.entry(version))["source"]
    model_id = source.split("/")[-1]
    location = mlflow.MlflowClient().get_logged_model(model_id).artifact_location
    shutil.rmtree(Path(urlparse(location).path))


def test_every_promotion_is_recorded_once_newest_first(mlflow_tracking, model_registry):
    assert model_registry.history() == []
    first, second = _versions(model_registry, 2)
    model_registry.promote(first, reason="first model", by="model_training_pipeline run a")
    model_registry.promote(second, reason="better", by="cli")
    model_registry.promote(second, reason="again")  # a repeat moves nothing, records nothing

    moves = [m.to_dict() for m in model_registry.history()]
    assert [(m["number"], m["from_version"], m["to_version"]) for m in moves] == [
        (2, first, second),
        (1, None, first),
    ]
    assert [(m["action"], m["reason"], m["by"]) for m in moves] == [
        ("promote", "better", "cli"),
        ("promote", "first model", "model_training_pipeline run a"),
    ]
    assert all(m["alias"] == PRODUCTION_ALIAS and m["at"].endswith("+00:00") for m in moves)
    assert moves[0]["at"] == _state(second)[2]["promoted_at"]
    json.dumps(moves)


def test_rollback_restores_the_previous_version_and_archives_the_current_one(
    mlflow_tracking, model_registry
):
    first, second = _versions(model_registry, 2)
    model_registry.promote(first, reason="first model")
    model_registry.promote(second, reason="better")
    assert model_registry.rollback_target() == first

    move = model_registry.rollback(reason="readmissions flagged fell by half", by="cli")

    assert model_registry.champion().version == first
    stage, aliases, tags = _state(first)
    assert (stage, aliases) == ("Production", [PRODUCTION_ALIAS])
    assert "archived_at" not in tags
    assert "superseded_by" not in tags
    assert tags["restore_reason"] == "readmissions flagged fell by half"
    stage, aliases, tags = _state(second)
    assert (stage, aliases) == ("Archived", [])
    assert tags["rollback_reason"] == "readmissions flagged fell by half"
    assert tags["rolled_back_to"] == first
    assert tags["rolled_back_at"] == tags["archived_at"] == move.at
    assert (move.action, move.from_version, move.to_version, move.number) == (
        "rollback",
        second,
        first,
        3,
    )
    assert model_registry.history()[0] == move
    # the version rolled back from is not a target again: nothing earlier than v1 to go to
    assert model_registry.rollback_target() is None
    with pytest.raises(RollbackError, match="no earlier Production version"):
        model_registry.rollback(reason="again")


def test_rollbacks_walk_back_past_versions_rolled_back_from(mlflow_tracking, model_registry):
    first, second, third = _versions(model_registry, 3)
    for version in (first, second, third):
        model_registry.promote(version, reason=f"v{version}")
    assert model_registry.rollback(reason="third is worse").to_version == second
    assert model_registry.rollback(reason="second too").to_version == first  # not back to v3
    assert [m.to_version for m in model_registry.history()] == [first, second, third, second, first]


def test_rollback_to_a_named_version(mlflow_tracking, model_registry):
    first, second, third = _versions(model_registry, 3)
    for version in (first, second, third):
        model_registry.promote(version, reason=f"v{version}")
    move = model_registry.rollback(first, reason="back to the first")
    assert (move.from_version, move.to_version) == (third, first)
    assert _state(second)[0] == "Archived"


def test_without_a_recorded_history_the_superseded_version_is_the_target(
    mlflow_tracking, model_registry
):
    """Versions promoted before moves were recorded: their tags still tell."""
    first, second = _versions(model_registry, 2)
    model_registry.promote(first, reason="first model")
    model_registry.promote(second, reason="better")
    for move in model_registry.history():
        model_registry.client.delete_registered_model_tag(MODEL_NAME, move.tag_key)
    assert model_registry.history() == []
    assert model_registry.rollback_target() == first
    assert model_registry.rollback(reason="old registry").to_version == first


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no reason", "needs a reason"),
        ("same version", "already holds the alias"),
        ("missing version", "has no version 99"),
        ("not ready", "is FAILED_REGISTRATION"),
        ("files gone", "cannot be loaded"),
    ],
)
def test_a_refused_rollback_changes_nothing(case, message, mlflow_tracking, model_registry) -> None:
    first, second = _versions(model_registry, 2)
    model_registry.promote(first, reason="first model")
    model_registry.promote(second, reason="better")
    before = (model_registry.history(), _state(first), _state(second))
    to, reason = first, "a reason"
    if case == "no reason":
        reason = "  "
    elif case == "same version":
        to = second
    elif case == "missing version":
        to = "99"
    elif case == "not ready":
        database = mlflow_tracking.removeprefix("sqlite:///")
        with closing(sqlite3.connect(database)) as conn, conn:
            conn.execute(
                "UPDATE model_versions SET status = 'FAILED_REGISTRATION' WHERE version = ?",
                (int(first),),
            )
        before = (model_registry.history(), _state(first), _state(second))
    else:
        _files_gone(model_registry, first)
    with pytest.raises(RollbackError, match=message):
        model_registry.rollback(to, reason=reason)
    assert (model_registry.history(), _state(first), _state(second)) == before
    assert model_registry.champion().version == second


def test_nothing_to_roll_back_on_an_empty_registry(mlflow_tracking, model_registry):
    with pytest.raises(RollbackError, match=r"no version of \S+ holds the alias"):
        model_registry.rollback(reason="why not")


def test_a_history_tag_that_does_not_parse_is_skipped(mlflow_tracking, model_registry, caplog):
    (first,) = _versions(model_registry, 1)
    model_registry.promote(first, reason="first model")
    model_registry.client.set_registered_model_tag(
        MODEL_NAME, f"{registry.MOVE_TAG_PREFIX}000007", "{not json"
    )
    assert [m.to_version for m in model_registry.history()] == [first]
    assert "alias_move.000007 is not an alias move" in caplog.text


def test_the_command_line_rolls_back_and_prints_the_history(
    mlflow_tracking, model_registry, capsys
):
    first, second = _versions(model_registry, 2)
    model_registry.promote(first, reason="first model")
    model_registry.promote(second, reason="better")

    main(["rollback", "--reason", "the care team saw odd tiers"])
    printed = json.loads(capsys.readouterr().out)
    assert (printed["action"], printed["from_version"], printed["to_version"]) == (
        "rollback",
        second,
        first,
    )
    assert printed["by"] == "cli"
    main(["history"])
    history = json.loads(capsys.readouterr().out)
    assert [m["to_version"] for m in history] == [first, second, first]

    with pytest.raises(SystemExit, match=f"error: v{first} already holds the alias"):
        main(["rollback", "--to", first, "--reason", "x"])
    with pytest.raises(SystemExit) as missing_reason:
        main(["rollback"])
    assert missing_reason.value.code == 2  # argparse: --reason is required
    assert "--reason" in capsys.readouterr().err


def test_a_challenger_is_recorded_apart_and_loses_its_alias_when_promoted(
    mlflow_tracking, model_registry
):
    first, second, third = _versions(model_registry, 3)
    model_registry.promote(first, reason="first model")
    with pytest.raises(registry.AliasError, match="is the Production version"):
        model_registry.set_challenger(first, reason="itself")
    model_registry.set_challenger(second, reason="not promoted: worse on valid", by="dag run x")
    model_registry.set_challenger(third, reason="by hand")
    assert model_registry.challenger().version == third
    challenges = model_registry.history(registry.CHALLENGER_ALIAS)
    assert [(m.action, m.from_version, m.to_version, m.by) for m in challenges] == [
        ("challenge", second, third, "cli"),
        ("challenge", None, second, "dag run x"),
    ]
    assert [m.to_version for m in model_registry.history()] == [first]  # production only
    model_registry.promote(third, reason="better after all")
    assert model_registry.challenger() is None
    assert [m.number for m in model_registry.history()] == [4, 1]  # one numbering for all
    model_registry.set_challenger(second, reason="again")
    main(["challenger", "--clear"])
    assert model_registry.challenger() is None


def test_after_a_rollback_to_a_named_version_the_default_walks_back_not_forward(
    mlflow_tracking, model_registry
):
    first, second, third = _versions(model_registry, 3)
    for version in (first, second, third):
        model_registry.promote(version, reason=f"v{version}")
    model_registry.rollback(first, reason="back to the first")
    assert model_registry.rollback_target() is None  # nothing served before v1
    with pytest.raises(RollbackError, match="no earlier Production version"):
        model_registry.rollback(reason="again")


def test_a_version_promoted_again_after_a_rollback_is_an_ordinary_step(
    mlflow_tracking, model_registry
):
    first, second, third = _versions(model_registry, 3)
    model_registry.promote(first, reason="first model")
    model_registry.promote(second, reason="better")
    model_registry.rollback(reason="odd tiers")
    model_registry.promote(second, reason="fixed: the tiers were a display bug")
    tags = _state(second)[2]
    assert "rolled_back_at" not in tags
    assert "rollback_reason" not in tags
    model_registry.promote(third, reason="better still")
    assert model_registry.rollback_target() == second
    assert model_registry.rollback(reason="third is worse").to_version == second


def test_a_rollback_interrupted_after_the_alias_moved_is_completed_with_to(
    mlflow_tracking, model_registry, monkeypatch
):
    first, second = _versions(model_registry, 2)
    model_registry.promote(first, reason="first model")
    model_registry.promote(second, reason="better")
    real = model_registry._finish_rollback

    def lost(*args, **kwargs):
        raise ConnectionError("the registry went away after the alias moved")

    monkeypatch.setattr(model_registry, "_finish_rollback", lost)
    with pytest.raises(ConnectionError):
        model_registry.rollback(reason="odd tiers")
    monkeypatch.setattr(model_registry, "_finish_rollback", real)
    assert model_registry.champion().version == first  # moved, but not recorded
    with pytest.raises(RollbackError, match=f"complete it with --to {first}"):
        model_registry.rollback(reason="odd tiers")
    move = model_registry.rollback(first, reason="odd tiers")
    assert (move.action, move.from_version, move.to_version) == ("rollback", second, first)
    assert _state(second)[2]["rollback_reason"] == "odd tiers"
    assert [m.to_version for m in model_registry.history()] == [first, second, first]


@pytest.mark.slow
@pytest.mark.postgres
def test_rollback_and_history_on_a_postgresql_store_with_the_deployments_driver(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Compose and Kubernetes MLflow keep the registry in PostgreSQL (psycopg 3): the
    moves, the rollback, its tags and the challenger there too."""
    from readmission.registry import Registry
    from tests.registry.test_registry_mlflow import deployment_store_driver
    from tests.support.served import point_mlflow_at

    assert postgres_url.split("://", 1)[0] == deployment_store_driver()
    point_mlflow_at(monkeypatch, postgres_url)
    model_registry = Registry(postgres_url)
    model_registry.ensure_experiment(artifact_location=(tmp_path / "artifacts").as_uri())
    first, second, third = _versions(model_registry, 3)
    model_registry.promote(first, reason="first model")
    model_registry.promote(second, reason="better")
    model_registry.set_challenger(third, reason="not promoted")
    move = model_registry.rollback(reason="odd tiers")
    assert (move.from_version, move.to_version) == (second, first)
    assert model_registry.champion().version == first
    assert [m.action for m in model_registry.history()] == ["rollback", "promote", "promote"]
    assert model_registry.challenger().version == third
    stage, aliases, tags = _state(second)
    assert (stage, aliases, tags["rollback_reason"]) == ("Archived", [], "odd tiers")
