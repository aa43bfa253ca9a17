"""Fixtures of the load-test tests: the Locust folder on sys.path, as Locust itself puts it
when it loads the locustfile (the folder is not a package: it would shadow the library).

Nothing here imports `locust`: the library monkey-patches the process with gevent on import,
which the other tests' threads and sockets must not get; Locust runs in subprocesses."""

from __future__ import annotations

import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LOCUST_DIR = PROJECT_ROOT / "locust"
LOCUSTFILE = LOCUST_DIR / "locustfile.py"
LOCUST = Path(sys.executable).with_name("locust")  # the venv's command, as `make load` runs it
if str(LOCUST_DIR) not in sys.path:
    sys.path.insert(0, str(LOCUST_DIR))
