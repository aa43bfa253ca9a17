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
import itertools
import logging
import shutil
import tempfile
import urllib.request
import zipfile
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from readmission import schema
from readmission.settings import Settings

log = logging.getLogger(__name__)

FILE_NAMES = ("diabetic_data.csv", "diabetic_data.csv.gz")


class DatasetError(RuntimeError):
    """The data file is missing, corrupt or malformed; the message says what to do."""


@dataclass(frozen=True)
class Source:
    """A verified data file and what one pass over its bytes told about it."""

    path: Path
    sha256: str
    rows: int  # data records (header excluded)
    plain: bool  # one record per line, no quotes, no NUL, same field count everywhere


def open_text(path: Path) -> io.TextIOBase:
    """Open a `.csv` or `.csv.gz` as UTF-8 text, keeping line endings for the csv module."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


@lru_cache(maxsize=1)
def _content(path: Path, size: int, mtime_ns: int) -> bytes:  # noqa: ARG001 - cache keys
    """The uncompressed bytes (19 MB for the UCI file), kept for the next reader."""
    try:
        with _open_binary(path) as stream:
            return stream.read()
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DatasetError(
            f"{path} cannot be read ({exc}); delete it or point DIABETES_CSV at a good copy."
        ) from exc


def content(path: Path) -> bytes:
    """The file's uncompressed bytes, cached while the file is unchanged."""
    stat = path.stat()
    return _content(path, stat.st_size, stat.st_mtime_ns)


def clear_cache() -> None:
    """Forget the cached file content (benchmarks read the file afresh each run)."""
    _content.cache_clear()
    _scan_content.cache_clear()


@dataclass(frozen=True)
class _Scan:
    sha256: str
    lines: int
    commas: int
    quotes: bool
    nul: bool
    utf8: bool


def _scan(path: Path) -> _Scan:
    """One look at the uncompressed bytes: hash, line and comma counts, odd bytes."""
    stat = path.stat()
    return _scan_content(path, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=1)
def _scan_content(path: Path, size: int, mtime_ns: int) -> _Scan:
    data = _content(path, size, mtime_ns)
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    try:
        data.decode("utf-8")
        utf8 = True
    except UnicodeDecodeError:
        utf8 = False
    return _Scan(
        hashlib.sha256(data).hexdigest(),
        lines,
        data.count(b","),
        b'"' in data,
        b"\x00" in data,
        utf8,
    )


def sha256_of(path: Path) -> str:
    """sha256 of the uncompressed content (so .csv and .csv.gz of one file agree)."""
    return _scan(path).sha256


def candidates(settings: Settings) -> list[Path]:
    """The places a data file is looked for, in order."""
    found = [settings.dataset.csv] if settings.dataset.csv else []
    found += [settings.dataset.data_dir / name for name in FILE_NAMES]
    return found


def locate(settings: Settings, *, download: bool = True) -> Source:
    """Find the data file, downloading the official archive if allowed, and verify it.

    Raises `DatasetError` naming every place looked at when nothing usable is found.
    """
    if settings.dataset.csv is not None:
        # An explicit path is a promise: do not silently fall back to something else.
        if not settings.dataset.csv.is_file():
            raise DatasetError(
                f"DIABETES_CSV points at {settings.dataset.csv}, which does not exist. "
                "Fix the path, or unset DIABETES_CSV to use data/ or the UCI download."
            )
        return verify(settings.dataset.csv, settings.dataset.csv_sha256)
    for path in candidates(settings):
        if path.is_file():
            return verify(path, settings.dataset.csv_sha256)
    if not download:
        raise DatasetError(_not_found_message(settings))
    try:
        path = fetch(settings.dataset.url, settings.dataset.data_dir)
    except (OSError, zipfile.BadZipFile, DatasetError) as exc:
        raise DatasetError(
            f"{_not_found_message(settings)} Downloading {settings.dataset.url} failed: {exc}"
        ) from exc
    return verify(path, settings.dataset.csv_sha256)


def _not_found_message(settings: Settings) -> str:
    looked = ", ".join(str(p) for p in candidates(settings))
    return (
        f"No diabetes data file found (looked at: {looked}). Set DIABETES_CSV to the path of "
        "diabetic_data.csv or .csv.gz, or put it in data/ (see data/README.md)."
    )


def verify(path: Path, expected_sha256: str) -> Source:
    """Check the file's sha256; a mismatch is an error that says which file and what to do."""
    scan = _scan(path)
    if scan.sha256 != expected_sha256:
        raise DatasetError(
            f"{path} has sha256 {scan.sha256}, expected {expected_sha256}: the file is "
            "truncated, altered or another data set. Replace it with the UCI original "
            "(data/README.md), or set DIABETES_CSV_SHA256 if you deliberately use another version."
        )
    if not scan.utf8:
        raise DatasetError(f"{path} is not UTF-8 text; re-encode it or use the UCI original")
    width = len(read_header(path))
    # Without quotes every line is one record; if moreover the commas add up to exactly
    # width - 1 per line, no line has too few fields (the parser refuses too many), so the
    # fast C parser reads the file exactly as the csv module would.
    plain = not scan.quotes and not scan.nul and scan.commas == (width - 1) * scan.lines
    rows = scan.lines - 1 if not scan.quotes else count_rows(path)
    return Source(path=path, sha256=scan.sha256, rows=rows, plain=plain)


def install(source: Source, data_dir: Path) -> Path:
    """Put a verified file into `data_dir` under its standard name; return where it is.

    For the containers, which mount `data/` and look nowhere else. A file already there
    with the same content is left alone; the copy is written under a temporary name and
    renamed, so a reader never sees half a file.
    """
    suffix = ".csv.gz" if source.path.name.endswith(".gz") else ".csv"
    target = data_dir / f"diabetic_data{suffix}"
    if target.exists() and (
        target.resolve() == source.path.resolve() or sha256_of(target) == source.sha256
    ):
        return target
    data_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    shutil.copyfile(source.path, partial)
    partial.replace(target)
    return target


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
    if not set(header) & set(schema.COLUMN_NAMES):
        raise schema.SchemaError(
            f"{path}: the first line is not the UCI header (no column name of the schema in "
            f"it; it starts {','.join(header[:3])[:60]!r}): the header row is missing"
        )
    try:
        schema.check_header(header)
    except schema.SchemaError as exc:
        raise schema.SchemaError(f"{path}: {exc}") from None  # says which file
    return header


def count_rows(path: Path) -> int:
    """Number of data rows (records, not lines: a quoted field may hold a newline)."""
    with open_text(path) as stream:
        return sum(1 for _ in csv.reader(stream)) - 1


@dataclass(frozen=True)
class Batch:
    """Records of one batch, as the file's text.

    Read record by record (`rows` and `malformed`), or, from a plain file, as its raw
    lines (`lines`), which loaders may hand to a parser or to PostgreSQL's COPY as they are.
    """

    batch_id: int
    first_row: int  # 0-based index of the batch's first data row in the file
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)  # rows with len(header) fields
    row_numbers: list[int] = field(default_factory=list)  # data-row index of each of `rows`
    malformed: list[tuple[int, list[str]]] = field(default_factory=list)  # (index, fields)
    lines: list[bytes] | None = None  # plain file: the batch's lines, without line ends

    @property
    def size(self) -> int:
        if self.lines is not None:
            return len(self.lines)
        return len(self.rows) + len(self.malformed)

    def as_records(self) -> Batch:
        """The same batch read record by record (keeps malformed rows apart)."""
        if self.lines is None:
            return self
        text = b"\n".join(self.lines).decode("utf-8")
        return _batch(
            self.batch_id, self.first_row, self.header, list(csv.reader(io.StringIO(text)))
        )


def iter_batches(
    path: Path, batch_size: int, batch_ids: Iterable[int], plain: bool = False
) -> Iterator[Batch]:
    """The wanted batches, read in one pass over the file, in file order.

    Batch k holds data rows `[k * batch_size, (k + 1) * batch_size)`; a batch past the end
    of the file is not yielded. A `plain` file (see `verify`: one record per line) is cut
    into lines; any other is read record by record with the csv module.
    """
    wanted = sorted(set(batch_ids))
    if plain:
        yield from _iter_lines(path, batch_size, wanted)
    else:
        yield from _iter_records(path, batch_size, wanted)


def _iter_lines(path: Path, batch_size: int, wanted: list[int]) -> Iterator[Batch]:
    header = read_header(path)
    lines = content(path).split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the final line end
    data = lines[1:]
    for batch_id in wanted:
        first = batch_id * batch_size
        chunk = data[first : first + batch_size]
        if not chunk:
            return
        yield Batch(batch_id, first, header, lines=[line.rstrip(b"\r") for line in chunk])


def _iter_records(path: Path, batch_size: int, wanted: list[int]) -> Iterator[Batch]:
    header = read_header(path)
    with open_text(path) as stream:
        reader = csv.reader(stream)
        next(reader)
        position = 0  # data-row index of the next record
        for batch_id in wanted:
            first = batch_id * batch_size
            if first > position:  # skip the records before the batch at C speed
                deque(itertools.islice(reader, first - position), maxlen=0)
                position = first
            records = list(itertools.islice(reader, batch_size))
            position += len(records)
            if not records:
                return
            yield _batch(batch_id, first, header, records)


def read_batch(path: Path, batch_id: int, batch_size: int, plain: bool = False) -> Batch:
    """One batch (empty when it lies past the end of the file)."""
    for batch in iter_batches(path, batch_size, [batch_id], plain):
        return batch
    return Batch(batch_id, batch_id * batch_size, read_header(path))


def _batch(batch_id: int, first: int, header: list[str], records: list[list[str]]) -> Batch:
    width = len(header)
    rows: list[list[str]] = []
    numbers: list[int] = []
    malformed: list[tuple[int, list[str]]] = []
    for index, record in enumerate(records, start=first):
        if len(record) == width:
            rows.append(record)
            numbers.append(index)
        elif record:  # a blank line is not a record
            malformed.append((index, record))
    return Batch(batch_id, first, header, rows, numbers, malformed)
