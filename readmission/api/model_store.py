"""The model in service, and how a newly promoted one replaces it.

`ModelStore.current` is one immutable `LoadedModel`, replaced by a single assignment once
the new model is fully loaded, so a request sees the old model or the new one, never a
half-loaded one. A failed check or load leaves the current model serving; it is counted
and logged, and the next check tries again.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from readmission import explain
from readmission.acceleration import accelerate, sample_inputs
from readmission.api.metrics import ApiMetrics
from readmission.assessment import RiskTiers
from readmission.drift import DriftMonitor
from readmission.names import CHALLENGER_ALIAS
from readmission.registry import MODEL_NAME, PRODUCTION_ALIAS, Registry
from readmission.settings import DecisionSettings
from readmission.text import short_error

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to predict, with what the registry says about it."""

    model: Any
    name: str
    version: str
    alias: str
    described: dict
    drift: DriftMonitor | None = None
    #: Built once at load; None when the model cannot be explained (`explainer_problem`).
    explainer: explain.Explainer | None = None
    explainer_problem: str | None = None
    #: The risk tiers; None for a model that carries no assessment (trained before them).
    tiers: RiskTiers | None = None
    loaded_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def ref(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "alias": self.alias}


@dataclass(frozen=True)
class RegistryStatus:
    """The outcome of the last check of the registry."""

    reachable: bool | None = None  # None: never checked
    checked_at: str | None = None
    message: str = "not checked yet"

    def to_dict(self) -> dict:
        """What /model and a 503 from /ready report about the registry."""
        return {"reachable": self.reachable, "checked_at": self.checked_at, "message": self.message}


class ModelStore:
    """Holds the Production model and swaps in a newly promoted one."""

    def __init__(
        self,
        registry: Registry,
        metrics: ApiMetrics,
        drift_window: int = 1_000,
        drift_min_rows: int = 200,
        decision: DecisionSettings | None = None,
        shadow: bool = False,
    ) -> None:
        self.registry = registry
        #: Whether the `challenger` version is loaded too, to score requests in the shadow.
        self.shadow = shadow
        self.challenger: LoadedModel | None = None
        self.metrics = metrics
        self.decision = decision or DecisionSettings()
        self.drift_window = drift_window
        self.drift_min_rows = drift_min_rows
        self.current: LoadedModel | None = None
        self.status = RegistryStatus()
        # what the registry says of the serving version: (version, description, when read),
        # refreshed at every check, so /model shows tags, stage and aliases as they are now
        self._described: tuple[str, dict, str] | None = None
        #: the production alias' moves as the last check read them (newest first)
        self.history: list[dict] = []
        self._lock = threading.Lock()  # one check at a time (poller and POST /model/reload)

    def check(self) -> str:
        """Ask the registry for the Production version; load it if it is new (and the
        challenger, when shadowing). Returns what happened, in words (for logs and
        POST /model/reload)."""
        with self._lock:
            result = self._check()
            if self.shadow:
                self._check_challenger()
            return result

    def _check_challenger(self) -> None:
        """Load the `challenger` version if it changed; drop it when there is none or it
        serves now. A failure keeps the challenger in place (or none) and is logged."""
        try:
            entry = self.registry.challenger()
        except Exception as exc:  # noqa: BLE001 - the next check asks again
            log.debug("challenger not checked: %s", short_error(exc))
            return
        serving = self.current.version if self.current else None
        if entry is None or str(entry.version) == serving:
            if self.challenger is not None:
                log.info("challenger v%s gone: shadow scoring stops", self.challenger.version)
            self.challenger = None
            return
        if self.challenger is not None and self.challenger.version == str(entry.version):
            return
        try:
            model, version = self.registry.load_version(str(entry.version))
            described = self.registry.describe(version)
            model = accelerate(model, sample_inputs())
        except Exception as exc:  # noqa: BLE001 - a challenger that fails to load is not used
            self.metrics.reloads.labels("failure").inc()
            log.error("loading challenger v%s failed: %s", entry.version, short_error(exc))
            return
        assessed = getattr(model, "assessment_", None)
        tiers = None
        if assessed is not None:
            high, medium = self.decision.high_top_percent, self.decision.medium_top_percent
            tiers = RiskTiers.of(assessed, high, medium)
        self.challenger = LoadedModel(
            model, MODEL_NAME, str(version.version), CHALLENGER_ALIAS, described, tiers=tiers
        )
        log.info("shadow scoring with challenger v%s", self.challenger.version)

    def _check(self) -> str:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        try:
            # The history first: a move it shows had its tags written before it was recorded
            # (Registry._finish_rollback), so the champion read next carries them too.
            moves = [move.to_dict() for move in self.registry.history()]
            champion = self.registry.champion()
        except Exception as exc:  # noqa: BLE001 - any registry failure keeps the model serving
            # warned once per outage (the poller asks again every API_MODEL_POLL_SECONDS)
            told = log.debug if self.status.reachable is False else log.warning
            self.status = RegistryStatus(False, now, f"registry unreachable: {short_error(exc)}")
            self.metrics.reloads.labels("failure").inc()
            told("registry unreachable, %s keeps serving: %s", self._serving(), short_error(exc))
            return self.status.message
        if self.status.reachable is False:
            log.info("registry reachable again")
        self.history = moves
        if champion is None:
            self.status = RegistryStatus(True, now, "no Production model in the registry")
            return self.status.message
        self._refresh_description(champion, now)
        if self.current is not None and self.current.version == str(champion.version):
            self.status = RegistryStatus(True, now, f"v{champion.version} already in service")
            return self.status.message
        started = time.perf_counter()
        try:
            model, version = self.registry.load_version(str(champion.version))
            described = self.registry.describe(version)
            explainer, explainer_problem = _explainer(model, str(version.version))
            model = accelerate(model, sample_inputs())
        except Exception as exc:  # noqa: BLE001 - a model that fails to load is not served
            self.status = RegistryStatus(
                True, now, f"v{champion.version} failed to load: {short_error(exc)}"
            )
            self.metrics.reloads.labels("failure").inc()
            log.error(
                "loading model v%s failed, %s keeps serving: %s",
                champion.version,
                self._serving(),
                exc,
            )
            return self.status.message
        profile = getattr(model, "reference_profile_", None)
        monitor = DriftMonitor(profile, self.drift_window, self.drift_min_rows) if profile else None
        assessed = getattr(model, "assessment_", None)
        tiers = None
        if assessed is not None:
            high, medium = self.decision.high_top_percent, self.decision.medium_top_percent
            tiers = RiskTiers.of(assessed, high, medium)
        loaded = LoadedModel(
            model,
            MODEL_NAME,
            str(version.version),
            PRODUCTION_ALIAS,
            described,
            monitor,
            explainer,
            explainer_problem,
            tiers,
        )
        previous = self.current
        # what /model reports is in place before the swap makes the model visible
        self._described = (loaded.version, described, now)
        self.status = RegistryStatus(True, now, f"v{loaded.version} loaded")
        self.current = loaded  # the swap: one reference assignment
        self.metrics.reloads.labels("success").inc()
        self.metrics.serving(loaded.name, loaded.version, time.time())
        was = f"v{previous.version}" if previous else "none"
        log.info(
            "now serving %s v%s (was %s), loaded in %.1f s",
            loaded.name,
            loaded.version,
            was,
            time.perf_counter() - started,
        )
        # The long-lived objects (libraries, the model's trees) leave the garbage collector's
        # view: a full collection over them paused requests for ~200 ms (p99, measured).
        gc.collect()
        gc.freeze()
        return self.status.message

    def description(self) -> tuple[dict, str] | None:
        """What the registry said of the serving version at the last check, and when."""
        current, described = self.current, self._described
        if current is None:
            return None
        if described is not None and described[0] == current.version:
            return described[1], described[2]
        return current.described, current.loaded_at

    def _refresh_description(self, champion, now: str) -> None:
        current = self.current
        if current is None:
            return
        try:
            same = current.version == str(champion.version)
            entry = champion if same else self.registry.entry(current.version)
            self._described = (current.version, self.registry.describe(entry), now)
        except Exception as exc:  # noqa: BLE001 - /model then shows the last description
            log.warning(
                "could not refresh what the registry says of v%s: %s",
                current.version,
                short_error(exc),
            )

    def _serving(self) -> str:
        return f"v{self.current.version}" if self.current else "no model"


def _explainer(model: Any, version: str) -> tuple[explain.Explainer | None, str | None]:
    """The model's explainer (built from the model as fitted, before its trees are
    compiled), or why there is none: the model then serves predictions without."""
    try:
        return explain.build(model), None
    except explain.ExplainerUnavailableError as exc:
        log.warning("model v%s cannot be explained, serving it without: %s", version, exc)
        return None, f"model v{version} cannot be explained: {exc}"
