"""Partial results of a long pure step kept in a folder, so a run that is stopped resumes where it was.

Why: verifying the candidate pairs of a 100,000-image pool is an hour or more of CPU
(``copyverify.find_copies``); a stopped run (Ctrl-C, a closed laptop, a killed job) should not start
that hour again. The folder is keyed by what the work was computed from (``key``): a folder that
holds another key is cleared, never trusted, so a changed pool or setting recomputes from the start.
What is kept is derived data, so clearing it loses nothing but time.

Rows are written through to their file as each block comes (``os.pwrite``, no memory map held: its
written pages would stay in the resident set) and the mask of finished blocks is replaced atomically
after an ``fsync`` of the rows, so a block marked done is on disk whenever the run stops.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

#: At most this often the finished-block mask is saved (and the rows fsynced): a stop loses less.
SAVE_EVERY_SECONDS = 30.0


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _canonical(meta) -> str:
    return json.dumps(meta, sort_keys=True, default=lambda x: np.asarray(x).tolist())


class Checkpoint:
    """A folder of one computation's partial results, valid for ``key`` (JSON-able: what the work was
    computed from). ``arrays`` keeps whole results, ``rows`` an array filled block by block;
    ``clear`` removes the folder once the work is done."""

    def __init__(self, folder, key: dict):
        self.folder = Path(folder)
        self.key = _canonical(key)
        key_file = self.folder / "key.json"
        self.resumed = key_file.is_file() and key_file.read_text() == self.key
        if not self.resumed:
            self.clear()
            self.folder.mkdir(parents=True, exist_ok=True)
            _write_atomic(key_file, self.key.encode())

    def arrays(self, name: str, compute) -> tuple:
        """The arrays ``compute()`` returns (a tuple), computed once and read back on a resumed run."""
        path = self.folder / f"{name}.npz"
        if path.is_file():
            with np.load(path) as z:
                return tuple(z[f"a{k}"] for k in range(len(z.files)))
        out = tuple(compute())
        tmp = self.folder / f"{name}.tmp.npz"
        np.savez(tmp, **{f"a{k}": np.asarray(a) for k, a in enumerate(out)})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return out

    def rows(self, name: str, shape, dtype, block: int, meta=None) -> "Rows":
        """An array of ``shape`` filled by blocks of ``block`` rows (``Rows.put``); a resumed run reads
        the finished blocks back. ``meta``: settings the values depend on beyond the key."""
        return Rows(self.folder / name, tuple(int(d) for d in shape), np.dtype(dtype), int(block), meta)

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class Rows:
    """``out`` (in memory, as the caller would hold it) and ``done`` (one flag a block) of one array;
    ``put`` writes a finished block through to ``<name>.bin``; ``save`` fsyncs it and then replaces
    ``<name>.done.npy``. Open with ``with`` (or call ``close``) so the last blocks are saved."""

    def __init__(self, base: Path, shape: tuple, dtype: np.dtype, block: int, meta):
        self.block = block
        self.out = np.empty(shape, dtype)
        self.row_bytes = self.out[:1].nbytes if shape[0] else 0
        n_blocks = -(-shape[0] // block) if shape[0] else 0
        self._data, self._done_path = base.parent / f"{base.name}.bin", base.parent / f"{base.name}.done.npy"
        meta_path = base.parent / f"{base.name}.json"
        want = _canonical({"shape": shape, "dtype": dtype.str, "block": block, "meta": meta})
        done = None
        if meta_path.is_file() and meta_path.read_text() == want and self._done_path.is_file():
            done = np.load(self._done_path)
            if done.shape != (n_blocks,) or self._data.stat().st_size != self.out.nbytes:
                done = None
        if done is None:
            self.done = np.zeros(n_blocks, bool)
            with open(self._data, "wb") as f:
                f.truncate(self.out.nbytes)
            _write_atomic(meta_path, want.encode())
            self._save_mask()
        else:
            self.done = done.astype(bool)
            with open(self._data, "rb") as f:
                f.readinto(memoryview(self.out.reshape(-1)).cast("B"))
        self.resumed_rows = int(sum(min(block, shape[0] - b * block) for b in np.flatnonzero(self.done)))
        self._fd = os.open(self._data, os.O_WRONLY)
        self._saved = time.monotonic()

    def todo(self) -> list[tuple[int, int]]:
        """(start, stop) of each block not yet done, in order."""
        n = len(self.out)
        return [(s, min(s + self.block, n)) for s in range(0, n, self.block) if not self.done[s // self.block]]

    def put(self, start: int, values) -> None:
        self.out[start:start + len(values)] = values
        view, offset = memoryview(np.ascontiguousarray(self.out[start:start + len(values)]).reshape(-1)).cast("B"), \
            start * self.row_bytes
        while view:
            wrote = os.pwrite(self._fd, view, offset)
            view, offset = view[wrote:], offset + wrote
        self.done[start // self.block] = True
        if time.monotonic() - self._saved >= SAVE_EVERY_SECONDS:
            self.save()

    def _save_mask(self) -> None:
        buf = io.BytesIO()
        np.save(buf, self.done)
        _write_atomic(self._done_path, buf.getvalue())

    def save(self) -> None:
        os.fsync(self._fd)  # the rows first: a block is marked done only once its values are on disk
        self._save_mask()
        self._saved = time.monotonic()

    def close(self) -> None:
        if self._fd is not None:
            try:
                self.save()
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> "Rows":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

