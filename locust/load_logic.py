"""What the Locust load test sends, how it judges answers, and when a run fails.

Kept apart from `locustfile.py` (which only wires it to Locust) so it is tested without
running Locust. This folder is not a package: Locust puts it on `sys.path` when it loads
the locustfile, and a `locust/__init__.py` would shadow the library.

Records are real rows of the UCI file when it is found (`DIABETES_CSV`, else `data/`),
or synthetic encounters drawn from the schema; either way they go out as the raw file
writes them (UCI names, `?` for missing, integers as ints), without `readmitted`.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from readmission import dataset, schema, synthetic
from readmission.settings import Settings

log = logging.getLogger(__name__)

#: Relative weights of the tasks of one emulated client (percentages): mostly single
#: predictions, some small batches, a few health and readiness probes, rarely /model.
TASK_WEIGHTS: Mapping[str, int] = {
    "predict": 80,
    "predict_batch": 10,
    "health": 4,
    "ready": 4,
    "model": 2,
}
BATCH_SIZES = (5, 20)  # smallest and largest /predict/batch a client sends
PROBABILITY_TOLERANCE = 0.01  # how far from 1 the class probabilities may sum
START_HINT = "start it with `make run` (the local stack) or point API_URL (or --host) at one"
TRAIN_HINT = "train and promote one with `make run` or `python -m readmission train`"

Record = dict[str, str | int]
Check = Callable[[Any], str | None]


class LoadConfigError(ValueError):
    """A LOAD_* setting is invalid; the message names it."""


_TIMESPAN = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def timespan_seconds(text: str) -> int:
    """Seconds in a Locust run time (`90`, `60s`, `5m`, `1h30m`); ValueError otherwise."""
    text = text.strip().lower()
    if text.isdigit():
        return int(text)
    match = _TIMESPAN.match(text)
    if not text or match is None:
        raise ValueError(f"{text!r} is not a run time such as 60s, 5m or 1h30m")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


class LoadSettings(BaseSettings):
    """The load test's settings, from LOAD_* variables; the API's address is `API_URL`."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    users: int = Field(
        default=2,
        ge=1,
        validation_alias="LOAD_USERS",
        description="Concurrent emulated clients (the original test's 2).",
    )
    spawn_rate: float = Field(
        default=2,
        gt=0,
        validation_alias="LOAD_SPAWN_RATE",
        description="Clients started per second.",
    )
    run_time: str = Field(
        default="60s",
        validation_alias="LOAD_RUN_TIME",
        description="How long a headless run lasts (60s, 5m, 1h30m).",
    )
    p95_ms: float = Field(
        default=200,
        gt=0,
        validation_alias="LOAD_P95_MS",
        description="Latency budget: the run fails when the p95 of all requests exceeds it.",
    )
    user_rps: float = Field(
        default=1.0,
        gt=0,
        validation_alias="LOAD_USER_RPS",
        description="Requests per second of each client (the original test's 1).",
    )
    pool_size: int = Field(
        default=2_000,
        ge=1,
        validation_alias="LOAD_POOL_SIZE",
        description="Encounters loaded once per process and sampled per request.",
    )
    records: Literal["auto", "real", "synthetic"] = Field(
        default="auto",
        validation_alias="LOAD_RECORDS",
        description="auto: the UCI file's rows when found, else synthetic ones.",
    )
    seed: int = Field(default=0, validation_alias="LOAD_SEED", description="Seed of the pool.")

    @field_validator("run_time")
    @classmethod
    def _run_time(cls, value: str) -> str:
        if timespan_seconds(value) <= 0:
            raise ValueError("must be longer than 0 seconds")
        return value.strip()


def load_settings() -> LoadSettings:
    """The LOAD_* settings from the environment, a bad value named in one readable line."""
    try:
        return LoadSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{error['loc'][0] if error['loc'] else '?'}: {error['msg']}" for error in exc.errors()
        )
        raise LoadConfigError(f"invalid load-test setting ({problems})") from None


def api_url() -> str:
    """Where the API is (`API_URL`, the project's setting shared with Streamlit)."""
    return Settings().api.url.rstrip("/")


# --- the records sent


def as_request(row: Mapping[str, Any]) -> Record:
    """A raw row as a client sends it: UCI names, `?` kept, integer columns as ints, no target."""
    record: Record = {}
    for column in schema.COLUMNS:
        if column.kind is schema.Kind.TARGET:
            continue
        value = str(row[column.name]).strip()
        record[column.name] = int(value) if column.is_integer and value.isdigit() else value
    return record


def frame_records(frame: pd.DataFrame) -> list[Record]:
    """Every row of a raw frame (read with dtype=str) as a request body."""
    return [as_request(row) for row in frame.to_dict(orient="records")]


def real_rows(size: int, seed: int, settings: Settings | None = None) -> tuple[Path, pd.DataFrame]:
    """The verified UCI file and `size` of its rows; DatasetError when it is not found."""
    source = dataset.locate(settings or Settings(), download=False)
    frame = pd.read_csv(source.path, dtype=str, keep_default_na=False)
    return source.path, frame.sample(n=min(size, len(frame)), random_state=seed)


@dataclass
class RecordPool:
    """Encounters loaded once per process; each request samples from them."""

    records: list[Record]
    source: str
    rng: random.Random

    def one(self) -> Record:
        """One encounter, for POST /predict."""
        return self.rng.choice(self.records)

    def batch(self) -> list[Record]:
        """5 to 20 distinct encounters, for POST /predict/batch."""
        size = min(self.rng.randint(*BATCH_SIZES), len(self.records))
        return self.rng.sample(self.records, size)


def build_pool(load: LoadSettings, settings: Settings | None = None) -> RecordPool:
    """The pool of `load.pool_size` records, real rows when wanted and found."""
    rng = random.Random(load.seed)
    if load.records != "synthetic":
        try:
            path, frame = real_rows(load.pool_size, load.seed, settings)
        except dataset.DatasetError as exc:
            if load.records == "real":
                raise
            log.debug("no UCI file to sample: %s", exc)
            source = "synthetic encounters (no UCI file found: set DIABETES_CSV for real rows)"
        else:
            return RecordPool(frame_records(frame), f"the UCI file {path}", rng)
    else:
        source = "synthetic encounters"
    frame = synthetic.encounters(load.pool_size, seed=load.seed)
    return RecordPool(frame_records(frame), source, rng)


# --- judging answers


def _is_probability(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= 1
    )


def _scored_problem(body: Any) -> str | None:
    """What is wrong with one scored encounter, None when it keeps the contract."""
    if not isinstance(body, dict):
        return f"a prediction must be an object, got {type(body).__name__}"
    if body.get("prediction") not in schema.READMITTED_CLASSES:
        return f"prediction {body.get('prediction')!r} is not one of NO, >30, <30"
    probabilities = body.get("probabilities")
    if not isinstance(probabilities, dict) or set(probabilities) != set(schema.READMITTED_CLASSES):
        return f"probabilities {probabilities!r} do not cover NO, >30, <30"
    if not all(_is_probability(p) for p in probabilities.values()):
        return f"probabilities {probabilities!r} are not all in [0, 1]"
    if abs(sum(probabilities.values()) - 1) > PROBABILITY_TOLERANCE:
        return f"probabilities {probabilities!r} do not sum to 1"
    if not _is_probability(body.get("readmission_30d_risk")):
        return f"readmission_30d_risk {body.get('readmission_30d_risk')!r} is not in [0, 1]"
    return None


def _model_problem(body: dict) -> str | None:
    model = body.get("model")
    if not isinstance(model, dict) or not model.get("version"):
        return f"model {model!r} has no version"
    return None


def prediction_problem(body: Any) -> str | None:
    """What is wrong with a POST /predict answer, None when it keeps the contract."""
    return _scored_problem(body) or _model_problem(body)


def batch_problem(expected: int) -> Check:
    """A check of a POST /predict/batch answer to `expected` encounters."""

    def check(body: Any) -> str | None:
        if not isinstance(body, dict) or not isinstance(body.get("predictions"), list):
            return "the answer has no list of predictions"
        if len(body["predictions"]) != expected:
            return f"{len(body['predictions'])} predictions for {expected} encounters"
        for position, scored in enumerate(body["predictions"]):
            if problem := _scored_problem(scored):
                return f"prediction {position}: {problem}"
        return _model_problem(body)

    return check


def health_problem(body: Any) -> str | None:
    """What is wrong with a GET /health answer."""
    if not isinstance(body, dict) or body.get("status") != "ok":
        return f"status is not ok: {body!r}"
    return None


def ready_problem(body: Any) -> str | None:
    """What is wrong with a GET /ready answer (it names the served model)."""
    if not isinstance(body, dict) or body.get("status") != "ready":
        return f"status is not ready: {body!r}"
    return _model_problem(body)


def model_problem(body: Any) -> str | None:
    """What is wrong with a GET /model answer (the served version at least)."""
    if not isinstance(body, dict) or not body.get("version"):
        return f"no model version in {str(body)[:200]!r}"
    return None


def answer_problem(status: int, content: bytes, check: Check) -> str | None:
    """Why an HTTP answer counts as a failure (not 2xx, not JSON, off contract), else None."""
    if not 200 <= status < 300:
        return f"HTTP {status}: {content[:200].decode('utf-8', 'replace')}"
    try:
        body = json.loads(content)
    except ValueError:
        return f"HTTP {status} but the body is not JSON: {content[:200]!r}"
    return check(body)


# --- before and after a run


def readiness_problem(url: str, timeout: float = 5.0) -> str | None:
    """Why the API at `url` cannot be load-tested (down, no model), None when /ready is 200."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/ready", timeout=timeout):
            return None
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode("utf-8", "replace")
        if exc.code == 503:
            return f"the API at {url} has no model to serve ({detail}): {TRAIN_HINT}, then retry"
        return f"the API at {url} answered GET /ready with HTTP {exc.code} ({detail})"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"the API at {url} does not answer ({reason}): {START_HINT}"


def run_problems(requests: int, failures: int, p95_ms: float, budget_ms: float) -> list[str]:
    """Why a finished run fails: no request, any failed request, or p95 over the budget."""
    problems = []
    if requests == 0:
        problems.append("no request was made")
    if failures:
        problems.append(f"{failures} of {requests} requests failed")
    if p95_ms > budget_ms:
        problems.append(f"p95 of all requests is {p95_ms:g} ms, over LOAD_P95_MS={budget_ms:g} ms")
    return problems
