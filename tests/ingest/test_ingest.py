"""Parsing batches: the fast path for plain files and the record path agree."""

from __future__ import annotations

import pandas as pd
import pytest

from readmission import dataset, ingest, synthetic

SALT = "diabetes-130-v1"


def _parsed(path, plain: bool, batch_size: int = 300) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    batches = dataset.iter_batches(path, batch_size, range(10), plain=plain)
    return [ingest.parse_batch(batch, SALT) for batch in batches]


def test_a_synthetic_file_is_plain_and_counted(tmp_path, sample_frame):
    path = synthetic.write_csv(sample_frame, tmp_path / "a.csv.gz")
    source = dataset.verify(path, dataset.sha256_of(path))
    assert source.plain
    assert source.rows == 1_000


@pytest.mark.parametrize(
    ("change", "rows"),
    [
        (lambda text: text.replace("Caucasian", '"Cau,casian"', 1), 1_000),  # a quoted comma
        (lambda text: text.replace("Caucasian", '"Cau\ncasian"', 1), 1_000),  # a quoted newline
        (lambda text: text.replace(",Caucasian,", ",", 1), 1_000),  # one field short
        (lambda text: text.replace("\r\n", "\r\n\r\n", 3), 1_003),  # 3 blank lines
    ],
    ids=["quoted-comma", "quoted-newline", "short-row", "blank-lines"],
)
def test_files_that_are_not_one_record_per_line_take_the_record_path(
    tmp_path, sample_frame, change, rows
):
    path = synthetic.write_csv(sample_frame, tmp_path / "a.csv")
    path.write_bytes(change(path.read_bytes().decode()).encode())
    source = dataset.verify(path, dataset.sha256_of(path))
    assert not source.plain
    assert source.rows == rows


def test_fast_and_record_paths_parse_a_plain_file_identically(tmp_path, sample_frame):
    path = synthetic.write_csv(sample_frame, tmp_path / "a.csv.gz")
    fast, slow = _parsed(path, plain=True), _parsed(path, plain=False)
    assert len(fast) == len(slow) == 4
    for (fast_rows, fast_bad), (slow_rows, slow_bad) in zip(fast, slow, strict=True):
        pd.testing.assert_frame_equal(fast_rows, slow_rows[fast_rows.columns], check_dtype=False)
        assert fast_bad.empty
        assert slow_bad.empty


def test_a_bad_value_sends_only_its_batch_to_the_record_path(tmp_path, sample_frame):
    frame = sample_frame.copy()
    frame.loc[700, "num_lab_procedures"] = "forty"  # batch 2 of 300-row batches
    path = synthetic.write_csv(frame, tmp_path / "a.csv")
    parsed = _parsed(path, plain=True)
    assert [len(bad) for _, bad in parsed] == [0, 0, 1, 0]
    assert [len(rows) for rows, _ in parsed] == [300, 300, 299, 100]
    assert parsed[2][1]["reason"].iloc[0] == "num_lab_procedures: not an integer (forty)"


def test_missing_counts_are_stored_as_null_not_refused(tmp_path, sample_frame):
    frame = sample_frame.copy()
    frame.loc[3, "num_medications"] = "?"
    path = synthetic.write_csv(frame, tmp_path / "a.csv")
    rows, bad = _parsed(path, plain=True)[0]
    assert bad.empty
    assert pd.isna(rows.loc[3, "num_medications"])


def test_non_utf8_file_is_refused_with_a_message(tmp_path, sample_frame):
    path = synthetic.write_csv(sample_frame, tmp_path / "a.csv")
    path.write_bytes(path.read_bytes().replace(b"Caucasian", "Caucásian".encode("latin-1"), 1))
    with pytest.raises(dataset.DatasetError, match="not UTF-8"):
        dataset.verify(path, dataset.sha256_of(path))
