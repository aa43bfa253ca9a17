"""Load test of the inference API: clients that score encounters like a hospital system.

Each client sends about LOAD_USER_RPS requests a second (1): mostly single predictions,
some batches of 5-20 encounters, a few health and readiness probes, rarely GET /model.
An answer that is not 2xx or breaks the contract is a failure. Defaults (2 users, 60 s,
host API_URL) come from the LOAD_* settings; Locust's flags (-u, -r, -t, --host) and its
LOCUST_* variables still override them. A headless run first checks GET /ready, and ends
with exit code 1 when any request failed or the p95 of all requests exceeds LOAD_P95_MS.

    locust -f locust/locustfile.py --headless    # or `make load`; without --headless: web UI
"""

from __future__ import annotations

import logging
import sys
from functools import cache
from typing import Any

import load_logic
from locust import HttpUser, constant_throughput, events, task
from locust.env import Environment
from locust.runners import WorkerRunner

log = logging.getLogger("load")
SETTINGS = load_logic.load_settings()
WEIGHTS = load_logic.TASK_WEIGHTS


@cache
def pool() -> load_logic.RecordPool:
    """The process's encounters, loaded once (on Locust's init event) and shared by its users."""
    return load_logic.build_pool(SETTINGS)


@events.init_command_line_parser.add_listener
def _defaults(parser: Any, **_: Any) -> None:
    """The LOAD_* settings as Locust's defaults, so flags and LOCUST_* still win."""
    parser.set_defaults(
        num_users=SETTINGS.users, spawn_rate=SETTINGS.spawn_rate, run_time=SETTINGS.run_time
    )


@events.init.add_listener
def _prepare(environment: Environment, **_: Any) -> None:
    """A headless run stops at once (exit 2) when the API is not ready; then load the records."""
    if not isinstance(environment.runner, WorkerRunner):
        url = environment.host or ApiClient.host
        if problem := load_logic.readiness_problem(url):
            options = environment.parsed_options
            if options is not None and (options.headless or options.autostart):
                log.error("cannot load-test: %s", problem)
                sys.exit(2)
            log.warning("%s", problem)  # the web UI waits: the API may be up before the start
        log.info(
            "load-testing %s; budget: no failure, p95 <= LOAD_P95_MS=%g ms", url, SETTINGS.p95_ms
        )
    log.info("sampling %d encounters from %s", len(pool().records), pool().source)


@events.quitting.add_listener
def _judge_run(environment: Environment, **_: Any) -> None:
    """Fail the process when a request failed or the p95 exceeds LOAD_P95_MS."""
    if isinstance(environment.runner, WorkerRunner):
        return
    total = environment.stats.total
    options = environment.parsed_options
    if total.num_requests == 0 and options is not None and not options.headless:
        return  # the web UI was closed without a test: nothing to judge
    p95 = total.get_response_time_percentile(0.95) or 0
    problems = load_logic.run_problems(total.num_requests, total.num_failures, p95, SETTINGS.p95_ms)
    if problems:
        log.error("load test FAILED: %s", "; ".join(problems))
        environment.process_exit_code = 1
    else:
        log.info(
            "load test passed: %d requests, none failed, p95 %g ms <= LOAD_P95_MS=%g ms",
            total.num_requests,
            p95,
            SETTINGS.p95_ms,
        )


class ApiClient(HttpUser):
    """One client of the API: about LOAD_USER_RPS requests a second."""

    host = load_logic.api_url()
    wait_time = constant_throughput(SETTINGS.user_rps)

    def _call(self, method: str, path: str, check: load_logic.Check, body: Any = None) -> None:
        """One request, named by its route, judged against the API contract."""
        with self.client.request(
            method, path, json=body, name=path, catch_response=True
        ) as response:
            problem = load_logic.answer_problem(response.status_code, response.content, check)
            if problem:
                response.failure(problem)
            else:
                response.success()

    @task(WEIGHTS["predict"])
    def predict(self) -> None:
        """Score one encounter."""
        self._call("POST", "/predict", load_logic.prediction_problem, pool().one())

    @task(WEIGHTS["predict_batch"])
    def predict_batch(self) -> None:
        """Score a small batch (5-20 encounters) in one call."""
        encounters = pool().batch()
        self._call(
            "POST",
            "/predict/batch",
            load_logic.batch_problem(len(encounters)),
            {"encounters": encounters},
        )

    @task(WEIGHTS["health"])
    def health(self) -> None:
        """Probe liveness, as an orchestrator does."""
        self._call("GET", "/health", load_logic.health_problem)

    @task(WEIGHTS["ready"])
    def ready(self) -> None:
        """Probe readiness, as a load balancer does."""
        self._call("GET", "/ready", load_logic.ready_problem)

    @task(WEIGHTS["model"])
    def model(self) -> None:
        """Ask which model is served, as a dashboard does now and then."""
        self._call("GET", "/model", load_logic.model_problem)
