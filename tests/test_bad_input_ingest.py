"""Bad-input corpus, ingest part (issue 13): every bad file or argument is one clear error.

Each case builds its input beside the workspace and runs ``curator ingest`` through
``refused`` (tests/badinput.py): non-zero exit, exactly one ``error:`` line that
names the problem, the database digest unchanged (no rows, no empty dataset), no
file written outside the workspace. Every case runs on SQLite and PostgreSQL.

Decision: ``--skip-bad`` on an input whose every image is bad is refused (nothing
to ingest, nothing stored), like an empty folder; with some good images it
succeeds and reports the skipped ones (``test_skip_bad_skips_a_bomb_and_reports_it``).

Permission problems: the tests run as root in this project's CI image, where
``chmod 000`` does not stop reads. There ``deny`` makes ``open`` raise
``PermissionError`` for that one path (monkeypatched ``builtins.open`` and
``io.open``, the calls the ingest makes); as any other user it uses a real
``chmod 000``. Both assert the same message.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from badinput import refused, run, sandbox  # noqa: F401
from conftest import SAMPLE

IMAGES = SAMPLE / "test-images-idx3-ubyte.gz"
LABELS = SAMPLE / "test-labels-idx1-ubyte.gz"


def png_bytes(size=(4, 4)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", size, 128).save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width=50_000, height=50_000) -> bytes:
    """A valid small PNG whose IHDR announces ``width`` x ``height`` (CRC recomputed)."""
    data = bytearray(png_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def idx_bytes(dims, payload: bytes | None = None, magic=2051) -> bytes:
    head = struct.pack(f">i{len(dims)}i", magic, *dims)
    if payload is None:
        payload = bytes(max(0, int(np.prod(dims))))
    return head + payload


def deny(monkeypatch, path: Path) -> None:
    """Make ``path`` unreadable to curator (see module docstring)."""
    if os.geteuid() != 0:
        path.chmod(0)
        return
    import builtins

    real = builtins.open
    target = os.path.abspath(path)

    def guarded(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.path.abspath(file) == target:
            raise PermissionError(13, "Permission denied", str(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    monkeypatch.setattr(io, "open", guarded)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def good_folder(root: Path, n=3) -> Path:
    for i in range(n):
        write(root / "7" / f"ok{i}.png", png_bytes((4 + i, 4)))
    return root


# -- the cases: each returns (argv after "ingest", text the error must contain) -------------------

def bomb_png_folder(sb, mp):
    d = good_folder(sb.path("imgs"))
    write(d / "7" / "bomb.png", bomb_png())
    return [d, "-d", "x"], "bomb.png announces 50000 x 50000"


def bomb_png_says_how_to_raise_the_limit(sb, mp):
    d = good_folder(sb.path("imgs"))
    write(d / "7" / "bomb.png", bomb_png(20_000, 20_000))
    return [d, "-d", "x"], "--max-pixels"


def only_bombs_with_skip_bad(sb, mp):
    d = sb.path("imgs")
    write(d / "a" / "bomb1.png", bomb_png())
    write(d / "a" / "bomb2.png", bomb_png(60_000, 2_000))
    return [d, "-d", "x", "--skip-bad"], "all 2 images were bad"


def only_truncated_with_skip_bad(sb, mp):
    d = sb.path("imgs")
    write(d / "a" / "t.png", png_bytes()[:30])
    return [d, "-d", "x", "--skip-bad"], "nothing to ingest"


def corrupt_png(sb, mp):
    d = good_folder(sb.path("imgs"))
    write(d / "7" / "zz-bad.png", png_bytes()[:40])
    return [d, "-d", "x"], "zz-bad.png is corrupt or truncated"


def max_pixels_zero(sb, mp):
    return [IMAGES, "-d", "x", "--max-pixels", "0"], "--max-pixels"


def max_pixels_env_not_a_number(sb, mp):
    mp.setenv("CURATOR_MAX_PIXELS", "lots")
    return [IMAGES, "-d", "x"], "CURATOR_MAX_PIXELS"


def idx_over_max_pixels(sb, mp):
    return [IMAGES, "-d", "x", "--max-pixels", "100"], "16 x 16 = 256 pixels, over the limit of 100"


def garbled_gzip_idx(sb, mp):
    data = bytearray(IMAGES.read_bytes())
    data[200:260] = bytes(60)  # zeroes in the middle of the deflate stream
    return [write(sb.path("garbled-images-idx3-ubyte.gz"), bytes(data)), "-d", "x"], "damaged"


def truncated_gzip_idx(sb, mp):
    data = IMAGES.read_bytes()
    return [write(sb.path("cut-images-idx3-ubyte.gz"), data[: len(data) // 2]), "-d", "x"], "damaged"


def gzip_crc_mismatch(sb, mp):
    data = bytearray(IMAGES.read_bytes())
    data[-8] ^= 0xFF  # the CRC32 of the trailer
    return [write(sb.path("crc-images-idx3-ubyte.gz"), bytes(data)), "-d", "x"], "damaged"


def idx_wrong_magic(sb, mp):
    return [write(sb.path("m.idx"), idx_bytes((2, 4, 4), magic=2050)), "-d", "x"], "magic number 2050"


def idx_labels_given_as_images(sb, mp):
    return [LABELS, "-d", "x"], "magic number 2049, expected 2051"


def idx_negative_dimensions(sb, mp):
    return [write(sb.path("neg.idx"), idx_bytes((2, -4, 4), b"")), "-d", "x"], "-4 x 4 pixels"


def idx_zero_columns(sb, mp):
    return [write(sb.path("zc.idx"), idx_bytes((2, 4, 0))), "-d", "x"], "4 x 0 pixels"


def idx_zero_images(sb, mp):
    return [write(sb.path("zero.idx"), idx_bytes((0, 28, 28))), "-d", "x"], "announces 0 images"


def idx_negative_count(sb, mp):
    return [write(sb.path("negn.idx"), idx_bytes((-5, 28, 28), b"")), "-d", "x"], "announces -5 images"


def idx_count_larger_than_data(sb, mp):
    return [write(sb.path("big.idx"), idx_bytes((100, 4, 4), bytes(16 * 10))), "-d", "x"], "short read"


def idx_more_data_than_header(sb, mp):
    return [write(sb.path("long.idx"), idx_bytes((2, 4, 4), bytes(16 * 3))), "-d", "x"], "more data"


def idx_header_truncated(sb, mp):
    return [write(sb.path("head.idx"), struct.pack(">ii", 2051, 3)), "-d", "x"], "header is truncated"


def idx_empty_file(sb, mp):
    return [write(sb.path("empty.idx"), b""), "-d", "x"], "magic number None"


def idx_labels_count_mismatch(sb, mp):
    return [IMAGES, "-d", "x", "--labels", SAMPLE / "train-labels-idx1-ubyte.gz"], "2007 images"


def idx_labels_zero_count(sb, mp):
    lab = write(sb.path("l.idx"), struct.pack(">ii", 2049, 0))
    return [IMAGES, "-d", "x", "--labels", lab], "announces 0 labels"


def garbage_npz(sb, mp):
    return [write(sb.path("g.npz"), b"not numpy at all " * 20), "-d", "x"], "g.npz is not a readable NumPy .npz file (not NumPy data"


def truncated_npz(sb, mp):
    path = sb.path("t.npz")
    np.savez(path, images=np.zeros((10, 8, 8), np.uint8))
    write(path, path.read_bytes()[:300])
    return [path, "-d", "x"], "t.npz is not a readable NumPy .npz"


def garbled_compressed_npz(sb, mp):
    path = sb.path("c.npz")
    np.savez_compressed(path, images=np.arange(6400, dtype=np.uint8).reshape(100, 8, 8))
    data = bytearray(path.read_bytes())
    data[60:80] = b"x" * 20
    write(path, bytes(data))
    return [path, "-d", "x"], "c.npz is not a readable NumPy .npz"


def npz_without_images(sb, mp):
    path = sb.path("k.npz")
    np.savez(path, pixels=np.zeros((2, 4, 4), np.uint8))
    return [path, "-d", "x"], "no images array"


def truncated_npy(sb, mp):
    path = sb.path("t.npy")
    np.save(path, np.zeros((10, 8, 8), np.uint8))
    write(path, path.read_bytes()[:200])
    return [path, "-d", "x"], "t.npy is not a readable NumPy .npy"


def npy_pickled_objects(sb, mp):
    path = sb.path("o.npy")
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return [path, "-d", "x"], "pickled objects are not read"


def npy_wrong_dtype(sb, mp):
    path = sb.path("f.npy")
    np.save(path, np.zeros((3, 8, 8), np.float32))
    return [path, "-d", "x"], "f.npy: dtype float32, expected uint8"


def npy_wrong_shape(sb, mp):
    path = sb.path("s.npy")
    np.save(path, np.zeros((3, 8), np.uint8))
    return [path, "-d", "x"], "s.npy: shape (3, 8),"


def npy_no_images(sb, mp):
    path = sb.path("e.npy")
    np.save(path, np.zeros((0, 8, 8), np.uint8))
    return [path, "-d", "x"], "e.npy: shape (0, 8, 8) holds no pixels"


def npz_labels_count_mismatch(sb, mp):
    path = sb.path("l.npz")
    np.savez(path, images=np.zeros((5, 8, 8), np.uint8), labels=np.arange(4))
    return [path, "-d", "x"], "l.npz: expected 5 labels"


def missing_path(sb, mp):
    return [sb.path("nope.idx"), "-d", "x"], "nope.idx does not exist"


def missing_labels_file(sb, mp):
    return [IMAGES, "-d", "x", "--labels", sb.path("nolabels.gz")], "nolabels.gz does not exist"


def empty_folder(sb, mp):
    d = sb.path("empty")
    d.mkdir()
    return [d, "-d", "x"], "holds no images"


def folder_without_images(sb, mp):
    write(sb.path("docs") / "readme.txt", b"hello")
    return [sb.path("docs"), "-d", "x"], "holds no images"


def labels_with_a_folder(sb, mp):
    return [good_folder(sb.path("imgs")), "-d", "x", "--labels", LABELS], "--labels"


def batch_size_zero(sb, mp):
    return [IMAGES, "-d", "x", "--batch-size", "0"], "--batch-size 0"


def batch_size_negative(sb, mp):
    return [IMAGES, "-d", "x", "--batch-size", "-1"], "--batch-size -1"


def batch_size_zero_folder(sb, mp):
    return [good_folder(sb.path("imgs")), "-d", "x", "--batch-size", "0"], "--batch-size 0"


def unreadable_idx(sb, mp):
    path = write(sb.path("locked-images-idx3-ubyte.gz"), IMAGES.read_bytes())
    deny(mp, path)
    return [path, "-d", "x"], "permission denied"


def unreadable_image_in_folder(sb, mp):
    d = good_folder(sb.path("imgs"))
    deny(mp, d / "7" / "ok1.png")
    return [d, "-d", "x"], "ok1.png cannot be read: permission denied"


def unreadable_npy(sb, mp):
    path = sb.path("p.npy")
    np.save(path, np.zeros((3, 8, 8), np.uint8))
    deny(mp, path)
    return [path, "-d", "x"], "permission denied"


CASES = [
    bomb_png_folder, bomb_png_says_how_to_raise_the_limit, only_bombs_with_skip_bad,
    only_truncated_with_skip_bad, corrupt_png, max_pixels_zero, max_pixels_env_not_a_number,
    idx_over_max_pixels, garbled_gzip_idx, truncated_gzip_idx, gzip_crc_mismatch, idx_wrong_magic,
    idx_labels_given_as_images, idx_negative_dimensions, idx_zero_columns, idx_zero_images,
    idx_negative_count, idx_count_larger_than_data, idx_more_data_than_header, idx_header_truncated,
    idx_empty_file, idx_labels_count_mismatch, idx_labels_zero_count, garbage_npz, truncated_npz,
    garbled_compressed_npz, npz_without_images, truncated_npy, npy_pickled_objects, npy_wrong_dtype,
    npy_wrong_shape, npy_no_images, npz_labels_count_mismatch, missing_path, missing_labels_file,
    empty_folder, folder_without_images, labels_with_a_folder, batch_size_zero, batch_size_negative,
    batch_size_zero_folder, unreadable_idx, unreadable_image_in_folder, unreadable_npy,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_ingest_is_refused(sandbox, monkeypatch, case):  # noqa: F811
    argv, match = case(sandbox, monkeypatch)
    line = refused(sandbox, ["ingest", *argv], match=match)
    assert "Traceback" not in line
    media = sandbox.workspace / "media"
    left = [p for p in media.rglob("*") if p.is_file()] if media.exists() else []
    assert not left, f"files left in the media folder: {left[:3]}"


def test_skip_bad_skips_a_bomb_and_reports_it(sandbox):  # noqa: F811
    d = good_folder(sandbox.path("imgs"))
    write(d / "7" / "bomb.png", bomb_png())
    code, out, err = run(["ingest", d, "-d", "x", "--skip-bad"])
    assert code == 0, err
    assert "3 added" in out and "1 skipped" in out
    assert "bomb.png" in err and "50000 x 50000" in err


def test_the_pixel_limit_can_be_raised(sandbox, monkeypatch):  # noqa: F811
    """A genuine 100 x 100 image over a limit of 5,000 is refused; raised by flag or variable, it is stored."""
    d = sandbox.path("imgs")
    write(d / "big.png", png_bytes((100, 100)))
    refused(sandbox, ["ingest", d, "-d", "x", "--max-pixels", "5000"], match="100 x 100 = 10,000 pixels")
    code, out, err = run(["ingest", d, "-d", "x", "--max-pixels", "10000"])
    assert code == 0 and "1 added" in out, err
    monkeypatch.setenv("CURATOR_MAX_PIXELS", "9999")
    refused(sandbox, ["ingest", d, "-d", "y"], match="CURATOR_MAX_PIXELS=N")
    monkeypatch.setenv("CURATOR_MAX_PIXELS", "10000")
    code, out, err = run(["ingest", d, "-d", "y"])
    assert code == 0 and "1 added" in out, err
