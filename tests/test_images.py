"""Images as they are: mixed sizes and modes in one pool, EXIF orientation, transparency, streamed
decoding with memory bounded by the batch, and one clear line for a bad file."""

from __future__ import annotations

import threading
import weakref

import numpy as np
import pytest
from PIL import Image

from curator import images
from curator.exceptions import ValidationError
from curator.models import InputSpec


def _mixed_pool(root, n: int = 200, seed: int = 0) -> list[str]:
    """``n`` small files: RGB JPEG, RGB PNG, RGBA PNG, grayscale PNG, sizes 20-60 px a side."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        h, w = (int(v) for v in rng.integers(20, 61, size=2))
        kind = i % 4
        if kind == 3:
            img = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L")
        else:
            img = Image.fromarray(rng.integers(0, 256, (h, w, 4 if kind == 2 else 3), dtype=np.uint8),
                                  "RGBA" if kind == 2 else "RGB")
        path = root / f"img{i:04d}.{'jpg' if kind == 0 else 'png'}"
        img.save(path)
        paths.append(str(path))
    return paths


class _Watch:
    """Counts the decoded images alive at each decode call (weak references: instrumented, not timed)."""

    def __init__(self, monkeypatch):
        self.alive, self.peak, self.calls = 0, 0, 0
        self.lock = threading.Lock()  # decoding runs on threads
        real = images.decode

        def decode(*a, **k):
            out = real(*a, **k)
            with self.lock:
                self.calls += 1
                self.alive += 1
                self.peak = max(self.peak, self.alive)
            weakref.finalize(out, self._gone)
            return out

        monkeypatch.setattr(images, "decode", decode)

    def _gone(self):
        with self.lock:
            self.alive -= 1


@pytest.mark.parametrize("threads", [0, 3])
def test_mixed_pool_streams_in_batches_never_holding_more_than_one(tmp_path, monkeypatch, threads):
    uris = _mixed_pool(tmp_path / "pool")
    watch = _Watch(monkeypatch)
    spec = InputSpec(size=(24, 32), channels=3)
    it = images.iter_batches(uris, 8, spec=spec, threads=threads)
    first = next(it)
    assert first.shape == (8, 24, 32, 3) and first.dtype == np.uint8
    assert watch.calls == 8  # lazy: one batch decoded, not the pool
    n = len(first)
    for batch in it:
        n += len(batch)
        assert batch.shape[1:] == (24, 32, 3)
    assert n == 200 and watch.calls == 200
    assert watch.peak <= 8, f"{watch.peak} decoded images alive at once with batches of 8"


def test_frame_comes_from_the_spec_then_the_first_image(tmp_path):
    uris = _mixed_pool(tmp_path / "pool", n=8)
    first = Image.open(uris[0])
    assert images.frame(uris) == ("RGB", (first.height, first.width), "stretch")
    assert images.frame(uris, InputSpec(channels=1))[:2] == ("L", (first.height, first.width))
    assert images.frame(uris, InputSpec(size=(10, 12), channels=3)) == ("RGB", (10, 12), "stretch")
    gray = images.load_images(uris, spec=InputSpec(size=(16, 16), channels=1))
    assert gray.shape == (8, 16, 16)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_copy_decodes_the_same_as_the_upright_original(tmp_path, orientation):
    rng = np.random.default_rng(orientation)
    upright = Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))  # landscape, 50 wide
    upright.save(tmp_path / "upright.png")
    turn = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270, 3: Image.Transpose.ROTATE_180}
    exif = Image.Exif()
    exif[0x0112] = orientation
    upright.transpose(turn[orientation]).save(tmp_path / "turned.png", exif=exif.tobytes())
    a = images.decode(str(tmp_path / "upright.png"))
    b = images.decode(str(tmp_path / "turned.png"))
    assert a.shape == (30, 50, 3)
    assert np.array_equal(a, b)
    stored = np.asarray(Image.open(tmp_path / "turned.png"))
    assert orientation == 3 or stored.shape[:2] == (50, 30)  # the file really is turned


def test_ingest_records_the_upright_size_of_an_exif_turned_file(tmp_path):
    from curator.ingest.folder import read_record

    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (50, 30)).transpose(Image.Transpose.ROTATE_90).save(tmp_path / "t.jpg", exif=exif.tobytes())
    rec = read_record(tmp_path / "t.jpg", tmp_path, None, False)
    assert (rec.width, rec.height) == (50, 30) == images.decode(str(tmp_path / "t.jpg")).shape[1::-1]


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 200  # red, fully transparent on the left half, opaque on the right
    rgba[:, 5:, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = images.decode(str(tmp_path / "a.png"))
    assert out.shape == (10, 10, 3)
    assert (out[:, :5] == 255).all() and (out[:, 5:] == [200, 0, 0]).all()
    la = np.zeros((6, 6, 2), np.uint8)
    la[:, 3:, 1] = 255
    Image.fromarray(la, "LA").save(tmp_path / "b.png")
    gray = images.decode(str(tmp_path / "b.png"))
    assert gray.shape == (6, 6) and (gray[:, :3] == 255).all() and (gray[:, 3:] == 0).all()


def test_resize_modes_keep_or_drop_the_aspect(tmp_path):
    Image.new("RGB", (40, 20), (0, 0, 0)).save(tmp_path / "wide.png")
    uri = str(tmp_path / "wide.png")
    assert images.decode(uri, "RGB", (16, 16), "stretch").max() == 0
    padded = images.decode(uri, "RGB", (16, 16), "pad")
    assert padded.shape == (16, 16, 3) and (padded[0] == 255).all() and (padded[8] == 0).all()
    assert images.decode(uri, "RGB", (16, 16), "crop").max() == 0
    with pytest.raises(ValidationError, match="resize mode 'zoom'"):
        images.decode(uri, "RGB", (16, 16), "zoom")


def test_bad_files_are_one_line_naming_the_file(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (8, 8)).save(good)
    data = good.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_text("not an image")
    for name, fix in (("cut.png", "replace it"), ("text.png", "replace it"), ("gone.png", "re-ingest")):
        with pytest.raises(ValidationError) as exc:
            list(images.iter_batches([str(good), str(tmp_path / name)], 2))
        message = str(exc.value)
        assert "\n" not in message and str(tmp_path / name) in message and fix in message


def test_mixed_pool_ingests_and_embeds_batch_by_batch(db_settings, tmp_path, monkeypatch):
    """Ingest a mixed pool, embed it with a model that declares its input: every batch decoded to
    the declared frame, never more than one batch of decoded images alive, every row stored."""
    import torch

    from curator import embeddings, ingest_folder
    from curator.models import TorchAdapter

    _mixed_pool(tmp_path / "pool" / "cls", n=40)
    report = ingest_folder(tmp_path / "pool", dataset="mixed", settings=db_settings)
    assert report.added == 40
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                 torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    adapter = TorchAdapter(module, input_spec=InputSpec(size=(20, 20), channels=3, mean=0.5, std=0.25))
    seen = []
    real_embed = adapter.embed
    adapter.embed = lambda x: (seen.append(x.shape), real_embed(x))[1]
    watch = _Watch(monkeypatch)
    info = embeddings.compute_embeddings(db_settings, "mixed", adapter, batch_size=8)
    assert info.complete and info.count == 40
    assert all(s[1:] == (20, 20, 3) and s[0] <= 8 for s in seen)
    assert watch.peak <= 8

