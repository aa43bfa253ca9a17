"""Shadow scoring's running comparison: the served answers against the challenger's.

The predictor scores each batch with the challenger after the served answers are handed
back (readmission/api/predictor.py); `ShadowStats` keeps what GET /model/shadow reports:
how often both chose the same class and the same risk tier, how far apart their `<30`
risks are, and how long the challenger took. The figures start again when either version
changes.
"""

from __future__ import annotations

import collections
import threading
from datetime import UTC, datetime
from typing import Any

import numpy as np

#: The challenger's call times kept for the percentiles.
LATENCY_SAMPLES = 2_000


class ShadowStats:
    """Served against challenger, since the pair of versions last changed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset(None)

    def _reset(self, pair: tuple[str, str] | None) -> None:
        self.pair = pair
        self.since = datetime.now(UTC).isoformat(timespec="seconds")
        self.encounters = 0
        self.same_class = 0
        self.same_tier = 0
        self.tiered = 0
        self.abs_risk_difference = 0.0
        self.calls = 0
        self.failures = 0
        self.latencies_ms: collections.deque[float] = collections.deque(maxlen=LATENCY_SAMPLES)

    def add(
        self,
        served_version: str,
        challenger_version: str,
        served: list,
        shadowed: list,
        seconds: float,
    ) -> None:
        """One batch: the served answers and the challenger's (`Scored`, same order)."""
        with self._lock:
            if self.pair != (served_version, challenger_version):
                self._reset((served_version, challenger_version))
            self.calls += 1
            self.latencies_ms.append(seconds * 1e3)
            for ours, theirs in zip(served, shadowed, strict=True):
                self.encounters += 1
                self.same_class += ours.prediction == theirs.prediction
                self.abs_risk_difference += abs(ours.risk_30d - theirs.risk_30d)
                if ours.tier is not None and theirs.tier is not None:
                    self.tiered += 1
                    self.same_tier += ours.tier == theirs.tier

    def failed(self, served_version: str, challenger_version: str) -> None:
        with self._lock:
            if self.pair != (served_version, challenger_version):
                self._reset((served_version, challenger_version))
            self.failures += 1

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            latencies = np.array(self.latencies_ms) if self.latencies_ms else None
            n = self.encounters
            return {
                "served_version": self.pair[0] if self.pair else None,
                "challenger_version": self.pair[1] if self.pair else None,
                "since": self.since,
                "encounters": n,
                "class_agreement": self.same_class / n if n else None,
                "tier_agreement": self.same_tier / self.tiered if self.tiered else None,
                "mean_abs_risk_difference": self.abs_risk_difference / n if n else None,
                "challenger_calls": self.calls,
                "challenger_failures": self.failures,
                "challenger_latency_ms": None
                if latencies is None
                else {
                    "p50": float(np.percentile(latencies, 50)),
                    "p99": float(np.percentile(latencies, 99)),
                },
            }
