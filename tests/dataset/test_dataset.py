"""Finding, verifying and reading the data file."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import pytest

from readmission import dataset, synthetic
from readmission.schema import SchemaError
from readmission.settings import Settings


def _settings(tmp_path: Path, **values) -> Settings:
    values.setdefault("READMISSION_DATA_DIR", tmp_path / "data")
    return Settings(**values)


def test_csv_and_gzip_of_the_same_file_have_the_same_hash(tmp_path, sample_frame):
    plain = synthetic.write_csv(sample_frame, tmp_path / "a.csv")
    zipped = synthetic.write_csv(sample_frame, tmp_path / "a.csv.gz")
    assert dataset.sha256_of(plain) == dataset.sha256_of(zipped)


def test_explicit_path_is_used_and_verified(tmp_path, sample_csv):
    digest = dataset.sha256_of(sample_csv)
    source = dataset.locate(
        _settings(tmp_path, DIABETES_CSV=sample_csv, DIABETES_CSV_SHA256=digest)
    )
    assert source.path == sample_csv
    assert source.sha256 == digest


def test_explicit_path_that_does_not_exist_does_not_fall_back(tmp_path, sample_frame):
    synthetic.write_csv(sample_frame, tmp_path / "data" / "diabetic_data.csv")
    settings = _settings(tmp_path, DIABETES_CSV=tmp_path / "nope.csv")
    with pytest.raises(dataset.DatasetError, match=r"DIABETES_CSV points at .*nope\.csv"):
        dataset.locate(settings)


def test_data_folder_is_searched_when_no_path_is_given(tmp_path, sample_frame):
    path = synthetic.write_csv(sample_frame, tmp_path / "data" / "diabetic_data.csv")
    settings = _settings(tmp_path, DIABETES_CSV_SHA256=dataset.sha256_of(path))
    assert dataset.locate(settings).path == path


def test_corrupt_file_is_refused_with_what_to_do(tmp_path, sample_csv):
    settings = _settings(tmp_path, DIABETES_CSV=sample_csv)  # the real file's hash
    with pytest.raises(dataset.DatasetError) as caught:
        dataset.locate(settings)
    assert "truncated, altered or another data set" in str(caught.value)
    assert str(sample_csv) in str(caught.value)


def test_a_file_that_is_not_gzip_is_a_clear_error(tmp_path):
    fake = tmp_path / "diabetic_data.csv.gz"
    fake.write_text("encounter_id,patient_nbr\n1,2\n")
    with pytest.raises(dataset.DatasetError, match="cannot be read"):
        dataset.sha256_of(fake)


def test_missing_file_without_download_names_every_place_looked(tmp_path):
    settings = _settings(tmp_path)
    with pytest.raises(dataset.DatasetError) as caught:
        dataset.locate(settings, download=False)
    message = str(caught.value)
    assert "diabetic_data.csv.gz" in message
    assert str(tmp_path / "data") in message
    assert "DIABETES_CSV" in message


def test_download_extracts_the_csv_from_the_archive_and_verifies_it(tmp_path, sample_frame):
    csv_path = synthetic.write_csv(sample_frame, tmp_path / "src" / "diabetic_data.csv")
    archive = tmp_path / "src" / "uci.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(csv_path, "dataset_diabetes/diabetic_data.csv")
        zipped.writestr("dataset_diabetes/IDs_mapping.csv", "x\n")
    settings = _settings(
        tmp_path,
        DIABETES_DATASET_URL=archive.as_uri(),
        DIABETES_CSV_SHA256=dataset.sha256_of(csv_path),
    )
    source = dataset.locate(settings)
    assert source.path == tmp_path / "data" / "diabetic_data.csv.gz"
    with gzip.open(source.path, "rb") as got:
        assert got.read() == csv_path.read_bytes()


def test_failed_download_says_where_it_looked_and_what_failed(tmp_path):
    settings = _settings(tmp_path, DIABETES_DATASET_URL=(tmp_path / "absent.zip").as_uri())
    with pytest.raises(dataset.DatasetError, match=r"No diabetes data file found.*failed"):
        dataset.locate(settings)
    assert not (tmp_path / "data" / "diabetic_data.csv.gz").exists()


def test_wrong_header_is_refused_naming_the_columns(tmp_path, sample_frame):
    path = synthetic.write_csv(
        sample_frame.drop(columns=["race"]).assign(extra=1), tmp_path / "bad.csv"
    )
    with pytest.raises(SchemaError, match="missing columns: race; unknown columns: extra"):
        dataset.read_header(path)


def test_batches_slice_the_file_and_keep_malformed_rows_apart(tmp_path, sample_frame):
    path = synthetic.write_csv(sample_frame.head(25), tmp_path / "small.csv")
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = lines[3].rstrip("\r\n") + ",surplus\r\n"  # data row 2 gets a 51st field
    path.write_text("".join(lines))
    assert dataset.count_rows(path) == 25
    batches = [dataset.read_batch(path, b, 10) for b in range(3)]
    assert [b.size for b in batches] == [10, 10, 5]
    assert batches[0].malformed[0][0] == 2
    assert batches[0].row_numbers == [0, 1, 3, 4, 5, 6, 7, 8, 9]
    assert batches[2].row_numbers == [20, 21, 22, 23, 24]


def test_install_copies_a_verified_file_into_the_data_folder_once(tmp_path, sample_frame):
    elsewhere = synthetic.write_csv(sample_frame, tmp_path / "shared" / "x.csv.gz")
    source = dataset.verify(elsewhere, dataset.sha256_of(elsewhere))
    data_dir = tmp_path / "data"
    target = dataset.install(source, data_dir)
    assert target == data_dir / "diabetic_data.csv.gz"
    assert target.read_bytes() == elsewhere.read_bytes()
    assert [p.name for p in data_dir.iterdir()] == ["diabetic_data.csv.gz"]  # no partial left
    mtime = target.stat().st_mtime_ns
    assert dataset.install(source, data_dir) == target
    assert target.stat().st_mtime_ns == mtime  # same content: not copied again
    # The file in place is its own source: nothing to do.
    assert dataset.install(dataset.verify(target, source.sha256), data_dir) == target


def test_install_replaces_a_different_file(tmp_path, sample_frame):
    plain = synthetic.write_csv(sample_frame, tmp_path / "x.csv")
    (tmp_path / "data").mkdir()
    stale = tmp_path / "data" / "diabetic_data.csv"
    stale.write_text("stale\n")
    target = dataset.install(dataset.verify(plain, dataset.sha256_of(plain)), tmp_path / "data")
    assert target == stale
    assert target.read_bytes() == plain.read_bytes()
