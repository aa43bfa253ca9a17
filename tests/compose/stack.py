"""The Docker Compose deployment on this machine's engine: `make compose-up`, `make compose-down`.

    python -m tests.compose.stack up     # images, network, the three projects, all healthy
    python -m tests.compose.stack down   # containers, volumes, the network

`up` runs the README's Docker Compose commands, in order, and prints each with its duration:
the images (`make images`' builds, one at a time, timed and sized), the external network,
`docker-compose-airflow.yaml` (its init first), `docker-compose-resto-back.yaml`,
`docker-compose-jupyter.yaml`, each `up -d --wait` (every healthcheck passes). Third-party
images that cannot be pulled are replaced first (tests/compose/standins.py); MinIO and Grafana
through the override files beside this module, which only the test uses. The figures
(build time and size per image, time to healthy) go to `.local/compose/figures.json`, which
the compose test extends and prints.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.compose import standins

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
FIGURES = ROOT / ".local" / "compose" / "figures.json"
NETWORK = "airflow_backend"
AIRFLOW = "docker-compose-airflow.yaml"
RESTO = "docker-compose-resto-back.yaml"
JUPYTER = "docker-compose-jupyter.yaml"
KOMPOSE = "docker-compose-kubernete.yaml"
#: Override files of the test, each used only when the images it replaces cannot be had.
S3_STANDIN = HERE / "docker-compose-s3-standin.yaml"
NO_GRAFANA = HERE / "docker-compose-no-grafana.yaml"
#: Services of the resto project whose images the override files replace.
S3_SERVICES = ("minio", "minio-init")
GRAFANA_SERVICE = "grafana"
WAIT_TIMEOUT_SECONDS = 600
#: What the compose test runs differently from .env, through the environment (Compose's rule:
#: the shell's variables win over .env): one small configuration per model family.
TEST_ENVIRONMENT = {"TRAINING_PROFILE": "quick"}


def say(message: str) -> None:
    print(f"[compose] {message}", flush=True)


@contextlib.contextmanager
def step(title: str, timings: dict[str, float] | None = None) -> Iterator[None]:
    """Print the step, run it, print how long it took (and keep that in `timings`)."""
    say(f"==> {title}")
    started = time.monotonic()
    try:
        yield
    finally:
        seconds = time.monotonic() - started
        say(f"<== {title}: {seconds:.1f} s")
        if timings is not None:
            timings[title] = round(seconds, 1)


def run(*command: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    """A command from the project's root, echoed, failing loudly."""
    say("$ " + " ".join(command))
    return subprocess.run(command, cwd=ROOT, check=True, text=True, env=env, **kwargs)


def docker_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the docker commands: the legacy builder unless buildx exists (no
    BuildKit without it), and `extra` settings."""
    env = {**os.environ, **(extra or {})}
    buildx = subprocess.run(["docker", "buildx", "version"], capture_output=True, check=False)
    if buildx.returncode != 0:
        env["DOCKER_BUILDKIT"] = "0"
    return env


# --- images ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageBuild:
    ref: str
    dockerfile: str


def image_builds() -> list[ImageBuild]:
    """The builds of `make images`, as `make -n images` prints them."""
    printed = subprocess.run(
        ["make", "--no-print-directory", "-n", "images"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    builds = []
    for line in printed.splitlines():
        words = line.split()
        if words[:2] == ["docker", "build"]:
            builds.append(ImageBuild(ref=words[words.index("-t") + 1], dockerfile=words[3]))
    return builds


def image_size(ref: str) -> int:
    shown = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Size}}", ref],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(shown.stdout.strip())


def build_images(env: dict[str, str], figures: dict) -> None:
    """Each image of `make images`, one at a time (2 cores: parallel builds only contend)."""
    wheels = len(list((ROOT / "wheelhouse").glob("*.whl")))
    say(f"wheelhouse/: {wheels} wheels ({'offline builds' if wheels else 'from the index'})")
    figures["images"] = {}
    for build in image_builds():
        log_file = FIGURES.parent / f"build-{build.ref.split('/')[-1].split(':')[0]}.log"
        with step(f"docker build -f {build.dockerfile} -t {build.ref} ."):
            started = time.monotonic()
            with log_file.open("w") as output:
                done = subprocess.run(
                    ["docker", "build", "-f", build.dockerfile, "-t", build.ref, "."],
                    cwd=ROOT,
                    env=env,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    check=False,
                )
            seconds = time.monotonic() - started
        if done.returncode != 0:
            tail = "\n".join(log_file.read_text().splitlines()[-40:])
            raise SystemExit(f"building {build.ref} failed ({log_file}):\n{tail}")
        figures["images"][build.ref] = {
            "dockerfile": build.dockerfile,
            "build_seconds": round(seconds, 1),
            "size_bytes": image_size(build.ref),
        }


# --- the three projects ----------------------------------------------------------------


def service_image(file: str, service: str) -> str:
    """The image a Compose file gives a service (third-party ones are written out)."""
    return yaml.safe_load((ROOT / file).read_text())["services"][service]["image"]


def available(image: str) -> bool:
    """The engine has the image, or pulls it now."""
    inspect = subprocess.run(
        ["docker", "image", "inspect", image], capture_output=True, check=False
    )
    if inspect.returncode == 0:
        return True
    pulled = subprocess.run(
        ["docker", "pull", "--quiet", image],
        capture_output=True,
        check=False,
        timeout=standins.PULL_TIMEOUT_SECONDS,
    )
    return pulled.returncode == 0


@dataclass
class Plan:
    """What the run replaces, decided once per run (and kept for `down`)."""

    overrides: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)

    @classmethod
    def decide(cls) -> Plan:
        plan = cls()
        if not all(available(service_image(RESTO, s)) for s in S3_SERVICES):
            plan.overrides.append(S3_STANDIN.relative_to(ROOT).as_posix())
        if not available(service_image(RESTO, GRAFANA_SERVICE)):
            plan.overrides.append(NO_GRAFANA.relative_to(ROOT).as_posix())
            plan.left_out.append("grafana (no image can be pulled and no package stands in)")
        return plan


def compose(file: str, plan: Plan | None = None) -> list[str]:
    """`docker compose -f FILE` (with the test's override files for the resto project)."""
    command = ["docker", "compose", "-f", file]
    if plan and file == RESTO:
        for override in plan.overrides:
            command += ["-f", override]
    return command


def network_exists() -> bool:
    found = subprocess.run(
        ["docker", "network", "inspect", NETWORK], capture_output=True, check=False
    )
    return found.returncode == 0


def unhealthy(file: str, plan: Plan, env: dict[str, str]) -> list[str]:
    """Services of a project not yet as they should be: healthy, or exited 0 (one-shots)."""
    shown = subprocess.run(
        [*compose(file, plan), "ps", "--all", "--format", "json"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    containers = [json.loads(line) for line in shown.splitlines() if line.strip()]
    wrong = []
    for container in containers:
        state, health = container.get("State"), container.get("Health", "")
        if state == "exited" and container.get("ExitCode") == 0:
            continue
        if state != "running" or health not in ("healthy", ""):
            wrong.append(f"{container['Service']}: {state} {health}".strip())
        elif not health:
            wrong.append(f"{container['Service']}: running without a healthcheck")
    return wrong


#: The README's Docker Compose commands, in order: what `up` runs. `make data` and
#: `make wheelhouse` are the Make target's prerequisites; `make images` runs build by build
#: (to time each); the compose test adds its override files to the resto project's commands
#: and a time limit to `--wait`.
UP = (
    "make data",
    "make wheelhouse",
    "make images",
    f"docker network create {NETWORK}",
    f"docker compose -f {AIRFLOW} up airflow-init",
    f"docker compose -f {AIRFLOW} up -d --wait",
    f"docker compose -f {RESTO} up -d --wait",
    f"docker compose -f {JUPYTER} up -d --wait",
)
#: The README's commands to remove it all: what `down` runs.
DOWN = (
    f"docker compose -f {JUPYTER} down -v",
    f"docker compose -f {RESTO} down -v",
    f"docker compose -f {AIRFLOW} down -v",
    f"docker network rm {NETWORK}",
)
PROJECTS = (AIRFLOW, RESTO, JUPYTER)
#: The README's headless load test (Locust's flags go to the image's entrypoint).
LOCUST_HEADLESS = f"docker compose -f {RESTO} run --rm locust --headless -u 2 -r 2 -t 30s"
README = ROOT / "README.md"


def readme_compose_section() -> str:
    text = README.read_text()
    start = text.index("## Docker Compose\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def readme_commands() -> list[list[str]]:
    """The commands of each shell block of the README's Docker Compose section, comments
    and continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", readme_compose_section(), re.S)
    commands = []
    for block in blocks:
        joined = block.replace("\\\n", " ")
        lines = [re.sub(r"\s+#\s.*$", "", line).strip() for line in joined.splitlines()]
        commands.append([" ".join(line.split()) for line in lines if line])
    return commands


def readme_predict_body() -> dict:
    """The JSON body of the README's `curl ... /predict` example."""
    section = readme_compose_section()
    body = re.search(r"localhost:8989/predict .*?-d '(\{.*?\})'", section, re.S)
    return json.loads(body.group(1))


def compose_command(command: str, plan: Plan) -> list[str]:
    """A README `docker compose -f FILE ...` command as the test runs it."""
    words = command.split()
    file = words[3]
    extra = ["--wait-timeout", str(WAIT_TIMEOUT_SECONDS)] if "--wait" in words else []
    return [*compose(file, plan), *words[4:], *extra]


def up(extra: dict[str, str] | None = None, report: bool = True) -> None:
    """The README's commands until every service is healthy, with `extra` settings over
    .env's (the compose test's TEST_ENVIRONMENT); `report`: print the figures at the end."""
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    env = docker_environment(extra)
    figures: dict = {"steps": {}}
    timings = figures["steps"]
    data = ROOT / "data" / "diabetic_data.csv.gz"
    if not data.is_file():
        raise SystemExit(f"{data} is missing: make data (make compose-up runs it)")
    with step("stand-ins for the images that cannot be pulled", timings):
        outcomes = standins.ensure_all()
    figures["bases"] = {o.image: f"{o.kind} ({o.how})" for o in outcomes.values()}
    plan = Plan.decide()
    figures["overrides"] = plan.overrides
    figures["left_out"] = plan.left_out
    for reason in plan.left_out:
        say(f"left out: {reason}")
    started = None
    for command in UP:
        if command in ("make data", "make wheelhouse"):
            continue  # the Make target's prerequisites
        if command == "make images":
            with step("make images (one build at a time)", timings):
                build_images(env, figures)
            FIGURES.write_text(json.dumps(figures, indent=2))
            continue
        started = started or time.monotonic()
        if command.startswith("docker network create"):
            if not network_exists():
                with step(command, timings):
                    run(*command.split(), env=env, stdout=subprocess.DEVNULL)
            continue
        with step(command, timings):
            run(*compose_command(command, plan), env=env)
    wrong = [f"{file}: {w}" for file in PROJECTS for w in unhealthy(file, plan, env)]
    if wrong:
        raise SystemExit("not healthy:\n  " + "\n  ".join(wrong))
    figures["seconds_to_healthy"] = round(time.monotonic() - started, 1)
    FIGURES.write_text(json.dumps(figures, indent=2))
    say(f"every service healthy {figures['seconds_to_healthy']:.0f} s after the first `up`")
    if report:
        print_figures(figures)


def down() -> None:
    """The README's commands that remove containers, volumes and the network."""
    env = docker_environment()
    plan = Plan(overrides=[o.relative_to(ROOT).as_posix() for o in (S3_STANDIN, NO_GRAFANA)])
    for command in DOWN:
        if command.startswith("docker network rm"):
            if network_exists():
                with step(command):
                    run(*command.split(), env=env, stdout=subprocess.DEVNULL)
            continue
        with step(command):
            run(*compose_command(command, plan), env=env)


# --- figures ---------------------------------------------------------------------------


def read_figures() -> dict:
    return json.loads(FIGURES.read_text()) if FIGURES.is_file() else {}


def add_figures(**values) -> None:
    figures = read_figures()
    figures.update(values)
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    FIGURES.write_text(json.dumps(figures, indent=2))


def format_figures(figures: dict) -> str:
    lines = ["", "Docker Compose deployment: figures of this run"]
    if figures.get("bases"):
        lines.append("  base and third-party images:")
        lines += [f"    {image:<45} {how}" for image, how in figures["bases"].items()]
    if figures.get("images"):
        lines.append("  image                                        build      size")
        for ref, image in figures["images"].items():
            size = image["size_bytes"] / 1e6
            lines.append(f"    {ref:<43} {image['build_seconds']:>6.0f} s {size:>6.0f} MB")
    if "seconds_to_healthy" in figures:
        lines.append(
            f"  time to healthy (first `up` to every healthcheck): "
            f"{figures['seconds_to_healthy']:.0f} s"
        )
    if "pipeline_seconds" in figures:
        lines.append(
            f"  pipeline in containers (raw load -> clean -> training -> "
            f"Production): {figures['pipeline_seconds']:.0f} s"
        )
        for dag, seconds in figures.get("dag_seconds", {}).items():
            lines.append(f"    {dag:<40} {seconds:>6.0f} s")
    if "predict_latency_ms" in figures:
        latency = figures["predict_latency_ms"]
        lines.append(
            f"  /predict through the published port ({latency['requests']} requests, one at a "
            f"time): p50 {latency['p50']:.1f} ms, p95 {latency['p95']:.1f} ms, "
            f"max {latency['max']:.1f} ms"
        )
    if "locust" in figures:
        locust = figures["locust"]
        lines.append(
            f"  Locust in its container (README's command): "
            f"{'within' if locust['passed'] else 'OVER'} its latency budget: {locust['verdict']}"
        )
    for reason in figures.get("left_out", []):
        lines.append(f"  left out: {reason}")
    if figures.get("overrides"):
        lines.append("  test override files: " + ", ".join(figures["overrides"]))
    return "\n".join(lines)


def print_figures(figures: dict) -> None:
    print(format_figures(figures), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down", "figures"])
    args = parser.parse_args(argv)
    if not shutil.which("docker"):
        raise SystemExit("docker is not installed")
    if args.action == "up":
        up()
    elif args.action == "down":
        down()
    else:
        print_figures(read_figures())
    return 0


if __name__ == "__main__":
    sys.exit(main())
