"""Scoring requests: clean, add history, predict, in batches gathered across requests.

One worker thread owns the model calls. Requests queue their encounters; the worker takes
whatever has queued up since its last call (up to `max_rows`) and scores it in one call.
A lone request is scored at once, and under load many requests share a call: one-row
calls cost ~10 ms of preprocessing overhead while a 1,000-row call costs ~0.04 ms a row,
and concurrent model calls in threads only add OpenMP contention (measured here).

A request may ask for explanations (`explain=True`): they are computed for its rows only,
by the explainer the model was loaded with, from what the scoring call computed, in a
second thread (`explainer`), so that a slow explanation (a deep forest's ~1 s a row) holds
up no request that did not ask for one and the next call is scored meanwhile (TreeSHAP
runs without the GIL). A request that asks while the model has none gets
`ExplanationUnavailableError` (409), the others their answers. Explanations that fail
fail the requests that asked for them, one by one, never the plain answers.

A shared call that fails is tried again request by request, so one bad record fails only
the request that sent it. The queue holds at most `max_queued_rows` encounters: beyond,
a request is refused at once (`QueueFullError`, a 503 with Retry-After) rather than left
waiting behind work it cannot outrun.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from readmission import schema
from readmission.acceleration import SMALL_BATCH, fast_path, score_columns
from readmission.api.history import History
from readmission.api.metrics import ApiMetrics
from readmission.api.model_store import LoadedModel, ModelStore
from readmission.api.shadow import ShadowStats
from readmission.cleaning import clean, clean_records
from readmission.estimator import expired_mask
from readmission.explain import Explanation
from readmission.features import HISTORY
from readmission.text import short_error

log = logging.getLogger(__name__)
CLASSES = schema.READMITTED_CLASSES
HISTORY_RETRY_SECONDS = 5.0


class NoModelError(RuntimeError):
    """No model is loaded yet."""


class QueueFullError(RuntimeError):
    """The scoring queue holds as many encounters as it may: come back shortly."""


class ExplanationUnavailableError(RuntimeError):
    """The model in service cannot be explained; the message says why."""


@dataclass
class _Job:
    records: list[dict]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    explain: bool = False


@dataclass
class _Explaining:
    """The requests of a scored call that asked for explanations, with their answers, and
    how to explain rows of the call (positions among the rows that asked)."""

    loaded: LoadedModel
    jobs: list[tuple[_Job, list[Scored], list[int]]]  # request, answers, its positions
    explain: Callable[[list[int]], list[Explanation]]


@dataclass(frozen=True)
class Scored:
    """One encounter's answer, and the history it was scored with."""

    prediction: str
    probabilities: dict[str, float]
    history: History
    explanation: Explanation | None = None
    tier: str | None = None  # high, medium or low; None when the model has no tiers

    @property
    def risk_30d(self) -> float:
        return self.probabilities["<30"]


class Predictor:
    """Scores encounters with the store's current model, batching across requests."""

    def __init__(
        self,
        store: ModelStore,
        metrics: ApiMetrics,
        history: Callable[[list[dict]], list[History]] | None = None,
        max_rows: int = 2_048,
        max_queued_rows: int = 10_000,
        on_shadow: Callable[[list[dict], list[Scored], LoadedModel], None] | None = None,
    ) -> None:
        self.store = store
        #: Where the challenger's answers go (the prediction log), and how they compare.
        self.on_shadow = on_shadow
        self.shadow = ShadowStats()
        self.metrics = metrics
        self.history = history
        self.max_rows = max_rows
        self.max_queued_rows = max_queued_rows
        self._queued_rows = 0
        self._queued_lock = threading.Lock()
        self._history_paused_until = 0.0
        self._drift_due = 0.0
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._explaining_rows = 0  # rows scored and waiting for their explanations
        self._explanations: queue.SimpleQueue[_Explaining | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="predictor", daemon=True)
        self._thread.start()
        self._explainer = threading.Thread(
            target=self._run_explanations, name="explainer", daemon=True
        )
        self._explainer.start()

    async def score(
        self, records: list[dict], explain: bool = False
    ) -> tuple[list[Scored], LoadedModel]:
        """Score encounters (dicts keyed by column key), explained if `explain`; raises
        NoModelError, ExplanationUnavailableError, and QueueFullError when the queue cannot
        take them (an empty queue takes any request)."""
        current = self.store.current
        if current is None:
            raise NoModelError
        if explain and current.explainer is None:
            raise ExplanationUnavailableError(_unexplainable(current))
        with self._queued_lock:
            queued = self._queued_rows + len(records)
            behind = self._explaining_rows + len(records) if explain else 0
            if (self._queued_rows and queued > self.max_queued_rows) or (
                self._explaining_rows and behind > self.max_queued_rows
            ):
                self.metrics.queue_full.inc()
                raise QueueFullError
            self._queued_rows = queued
        self.metrics.queue_rows.set(queued)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Job(records, future, loop, explain))
        return await future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)
        self._explanations.put(None)
        self._explainer.join(timeout=5)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs, rows = [job], len(job.records)
            while rows < self.max_rows:  # whatever queued meanwhile shares this call
                try:
                    extra = self._queue.get_nowait()
                except queue.Empty:
                    break
                if extra is None:
                    self._queue.put(None)
                    break
                jobs.append(extra)
                rows += len(extra.records)
            with self._queued_lock:
                self._queued_rows -= rows
                self.metrics.queue_rows.set(self._queued_rows)
            try:
                self._score_jobs(jobs)
            except Exception as exc:
                log.exception("the predictor's call failed unexpectedly: %s", short_error(exc))
                for job in jobs:  # a request not answered yet gets the error, not a hang
                    _hand(job, _set_exception, exc)

    def _score_jobs(self, jobs: list[_Job]) -> None:
        loaded = self.store.current  # one snapshot for the whole call
        try:
            if loaded is None:
                raise NoModelError
            records = [record for job in jobs for record in job.records]
            explained = [job.explain for job in jobs for _ in job.records]
            answers, explain = self._score(loaded, records, explained)
        except Exception as exc:  # noqa: BLE001 - handed to the waiting requests
            if len(jobs) > 1 and not isinstance(exc, NoModelError):
                log.warning(
                    "a call of %d requests failed, scoring them one by one: %s",
                    len(jobs),
                    short_error(exc),
                )
                for job in jobs:  # so that one bad record fails only its own request
                    self._score_jobs([job])
                return
            self.metrics.predict_failures.inc()
            log.error("scoring a request failed: %s", short_error(exc))
            for job in jobs:
                _hand(job, _set_exception, exc)
            return
        start, asked, waiting = 0, 0, []
        for job in jobs:
            part = answers[start : start + len(job.records)]
            start += len(job.records)
            if job.explain and (loaded.explainer is None or explain is None):
                # a model swapped in meanwhile cannot be explained
                failure = ExplanationUnavailableError(_unexplainable(loaded))
                _hand(job, _set_exception, failure)
            elif job.explain:
                waiting.append((job, part, list(range(asked, asked + len(part)))))
                asked += len(part)
            else:
                _hand(job, _set_result, (part, loaded))
        if waiting:
            with self._queued_lock:
                self._explaining_rows += asked
            self._explanations.put(_Explaining(loaded, waiting, explain))
        try:  # after the answers: a failure here is the worker's, no request's
            if getattr(self.store, "shadow", False):  # a store may not shadow at all
                self._shadow(records, answers, loaded)
        except Exception as exc:  # requests waiting for their explanations are not its
            log.exception("after scoring a call: %s", short_error(exc))

    def _run_explanations(self) -> None:
        while True:
            task = self._explanations.get()
            if task is None:
                return
            try:
                outcomes = self._explain(task)
            except Exception as exc:  # the thread must outlive any failure
                log.exception("explaining failed unexpectedly: %s", short_error(exc))
                outcomes = [(job, _set_exception, exc) for job, _, _ in task.jobs]
            with self._queued_lock:  # released before the answers: room as soon as they land
                self._explaining_rows -= sum(len(rows) for _, _, rows in task.jobs)
            for job, setter, value in outcomes:
                _hand(job, setter, value)

    def _explain(self, task: _Explaining) -> list[tuple[_Job, Callable, object]]:
        """The answers (or errors) of the requests of a scored call that asked for
        explanations; when explaining fails for several requests, each is tried alone, so
        that one request's rows fail only that request."""
        try:
            found = task.explain([row for _, _, rows in task.jobs for row in rows])
        except Exception as exc:  # noqa: BLE001 - handed to the requests that asked
            if len(task.jobs) > 1:
                return [
                    outcome
                    for one in task.jobs
                    for outcome in self._explain(_Explaining(task.loaded, [one], task.explain))
                ]
            self.metrics.predict_failures.inc()
            log.error("explaining a request failed: %s", short_error(exc))
            return [(task.jobs[0][0], _set_exception, exc)]
        outcomes, start = [], 0
        for job, part, rows in task.jobs:
            why = found[start : start + len(rows)]
            start += len(rows)
            explained = [
                dataclasses.replace(a, explanation=e) for a, e in zip(part, why, strict=True)
            ]
            outcomes.append((job, _set_result, (explained, task.loaded)))
        return outcomes

    def _shadow(self, records: list[dict], answers: list[Scored], served: LoadedModel) -> None:
        """The challenger scores what was just answered (the answers are on their way):
        its failure is counted and logged, never passed on."""
        challenger = self.store.challenger
        if challenger is None:
            return
        started = time.perf_counter()
        try:
            history = [answer.history for answer in answers]
            theirs, _ = self._score(challenger, records, history=history, shadow=True)
        except Exception as exc:  # noqa: BLE001 - a shadow never fails a request
            self.shadow.failed(served.version, challenger.version)
            log.warning("challenger v%s failed to score: %s", challenger.version, short_error(exc))
            return
        self.shadow.add(
            served.version, challenger.version, answers, theirs, time.perf_counter() - started
        )
        if self.on_shadow is not None:
            self.on_shadow(records, theirs, challenger)

    def _score(
        self,
        loaded: LoadedModel,
        records: list[dict],
        explained: list[bool] | None = None,
        history: list[History] | None = None,
        shadow: bool = False,
    ) -> tuple[list[Scored], Callable[[list[int]], list[Explanation]] | None]:
        """Score `records` with `loaded`; `history` when already looked up; a `shadow` call
        counts in no serving metric and no drift window. Also gives, when some records are
        `explained`, how to explain them (given their positions among those records), from
        the inputs this call computed; else None."""
        started = time.perf_counter()
        history = history if history is not None else self._history(records)
        wanted = [i for i, want in enumerate(explained or []) if want]
        if loaded.explainer is None:
            wanted = []
        explain: Callable[[list[int]], list[Explanation]] | None = None
        if fast_path(loaded.model) is not None and len(records) <= SMALL_BATCH:
            # the path without pandas: clean columns as arrays, encoded once for the model
            # and for the explanations (checked against the pipeline when the model loaded)
            observed = clean_records(records)
            for name in HISTORY:
                observed[name] = np.array([h.figures[name] for h in history], dtype=float)
            proba, inputs, encoded = score_columns(loaded.model, observed, len(records))
            if wanted:
                expired = expired_mask(observed, len(records))

                def explain(positions: list[int]) -> list[Explanation]:
                    rows = np.asarray(wanted, dtype=np.intp)[positions]
                    return loaded.explainer.explain_encoded(
                        {name: values[rows] for name, values in inputs.items()},
                        encoded[rows],
                        expired[rows],
                    )
        else:
            observed = clean(pd.DataFrame.from_records(records))
            for name in HISTORY:
                observed[name] = [h.figures[name] for h in history]
            proba = loaded.model.predict_proba(observed)
            if wanted:
                frame = observed

                def explain(positions: list[int]) -> list[Explanation]:
                    return loaded.explainer.explain(frame.iloc[[wanted[p] for p in positions]])

        predicted = loaded.model.decide(proba)
        classes = [str(c) for c in loaded.model.classes_]
        order = [classes.index(c) for c in CLASSES]
        proba = np.round(proba[:, order], 6)
        tiers, lt30 = loaded.tiers, CLASSES.index("<30")
        answers = [
            Scored(
                str(label),
                dict(zip(CLASSES, map(float, row), strict=True)),
                used,
                None,
                None if tiers is None else tiers.tier(row[lt30]),
            )
            for label, row, used in zip(predicted, proba, history, strict=True)
        ]
        if shadow:
            return answers, None
        self.metrics.batch_rows.observe(len(records))
        if loaded.drift is not None:
            loaded.drift.observe(observed, len(records))
            if time.monotonic() >= self._drift_due:  # scores at most once a second
                self._drift_due = time.monotonic() + 1.0
                self.metrics.drift(loaded.drift.scores(), loaded.drift.rows)
        for label, count in zip(*np.unique(predicted.astype(str), return_counts=True), strict=True):
            self.metrics.predictions.labels(label, loaded.version).inc(int(count))
        log.debug("scored %d rows in %.1f ms", len(records), 1e3 * (time.perf_counter() - started))
        return answers, explain

    def _history(self, records: list[dict]) -> list[History]:
        """History of each record; none while the store is failing (retried every few
        seconds, so a database outage costs each request nothing but the missing history,
        which its answer reports and `api_predictions_without_history_total` counts)."""
        if self.history is None:
            return [History.none("disabled") for _ in records]
        if time.monotonic() >= self._history_paused_until:
            try:
                return self.history(records)
            except Exception as exc:  # noqa: BLE001 - a prediction without history beats none
                self.metrics.history_failures.inc()
                self._history_paused_until = time.monotonic() + HISTORY_RETRY_SECONDS
                log.warning(
                    "patient history look-up failed, scoring without it for %.0f s: %s",
                    HISTORY_RETRY_SECONDS,
                    short_error(exc),
                )
        answers = [History.none("unavailable") for _ in records]
        self.metrics.without_history.inc(len(answers))
        return answers


def _unexplainable(loaded: LoadedModel) -> str:
    return (
        f"{loaded.explainer_problem or f'model v{loaded.version} cannot be explained'}; "
        "ask without explain=true for the prediction alone"
    )


def _hand(job: _Job, setter: Callable[[asyncio.Future, object], None], value: object) -> None:
    """Give a waiting request its answer or error, in its event loop; a loop that closed
    meanwhile (the request gave up, the app stopped) has no one left to tell."""
    try:
        job.loop.call_soon_threadsafe(setter, job.future, value)
    except RuntimeError:  # "Event loop is closed"
        log.debug("a request's event loop closed before its answer")


def _set_result(future: asyncio.Future, value: object) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
