"""Ingest of real MNIST data: IDX, arrays, folders; idempotence and bad input."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
from sqlalchemy import func, select

from curator import ingest_arrays, ingest_folder, ingest_idx
from curator.exceptions import ValidationError
from curator.ingest.idx import iter_images, read_labels
from curator.store.schema import Dataset, Sample
from curator.store.session import transaction

from conftest import MNIST, SAMPLE, require


def count(settings, **where) -> int:
    with transaction(settings) as s:
        q = select(func.count()).select_from(Sample)
        for key, value in where.items():
            q = q.where(getattr(Sample, key) == value)
        return s.scalar(q)


def snapshot(settings) -> list[tuple]:
    with transaction(settings) as s:
        return s.execute(select(Sample.uri, Sample.sha256, Sample.gt_label).order_by(Sample.id)).all()


def test_idx_sample_ingest_is_idempotent(db_settings):
    report = ingest_idx(SAMPLE / "test-images-idx3-ubyte.gz", SAMPLE / "test-labels-idx1-ubyte.gz",
                        dataset="digits", split="test", settings=db_settings)
    assert report.added == 2007 and report.total == 2007
    again = ingest_idx(SAMPLE / "test-images-idx3-ubyte.gz", SAMPLE / "test-labels-idx1-ubyte.gz",
                       dataset="digits", split="test", settings=db_settings)
    assert again.added == 0 and again.existing == 2007 and again.total == 2007
    assert count(db_settings) == 2007
    with transaction(db_settings) as s:
        ds = s.scalar(select(Dataset).where(Dataset.name == "digits"))
        assert ds.classes == [str(i) for i in range(10)]
        row = s.execute(select(Sample).order_by(Sample.id).limit(1)).scalar_one()
        assert (row.width, row.height, row.channels, row.split) == (16, 16, 1, "test")
    labels = read_labels(SAMPLE / "test-labels-idx1-ubyte.gz")
    got = [int(x) for x, in snapshot_labels(db_settings)]
    assert got == labels.tolist()


def snapshot_labels(settings):
    with transaction(settings) as s:
        return s.execute(select(Sample.gt_label).order_by(Sample.id)).all()


def test_png_files_hold_the_idx_pixels(settings):
    from PIL import Image

    ingest_idx(SAMPLE / "test-images-idx3-ubyte.gz", dataset="d", settings=settings)
    _, first = next(iter_images(SAMPLE / "test-images-idx3-ubyte.gz", batch_size=5))
    with transaction(settings) as s:
        uris = s.scalars(select(Sample.uri).order_by(Sample.id).limit(5)).all()
    for pixels, uri in zip(first, uris):
        assert np.array_equal(np.asarray(Image.open(uri)), pixels)


@pytest.mark.slow
def test_full_mnist_t10k_records_10000_rows(settings):
    images = require(MNIST / "t10k-images-idx3-ubyte.gz")
    ingest_idx(images, MNIST / "t10k-labels-idx1-ubyte.gz", dataset="t10k", settings=settings)
    assert count(settings) == 10000
    ingest_idx(images, MNIST / "t10k-labels-idx1-ubyte.gz", dataset="t10k", settings=settings)
    assert count(settings) == 10000


def test_truncated_idx_fails_and_changes_nothing(db_settings, tmp_path):
    good = SAMPLE / "test-images-idx3-ubyte.gz"
    ingest_idx(good, dataset="d", settings=db_settings)
    before = snapshot(db_settings)
    raw = gzip.decompress(good.read_bytes())
    bad = tmp_path / "short-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(raw[: len(raw) - 1000]))
    with pytest.raises(ValidationError, match="short read.*truncated"):
        ingest_idx(bad, dataset="d", settings=db_settings)
    with pytest.raises(ValidationError, match="short read"):
        ingest_idx(bad, dataset="other", settings=db_settings)
    assert snapshot(db_settings) == before


def test_wrong_magic_number_names_the_file(settings, tmp_path):
    with pytest.raises(ValidationError, match="magic number 2049, expected 2051"):
        ingest_idx(SAMPLE / "test-labels-idx1-ubyte.gz", dataset="d", settings=settings)
    with pytest.raises(ValidationError, match="does not exist"):
        ingest_idx(tmp_path / "missing.gz", dataset="d", settings=settings)


def test_label_count_mismatch(settings):
    with pytest.raises(ValidationError, match="2007 images"):
        ingest_idx(SAMPLE / "test-images-idx3-ubyte.gz", SAMPLE / "train-labels-idx1-ubyte.gz",
                   dataset="d", settings=settings)
    assert count(settings) == 0


def test_arrays_record_exact_duplicates(db_settings, tmp_path):
    _, block = next(iter_images(SAMPLE / "train-images-idx3-ubyte.gz", batch_size=50))
    images = np.concatenate([block, block[:5]])  # five exact copies
    labels = np.arange(55) % 10
    path = tmp_path / "digits.npz"
    np.savez(path, images=images, labels=labels)
    report = ingest_arrays(path, dataset="arr", settings=db_settings, batch_size=16)
    assert report.added == 55 and report.duplicates == 5
    with transaction(db_settings) as s:
        rows = s.execute(select(Sample.id, Sample.sha256, Sample.duplicate_of_id).order_by(Sample.id)).all()
    first = {}
    for sid, sha, dup in rows:
        if dup is None:
            assert sha not in first
            first[sha] = sid
        else:
            assert first[sha] == dup
    assert ingest_arrays(path, dataset="arr", settings=db_settings).added == 0


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((4, 8, 8), dtype=np.float32), "dtype float32, expected uint8"),
        (np.zeros((4, 8), dtype=np.uint8), r"shape \(4, 8\)"),
        (np.zeros((4, 8, 8, 2), dtype=np.uint8), "1, 3 or 4 channels"),
    ],
)
def test_arrays_bad_shape_or_dtype(settings, array, message):
    with pytest.raises(ValidationError, match=message):
        ingest_arrays(array, dataset="d", name="x", settings=settings)
    assert count(settings) == 0


def make_folder(root, n=12):
    from PIL import Image

    _, block = next(iter_images(SAMPLE / "train-images-idx3-ubyte.gz", batch_size=n))
    labels = read_labels(SAMPLE / "train-labels-idx1-ubyte.gz")[:n]
    for i, (pixels, label) in enumerate(zip(block, labels)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).convert("RGB").save(folder / f"img{i}.{'png' if i % 2 else 'jpg'}")
    return labels


def test_folder_with_class_subfolders(db_settings, tmp_path):
    labels = make_folder(tmp_path / "imgs")
    shutil.copy(next((tmp_path / "imgs").rglob("*.png")), tmp_path / "imgs" / "copy.png")
    report = ingest_folder(tmp_path / "imgs", dataset="f", settings=db_settings)
    assert report.added == 13 and report.duplicates == 1
    assert count(db_settings, gt_label=None) == 1  # the copy at the root has no class
    assert sorted(count(db_settings, gt_label=str(c)) for c in set(labels)) == sorted(
        int((labels == c).sum()) for c in set(labels))
    assert count(db_settings, channels=3) == 13


def count_sample_inserts(settings):
    """A counter of INSERT statements into samples sent to the database (rolled back or not)."""
    from sqlalchemy import event

    from curator.store.session import get_engine

    engine = get_engine(settings.database_url)
    seen = []

    def spy(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("INSERT INTO SAMPLES"):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", spy)
    return seen, lambda: event.remove(engine, "before_cursor_execute", spy)


def test_corrupt_image_fails_cleanly_or_is_skipped(db_settings, tmp_path):
    """The bad file is the last one the ingest reads (its own sorted order), with batches of 4:
    rows of the two earlier batches are already sent when it fails, and none may stay."""
    from curator.ingest.folder import list_images

    make_folder(tmp_path / "imgs")
    order = list_images(tmp_path / "imgs")
    assert len(order) == 12
    victim = order[-1]
    victim.write_bytes(victim.read_bytes()[:40])  # truncated
    inserts, stop = count_sample_inserts(db_settings)
    try:
        with pytest.raises(ValidationError, match=f"{victim.name} is corrupt or truncated.*--skip-bad"):
            ingest_folder(tmp_path / "imgs", dataset="f", settings=db_settings, batch_size=4)
    finally:
        stop()
    assert len(inserts) >= 2, "the earlier batches were not written before the failure"
    assert count(db_settings) == 0
    with transaction(db_settings) as s:
        assert s.scalar(select(func.count()).select_from(Dataset)) == 0
    report = ingest_folder(tmp_path / "imgs", dataset="f", settings=db_settings, skip_bad=True, batch_size=4)
    assert report.added == 11 and [p for p, _ in report.skipped] == [str(victim)]


def test_missing_folder(settings, tmp_path):
    with pytest.raises(ValidationError, match="does not exist"):
        ingest_folder(tmp_path / "nope", dataset="f", settings=settings)
