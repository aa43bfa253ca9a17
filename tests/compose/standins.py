"""The pinned third-party images, pulled when a registry answers, else stand-ins built here.

The project's Dockerfiles and Compose files name python:3.11.16-slim-bookworm,
ghcr.io/astral-sh/uv:0.13.8, postgres:15.18-bookworm and prom/prometheus:v3.5.0. Where none
can be pulled (no registry reaches this machine), each is replaced by an image built from
Debian's packages under the same name: a bookworm root filesystem from `mmdebstrap`,
imported with `docker import`, finished by `standins/<name>.Dockerfile`, whose first comment
says what the stand-in stands for and what it does not reproduce. MinIO and `mc` have no
Debian package: the S3 stand-in (moto's server, from PyPI) runs under its own name and
replaces them through `docker-compose-standins.yaml`. Grafana has none either: left out.

A stand-in carries the label `org.readmission.standin` (its description) and the digest of
what it was built from, so that a later run reuses it, rebuilds it when its inputs change,
and never mistakes it for the real image.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent / "standins"
#: Build contexts and downloaded wheels of the stand-ins (git-ignored, kept between runs).
WORK = ROOT / ".local" / "compose" / "standins"
LABEL = "org.readmission.standin"
DIGEST_LABEL = "org.readmission.standin.digest"
DEBIAN_SOURCES = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
PULL_TIMEOUT_SECONDS = 300
#: The S3 stand-in's own name (no real image of that name exists).
S3_IMAGE = "readmission-standin/s3:moto-5.2.5"


def log(message: str) -> None:
    print(f"[standins] {message}", flush=True)


def docker(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess[str]:
    """`docker ...` with the legacy builder (no BuildKit frontend image to pull offline)."""
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    return subprocess.run(["docker", *args], check=check, text=True, env=env, **kwargs)


def image_labels(image: str) -> dict[str, str] | None:
    """The image's labels ({} when it has none), or None when the engine does not have it."""
    found = docker(
        "image",
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        image,
        check=False,
        capture_output=True,
    )
    if found.returncode != 0:
        return None
    return json.loads(found.stdout.strip() or "null") or {}


# --- root filesystems ------------------------------------------------------------------


@dataclass(frozen=True)
class Rootfs:
    """A Debian bookworm (minbase) root filesystem with `packages`, as a local image."""

    name: str
    packages: tuple[str, ...]
    #: Extra mmdebstrap options (hooks), in order.
    options: tuple[str, ...] = ()

    @property
    def image(self) -> str:
        return f"readmission-standin/{self.name}-rootfs:bookworm"

    def digest(self) -> str:
        return _digest(json.dumps([self.packages, self.options, DEBIAN_SOURCES]))


PYTHON_ROOTFS = Rootfs(
    "python",
    # What CPython's binary and its extension modules link (ldd), and what the slim image has.
    (
        "ca-certificates",
        "netbase",
        "tzdata",
        "passwd",
        "libssl3",
        "libffi8",
        "libsqlite3-0",
        "libncursesw6",
        "libuuid1",
        "libnsl2",
        "libbz2-1.0",
        "liblzma5",
        "zlib1g",
        "libreadline8",
    ),
)
POSTGRES_ROOTFS = Rootfs(
    "postgres",
    ("postgresql-15", "ca-certificates", "tzdata"),
    (
        # The official image's user and group postgres, 999:999, before the package adds its own.
        "--essential-hook=echo 'postgres:x:999:999:PostgreSQL administrator:"
        "/var/lib/postgresql:/bin/bash' >> \"$1/etc/passwd\" && echo 'postgres:x:999:' >> "
        '"$1/etc/group" && echo \'postgres:*:20000:0:99999:7:::\' >> "$1/etc/shadow"',
        # The package's cluster 15/main: the entrypoint makes its own in PGDATA.
        '--customize-hook=rm -rf "$1/etc/postgresql/15" "$1/var/lib/postgresql/15"',
    ),
)
PROMETHEUS_ROOTFS = Rootfs("prometheus", ("prometheus", "wget", "ca-certificates"))


def build_rootfs(rootfs: Rootfs) -> None:
    """mmdebstrap the root filesystem and import it, unless the image is already current."""
    labels = image_labels(rootfs.image)
    if labels and labels.get(DIGEST_LABEL) == rootfs.digest():
        return
    if not shutil.which("mmdebstrap"):
        raise SystemExit("mmdebstrap is missing: apt-get install mmdebstrap")
    WORK.mkdir(parents=True, exist_ok=True)
    tarball = WORK / f"{rootfs.name}-rootfs.tar"
    started = time.monotonic()
    subprocess.run(
        [
            "mmdebstrap",
            "--quiet",
            "--variant=minbase",
            "--mode=root",
            '--aptopt=APT::Install-Recommends "false"',
            f"--include={','.join(rootfs.packages)}",
            *rootfs.options,
            "bookworm",
            str(tarball),
            *DEBIAN_SOURCES,
        ],
        check=True,
    )
    docker(
        "import",
        "--change",
        f"LABEL {DIGEST_LABEL}={rootfs.digest()}",
        str(tarball),
        rootfs.image,
        capture_output=True,
    )
    tarball.unlink()
    log(f"{rootfs.image}: root filesystem in {time.monotonic() - started:.0f} s")


# --- build contexts --------------------------------------------------------------------


def _copy_cpython(context: Path) -> None:
    """This machine's CPython 3.11 (>= the newest patch floor of the lock) for /usr/local."""
    floor = lock_python_floor()
    if sys.version_info[:2] != (3, 11) or sys.version_info[:3] < floor:
        wanted = ".".join(map(str, floor))
        raise SystemExit(f"the python stand-in needs CPython 3.11 >= {wanted}, not {sys.version}")
    prefix = Path(sys.base_prefix)
    target = context / "cpython"
    stdlib = "lib/python3.11"

    def skip(folder: str, names: list[str]) -> set[str]:
        relative = Path(folder).relative_to(prefix).as_posix()
        if relative == stdlib:
            return {"test", "idlelib", "turtledemo"} & set(names)
        if relative == f"{stdlib}/site-packages":
            return {n for n in names if n != "README.txt"}
        if relative == f"{stdlib}/lib-dynload":
            return {n for n in names if n.startswith("_tkinter")}
        return {"__pycache__"} & set(names)

    (target / "bin").mkdir(parents=True)
    shutil.copy2(prefix / "bin" / "python3.11", target / "bin" / "python3.11")
    (target / "lib").mkdir()
    for library in prefix.joinpath("lib").glob("libpython3*.so*"):
        shutil.copy2(library, target / "lib" / library.name, follow_symlinks=False)
    shutil.copytree(prefix / stdlib, target / stdlib, ignore=skip, symlinks=True)
    shutil.copytree(prefix / "include", target / "include", symlinks=True)


def lock_python_floor() -> tuple[int, int, int]:
    """The newest `python_full_version >= '3.11.x'` marker of the lock (3.11.0 if none)."""
    lock = (ROOT / "requirements" / "lock.txt").read_text()
    floors = re.findall(r"python_full_version >= '3\.11\.(\d+)'", lock)
    return (3, 11, max((int(f) for f in floors), default=0))


def _copy_uv(context: Path) -> None:
    """The uv and uvx binaries of the project's venv, checked to be the Makefile's UV_VERSION."""
    wanted = re.search(r"^UV_VERSION := (\S+)", (ROOT / "Makefile").read_text(), re.M)[1]
    binaries = ROOT / ".venv" / "bin"
    version = subprocess.run(
        [str(binaries / "uv"), "--version"], check=True, capture_output=True, text=True
    ).stdout.split()[1]
    if version != wanted:
        raise SystemExit(f".venv's uv is {version}, the images want {wanted}: make venv")
    for name in ("uv", "uvx"):
        shutil.copy2(binaries / name, context / name)


def _copy_postgres_entrypoint(context: Path) -> None:
    shutil.copy2(HERE / "postgres-entrypoint.sh", context / "postgres-entrypoint.sh")


def _s3_files(context: Path) -> None:
    """moto's wheels (for the images' platform, like `make wheelhouse`), its pins, the job."""
    wheels = WORK / "s3-wheels"
    requirements = HERE / "s3-requirements.txt"
    stamp = wheels / ".requirements"
    if not stamp.is_file() or stamp.read_text() != requirements.read_text():
        platforms = ["manylinux2014_x86_64"] + [f"manylinux_2_{m}_x86_64" for m in range(17, 37)]
        downloaded = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--dest",
                str(wheels),
                "--python-version",
                "3.11",
                "--implementation",
                "cp",
                "--abi",
                "cp311",
                *[f"--platform={p}" for p in platforms],
                "-r",
                str(requirements),
            ],
            check=False,
            capture_output=True,
            text=True,
        )
        if downloaded.returncode != 0:
            raise SystemExit(f"downloading the S3 stand-in's wheels failed:\n{downloaded.stderr}")
        stamp.write_text(requirements.read_text())
    shutil.copytree(wheels, context / "wheels", ignore=shutil.ignore_patterns(".requirements"))
    for name in ("s3-requirements.txt", "make_bucket.py"):
        shutil.copy2(HERE / name, context / name)


# --- stand-ins -------------------------------------------------------------------------


@dataclass(frozen=True)
class StandIn:
    image: str  # the name the Compose files and Dockerfiles use
    dockerfile: str  # in standins/
    rootfs: Rootfs | None = None
    stage: Callable[[Path], None] | None = None  # puts the context's files in place
    #: The stand-ins this one's Dockerfile starts from (built first).
    needs: tuple[str, ...] = field(default=())
    pullable: bool = True  # False: there is no real image of that name

    def description(self) -> str:
        """The Dockerfile's first comment, as one line."""
        lines = (HERE / self.dockerfile).read_text().splitlines()
        comment = []
        for line in lines:
            if not line.startswith("#"):
                break
            comment.append(line.lstrip("# ").strip())
        return " ".join(comment)


STANDINS = (
    StandIn("python:3.11.16-slim-bookworm", "python.Dockerfile", PYTHON_ROOTFS, _copy_cpython),
    StandIn("ghcr.io/astral-sh/uv:0.13.8", "uv.Dockerfile", None, _copy_uv),
    StandIn(
        "postgres:15.18-bookworm", "postgres.Dockerfile", POSTGRES_ROOTFS, _copy_postgres_entrypoint
    ),
    StandIn("prom/prometheus:v3.5.0", "prometheus.Dockerfile", PROMETHEUS_ROOTFS),
    StandIn(
        S3_IMAGE,
        "s3.Dockerfile",
        None,
        _s3_files,
        needs=("python:3.11.16-slim-bookworm", "ghcr.io/astral-sh/uv:0.13.8"),
        pullable=False,
    ),
)


def _digest(*parts: str) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part.encode())
        hasher.update(b"\0")
    return hasher.hexdigest()[:16]


def _context_digest(context: Path) -> str:
    """Names and sizes of the context's files, with the contents of the small ones."""
    parts = []
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        relative = path.relative_to(context).as_posix()
        size = path.stat().st_size
        content = path.read_bytes().hex() if size < 64_000 else ""
        parts.append(f"{relative}:{size}:{content}")
    return _digest(*parts)


@dataclass
class Outcome:
    image: str
    kind: str  # "real" or "stand-in"
    how: str  # "local", "pulled", "cached", "built in N s"


def ensure(standin: StandIn, dependencies: dict[str, Outcome]) -> Outcome:
    """The real image when the engine has it or can pull it; else the stand-in, built if new."""
    labels = image_labels(standin.image)
    if labels is not None and LABEL not in labels:
        return Outcome(standin.image, "real", "local")
    if labels is None and standin.pullable:
        pulled = docker(
            "pull",
            "--quiet",
            standin.image,
            check=False,
            capture_output=True,
            timeout=PULL_TIMEOUT_SECONDS,
        )
        if pulled.returncode == 0:
            return Outcome(standin.image, "real", "pulled")
        log(f"{standin.image}: cannot be pulled ({pulled.stderr.strip().splitlines()[-1]})")
    started = time.monotonic()
    if standin.rootfs:
        build_rootfs(standin.rootfs)
    context = WORK / re.sub(r"[^a-z0-9]+", "-", standin.image)
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    shutil.copy2(HERE / standin.dockerfile, context / "Dockerfile")
    if standin.stage:
        standin.stage(context)
    bases = [f"{d.image}={d.kind}" for d in dependencies.values() if d.image in standin.needs]
    rootfs_digest = standin.rootfs.digest() if standin.rootfs else ""
    digest = _digest(_context_digest(context), rootfs_digest, *sorted(bases))
    if labels and labels.get(DIGEST_LABEL) == digest:
        shutil.rmtree(context)
        return Outcome(standin.image, "stand-in", "cached")
    built = docker(
        "build",
        "--quiet",
        "--force-rm",
        "--label",
        f"{LABEL}={standin.description()}",
        "--label",
        f"{DIGEST_LABEL}={digest}",
        "-t",
        standin.image,
        str(context),
        check=False,
        capture_output=True,
    )
    if built.returncode != 0:
        raise SystemExit(f"building the stand-in {standin.image} failed:\n{built.stderr}")
    shutil.rmtree(context)
    return Outcome(standin.image, "stand-in", f"built in {time.monotonic() - started:.0f} s")


def ensure_all() -> dict[str, Outcome]:
    """Every third-party image the Dockerfiles and the test's Compose files use."""
    outcomes: dict[str, Outcome] = {}
    for standin in STANDINS:
        outcome = ensure(standin, outcomes)
        outcomes[standin.image] = outcome
        log(f"{outcome.image}: {outcome.kind} ({outcome.how})")
    return outcomes


if __name__ == "__main__":
    ensure_all()
