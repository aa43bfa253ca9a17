"""One logging set-up for the API, the command line and the DAG tasks.

`LOG_LEVEL` (default INFO) is the lowest level logged; `LOG_FORMAT` is `text` (time,
level, logger name, message: for people) or `json` (one object a line with `time`,
`level`, `logger`, `message`, and `exception` or any `extra=` fields: for containers,
whose log collectors parse it). Three entry points:

- `configure(settings)`: the root logger of a process we own (the CLI, the API): one
  handler on stderr in the chosen format, at LOG_LEVEL; chatty HTTP clients kept at
  WARNING unless LOG_LEVEL is DEBUG.
- `route_uvicorn(access_log)`: uvicorn's own loggers through that handler, and its access
  log (one line a request) on or off (`API_ACCESS_LOG`).
- `follow_level(settings)`: inside an Airflow task, whose handlers (task log files, the
  UI) are Airflow's: only the package's loggers take LOG_LEVEL, no handler is touched.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

from readmission.settings import LoggingSettings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The package's loggers all descend from this one.
PACKAGE_LOGGER = "readmission"
#: Libraries that log every request at INFO; kept at WARNING unless LOG_LEVEL is DEBUG.
CHATTY = ("httpx", "httpcore")
UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.asgi")
UVICORN_ACCESS = "uvicorn.access"
#: The attributes every LogRecord has (and uvicorn's coloured copy of the message); anything
#: else came from `extra=` and is kept in JSON.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601, milliseconds), level, logger,
    message, then `exception`/`stack` when present and the record's `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        return json.dumps(entry, default=str, ensure_ascii=False)


class _Handler(logging.StreamHandler):
    """The handler `configure` installs, told apart from any other on the root logger."""


def formatter(settings: LoggingSettings) -> logging.Formatter:
    return JsonFormatter() if settings.format == "json" else logging.Formatter(TEXT_FORMAT)


def configure(settings: LoggingSettings, stream: IO[str] | None = None) -> None:
    """Log at LOG_LEVEL in LOG_FORMAT to `stream` (stderr). Calling it again replaces what
    an earlier call installed; handlers others put on the root logger stay."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(handler)
    handler = _Handler(stream or sys.stderr)
    handler.setFormatter(formatter(settings))
    root.addHandler(handler)
    root.setLevel(settings.level)
    # the package's own loggers follow LOG_LEVEL too, whatever an earlier set-up left there
    # (`follow_level`, in a process that also ran DAG tasks)
    logging.getLogger(PACKAGE_LOGGER).setLevel(settings.level)
    quiet = logging.DEBUG if settings.level == "DEBUG" else logging.WARNING
    for name in CHATTY:
        logging.getLogger(name).setLevel(quiet)


def route_uvicorn(access_log: bool) -> None:
    """uvicorn's loggers through the root logger's handler, at LOG_LEVEL; its access log
    (INFO records, one a request) shown when `access_log`, whatever LOG_LEVEL, and not even
    formatted otherwise (uvicorn skips it when the logger has no handler).

    Call it after uvicorn configured its own logging and before it serves: from the module
    uvicorn imports the app from (app/main.py)."""
    for name in UVICORN:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
    access = logging.getLogger(UVICORN_ACCESS)
    access.handlers.clear()
    access.setLevel(logging.INFO)
    access.propagate = access_log


def follow_level(settings: LoggingSettings) -> None:
    """The package's loggers at LOG_LEVEL, and nothing else changed: in an Airflow task,
    Airflow's handlers write the task's log."""
    logging.getLogger(PACKAGE_LOGGER).setLevel(settings.level)
