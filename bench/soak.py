"""Soak: Locust at 50 users for 5 minutes against the API while a new model is promoted.

Everything runs on loopback in a throwaway folder: an MLflow server (`mlflow server`,
SQLite backend, proxied artifacts), a store of synthetic encounters (SQLite, as the local
mode), a Production model (gradient boosting, quick search) and a second version of it
registered but not promoted, and the API as deployed (`uvicorn app.main:app`, prediction
log on, registry polled every 5 s). Then `locust -f locust/locustfile.py --headless`
(the project's load test: its task mix and contract checks, about 1 request per second and
user) runs for the duration; half-way the second version is promoted. A probe posts one
encounter every half second beside Locust and records which version answered.

Checks (exit 1 when one fails):
  - zero failed requests (Locust's count, which includes contract violations; the probe's)
  - the new version answers after the swap, and the old one never again once it has
  - memory flat: the API's resident set at the end within 10 % of the one after warm-up

    python bench/soak.py [--users 50] [--seconds 300]      # or `make soak`
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MEMORY_TOLERANCE = 0.10


class Probe(threading.Thread):
    """Posts one encounter every `every` seconds; keeps (time, status, version)."""

    def __init__(self, url: str, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.url, self.every = url, every
        self.answers: list[tuple[float, int, str | None]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        from readmission.api.schemas import EXAMPLE

        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop.wait(self.every):
                try:
                    answer = client.post("/predict", json=EXAMPLE)
                except httpx.HTTPError:
                    self.answers.append((time.monotonic(), 0, None))
                    continue
                ok = answer.status_code == 200
                version = answer.json()["model"]["version"] if ok else None
                self.answers.append((time.monotonic(), answer.status_code, version))


def _summary(output: str) -> dict[str, float]:
    """Locust's final summary (printed when it quits; its CSV may be a second older): the
    aggregated counts, then the aggregated percentiles."""
    counts, percentiles = [
        line.split() for line in output.splitlines() if line.strip().startswith("Aggregated")
    ][-2:]
    # Aggregated <reqs> <fails>(<%>) | <avg> <min> <max> <median> | <req/s> <failures/s>
    figures = {
        "requests": int(counts[1]),
        "failures": int(counts[2].split("(")[0]),
        "rps": float(counts[9]),
    }
    # Aggregated 50% 66% 75% 80% 90% 95% 98% 99% 99.9% 99.99% 100% <reqs>
    for name, value in zip(
        ("p50", "p66", "p75", "p80", "p90", "p95", "p98", "p99", "p99.9", "p99.99", "max"),
        percentiles[1:12],
        strict=True,
    ):
        figures[name] = float(value)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--spawn-rate", type=float, default=10)
    parser.add_argument("--seconds", type=int, default=300, help="duration of the load")
    parser.add_argument("--rows", type=int, default=5_000, help="synthetic encounters to train on")
    args = parser.parse_args()

    import mlflow

    from readmission import pipeline
    from readmission.registry import Registry
    from readmission.settings import get_settings
    from tests.support.processes import ApiProcess, MlflowServer
    from tests.support.served import build_store

    work = Path(tempfile.mkdtemp(prefix="readmission-soak-"))
    print(f"work folder {work}", flush=True)
    (work / "mlflow").mkdir()
    # migrated here, in-process: the server then starts without migrating
    mlflow.MlflowClient(f"sqlite:///{work / 'mlflow' / 'mlflow.db'}").search_experiments()
    tracking = MlflowServer(work / "mlflow").start()
    api: ApiProcess | None = None
    locust: subprocess.Popen | None = None
    try:
        models = Registry(tracking.url)
        models.ensure_experiment()
        print(f"training on {args.rows:,} synthetic encounters ...", flush=True)
        settings = build_store(work / "store", tracking.url, rows=args.rows)
        get_settings.cache_clear()
        old = pipeline.train_and_promote(["hist_gradient_boosting"], "quick", settings)
        old = old["decision"]["version"]
        # the next version: same family and size, so that memory compares like with like
        candidate = pipeline.train_candidate("hist_gradient_boosting", "quick", settings=settings)
        new = models.register(candidate["model_uri"]).version
        api = ApiProcess(
            work / "api",
            {
                "DATA_DATABASE_URL": settings.database_url,
                "MLFLOW_TRACKING_URI": tracking.url,
                "READMISSION_STATE_DIR": str(settings.store.state_dir),
                "API_MODEL_POLL_SECONDS": "5",
            },
        ).start(wait_for="/ready")
        print(f"API at {api.url} serving v{old}; v{new} registered, not promoted", flush=True)

        warmup = max(15.0, 0.1 * args.seconds)
        swap_at = args.seconds / 2
        locust = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "locust"),
                "-f",
                str(ROOT / "locust" / "locustfile.py"),
                "--headless",
                "--only-summary",
                "-u",
                str(args.users),
                "-r",
                str(args.spawn_rate),
                "-t",
                f"{args.seconds}s",
                "--host",
                api.url,
                "--csv",
                str(work / "soak"),
                "--html",
                str(work / "soak.html"),
            ],
            cwd=ROOT,
            env={**os.environ, "API_URL": api.url},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started = time.monotonic()
        probe = Probe(api.url)
        probe.start()
        rss_warm = swapped_at = served_at = None
        rss_samples: list[tuple[float, float]] = []
        while locust.poll() is None:
            elapsed = time.monotonic() - started
            rss_samples.append((elapsed, api.rss_mb()))
            if rss_warm is None and elapsed >= warmup:
                rss_warm = rss_samples[-1][1]
                print(f"  {elapsed:5.0f} s  warm: API resident set {rss_warm:.0f} MB", flush=True)
            if swapped_at is None and elapsed >= swap_at:
                models.promote(new, reason="soak: promoted half-way through the load")
                swapped_at = time.monotonic()
                print(f"  {elapsed:5.0f} s  promoted v{new}", flush=True)
            if swapped_at is not None and served_at is None:
                ready = httpx.get(f"{api.url}/ready", timeout=10).json()
                if ready["model"]["version"] == new:
                    served_at = time.monotonic()
                    delay = served_at - swapped_at
                    print(
                        f"  {elapsed:5.0f} s  v{new} in service ({delay:.1f} s after the "
                        "promotion)",
                        flush=True,
                    )
            time.sleep(1)
        rss_end = api.rss_mb()
        probe.stop.set()
        probe.join(30)
        output = locust.stdout.read()
    finally:
        if locust is not None and locust.poll() is None:
            locust.kill()
        if api is not None:
            api.stop()
        tracking.stop()

    stats = _summary(output)
    requests, failures = stats["requests"], stats["failures"]
    probe_failures = sum(1 for _, status, _ in probe.answers if status != 200)
    versions = [version for _, status, version in probe.answers if status == 200]
    after = versions[versions.index(new) :] if new in versions else []
    peak = max(rss for _, rss in rss_samples)
    change = (rss_end - rss_warm) / rss_warm if rss_warm else float("nan")
    print(f"\n{output[-2500:]}")
    print(
        f"soak: {args.users} users, {args.seconds} s, {os.cpu_count()} cores, loopback; "
        f"v{old} -> v{new} promoted at {swap_at:.0f} s"
    )
    print(
        f"  requests {requests:,} ({stats['rps']:.1f}/s), failed {failures}; "
        f"p50 {stats['p50']:.0f} ms, p95 {stats['p95']:.0f} ms, p99 {stats['p99']:.0f} ms, "
        f"max {stats['max']:.0f} ms"
    )
    print(
        f"  probe: {len(probe.answers)} requests, failed {probe_failures}; "
        f"{len(after)} answered by v{new} after its first answer, "
        f"{sum(v != new for v in after)} by another version"
    )
    print(
        f"  new version in service {served_at - swapped_at:.1f} s after the promotion"
        if served_at and swapped_at
        else "  the new version was never served"
    )
    print(
        f"  API resident set: {rss_warm:.0f} MB after warm-up ({warmup:.0f} s), {rss_end:.0f} MB "
        f"at the end ({change:+.1%}), peak {peak:.0f} MB"
    )
    print(f"  locust exit code {locust.returncode} (1: a failure or p95 over LOAD_P95_MS)")
    checks = [
        ("zero failed requests", failures == 0 and probe_failures == 0 and requests > 0),
        ("new version served after the swap", bool(after) and set(after) == {new}),
        (f"memory flat (within {MEMORY_TOLERANCE:.0%})", abs(change) <= MEMORY_TOLERANCE),
    ]
    for name, ok in checks:
        print(f"  {'held ' if ok else 'FAILED'} {name}")
    print(f"reports: {work}/soak.html, soak_*.csv")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
