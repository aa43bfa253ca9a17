"""The inference service's entry point: `uvicorn app.main:app --port 8989`.

All the logic lives in `readmission.api`; this file only assembles the app. OpenMP is
kept to one thread: in a server's worker threads it costs more than it gives (measured).
Logging (LOG_LEVEL, LOG_FORMAT, uvicorn's loggers and its access log: API_ACCESS_LOG) is
set here, after uvicorn set up its own and before it serves.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pandas as pd

# Requests are small frames: Arrow-backed strings cost more to build than they save there.
pd.set_option("mode.string_storage", "python")

from readmission import logs  # noqa: E402 - after the settings above
from readmission.api import create_app  # noqa: E402
from readmission.settings import get_settings  # noqa: E402

settings = get_settings()
logs.configure(settings.logging)
logs.route_uvicorn(access_log=settings.api.access_log)
app = create_app(settings)
