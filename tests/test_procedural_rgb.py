"""The procedural RGB set (datasets/procedural_rgb) and colour-aware near-duplicate detection on it
and on the photos shipped with scikit-image / scikit-learn."""

from __future__ import annotations

import hashlib
import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curator import coldstart
from curator.dedup import find_duplicates

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gen():
    """datasets/ is not a package: the generator is loaded by path."""
    spec = importlib.util.spec_from_file_location("procedural_rgb", ROOT / "datasets/procedural_rgb/generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _group_of(E, threshold=None) -> np.ndarray:
    group = np.full(len(E), -1)
    for g, members in enumerate(find_duplicates(E, threshold)):
        group[members] = g
    return group


def test_generator_is_deterministic_and_mixed(gen, tmp_path):
    rows = gen.generate(tmp_path / "a", n=46, seed=5, copies=0.22, lookalikes=0.09, recolours=0.09)
    gen.generate(tmp_path / "b", n=46, seed=5, copies=0.22, lookalikes=0.09, recolours=0.09)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    gen.generate(tmp_path / "c", n=46, seed=6, copies=0.22, lookalikes=0.09, recolours=0.09)
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    roles = Counter(r["role"] for r in rows)
    assert roles == {"original": 28, "copy": 10, "lookalike": 4, "recolour": 4}
    assert {r["kind"] for r in rows if r["role"] == "copy"} == set(gen.COPY_KINDS)
    assert {r["mode"] for r in rows} == {"RGB", "RGBA", "L"} and any(r["exif_orientation"] for r in rows)
    for r in rows:
        path = tmp_path / "a" / r["file"]
        assert path.parent.name == r["class"] and path.is_file()
        with Image.open(path) as im:
            assert im.mode == r["mode"]
            turned = r["exif_orientation"] in (6, 8)
            assert (im.height, im.width) == ((r["width"], r["height"]) if turned else (r["height"], r["width"]))
        if r["role"] != "original":
            assert rows[r["of"]]["role"] == "original"
    originals = [r for r in rows if r["role"] == "original"]
    assert len({(r["width"], r["height"]) for r in originals}) > 20  # mixed sizes
    assert min(min(r["width"], r["height"]) for r in originals) >= 96
    assert max(max(r["width"], r["height"]) for r in originals) <= 320


def test_generator_cli_refuses_bad_shares(gen, tmp_path, capsys):
    with pytest.raises(SystemExit):
        gen.main(["--out", str(tmp_path), "--n", "10", "--copies", "1.5"])
    assert "copies=1.5" in capsys.readouterr().err


def test_red_and_blue_twins_are_not_grouped_but_their_copies_are(gen, tmp_path):
    rng = np.random.default_rng(0)
    p = gen._random_params(rng, "star")
    W, H = p["size"]
    alpha, background = gen._mask(p, W, H)[..., None], gen._background(p, W, H)

    def paint(rgb):  # the same star on the same background in one colour
        return Image.fromarray(np.clip(background * (1 - alpha) + np.float32(rgb) * alpha + 0.5, 0, 255)
                               .astype(np.uint8))

    red, blue = paint((230, 40, 40)), paint((40, 95, 255))  # equal luma (ITU-R 601): gray, one picture
    files = {"red": red, "blue": blue}
    for kind in ("jpeg", "noise", "resize", "colour", "exif"):
        files[kind] = gen.plant(red, kind, rng)
    paths = []
    for name, img in files.items():
        stem = tmp_path / name
        paths.append(str(gen._save(img, stem, "exif-jpeg" if name == "exif" else "png",
                                   exif_orientation=6 if name == "exif" else None)))
    E = coldstart.embed_paths(paths)
    group = _group_of(E)
    assert group[0] >= 0 and (group[2:] == group[0]).all(), "planted copies of the red star must join it"
    assert group[1] != group[0], "a red and a blue star must not merge"
    luma = E[:, :coldstart.THUMB_SIDE ** 2]
    luma = luma / np.linalg.norm(luma, axis=1, keepdims=True)
    assert float(luma[0] @ luma[1]) > 0.99  # colour-blind, they would have merged


@pytest.mark.slow
def test_planted_copies_found_lookalikes_and_recolours_kept_apart(gen, tmp_path):
    rows = gen.generate(tmp_path, n=240, seed=3, copies=0.2, lookalikes=0.08, recolours=0.08)
    E = coldstart.embed_paths([str(tmp_path / r["file"]) for r in rows])
    group = _group_of(E)
    with_source = [r for r in rows if r["of"] is not None]
    joined = {r["id"]: bool(group[r["id"]] >= 0 and group[r["id"]] == group[r["of"]]) for r in with_source}
    assert not any(joined[r["id"]] for r in with_source if r["role"] in ("lookalike", "recolour"))
    photometric = [joined[r["id"]] for r in with_source if r["kind"] in ("jpeg", "noise", "resize", "colour", "exif")]
    assert np.mean(photometric) >= 0.75, np.mean(photometric)
    origin = np.array([r["of"] if r["role"] == "copy" else r["id"] for r in rows])
    impure = [g for g in set(group[group >= 0].tolist()) if len(set(origin[group == g].tolist())) > 1]
    assert len(impure) <= 1, "distinct pictures grouped together"


def _photos():
    data = pytest.importorskip("skimage.data")
    datasets = pytest.importorskip("sklearn.datasets")
    pics = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    pics += list(datasets.load_sample_images().images)
    out = []
    for arr in pics:
        img = Image.fromarray(np.asarray(arr)[..., :3])
        img.thumbnail((256, 256))
        out.append(img)
    return out


@pytest.mark.slow
def test_copies_of_real_photos_found_and_different_photos_kept_apart(gen):
    rng = np.random.default_rng(1)
    images, origin = [], []
    for i, pic in enumerate(_photos()):
        images.append(np.asarray(pic))
        origin.append(i)
        for kind in ("jpeg", "noise", "resize", "colour"):
            images.append(np.asarray(gen.plant(pic, kind, rng)))
            origin.append(i)
    E = coldstart.embed_images(images)
    group = _group_of(E)
    origin = np.array(origin)
    for i in set(origin.tolist()):
        members = group[origin == i]
        assert members[0] >= 0 and (members == members[0]).all(), f"photo {i}: copies not all found"
        assert not np.isin(members[0], group[origin != i]), f"photo {i} grouped with another photo"


# Worker processes: the same files, byte for byte, as one process; a stopped run goes on from the files it wrote.

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
