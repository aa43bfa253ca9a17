"""scripts/test-prerequisites, which `make test` runs first: it finds every tool the tests
need, refuses a kubectl too old for kompose/, and, short of root, stops at once with the
exact install command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "test-prerequisites"
#: What the script calls besides the tools it checks.
UTILITIES = (
    "bash",
    "sort",
    "tail",
    "head",
    "dirname",
    "id",
    "mktemp",
    "cat",
    "rm",
    "grep",
    "sed",
    "awk",
)
CHECKED = ("prometheus", "promtool", "kubectl", "git")


def _run(path: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path, "PYTHON": sys.executable}
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def _bin_with(tmp_path: Path, *, without: str = "", kubectl: str | None = None) -> str:
    """A PATH of links to the real programs, less `without`; `kubectl` replaces kubectl."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in (*UTILITIES, *CHECKED):
        if name != without and name != "kubectl" and (real := shutil.which(name)):
            (folder / name).symlink_to(real)
    if kubectl is not None:
        (folder / "kubectl").write_text(f"#!/bin/sh\n{kubectl}\n")
        (folder / "kubectl").chmod(0o755)
    elif without != "kubectl":
        (folder / "kubectl").symlink_to(shutil.which("kubectl") or "/usr/bin/kubectl")
    return str(folder)


def test_every_tool_is_found_and_reported():
    result = _run(os.environ["PATH"], "--check")
    assert result.returncode == 0, result.stderr
    for tool in ("python", "postgresql", "chromium", "prometheus", "kubectl", "git"):
        assert f"\n  {tool} " in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("missing", "package"),
    [("kubectl", "kubernetes-client"), ("promtool", "prometheus"), ("git", "git")],
)
def test_a_missing_tool_stops_at_once_with_the_install_command(tmp_path, missing, package):
    result = _run(_bin_with(tmp_path, without=missing), "--check")
    assert result.returncode == 1
    assert f"missing: {package} (Debian packages)" in result.stderr
    assert (
        "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y "
        f"--no-install-recommends {package}\n"
    ) in result.stderr
    assert "every tool" not in result.stdout


def test_a_kubectl_with_an_older_kustomize_is_refused(tmp_path):
    old = 'echo "Client Version: v1.24.17"; echo "Kustomize Version: v4.5.4"'
    result = _run(_bin_with(tmp_path, kubectl=old), "--check")
    assert result.returncode == 1
    assert "bundles kustomize 4.5.4, older than the 4.5.5 that kompose/ needs" in result.stderr
    assert "install kubectl 1.25 or newer" in result.stderr


def test_a_kubectl_that_prints_no_kustomize_version_is_refused(tmp_path):
    result = _run(_bin_with(tmp_path, kubectl='echo "Client Version: v1.20.2"'), "--check")
    assert result.returncode == 1
    assert "kustomize of an unknown version" in result.stderr


def test_a_kustomize_that_leaves_pod_templates_unlabelled_is_refused(tmp_path):
    claims = (
        'if [ "$1" = version ]; then echo "Kustomize Version: v5.0.0"; '
        "else printf 'kind: Deployment\\nmetadata:\\n  labels:\\n"
        "    app.kubernetes.io/part-of: prerequisites-check\\n'; fi"
    )
    result = _run(_bin_with(tmp_path, kubectl=claims), "--check")
    assert result.returncode == 1
    assert "did not label the pod template" in result.stderr


def test_the_manifests_use_what_the_minimum_kustomize_brings():
    """The minimum the script asks for is there for a feature kompose/ really uses."""
    base = SCRIPT.parents[1] / "kompose" / "base" / "kustomization.yaml"
    assert "includeTemplates: true" in base.read_text()
    assert "MIN_KUSTOMIZE=4.5.5" in SCRIPT.read_text()
