"""The procedural RGB generator in worker processes: the same files, byte for byte, as one process,
and a stopped run goes on from the files it wrote."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("procedural_rgb_w", ROOT / "datasets/procedural_rgb/generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_two_workers_write_the_same_bytes_as_one(gen, tmp_path):
    # copies 0.4: every copy kind (crop and combo draw size-dependent numbers) at least twice
    kw = dict(n=40, seed=11, copies=0.4, lookalikes=0.1, recolours=0.1)
    one = gen.generate(tmp_path / "one", workers=1, **kw)
    two = gen.generate(tmp_path / "two", workers=2, **kw)
    assert one == two
    assert _digest(tmp_path / "one") == _digest(tmp_path / "two")
    assert {r["kind"] for r in one if r["role"] == "copy"} == set(gen.COPY_KINDS)


def test_a_rerun_resumes_from_the_files_written(gen, tmp_path):
    kw = dict(n=24, seed=2, copies=0.25)
    rows = gen.generate(tmp_path / "a", **kw)
    whole = _digest(tmp_path / "a")
    lost = [tmp_path / "a" / r["file"] for r in rows[::5]]
    for p in lost:
        p.unlink()
    kept = tmp_path / "a" / rows[1]["file"]
    before = kept.stat().st_mtime_ns
    gen.generate(tmp_path / "a", workers=2, **kw)
    assert _digest(tmp_path / "a") == whole  # the missing files drawn again, the same bytes
    assert kept.stat().st_mtime_ns == before  # a file already there is not written again
    assert not list((tmp_path / "a").rglob("*.part"))
