"""Finding, verifying and reading the UCI file.

The file is looked for in this order: the `DIABETES_CSV` setting, then `data/` in the
project, then the official UCI archive is downloaded into `data/`. Its sha256 (of the
uncompressed CSV) is checked before anything reads it, so a truncated or altered file
stops the pipeline with a message instead of loading half a data set.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import logging
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from readmission import schema
from readmission.settings import Settings

log = logging.getLogger(__name__)

FILE_NAMES = ("diabetic_data.csv", "diabetic_data.csv.gz")
_CHUNK = 1 << 20


class DatasetError(RuntimeError):
    """The data file is missing, corrupt or malformed; the message says what to do."""


@dataclass(frozen=True)
class Source:
    """A verified data file."""

    path: Path
    sha256: str


def open_text(path: Path) -> io.TextIOBase:
    """Open a `.csv` or `.csv.gz` as UTF-8 text, keeping line endings for the csv module."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def sha256_of(path: Path) -> str:
    """sha256 of the uncompressed content (so .csv and .csv.gz of one file agree)."""
    digest = hashlib.sha256()
    try:
        with _open_binary(path) as stream:
            while block := stream.read(_CHUNK):
                digest.update(block)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DatasetError(f"{path} cannot be read ({exc}); delete it or point DIABETES_CSV "
                           "at a good copy.") from exc
    return digest.hexdigest()


def candidates(settings: Settings) -> list[Path]:
    """The places a data file is looked for, in order."""
    found = [settings.diabetes_csv] if settings.diabetes_csv else []
    found += [settings.data_dir / name for name in FILE_NAMES]
    return found


def locate(settings: Settings, *, download: bool = True) -> Source:
    """Find the data file, downloading the official archive if allowed, and verify it.

    Raises `DatasetError` naming every place looked at when nothing usable is found.
    """
    if settings.diabetes_csv is not None:
        # An explicit path is a promise: do not silently fall back to something else.
        if not settings.diabetes_csv.is_file():
            raise DatasetError(
                f"DIABETES_CSV points at {settings.diabetes_csv}, which does not exist. "
                "Fix the path, or unset DIABETES_CSV to use data/ or the UCI download."
            )
        return verify(settings.diabetes_csv, settings.dataset_sha256)
    for path in candidates(settings):
        if path.is_file():
            return verify(path, settings.dataset_sha256)
    if not download:
        raise DatasetError(_not_found_message(settings))
    try:
        path = fetch(settings.dataset_url, settings.data_dir)
    except (OSError, zipfile.BadZipFile, DatasetError) as exc:
        raise DatasetError(
            f"{_not_found_message(settings)} Downloading {settings.dataset_url} failed: {exc}"
        ) from exc
    return verify(path, settings.dataset_sha256)


def _not_found_message(settings: Settings) -> str:
    looked = ", ".join(str(p) for p in candidates(settings))
    return (
        f"No diabetes data file found (looked at: {looked}). Set DIABETES_CSV to the path of "
        "diabetic_data.csv or .csv.gz, or put it in data/ (see data/README.md)."
    )


def verify(path: Path, expected_sha256: str) -> Source:
    """Check the file's sha256; a mismatch is an error that says which file and what to do."""
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise DatasetError(
            f"{path} has sha256 {actual}, expected {expected_sha256}: the file is truncated, "
            "altered or another data set. Replace it with the UCI original (data/README.md), "
            "or set DIABETES_CSV_SHA256 if you deliberately use another version."
        )
    return Source(path=path, sha256=actual)


def fetch(url: str, data_dir: Path) -> Path:
    """Download the UCI zip and extract `diabetic_data.csv`, gzipped, into `data_dir`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    target = data_dir / "diabetic_data.csv.gz"
    log.info("downloading %s", url)
    with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
        archive = Path(tmp) / "archive.zip"
        with urllib.request.urlopen(url, timeout=120) as response, archive.open("wb") as out:
            shutil.copyfileobj(response, out)
        with zipfile.ZipFile(archive) as zipped:
            members = [m for m in zipped.namelist() if m.endswith("diabetic_data.csv")]
            if not members:
                raise DatasetError(f"the archive from {url} holds no diabetic_data.csv")
            partial = Path(tmp) / target.name
            with zipped.open(members[0]) as src, gzip.open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
        partial.replace(target)  # atomic: never a half-written file under the final name
    return target


def read_header(path: Path) -> list[str]:
    """The header row, checked against the schema (a mismatch names the columns)."""
    with open_text(path) as stream:
        try:
            header = next(csv.reader(stream))
        except StopIteration:
            raise DatasetError(f"{path} is empty") from None
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{path} is not UTF-8 text: {exc}") from exc
    header = [name.strip() for name in header]
    schema.check_header(header)
    return header


def count_rows(path: Path) -> int:
    """Number of data rows (records, not lines: a quoted field may hold a newline)."""
    with open_text(path) as stream:
        return sum(1 for _ in csv.reader(stream)) - 1


@dataclass(frozen=True)
class Batch:
    """Records of one batch, as the file's text: well-formed rows and malformed ones."""

    batch_id: int
    first_row: int  # 0-based index of the batch's first data row in the file
    header: list[str]
    rows: list[list[str]]  # rows with exactly len(header) fields
    row_numbers: list[int]  # 0-based data-row index of each row in `rows`
    malformed: list[tuple[int, list[str]]]  # (data-row index, fields) of the others

    @property
    def size(self) -> int:
        return len(self.rows) + len(self.malformed)


def read_batch(path: Path, batch_id: int, batch_size: int) -> Batch:
    """Read data rows `[batch_id * batch_size, (batch_id + 1) * batch_size)` as text."""
    header = read_header(path)
    first = batch_id * batch_size
    rows: list[list[str]] = []
    numbers: list[int] = []
    malformed: list[tuple[int, list[str]]] = []
    with open_text(path) as stream:
        reader = csv.reader(stream)
        next(reader)
        for index, record in _slice(reader, first, first + batch_size):
            if len(record) == len(header):
                rows.append(record)
                numbers.append(index)
            elif record:  # a blank line is not a record
                malformed.append((index, record))
    return Batch(batch_id, first, header, rows, numbers, malformed)


def _slice(reader: Iterator[list[str]], start: int, stop: int) -> Iterator[tuple[int, list[str]]]:
    for index, record in enumerate(reader):
        if index >= stop:
            return
        if index >= start:
            yield index, record
