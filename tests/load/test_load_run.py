"""Locust run for real, headless, as `make load` runs it (a subprocess of the venv's
`locust`), against the real API serving a trained model (the `world` fixture)."""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import pytest

from tests.load.conftest import LOCUST, LOCUSTFILE, PROJECT_ROOT
from tests.support.pgserver import free_port

ROUTES = ("/predict", "/predict/batch", "/health")


def run_locust(
    url: str, reports: Path, seconds: int, users: int = 4, flags: tuple[str, ...] = (), **env: str
) -> subprocess.CompletedProcess[str]:
    """`locust --headless` for `seconds` against `url` (API_URL), reports under `reports`;
    `flags` are added to Locust's command line."""
    environment = {
        **os.environ,
        "API_URL": url,
        "LOAD_USER_RPS": "6",
        "LOAD_POOL_SIZE": "500",
        "LOAD_USERS": str(users),
        "LOAD_SPAWN_RATE": str(users),
        "LOAD_RUN_TIME": f"{seconds}s",
        **env,
    }
    command = [
        str(LOCUST),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--only-summary",
        "--csv",
        str(reports / "load"),
        "--html",
        str(reports / "load.html"),
        *flags,
    ]
    return subprocess.run(
        command,
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )


def stats_by_route(reports: Path) -> dict[str, dict[str, str]]:
    """The rows of Locust's `load_stats.csv`, keyed by request name."""
    with (reports / "load_stats.csv").open(newline="") as stream:
        return {row["Name"]: row for row in csv.DictReader(stream)}


@pytest.mark.slow
def test_a_run_against_the_served_model_passes_and_writes_its_reports(world, tmp_path: Path):
    finished = run_locust(world.url, tmp_path, seconds=8, LOAD_P95_MS="2000")
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, output[-3000:]
    assert "load test passed" in output
    stats = stats_by_route(tmp_path)
    assert stats["Aggregated"]["Failure Count"] == "0", output[-3000:]
    for route in ROUTES:
        assert int(stats[route]["Request Count"]) > 0, (route, stats.keys())
    assert int(stats["/predict"]["Request Count"]) > int(stats["/predict/batch"]["Request Count"])
    assert (tmp_path / "load_failures.csv").is_file()
    assert "<html" in (tmp_path / "load.html").read_text()[:2000].lower()


@pytest.mark.slow
def test_a_run_over_its_latency_budget_exits_non_zero_and_says_why(world, tmp_path: Path):
    """Locust's own flags win over the LOAD_* settings and API_URL (which points nowhere)."""
    nowhere = f"http://127.0.0.1:{free_port()}"
    flags = ("--host", world.url, "-u", "2", "-t", "3s")
    finished = run_locust(nowhere, tmp_path, 30, users=5, flags=flags, LOAD_P95_MS="0.001")
    output = finished.stdout + finished.stderr
    assert finished.returncode == 1, output[-3000:]
    assert "load test FAILED" in output
    assert "over LOAD_P95_MS=0.001 ms" in output
    assert "Ramping to 2 users" in output
    assert stats_by_route(tmp_path)["Aggregated"]["Failure Count"] == "0"  # only the budget


def test_a_run_against_an_api_that_is_not_up_stops_at_once_with_what_to_do(tmp_path: Path):
    finished = run_locust(f"http://127.0.0.1:{free_port()}", tmp_path, seconds=30)
    assert finished.returncode == 2, finished.stderr[-3000:]
    assert "does not answer" in finished.stderr
    assert "make run" in finished.stderr
    assert not (tmp_path / "load.html").exists()
