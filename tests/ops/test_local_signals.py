"""`make run` (and `make replay`) stopped by SIGTERM (a `kill`, a service manager) or
SIGHUP (a closed terminal) stops the services it started, as Ctrl-C does: the stack runs in
its own process group, which a signal to `make run` alone does not reach."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from readmission import dataset

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# The local mode with its services stood in for by one `sleep` in its own process group
# (as honcho runs them), started while the stack waits for the services to answer.
PROGRAM = textwrap.dedent(
    """
    import subprocess, sys, time
    from pathlib import Path
    from readmission.ops import localstack, replay

    # A service that runs a task in a process group of its own, as Airflow's scheduler
    # runs each task's process: a signal to the stack's group does not reach the task.
    SERVICE = (
        "import subprocess, time; "
        "task = subprocess.Popen(['sleep', '300'], process_group=0); "
        "print(task.pid, flush=True); time.sleep(300)"
    )

    def start_stack(stack):
        services = subprocess.Popen(
            [sys.executable, "-c", SERVICE], start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        task = int(services.stdout.readline())
        print("services", services.pid, flush=True)
        print("task", task, flush=True)
        return services, Path("/dev/null")

    def wait_services(stack, process, log):
        print("waiting", flush=True)
        time.sleep(300)

    localstack.start_stack = start_stack
    localstack.wait_services = wait_services
    sys.exit({command}.main())
    """
)


@pytest.mark.parametrize("command", ["localstack", "replay"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_terminated_local_mode_stops_the_services_it_started(
    tmp_path, sample_csv, signum, command
):
    env = {
        **os.environ,
        "READMISSION_STATE_DIR": str(tmp_path / "state"),
        "DIABETES_CSV": str(sample_csv),
        "DIABETES_CSV_SHA256": dataset.sha256_of(sample_csv),
        "RAW_BATCH_SIZE": "300",  # the replay holds out the last of the four batches
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-c", PROGRAM.replace("{command}", command)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    services = task = None
    try:
        lines = []
        while not lines or lines[-1] != "waiting":
            line = process.stdout.readline()
            assert line, "".join(lines)
            lines.append(line.strip())
            if line.startswith("services "):
                services = int(line.split()[1])
            if line.startswith("task "):
                task = int(line.split()[1])
        process.send_signal(signum)
        output, _ = process.communicate(timeout=30)
        assert "stopping ..." in output
        assert process.returncode == 128 + signum
        deadline = time.monotonic() + 10
        for pid, what in ((services, "the services"), (task, "a task of a service")):
            while _alive(pid):
                assert time.monotonic() < deadline, f"{what} outlived the local mode"
                time.sleep(0.05)
    finally:
        if process.poll() is None:
            process.kill()
        for group in (services, task):
            if group is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
