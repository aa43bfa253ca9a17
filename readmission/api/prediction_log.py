"""The prediction log: every prediction written to `serving.predictions`, off the request path.

Requests append to an in-memory queue and return; a writer thread inserts what queued up
every `flush_seconds` (or sooner when many wait), in one transaction. When the database
is unreachable the rows stay queued and the writer retries with a growing pause, so a
short outage loses nothing; only when the queue is full are the oldest rows dropped, and
counted (`api_prediction_log_dropped_rows_total`). An outage is logged once as a warning
when it starts (and once more if rows are dropped), and as info when writing works again.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from readmission import db
from readmission.api.metrics import ApiMetrics
from readmission.text import short_error

log = logging.getLogger(__name__)
MAX_ROWS_PER_WRITE = 5_000
COLUMNS = (
    "predicted_at",
    "model_name",
    "model_version",
    "encounter_id",
    "patient_nbr",
    "prediction",
    "probability_no",
    "probability_gt30",
    "probability_lt30",
    "inputs",
    "role",
)
MAX_PAUSE_SECONDS = 30.0


class PredictionLog:
    """A bounded queue of predictions and the thread that writes them."""

    def __init__(
        self,
        engine: Engine,
        metrics: ApiMetrics,
        capacity: int = 50_000,
        flush_seconds: float = 1.0,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.capacity = capacity
        self.flush_seconds = flush_seconds
        self._rows: collections.deque[tuple] = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        # the outage in progress: when the first write failed, and whether drops were told
        self._outage_since: float | None = None
        self._drops_told = False
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def add(
        self,
        records: list[dict],
        answers: list,
        model_name: str,
        model_version: str,
        role: str = "served",
    ) -> None:
        """Queue one row per prediction (`role` served, or shadow for the challenger's);
        never blocks on the database."""
        now = datetime.now(UTC)
        rows = [
            (
                now,
                model_name,
                model_version,
                record.get("encounter_id"),
                record.get("patient_nbr"),
                answer.prediction,
                answer.probabilities["NO"],
                answer.probabilities[">30"],
                answer.probabilities["<30"],
                json.dumps(record, default=str, separators=(",", ":")),
                role,
            )
            for record, answer in zip(records, answers, strict=True)
        ]
        with self._lock:
            overflow = len(self._rows) + len(rows) - self.capacity
            # the oldest queued rows go first, then (a batch larger than the whole queue)
            # the batch's own first rows
            for _ in range(min(max(0, overflow), len(self._rows))):
                self._rows.popleft()
            self._rows.extend(rows[-self.capacity :])
            queued = len(self._rows)
        if overflow > 0:
            self._dropped(overflow)
        self.metrics.log_queue.set(queued)
        if queued >= MAX_ROWS_PER_WRITE:
            self._wake.set()

    @property
    def queued(self) -> int:
        return len(self._rows)

    def _dropped(self, rows: int) -> None:
        """Count rows lost to a full queue; warn once per outage."""
        self.metrics.log_dropped.inc(rows)
        if not self._drops_told:
            self._drops_told = True
            log.warning(
                "prediction log: queue full (%d rows), dropping the oldest predictions "
                "until the database is back",
                self.capacity,
            )

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (within `timeout`), then stop."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        pause = self.flush_seconds
        while True:
            self._wake.wait(pause)
            self._wake.clear()
            stopping = self._stop.is_set()
            with self._lock:
                batch = [
                    self._rows.popleft() for _ in range(min(MAX_ROWS_PER_WRITE, len(self._rows)))
                ]
            if batch:
                if self._write(batch):
                    pause = self.flush_seconds
                else:
                    with self._lock:  # back to the front, in order, within capacity
                        room = self.capacity - len(self._rows)
                        kept = batch[len(batch) - min(room, len(batch)) :]
                        self._rows.extendleft(reversed(kept))
                    if len(kept) < len(batch):
                        self._dropped(len(batch) - len(kept))
                    pause = min(MAX_PAUSE_SECONDS, pause * 2)
                    if stopping:
                        return
            self.metrics.log_queue.set(len(self._rows))
            if stopping and not self._rows:
                return
            if self._rows and pause == self.flush_seconds:
                self._wake.set()  # more than one write's worth is waiting

    def _write(self, batch: list[tuple]) -> bool:
        started = time.perf_counter()
        try:
            with self.engine.begin() as conn:
                db.append_rows(conn, db.predictions, COLUMNS, batch)
        except Exception as exc:  # noqa: BLE001 - the database being down must not stop serving
            self.metrics.log_write_failures.inc()
            first = self._outage_since is None
            if first:
                self._outage_since = time.monotonic()
            (log.warning if first else log.debug)(
                "prediction log: cannot write to the database (%s); %d rows queued, retrying",
                short_error(exc),
                self.queued + len(batch),
            )
            return False
        self.metrics.log_written.inc(len(batch))
        if self._outage_since is not None:
            log.info(
                "prediction log: writing again after %.0f s; catching up on %d queued rows",
                time.monotonic() - self._outage_since,
                self.queued + len(batch),
            )
            self._outage_since, self._drops_told = None, False
        log.debug(
            "prediction log: wrote %d rows in %.1f ms",
            len(batch),
            1e3 * (time.perf_counter() - started),
        )
        return True
