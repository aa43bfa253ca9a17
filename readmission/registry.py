"""The MLflow model registry: logging, registration, champion/challenger promotion, loading.

`Registry` is the one door to MLflow: built from the settings (`Registry.from_settings`)
and handed to the pipeline, the API and the local mode, it holds one `MlflowClient` for the
tracking server and registry at its URI. Training logs each candidate inside
`registry.activate()` (MLflow's fluent API, runs and model logging, reads process-wide
state: that block is the one place that sets it), registers the best with `register`, asks
`should_promote` against `champion()` and records the answer with `record_decision`;
`promote` moves the alias `production` (and, while MLflow still has stages, the stage
`Production`). The API loads whatever holds the alias with `load_champion`. Every name
lives here, and mlflow is imported inside the functions: importing this module is cheap.

Model signature (see `signature_frame`): MLflow infers `long` for integer columns, and a
`long` column rejects floats, NaN and even pandas' own `Int64` with `<NA>` at inference
("Can not safely convert float64 to int64"); integer columns are therefore declared
`double`, the type MLflow recommends for integers that may be missing. The signature is
inferred on the full training frame, so a column is optional exactly when some training
row lacks it. Caveat of MLflow's rules: pyfunc's in-process `predict` still refuses an
`int64` column for a `double` input (an int64 -> float64 cast is not "safe" to it); send
floats there, as `cleaning.clean` does. The JSON scoring server casts to the schema itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any

from readmission.names import (
    ARCHIVED_STAGE,
    CHALLENGER_ALIAS,
    EXPERIMENT_NAME,
    MODEL_NAME,
    PRIMARY_METRIC,
    PRODUCTION_ALIAS,
    PRODUCTION_STAGE,
)

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.models.model import ModelInfo

    from readmission.settings import Settings

log = logging.getLogger(__name__)

#: The artifact name of the model inside its run.
MODEL_ARTIFACT = "model"
#: The package whose classes are trusted by skops automatically.
TRUSTED_PACKAGE = "readmission"
#: Types that the project's scikit-learn 1.9 pipelines contain but skops 0.16 does not
#: trust by default (measured on each model family); always trusted when logging. A type
#: missing here makes logging fail with MLflow's "untrusted types" error naming it.
SCIKIT_LEARN_TYPES = (
    "numpy.dtype",  # SimpleImputer._fit_dtype
    "sklearn.tree._tree.Tree",  # RandomForestClassifier
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "functools.partial",  # HistGradientBoostingClassifier's validation, with:
    "sklearn.utils.validation.check_array",
)
#: What a logged model needs to load, pinned to the installed versions. Listed rather than
#: left to MLflow's inference, which spends ~5 s per model in a subprocess and picks up
#: whatever happens to be imported (pytest, rich, `readmission==0.1.0` that no index has).
#: The `readmission` package itself must be installed where a model is loaded.
MODEL_REQUIREMENTS = ("mlflow", "scikit-learn", "skops", "numpy", "pandas", "scipy")
#: Run metrics that `describe` reports.
REPORTED_METRIC_PREFIXES = ("valid_", "test_")
#: How long `register` waits for a version to become READY.
REGISTRATION_TIMEOUT_SECONDS = 300.0
#: The actions that move the `production` alias, as the history records them.
PROMOTE = "promote"
ROLLBACK = "rollback"
#: ... and the `challenger` alias (`set_challenger`).
CHALLENGE = "challenge"
#: Registered-model tags that record the alias' moves, one tag a move: `alias_move.000001`.
MOVE_TAG_PREFIX = "alias_move."


class AliasError(ValueError):
    """An alias not moved: the message says why; the registry was left as it was."""


class RollbackError(AliasError):
    """A rollback refused: the message says why; the registry was left as it was."""


@dataclass(frozen=True)
class AliasMove:
    """One move of the `production` alias: when, from which version to which, why, by what
    (a DAG run id, or `cli`)."""

    number: int
    at: str
    alias: str
    action: str
    from_version: str | None
    to_version: str
    reason: str
    by: str

    @property
    def tag_key(self) -> str:
        return f"{MOVE_TAG_PREFIX}{self.number:06d}"

    def tag_value(self) -> str:
        return json.dumps({k: v for k, v in self.to_dict().items() if k != "number"})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _production_stack(moves: list[AliasMove]) -> list[str]:
    """The Production versions as a stack, oldest first, from the moves (newest first): a
    promotion pushes its version, a rollback pops back to its target (pushed if it was not
    on the stack)."""
    stack: list[str] = []
    for move in reversed(moves):
        if move.action == ROLLBACK and move.to_version in stack:
            del stack[stack.index(move.to_version) + 1 :]
            continue
        if move.action == ROLLBACK and stack and stack[-1] == move.from_version:
            stack.pop()
        if move.to_version in stack:
            stack.remove(move.to_version)
        stack.append(move.to_version)
    return stack


def _moves(tags: dict[str, str]) -> list[AliasMove]:
    """The moves recorded in a registered model's tags, newest first; a tag that does not
    parse is skipped with a warning (the rest of the history stays readable)."""
    moves = []
    for key, value in tags.items():
        if not key.startswith(MOVE_TAG_PREFIX):
            continue
        try:
            number = int(key.removeprefix(MOVE_TAG_PREFIX))
            fields = json.loads(value)
            moves.append(AliasMove(number=number, **fields))
        except (ValueError, TypeError) as exc:
            log.warning("registry tag %s is not an alias move, skipped: %s", key, exc)
    return sorted(moves, key=lambda m: m.number, reverse=True)


def should_promote(candidate_score: float, champion_score: float | None) -> bool:
    """Whether a candidate replaces the champion: only when strictly better (higher).

    No champion: promote (unless the candidate's score is NaN). Equal: keep the champion,
    a tie is no reason to change what is served. NaN candidate: never. NaN champion (it
    could not be scored): promote a candidate with a finite score.
    """
    if math.isnan(candidate_score):
        return False
    if champion_score is None:
        return True
    if math.isnan(champion_score):
        return math.isfinite(candidate_score)
    return candidate_score > champion_score


def _error_code(exc: Exception) -> str | None:
    return getattr(exc, "error_code", None)


# --- logging a model ----------------------------------------------------------------------


def signature_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with the dtypes the signature is inferred on: integers (numpy or nullable,
    `<NA>` included) as float64, nullable booleans as objects (True/False/None), and
    categoricals as objects, so that missing values at inference fit the schema."""
    import numpy as np
    import pandas as pd

    columns = {}
    for name, column in frame.items():
        dtype = column.dtype
        if pd.api.types.is_integer_dtype(dtype):
            column = pd.Series(column.to_numpy(dtype=float, na_value=np.nan), index=column.index)
        elif isinstance(dtype, pd.CategoricalDtype) or (
            pd.api.types.is_bool_dtype(dtype) and column.isna().any()
        ):
            column = column.astype(object).where(column.notna(), None)
        columns[name] = column
    return pd.DataFrame(columns, index=frame.index)


def covering_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The few rows of `frame` that show, for every column, each Python type its values
    take and a missing value if it has one; in frame order.

    MLflow infers a column's schema from its dtype, or, for an object column, from the type
    of every value, and whether it is required from whether any value is missing: these
    rows give the same schema as the whole frame, reading each value once in C instead of
    MLflow's Python loop over every value (tens of seconds for a training split).
    """
    import numpy as np
    import pandas as pd

    positions: set[int] = set()
    for _, column in frame.items():
        missing = column.isna().to_numpy()
        if missing.any():
            positions.add(int(missing.argmax()))
        present = np.flatnonzero(~missing)
        if not len(present):
            continue
        if column.dtype.kind == "O":
            kinds = pd.Series(column.to_numpy()[present]).map(type)
            positions.update(int(present[i]) for i in kinds.drop_duplicates().index)
        else:
            positions.add(int(present[0]))
    return frame.iloc[sorted(positions)]


def _walk(obj: Any, seen: set[int]) -> Any:
    """Every object reachable from an estimator through attributes and containers."""
    import numpy as np

    stack = [obj]
    while stack:
        current = stack.pop()
        if id(current) in seen or isinstance(
            current, str | bytes | int | float | np.ndarray | ModuleType
        ):
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, dict):
            stack.extend(current.keys())
            stack.extend(current.values())
        elif isinstance(current, list | tuple | set | frozenset):
            stack.extend(current)
        elif hasattr(current, "__dict__") and not isinstance(current, type):
            stack.extend(vars(current).values())


def package_types(model: Any, package: str = TRUSTED_PACKAGE) -> list[str]:
    """The `module.Name` of every class and function of `package` in the estimator tree,
    in skops' spelling, so that skops trusts the project's own code when loading."""
    found = set()
    for obj in _walk(model, set()):
        kind = obj if callable(obj) and hasattr(obj, "__qualname__") else type(obj)
        module = getattr(kind, "__module__", "") or ""
        if module == package or module.startswith(f"{package}."):
            found.add(f"{module}.{kind.__name__}")
    return sorted(found)


def _pinned(distributions: tuple[str, ...]) -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in distributions]


def log_sklearn_model(
    model: Any,
    *,
    training_frame: pd.DataFrame,
    input_example: pd.DataFrame,
    trusted_types: list[str] | None = None,
) -> ModelInfo:
    """Log a fitted scikit-learn estimator to the active run as `model` (skops format,
    signature of the whole training frame); returns MLflow's `ModelInfo`: the
    `model_uri` to register, the `model_id` of the LoggedModel to link metrics to.

    skops refuses types it does not know: `trusted_types` lists extra ones; every class
    and function of the `readmission` package found in the estimator, and the
    `SCIKIT_LEARN_TYPES`, are added automatically. The list is stored with the model.
    """
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    if mlflow.active_run() is None:
        raise RuntimeError("log_sklearn_model needs an active MLflow run (mlflow.start_run)")
    example = signature_frame(input_example)
    inputs = covering_rows(signature_frame(training_frame))  # the whole frame's schema
    signature = infer_signature(inputs, model.predict(input_example))
    trusted = sorted({*(trusted_types or []), *SCIKIT_LEARN_TYPES, *package_types(model)})
    with _quiet_skops(), warnings.catch_warnings():  # MLflow's own pandas-3 deprecation
        warnings.filterwarnings("ignore", message="Operation with range is deprecated")
        info = mlflow.sklearn.log_model(
            model,
            name=MODEL_ARTIFACT,
            signature=signature,
            input_example=example,
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
            skops_trusted_types=trusted,
            pip_requirements=_pinned(MODEL_REQUIREMENTS),
        )
    return info


# --- registering, promoting, loading, describing ---------------------------------------


def _entry(client: MlflowClient, version: str | int) -> ModelVersion:
    """A version of MODEL_NAME, its `version` a str whatever the store: MLflow's SQL store
    gives ints, its REST server strings (the documented type); callers compare them."""
    entry = client.get_model_version(MODEL_NAME, str(version))
    if not isinstance(entry.version, str):
        entry._version = str(entry.version)  # no public setter
    return entry


def _await_registration(client: MlflowClient, version: str) -> ModelVersion:
    """The entry of `version` once it is no longer PENDING_REGISTRATION (or the timeout)."""
    deadline = time.monotonic() + REGISTRATION_TIMEOUT_SECONDS
    while True:
        entry = _entry(client, version)
        if entry.status != "PENDING_REGISTRATION" or time.monotonic() > deadline:
            return entry
        time.sleep(0.5)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _transition(client: MlflowClient, version: str, stage: str, archive: bool) -> bool:
    """Set a version's stage without the deprecation warning; False if MLflow has no
    stages any more (they are deprecated since 2.9)."""
    transition = getattr(client, "transition_model_version_stage", None)
    if transition is None:
        return False
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*stage.*")
        transition(MODEL_NAME, version, stage, archive_existing_versions=archive)
    return True


def _stage(entry: ModelVersion) -> str | None:
    """A version's stage; the `stage` tag that `promote` writes once MLflow has none."""
    stage = entry.current_stage
    if stage in (None, "", "None") and "stage" in (entry.tags or {}):
        return entry.tags["stage"]
    return stage


def _all_versions(client: MlflowClient) -> list[ModelVersion]:
    """Every version of MODEL_NAME, page after page."""
    versions: list[ModelVersion] = []
    token = None
    while True:
        page = client.search_model_versions(f"name = '{MODEL_NAME}'", page_token=token)
        versions.extend(page)
        token = page.token
        if not token:
            return versions


def _archive_other_production_versions(client: MlflowClient, version: str) -> None:
    """Every other version in stage Production moves to Archived, one by one: MLflow's own
    `archive_existing_versions=True` fails on a PostgreSQL store reached with psycopg 3 (the
    deployment's `postgresql+psycopg://`): its query compares the integer version with a
    VARCHAR parameter (`operator does not exist: integer <> character varying`)."""
    for other in _all_versions(client):
        if str(other.version) != version and other.current_stage == PRODUCTION_STAGE:
            _transition(client, str(other.version), ARCHIVED_STAGE, archive=False)


def _score_tag(score: float | None) -> str:
    return "none" if score is None else repr(float(score))


def load_model(uri: str) -> Any:
    """The scikit-learn estimator at `uri` (a local model folder, or `runs:/...` of the
    active registry); skops trusts the types recorded when it was logged. MLflow 3.17
    refuses every format, skops included, when the environment sets
    MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false."""
    import mlflow.sklearn

    with _quiet_skops():
        return mlflow.sklearn.load_model(uri)


@contextlib.contextmanager
def _quiet_skops() -> Iterator[None]:
    """Silence the deprecation warnings skops triggers while it scans every imported module
    for functions by name (in an Airflow worker, one per attribute of Airflow's lazy
    modules: a thousand lines of noise in each task log)."""
    with warnings.catch_warnings():
        for category in (DeprecationWarning, FutureWarning):  # Airflow's are FutureWarnings
            warnings.filterwarnings("ignore", category=category, module=r"skops(\..*)?$")
        yield


def _iso(millis: int | None) -> str | None:
    if millis is None:
        return None
    return datetime.fromtimestamp(millis / 1000, tz=UTC).isoformat(timespec="seconds")


def _json_number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _run_metrics(client: MlflowClient, run_id: str | None) -> dict[str, float | None]:
    from mlflow.exceptions import MlflowException

    if not run_id:
        return {}
    try:
        metrics = client.get_run(run_id).data.metrics
    except MlflowException as exc:
        if _error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise
    return {
        key: _json_number(value)
        for key, value in sorted(metrics.items())
        if key.startswith(REPORTED_METRIC_PREFIXES)
    }


def _describe(
    client: MlflowClient, version: ModelVersion, aliases: list[str] | None = None
) -> dict[str, Any]:
    return {
        "name": version.name,
        "version": str(version.version),
        "run_id": version.run_id,
        "model_id": getattr(version, "model_id", None),
        "source": version.source,
        "status": version.status,
        "stage": _stage(version),
        "aliases": sorted(version.aliases if aliases is None else aliases),
        "tags": dict(version.tags or {}),
        "created_at": _iso(version.creation_timestamp),
        "updated_at": _iso(version.last_updated_timestamp),
        "metrics": _run_metrics(client, version.run_id),
    }


class Registry:
    """The tracking server and model registry at `uri`, reached through one MlflowClient."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._client: MlflowClient | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        return cls(settings.mlflow.tracking_uri)

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            import mlflow

            self._client = mlflow.MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        return self._client

    @contextlib.contextmanager
    def activate(self) -> Iterator[Registry]:
        """Point MLflow's fluent API (runs, logging, `register_model`) at this registry
        for the block: the one place that sets MLflow's process-wide URIs."""
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        yield self

    def ensure_experiment(
        self, name: str = EXPERIMENT_NAME, artifact_location: str | None = None
    ) -> str:
        """The experiment's id, created if missing (`artifact_location` applies only then)
        and made the active one. Safe when processes race to create it; a deleted one is
        restored."""
        import mlflow
        from mlflow.exceptions import MlflowException

        client = self.client
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                experiment_id = client.create_experiment(name, artifact_location=artifact_location)
            except MlflowException as exc:
                if _error_code(exc) != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment = client.get_experiment_by_name(name)  # another process won the race
                if experiment is None:
                    raise
                experiment_id = experiment.experiment_id
        else:
            experiment_id = experiment.experiment_id
            if experiment.lifecycle_stage == "deleted":
                log.warning("restoring deleted MLflow experiment %r (%s)", name, experiment_id)
                client.restore_experiment(experiment_id)
        with self.activate():
            mlflow.set_experiment(experiment_id=experiment_id)
        return experiment_id

    def register(self, model_uri: str, *, tags: dict[str, str] | None = None) -> ModelVersion:
        """Register `model_uri` as a new version of MODEL_NAME, wait until it is READY, tag it."""
        import mlflow

        with self.activate():
            version = mlflow.register_model(
                model_uri,
                MODEL_NAME,
                await_registration_for=int(REGISTRATION_TIMEOUT_SECONDS),
                tags={key: str(value) for key, value in (tags or {}).items()} or None,
            )
        # register_model waits too; a store may still report PENDING after it
        version = _await_registration(self.client, version.version)
        if version.status != "READY":
            raise RuntimeError(
                f"model version {MODEL_NAME} v{version.version} is {version.status}: "
                f"{version.status_message or 'no message'}"
            )
        log.info("registered %s v%s from %s", MODEL_NAME, version.version, model_uri)
        return version

    def entry(self, version: str) -> ModelVersion:
        """The registry entry of a version of MODEL_NAME (tags, stage, aliases, status)."""
        return _entry(self.client, version)

    def version_of_run(self, run_id: str) -> ModelVersion | None:
        """The newest READY version registered from `run_id`, if any: makes retries idempotent.

        A version still registering is waited for; one whose registration failed is ignored
        (the caller registers the run again), so only a READY version is ever promoted."""
        client = self.client
        versions = client.search_model_versions(f"name = '{MODEL_NAME}' and run_id = '{run_id}'")
        for entry in sorted(versions, key=lambda v: int(v.version), reverse=True):
            entry = _await_registration(client, entry.version)  # with its aliases
            if entry.status == "READY":
                return entry
            log.warning(
                "%s v%s of run %s is %s, not reused: %s",
                MODEL_NAME,
                entry.version,
                run_id,
                entry.status,
                entry.status_message or "no message",
            )
        return None

    def aliases(self) -> dict[str, str]:
        """Alias -> version of MODEL_NAME; empty when the model is not registered yet."""
        from mlflow.exceptions import MlflowException

        try:
            model = self.client.get_registered_model(MODEL_NAME)
        except MlflowException as exc:
            if _error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise
        return {alias: str(version) for alias, version in (model.aliases or {}).items()}

    def champion(self) -> ModelVersion | None:
        """The version holding the `production` alias; None before the first promotion."""
        version = self.aliases().get(PRODUCTION_ALIAS)
        if version is None:
            return None
        return _entry(self.client, version)

    def promote(
        self, version: str, *, reason: str, previous: str | None = None, by: str = "cli"
    ) -> None:
        """Make `version` the served model: alias `production`, stage `Production` (the
        previous Production version archived, tagged `archived_at` and `superseded_by`), tags
        `promoted_at` and `promotion_reason`; the move recorded in `history` (`by`: what
        moved it, a DAG run id or `cli`).

        The alias moves first (it is what the API follows), then the stages, then the tags,
        then the record. Every step may be repeated, so calling again after a failure
        part-way completes the promotion (and records it once). `previous` names the version
        replaced; by default the one holding the alias (on a retry after the alias moved,
        the caller passes it: the alias no longer tells).
        """
        version = str(version)
        client = self.client
        target = _entry(client, version)  # fails early if it is missing
        if target.status != "READY":
            raise RuntimeError(f"{MODEL_NAME} v{version} is {target.status}: only READY is served")
        holder = self.champion()
        again = holder is not None and holder.version == version  # a retry or a repeat
        if previous is None and not again:
            previous = None if holder is None else holder.version
        tags = target.tags or {}
        promoted_at = (again and tags.get("promoted_at")) or _now()
        reason = (again and tags.get("promotion_reason")) or reason
        previous = None if previous is None or str(previous) == version else str(previous)
        self._hand_over(target, previous, promoted_at)
        if previous is not None:
            client.set_model_version_tag(MODEL_NAME, previous, "superseded_by", version)
        client.set_model_version_tag(MODEL_NAME, version, "promoted_at", promoted_at)
        client.set_model_version_tag(MODEL_NAME, version, "promotion_reason", reason)
        self._record_move(PROMOTE, previous, version, reason, by, promoted_at)
        if self.aliases().get(CHALLENGER_ALIAS) == version:  # it serves now: no shadow of itself
            self.clear_challenger()
        log.info("promoted %s v%s to production (%s)", MODEL_NAME, version, reason)

    def _hand_over(self, target: ModelVersion, previous: str | None, at: str) -> None:
        """Alias `production` and stage `Production` to `target`, which sheds the tags of
        an earlier archival; every other Production version archived, `previous` tagged
        `archived_at` (kept if it already was: a retry)."""
        client = self.client
        version = str(target.version)
        for stale in (
            "archived_at",
            "superseded_by",
            "rolled_back_at",
            "rollback_reason",
            "rolled_back_to",
        ):
            if stale in (target.tags or {}):
                client.delete_model_version_tag(MODEL_NAME, version, stale)
        client.set_registered_model_alias(MODEL_NAME, PRODUCTION_ALIAS, version)
        has_stages = _transition(client, version, PRODUCTION_STAGE, archive=False)
        if has_stages:
            _archive_other_production_versions(client, version)
        if previous is not None:
            old = _entry(client, previous)
            if has_stages and _stage(old) != ARCHIVED_STAGE:
                _transition(client, previous, ARCHIVED_STAGE, archive=False)
            if not has_stages:
                client.set_model_version_tag(MODEL_NAME, previous, "stage", ARCHIVED_STAGE)
            archived_at = (old.tags or {}).get("archived_at") or at
            client.set_model_version_tag(MODEL_NAME, previous, "archived_at", archived_at)
        if not has_stages:
            client.set_model_version_tag(MODEL_NAME, version, "stage", PRODUCTION_STAGE)

    # --- the audit trail and rollback ---------------------------------------------------

    def history(self, alias: str = PRODUCTION_ALIAS) -> list[AliasMove]:
        """Every recorded move of `alias`, newest first (empty before the first promotion,
        or for moves made outside this class, e.g. in MLflow's UI)."""
        from mlflow.exceptions import MlflowException

        try:
            model = self.client.get_registered_model(MODEL_NAME)
        except MlflowException as exc:
            if _error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
                return []
            raise
        return [move for move in _moves(model.tags or {}) if move.alias == alias]

    def _record_move(
        self,
        action: str,
        previous: str | None,
        version: str,
        reason: str,
        by: str,
        at: str,
        alias: str = PRODUCTION_ALIAS,
    ) -> None:
        """Append a move to the history, unless the last one recorded for the alias already
        put `version` there (a retry). Callers that may race hold the promotion lock
        (`db.promotion_lock`): the next number is read, then written."""
        model = self.client.get_registered_model(MODEL_NAME)
        every = _moves(model.tags or {})
        mine = [move for move in every if move.alias == alias]
        if mine and mine[0].to_version == version:
            return
        move = AliasMove(
            number=(every[0].number + 1) if every else 1,
            at=at,
            alias=alias,
            action=action,
            from_version=previous,
            to_version=version,
            reason=reason,
            by=by,
        )
        self.client.set_registered_model_tag(MODEL_NAME, move.tag_key, move.tag_value())

    def rollback_target(self) -> str | None:
        """The version a rollback restores by default: the one below the current holder on
        the stack of Production versions the history builds (a promotion pushes, a rollback
        pops back to its target), so rollbacks walk back, never forward, and a version
        promoted again after a rollback is an ordinary step again. Without a recorded history
        (versions promoted before it was kept), the version the current one superseded."""
        current = self.champion()
        if current is None:
            return None
        moves = self.history()
        if moves:
            stack = _production_stack(moves)
            if stack and stack[-1] == current.version and len(stack) > 1:
                return stack[-2]
            return None
        superseded = [
            v
            for v in _all_versions(self.client)
            if (v.tags or {}).get("superseded_by") == current.version
            and "rolled_back_at" not in (v.tags or {})
        ]
        superseded.sort(key=lambda v: (v.tags or {}).get("archived_at", ""), reverse=True)
        return str(superseded[0].version) if superseded else None

    def rollback(self, to: str | None = None, *, reason: str, by: str = "cli") -> AliasMove:
        """Serve an earlier version again: `to`, by default `rollback_target()`. The alias
        and stage move back, the version rolled back from is archived and tagged
        `rolled_back_at`/`rollback_reason` (training never promotes it again by itself), the
        move is recorded. Refused (`RollbackError`, nothing changed) without a reason, a
        current model or an earlier one, for a missing version, one that is not READY, the
        one already serving, or one whose files cannot be fetched and loaded.

        A rollback interrupted after the alias moved (the registry failed before the tags
        and the record) is completed by running it again with `--to` the version now
        serving: the alias holder differs from the last recorded move's."""
        reason = (reason or "").strip()
        if not reason:
            raise RollbackError("a rollback needs a reason (--reason TEXT)")
        current = self.champion()
        if current is None:
            raise RollbackError(f"no version of {MODEL_NAME} holds the alias {PRODUCTION_ALIAS}")
        moves = self.history()
        unrecorded = bool(moves) and moves[0].to_version != current.version
        if unrecorded and to is not None and str(to) == current.version:
            return self._finish_rollback(moves[0].to_version, current.version, reason, by)
        if unrecorded:
            raise RollbackError(
                f"v{current.version} holds the alias but the last recorded move put "
                f"v{moves[0].to_version} there (a rollback interrupted, or a move made outside "
                f"this code): complete it with --to {current.version}"
            )
        target = str(to) if to is not None else self.rollback_target()
        if target is None:
            raise RollbackError(
                f"v{current.version} has no earlier Production version to roll back to: "
                "name one with --to VERSION"
            )
        if target == current.version:
            raise RollbackError(f"v{target} already holds the alias {PRODUCTION_ALIAS}")
        entry = self._existing(target)
        if entry.status != "READY":
            raise RollbackError(f"v{target} is {entry.status}: only a READY version is served")
        try:
            self.load_version(target)
        except Exception as exc:
            raise RollbackError(f"v{target}'s model cannot be loaded: {exc}") from exc
        self._hand_over(entry, current.version, _now())
        return self._finish_rollback(current.version, target, reason, by)

    def _finish_rollback(self, previous: str, target: str, reason: str, by: str) -> AliasMove:
        """The tags and the record of a rollback whose alias moved from `previous` to
        `target`."""
        at = _now()
        client = self.client
        for key, value in (
            ("archived_at", at),
            ("rolled_back_at", at),
            ("rollback_reason", reason),
            ("rolled_back_to", target),
        ):
            client.set_model_version_tag(MODEL_NAME, previous, key, value)
        client.set_model_version_tag(MODEL_NAME, target, "restored_at", at)
        client.set_model_version_tag(MODEL_NAME, target, "restore_reason", reason)
        self._record_move(ROLLBACK, previous, target, reason, by, at)
        if self.aliases().get(CHALLENGER_ALIAS) == target:  # it serves again: no shadow of itself
            self.clear_challenger()
        log.warning("rolled %s back from v%s to v%s (%s)", MODEL_NAME, previous, target, reason)
        return self.history()[0]

    def challenger(self) -> ModelVersion | None:
        """The version holding the `challenger` alias, if any."""
        version = self.aliases().get(CHALLENGER_ALIAS)
        return None if version is None else _entry(self.client, version)

    def set_challenger(self, version: str, *, reason: str, by: str = "cli") -> None:
        """Give `version` the `challenger` alias (the API scores requests with it too when it
        shadows), recorded like the production alias' moves. Not the served version, and
        only a READY one."""
        version = str(version)
        target = self._existing(version)
        if target.status != "READY":
            raise AliasError(f"v{version} is {target.status}: only a READY version shadows")
        current = self.champion()
        if current is not None and current.version == version:
            raise AliasError(f"v{version} is the Production version, not a challenger")
        before = self.challenger()
        self.client.set_registered_model_alias(MODEL_NAME, CHALLENGER_ALIAS, version)
        previous = None if before is None else before.version
        self._record_move(CHALLENGE, previous, version, reason, by, _now(), CHALLENGER_ALIAS)
        log.info("%s v%s is the challenger (%s)", MODEL_NAME, version, reason)

    def clear_challenger(self) -> None:
        """No challenger any more (the served version took it, or a person said so)."""
        if CHALLENGER_ALIAS in self.aliases():
            self.client.delete_registered_model_alias(MODEL_NAME, CHALLENGER_ALIAS)

    def _existing(self, version: str) -> ModelVersion:
        from mlflow.exceptions import MlflowException

        try:
            return _entry(self.client, version)
        except MlflowException as exc:
            if _error_code(exc) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise RollbackError(f"{MODEL_NAME} has no version {version}") from exc
            raise

    def record_decision(
        self,
        version: str,
        *,
        promoted: bool,
        candidate_score: float,
        champion_version: str | None,
        champion_score: float | None,
        reason: str,
        extra: dict[str, str] | None = None,
    ) -> None:
        """Tag the candidate version with the promotion decision, both scores and the reason,
        so the registry shows why it was (not) promoted (and `extra` tags: the subgroup
        gate's figures). Absent values are written `none`."""
        client = self.client
        tags = {
            "promotion_decision": "promoted" if promoted else "rejected",
            "decision_reason": reason,
            f"candidate_{PRIMARY_METRIC}": _score_tag(candidate_score),
            f"champion_{PRIMARY_METRIC}": _score_tag(champion_score),
            "champion_version": "none" if champion_version is None else str(champion_version),
            "decided_at": _now(),
            **(extra or {}),
        }
        for key, value in tags.items():
            client.set_model_version_tag(MODEL_NAME, str(version), key, value)

    def load_version(self, version: str) -> tuple[Any, ModelVersion]:
        """A registered version's estimator and its registry entry."""
        entry = _entry(self.client, version)
        with tempfile.TemporaryDirectory(prefix="model-") as folder:
            return load_model(self.download_version(entry.version, folder)), entry

    def download_version(self, version: str, folder: str) -> str:
        """Fetch a version's model files into `folder`; returns the local model path.

        Separate from `load_model` so that callers can tell the two failures apart: fetching
        fails when the registry or the artifact store cannot be reached (transient: retry),
        loading fails when the files no longer make a model in this code (permanent)."""
        import mlflow.artifacts

        with self.activate():
            return mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{MODEL_NAME}/{version}", dst_path=folder
            )

    def load_champion(self) -> tuple[Any, ModelVersion] | None:
        """The production model and its registry entry; None when nothing is promoted yet.

        The alias is resolved once and the model loaded by that version number, so the
        estimator and the entry agree even if a promotion happens in between.
        """
        current = self.champion()
        if current is None:
            return None
        return self.load_version(current.version)

    def run_document(self, version: ModelVersion, name: str) -> dict[str, Any] | None:
        """A JSON file the version's training run logged (`drift_reference.json`,
        `assessment.json`); None when the run has none. A registry outage raises."""
        import mlflow.artifacts
        from mlflow.exceptions import MlflowException

        try:
            with self.activate():
                return mlflow.artifacts.load_dict(f"runs:/{version.run_id}/{name}")
        except MlflowException as exc:
            if _error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
                raise
        except OSError as exc:  # a missing file: FileNotFoundError, or an HTTP 404
            response = getattr(exc, "response", None)
            if (
                not isinstance(exc, FileNotFoundError)
                and getattr(response, "status_code", 0) != 404
            ):
                raise
        log.warning("v%s's run has no %s", version.version, name)
        return None

    def last_training_started(self, experiment: str = EXPERIMENT_NAME) -> datetime | None:
        """When the newest training run of the experiment started (None: never trained)."""
        experiment_id = self._experiment_id(experiment)
        if experiment_id is None:
            return None
        runs = self.client.search_runs(
            [experiment_id], order_by=["attributes.start_time DESC"], max_results=1
        )
        if not runs:
            return None
        return datetime.fromtimestamp(runs[0].info.start_time / 1000, UTC)

    def training_runs(self, orchestrator_run_id: str, experiment: str = EXPERIMENT_NAME) -> list:
        """The candidates a training run logged that finished: a task Airflow retried leaves
        its failed attempt's run behind (FAILED, or RUNNING if its process was killed)."""
        experiment_id = self._experiment_id(experiment)
        if experiment_id is None:
            return []
        return self.client.search_runs(
            [experiment_id],
            f"tags.orchestrator_run_id = '{orchestrator_run_id}' "
            "and attributes.status = 'FINISHED'",
        )

    def _experiment_id(self, experiment: str) -> str | None:
        found = self.client.get_experiment_by_name(experiment)
        return None if found is None else found.experiment_id

    def describe(self, version: ModelVersion) -> dict[str, Any]:
        """A JSON-able summary of a version: registry fields, tags and the run's valid_*/test_*
        metrics (non-finite ones as null); what the API's `/model` endpoint returns."""
        return _describe(self.client, version)

    def list_versions(self) -> list[dict[str, Any]]:
        """Every version of MODEL_NAME, newest first, each as `describe` gives it."""
        client = self.client
        versions = _all_versions(client)
        by_version: dict[str, list[str]] = {}
        for alias, number in self.aliases().items():  # search results may lack the aliases
            by_version.setdefault(number, []).append(alias)
        versions.sort(key=lambda v: int(v.version), reverse=True)
        return [_describe(client, v, by_version.get(str(v.version), [])) for v in versions]
