"""A self-supervised encoder of the unlabeled pool: contrastive learning with copy augmentations.

Why: the cold-start thumbnail cannot tell a rotated or zoomed copy from a look-alike, and a
classifier trained on 20 labels learns nothing from the 60,000 images it chooses from. This
encoder is trained on the pool itself (SimCLR's NT-Xent loss, Chen et al. 2020, in the copy-
detection form of SSCD, Pizzi et al. 2022): two augmented views of one image are positives, every
other image of the batch a negative. The augmentations are the ones real copies go through
(crop/shift, rotation <= 10 deg, zoom 0.9-1.1, brightness/contrast/colour, blur, noise, JPEG), so
copies land near their original and distinct images, however alike, apart.

Entry points (no database): ``train_encoder(images, input_spec=, seed=, steps=|epochs=,
checkpoint=, progress=) -> Encoder``; ``Encoder.embed(images)``; ``Encoder.save/load``;
``augment_numpy`` (the copy augmentations, for threshold calibration). The dataset workflow
(stored model + embedding set, reuse, refresh, resume) is ``curator.selfsupervised_store``.

Determinism: each step's batch and augmentations come from a generator seeded by
``seeds.derive(seed, stage="ssl", shard=step)``, so a run killed and resumed from its last
checkpoint takes the same steps as one that was never stopped.
"""

from __future__ import annotations

import io
import math
import os
import time
from pathlib import Path

import numpy as np

from curator.exceptions import ValidationError

__all__ = ["Encoder", "train_encoder", "load_encoder", "augment", "augment_numpy", "default_input_spec",
           "MODEL_NAME", "DEFAULT_STEPS", "TEMPERATURE", "EMBED_DIM"]

#: Model name of every encoder trained here (its version is the checksum of the weights).
MODEL_NAME = "ssl-encoder"
#: Default training budget in optimiser steps (batch 128): 0.28-0.38 CPU s a step on 28 x 28
#: images with one torch thread (benchmarks/dedup_quality), so about 8 CPU minutes; a budget in
#: steps, not epochs, keeps the time independent of the pool's size. (Only 150 steps were measured
#: for quality so far.)
DEFAULT_STEPS = 1500
#: NT-Xent temperature: SSCD uses 0.05; 0.1 is SimCLR's small-batch value.
TEMPERATURE = 0.1
#: Width of the backbone's pooled features.
BACKBONE_DIM = 128
#: Width of the embedding: the projection head's output, the space the loss compares by cosine.
#: (The backbone's features come after a ReLU: all non-negative, so every cosine between them is
#: high (MNIST nearest neighbours at 0.99 after 80 steps) and a threshold has no room.)
EMBED_DIM = 64
#: Side of the images the encoder sees when the pool's images are larger (RGB photos are
#: resized to it): small enough for CPU training, large enough to keep a shape's outline.
MAX_SIDE = 32
#: Steps between checkpoints (a killed run loses at most this many).
CHECKPOINT_EVERY = 100


def _torch():
    import torch

    return torch


def default_input_spec(sample: np.ndarray):
    """The InputSpec for a pool whose first decoded image is ``sample``: its channels (1 or 3) and
    its size, capped at ``MAX_SIDE`` a side (aspect ratio not kept: copies are crops anyway)."""
    from curator.models.base import InputSpec

    arr = np.asarray(sample)
    channels = 1 if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 1) else 3
    h, w = arr.shape[:2]
    size = (h, w) if max(h, w) <= MAX_SIDE else (MAX_SIDE, MAX_SIDE)
    return InputSpec(size=(int(size[0]), int(size[1])), channels=channels)


def _network(in_channels: int, width: int = 16):
    """Four 3x3 conv blocks with batch norm (the first three halve the size), global average pool:
    ``BACKBONE_DIM`` features, about 3 M multiply-adds per 28 x 28 image (a CPU budget); then a
    two-layer projection head to ``EMBED_DIM``, whose output is the embedding."""
    import torch.nn as nn

    class _Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = dict(in_channels=in_channels, width=width)
            w = width

            def block(cin, cout, pool):
                layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
                if pool:
                    layers.append(nn.MaxPool2d(2, ceil_mode=True))
                return layers

            self.backbone = nn.Sequential(*block(in_channels, w, True), *block(w, 2 * w, True),
                                          *block(2 * w, 4 * w, True), *block(4 * w, BACKBONE_DIM, False),
                                          nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.head = nn.Sequential(nn.Linear(BACKBONE_DIM, 256), nn.ReLU(inplace=True), nn.Linear(256, EMBED_DIM))

        def forward(self, x):
            return self.backbone(x)

    return _Encoder()


# -- augmentations -----------------------------------------------------------------------------


def _jpeg_batch(x, rng: np.random.Generator, share: float):
    """Re-encode a random ``share`` of a [0, 1] (n, C, H, W) batch as JPEG (quality 50-95) by PIL."""
    from PIL import Image

    torch = _torch()
    n = x.shape[0]
    pick = np.flatnonzero(rng.random(n) < share)
    if len(pick) == 0:
        return x
    x = x.clone()
    for i in pick.tolist():
        arr = (x[i].permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
        img = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(rng.integers(50, 96)))
        back = np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float32) / 255.0
        if back.ndim == 2:
            back = back[..., None]
        x[i] = torch.from_numpy(back).permute(2, 0, 1)
    return x


def augment(x, gen, rng: np.random.Generator, *, strength: float = 1.0):
    """The copy augmentations of a float (n, C, H, W) batch in [0, 1], one draw per image.

    Affine: rotation U(-10, 10) deg, zoom U(0.9, 1.1), shift U(-8 %, 8 %) of the side (a crop
    and re-frame), edges filled with the image's border colour (its median edge value); then
    brightness x U(0.8, 1.2), contrast x U(0.8, 1.2), per-channel gain U(0.9, 1.1) on colour
    images, a 3x3 blur on half, Gaussian noise sigma U(0, 0.04) and JPEG on a tenth (PIL, the costly part).
    ``strength`` scales every range (1 = the ranges above).
    """
    torch = _torch()
    import torch.nn.functional as F

    n, c, h, w = x.shape
    u = torch.rand(n, 8, generator=gen) * 2 - 1
    s = strength
    ang = u[:, 0] * math.radians(10.0 * s)
    zoom = 1 + u[:, 1] * 0.1 * s
    cos, sin = torch.cos(ang) / zoom, torch.sin(ang) / zoom
    theta = torch.stack([torch.stack([cos, -sin, u[:, 2] * 0.16 * s], 1),
                         torch.stack([sin, cos, u[:, 3] * 0.16 * s], 1)], 1)
    border = torch.cat([x[:, :, 0, :], x[:, :, -1, :], x[:, :, :, 0], x[:, :, :, -1]], dim=2).median(dim=2).values
    grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)
    shifted = x - border[:, :, None, None]
    out = F.grid_sample(shifted, grid, align_corners=False, padding_mode="zeros") + border[:, :, None, None]
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * (1 + u[:, 4, None, None, None] * 0.2 * s) + mean * (1 + u[:, 5, None, None, None] * 0.2 * s)
    if c == 3:
        out = out * (1 + torch.rand(n, 3, 1, 1, generator=gen).sub(0.5).mul(0.2 * s))
    blur = (u[:, 6] > 0).float()[:, None, None, None]
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None, :]) / 16
    blurred = F.conv2d(F.pad(out, (1, 1, 1, 1), mode="replicate"), kernel.expand(c, 1, 3, 3).contiguous(), groups=c)
    out = blur * blurred + (1 - blur) * out
    sigma = (u[:, 7] + 1) / 2 * 0.04 * s
    out = out + torch.randn(out.shape, generator=gen) * sigma[:, None, None, None]
    out = out.clamp(0, 1)
    return _jpeg_batch(out, rng, 0.1 * min(1.0, s))


def augment_numpy(images: np.ndarray, seed: int, input_spec=None, strength: float = 1.0) -> np.ndarray:
    """One augmented copy of each uint8 image (prepared to ``input_spec``), as float (n, C, H, W):
    the calibration's synthetic copies (``curator.dedup.calibrate_threshold``)."""
    torch = _torch()
    x = _prepare(images, input_spec)
    gen = torch.Generator().manual_seed(int(seed) & 0x7FFFFFFF)
    return augment(x, gen, np.random.default_rng(seed), strength=strength).numpy()


def _prepare(images, input_spec):
    """uint8 (n, H, W[, C]) images -> float (n, C, H, W) in [0, 1] at ``input_spec`` (size, channels),
    without normalisation (the encoder normalises by its own buffer)."""
    from curator.models.base import images_to_tensor

    torch = _torch()
    if isinstance(images, torch.Tensor):
        return images.float()
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        x = images_to_tensor(arr.astype(np.float32))
    else:
        x = images_to_tensor(arr)
    if input_spec is not None:
        import torch.nn.functional as F

        if input_spec.channels == 3 and x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        elif input_spec.channels == 1 and x.shape[1] >= 3:
            x = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        elif x.shape[1] == 4:
            x = x[:, :3]
        if input_spec.size is not None and tuple(x.shape[2:]) != tuple(input_spec.size):
            x = F.interpolate(x, size=tuple(input_spec.size), mode="bilinear", antialias=True, align_corners=False)
    return x.contiguous()


# -- the encoder -----------------------------------------------------------------------------


class Encoder:
    """A trained encoder: ``embed(images) -> (n, EMBED_DIM)`` L2-normalised float32, at its InputSpec.

    Quacks like a model adapter for ``curator.embeddings.compute_embeddings`` (``name``,
    ``version``, ``module``, ``input_spec``, ``embed``)."""

    def __init__(self, module, input_spec, *, meta: dict | None = None, device=None, batch_size: int = 512):
        from curator.models.base import default_device

        self.module = module.eval()
        self.input_spec = input_spec
        self.meta = dict(meta or {})
        self.name = MODEL_NAME
        self.batch_size = batch_size
        self.device = device or default_device()
        self.module.to(self.device)

    @property
    def version(self) -> str:
        from curator.models.base import checksum_of

        return checksum_of(self.module)[:16]

    def _normalise(self, x):
        m = self.module
        return (x - m.pix_mean[None, :, None, None]) / m.pix_std[None, :, None, None]

    def embed_prepared(self, x) -> np.ndarray:
        torch = _torch()
        out = []
        with torch.no_grad():
            for s in range(0, len(x), self.batch_size):
                f = self.module.head(self.module(self._normalise(x[s: s + self.batch_size].to(self.device))))
                out.append(torch.nn.functional.normalize(f, dim=1).cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, EMBED_DIM), np.float32)

    def embed(self, images) -> np.ndarray:
        """Embeddings of uint8 images (any size and channels: brought to the InputSpec first)."""
        if isinstance(images, list):
            images = np.stack([np.asarray(i) for i in images])
        return self.embed_prepared(_prepare(images, self.input_spec))

    def save(self, path) -> Path:
        """Weights, configuration and InputSpec in one file, written atomically."""
        torch = _torch()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        spec = self.input_spec
        blob = {"config": self.module.config, "state_dict": self.module.state_dict(),
                "input_spec": {"size": list(spec.size), "channels": spec.channels}, "meta": self.meta}
        buf = io.BytesIO()
        torch.save(blob, buf)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(buf.getvalue())
        tmp.replace(path)
        return path


def _build(config: dict):
    torch = _torch()
    module = _network(**config)
    module.register_buffer("pix_mean", torch.zeros(config["in_channels"]))
    module.register_buffer("pix_std", torch.ones(config["in_channels"]))
    return module


def load_encoder(path, device=None) -> Encoder:
    """The Encoder saved at ``path``; a missing or foreign file is one clear ValidationError."""
    from curator.models.base import InputSpec

    torch = _torch()
    path = Path(path)
    if not path.is_file():
        raise ValidationError(f"encoder file {path} does not exist; train it again: curator embed --self-supervised")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        module = _build(blob["config"])
        module.load_state_dict(blob["state_dict"])
        spec = InputSpec(size=tuple(blob["input_spec"]["size"]), channels=blob["input_spec"]["channels"])
    except Exception as exc:  # torch raises many kinds for one cause: a bad file
        raise ValidationError(f"encoder file {path} is not a curator encoder ({type(exc).__name__}); "
                              "train it again: curator embed --self-supervised") from None
    return Encoder(module, spec, meta=blob.get("meta"), device=device)


def _nt_xent(z1, z2, temperature: float):
    torch = _torch()
    import torch.nn.functional as F

    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    sim = z @ z.t() / temperature
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def train_encoder(images, *, input_spec=None, seed: int = 0, steps: int | None = None, epochs: float | None = None,
                  batch_size: int = 128, lr: float = 2e-3, checkpoint=None, progress: bool = True,
                  device=None, threads: int | None = None, width: int = 16,
                  checkpoint_every: int = CHECKPOINT_EVERY) -> Encoder:
    """Train an encoder on unlabeled uint8 ``images`` (n, H, W) or (n, H, W, C).

    ``steps`` (default ``DEFAULT_STEPS``) or ``epochs`` (passes over the pool) set the budget.
    ``checkpoint`` (a path): the state is saved there every ``CHECKPOINT_EVERY`` steps and at the
    end (``checkpoint_every``); a run finding a checkpoint of the same configuration continues from it (a different
    configuration or pool size is refused rather than mixed in). ``threads``: torch CPU threads
    for the run (default: as set). Returns the Encoder (its ``meta`` records the budget and time).
    """
    from curator import seeds
    from curator._progress import progress as bar

    torch = _torch()
    arr = np.asarray(images) if not isinstance(images, np.ndarray) else images
    if arr.ndim not in (3, 4) or len(arr) < 2:
        raise ValidationError(f"train_encoder: images must be a batch (n >= 2, H, W[, C]); got shape {arr.shape}")
    spec = input_spec or default_input_spec(arr[0])
    X = _prepare(arr, spec)
    n = len(X)
    bs = int(min(batch_size, n))
    if steps is None:
        steps = max(1, math.ceil(epochs * n / bs)) if epochs else DEFAULT_STEPS
    steps = int(steps)
    if steps < 1:
        raise ValidationError(f"train_encoder: steps must be >= 1; got {steps}")
    config = dict(in_channels=int(X.shape[1]), width=int(width))
    run_key = dict(config=config, n=n, size=list(X.shape[2:]), seed=int(seed), steps=steps, bs=bs, lr=lr)
    from curator.models.base import default_device

    device = torch.device(device) if device is not None else default_device()
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seeds.derive(seed, stage="ssl-init"))
            module = _build(config)
            module.pix_mean.copy_(X.mean((0, 2, 3)))
            module.pix_std.copy_(X.std((0, 2, 3)).clamp_min(1e-3))
        module.to(device)
        params = list(module.parameters())
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
        start, cpu_s, losses = 0, 0.0, []
        ckpt = Path(checkpoint) if checkpoint else None
        if ckpt is not None and ckpt.is_file():
            try:
                state = torch.load(ckpt, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise ValidationError(f"checkpoint {ckpt} cannot be read ({type(exc).__name__}); delete it to "
                                      "train from the start") from None
            if state.get("run") != run_key:
                raise ValidationError(f"checkpoint {ckpt} belongs to another training run (pool size, seed or "
                                      "budget differ); delete it to train from the start")
            module.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            sched.load_state_dict(state["sched"])
            start, cpu_s, losses = int(state["step"]), float(state["cpu_s"]), list(state["losses"])

        def save_ckpt(step):
            if ckpt is None:
                return
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            torch.save({"run": run_key, "model": module.state_dict(), "opt": opt.state_dict(),
                        "sched": sched.state_dict(), "step": step, "cpu_s": cpu_s, "losses": losses}, buf)
            tmp = ckpt.with_suffix(ckpt.suffix + ".tmp")
            tmp.write_bytes(buf.getvalue())
            os.replace(tmp, ckpt)

        def normalise(x):
            return (x - module.pix_mean[None, :, None, None]) / module.pix_std[None, :, None, None]

        module.train()
        t_cpu = time.process_time()
        steps_iter = range(start, steps)
        if progress:
            steps_iter = bar(steps_iter, total=steps - start, desc=f"self-supervised training (steps {start}-{steps})")
        for step in steps_iter:
            s = seeds.derive(seed, stage="ssl", shard=step)
            gen = torch.Generator().manual_seed(s)
            rng = np.random.default_rng(s)
            idx = torch.randperm(n, generator=gen)[:bs]
            xb = X[idx]
            v1, v2 = augment(xb, gen, rng), augment(xb, gen, rng)
            z1 = module.head(module(normalise(v1.to(device))))
            z2 = module.head(module(normalise(v2.to(device))))
            loss = _nt_xent(z1, z2, TEMPERATURE)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if (step + 1) % checkpoint_every == 0 and step + 1 < steps:
                cpu_now = cpu_s + time.process_time() - t_cpu
                cpu_s, t_cpu = cpu_now, time.process_time()
                save_ckpt(step + 1)
        cpu_s += time.process_time() - t_cpu
        save_ckpt(steps)
    finally:
        torch.set_num_threads(old_threads)
    module.eval()
    meta = {"steps": steps, "batch_size": bs, "seed": int(seed), "pool": n, "cpu_s": round(cpu_s, 1),
            "loss_first": round(float(np.mean(losses[:20])), 4) if losses else None,
            "loss_last": round(float(np.mean(losses[-20:])), 4) if losses else None,
            "temperature": TEMPERATURE, "device": str(device)}
    return Encoder(module.cpu(), spec, meta=meta, device=device)


# -- threshold calibration ---------------------------------------------------------------------

#: Pool samples a calibration draws (synthetic copy + nearest neighbour each): enough for the
#: 1 % quantiles to rest on 20 values, few enough to take seconds.
CALIBRATION_SAMPLES = 2000
#: Strength of the calibration's synthetic copies: every augmentation at once at full range is
#: harder than a real copy (mostly one edit): at 1.0 the copies sat where the nearest distinct
#: sample does (MNIST: medians 0.927 vs 0.914, benchmarks/dedup_quality), so the ranges are halved.
CALIBRATION_STRENGTH = 0.5


def to_uint8_images(x: np.ndarray) -> np.ndarray:
    """Float (n, C, H, W) in [0, 1] back to uint8 (n, H, W) or (n, H, W, 3) images."""
    arr = (np.asarray(x) * 255).round().clip(0, 255).astype(np.uint8)
    return arr[:, 0] if arr.shape[1] == 1 else np.moveaxis(arr, 1, -1)


def calibrate(images: np.ndarray, pool_embeddings: np.ndarray, embed, *, seed: int = 0,
              samples: int = CALIBRATION_SAMPLES, input_spec=None, positions=None,
              strength: float = CALIBRATION_STRENGTH) -> dict:
    """``curator.dedup.calibrate_threshold`` on a pool: ``images`` (uint8, row for row with
    ``pool_embeddings``, or only the rows at ``positions``), ``embed`` (uint8 images -> rows like
    the pool's). Draws up to ``samples`` pool rows (``seeds.derive(seed, stage="ssl-calibrate")``),
    embeds one synthetic copy of each (``augment_numpy``), and compares its similarity to the
    original with the original's nearest other pool row.
    """
    from curator import index, seeds
    from curator.dedup import calibrate_threshold, check_unit_embeddings

    E = check_unit_embeddings(pool_embeddings, caller="calibrate")
    n = len(E)
    rng = np.random.default_rng(seeds.derive(seed, stage="ssl-calibrate"))
    if positions is None:
        positions = np.sort(rng.choice(n, size=min(samples, n), replace=False))
        imgs = np.asarray(images)[positions]
    else:
        positions = np.asarray(positions, dtype=np.int64)
        imgs = np.asarray(images)
    if n < 2:
        calibrate_threshold([], [])  # raises: too few samples
    copies = to_uint8_images(augment_numpy(imgs, seeds.derive(seed, stage="ssl-calibrate", shard=1), input_spec,
                                           strength))
    C = check_unit_embeddings(embed(copies), caller="calibrate")
    copy_sims = (C * E[positions]).sum(axis=1)
    sims, nbrs = index.search(E, E[positions], 2)
    other = np.where(nbrs[:, 0] == positions, sims[:, 1], sims[:, 0])
    out = calibrate_threshold(copy_sims, other)
    out["seed"] = int(seed)
    out["strength"] = float(strength)
    return out
