"""The model adapter protocol, MC dropout, and an adapter for any ``torch.nn.Module``.

An adapter turns images (NumPy, as ``curator.images`` loads them) into the
arrays a ``Pool`` takes: class probabilities, embeddings (the output of a
named feature layer) and probabilities under MC dropout. Inference runs in
batches with a progress bar, on a GPU when one is present.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from typing import Callable, Iterator, Protocol, runtime_checkable

import numpy as np

from curator._progress import progress
from curator.exceptions import ValidationError

__all__ = ["ModelAdapter", "Predictions", "TorchAdapter", "mc_dropout", "images_to_tensor", "default_device"]


@dataclasses.dataclass
class Predictions:
    """What one pass over a set of images gives: the arrays of a Pool."""

    probs: np.ndarray  # (n, classes)
    embeddings: np.ndarray  # (n, d), L2-normalised
    mc_probs: np.ndarray | None = None  # (T, n, classes)


@runtime_checkable
class ModelAdapter(Protocol):
    """What curator needs from a model under training."""

    name: str

    @property
    def version(self) -> str: ...  # checksum of the weights

    def predict_proba(self, images: np.ndarray) -> np.ndarray: ...

    def embed(self, images: np.ndarray) -> np.ndarray: ...

    def mc_predict_proba(self, images: np.ndarray, T: int = 20, seed: int = 0) -> np.ndarray: ...

    def predict(self, images: np.ndarray, mc_samples: int = 0, seed: int = 0) -> Predictions: ...


def default_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def mc_dropout(module) -> Iterator[None]:
    """Dropout layers in training mode, everything else (batch norm ...) in eval mode.

    Restores every submodule's previous mode on exit.
    """
    import torch.nn as nn

    modes = {m: m.training for m in module.modules()}
    module.eval()
    for m in module.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.train()
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.training = mode


def images_to_tensor(images: np.ndarray):
    """(n, H, W), (n, H, W, C) or (n, C, H, W) images to a float (n, C, H, W) tensor.

    uint8 images are scaled to [0, 1]; floats are taken as they are.
    """
    import torch

    x = np.asarray(images)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = np.moveaxis(x, -1, 1)
    elif x.ndim != 4:
        raise ValidationError(f"images must be (n, H, W), (n, H, W, C) or (n, C, H, W); got shape {x.shape}")
    if x.dtype == np.uint8:
        return torch.from_numpy(np.array(x, copy=not x.flags.writeable or None, order="C")).float().div_(255.0)
    x = np.array(x, dtype=np.float32, order="C", copy=not x.flags.writeable or None)
    if not np.isfinite(x).all():
        raise ValidationError("images contain NaN or infinite values")
    return torch.from_numpy(x)


def _batches(n: int, size: int, desc: str) -> Iterator[slice]:
    starts = range(0, n, size)
    for s in progress(starts, total=len(starts), desc=desc):
        yield slice(s, min(s + size, n))


def _l2(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def checksum_of(module) -> str:
    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class TorchAdapter:
    """Wrap a classifier ``module`` (logits out) and the name of its feature layer.

    Parameters
    ----------
    module : torch.nn.Module returning (batch, classes) logits.
    feature_layer : name of the submodule (as in ``module.named_modules()``)
        whose output is the embedding, e.g. ``"fc1"`` or ``"backbone.avgpool"``.
    transform : optional callable taking a NumPy batch and returning the input
        tensor; by default ``images_to_tensor``.
    batch_size, device : inference batches; ``device=None`` picks CUDA when present.
    """

    def __init__(self, module, feature_layer: str, *, name: str | None = None,
                 transform: Callable | None = None, batch_size: int = 512, device=None):
        import torch

        names = dict(module.named_modules())
        if feature_layer not in names:
            known = [n for n in names if n][:20]
            raise ValidationError(
                f"feature_layer {feature_layer!r} is not a submodule of {type(module).__name__}; "
                f"known: {', '.join(known)}"
            )
        self.module = module
        self.feature_layer = feature_layer
        self.name = name or type(module).__name__
        self.transform = transform or images_to_tensor
        self.batch_size = batch_size
        self.device = torch.device(device) if device is not None else default_device()
        self.module.to(self.device)

    @property
    def version(self) -> str:
        return checksum_of(self.module)[:16]

    # -- forward helpers ---------------------------------------------------
    def _input(self, images):
        return self.transform(images).to(self.device)

    def _forward_with_features(self, x):
        store = {}

        def hook(_m, _inp, out):
            store["f"] = out

        handle = self.module.get_submodule(self.feature_layer).register_forward_hook(hook)
        try:
            logits = self.module(x)
        finally:
            handle.remove()
        return logits, store["f"].flatten(1)

    def _mc_logits(self, x, T: int):
        with mc_dropout(self.module):
            return [self.module(x) for _ in range(T)]

    # -- public -------------------------------------------------------------
    def predict(self, images: np.ndarray, mc_samples: int = 0, seed: int = 0) -> Predictions:
        """Probabilities, L2-normalised embeddings and (if ``mc_samples`` >= 2) MC-dropout probabilities."""
        import torch

        n = len(images)
        if n == 0:
            raise ValidationError("images is empty; nothing to predict")
        if mc_samples == 1 or mc_samples < 0:
            raise ValidationError(f"mc_samples must be 0 (off) or at least 2; got {mc_samples}")
        probs, feats, mcs = [], [], []
        was_training = self.module.training
        self.module.eval()
        try:
            with torch.random.fork_rng(devices=[] if self.device.type == "cpu" else [self.device]), torch.no_grad():
                torch.manual_seed(seed)
                for sl in _batches(n, self.batch_size, f"predict {self.name}"):
                    x = self._input(images[sl])
                    logits, f = self._forward_with_features(x)
                    probs.append(torch.softmax(logits.float(), 1).cpu().numpy())
                    feats.append(f.float().cpu().numpy())
                    if mc_samples:
                        mc = torch.stack([torch.softmax(z.float(), 1) for z in self._mc_logits(x, mc_samples)])
                        mcs.append(mc.cpu().numpy())
        finally:
            self.module.train(was_training)
        P = np.concatenate(probs).astype(np.float32)
        P /= P.sum(1, keepdims=True)
        MC = None
        if mc_samples:
            MC = np.concatenate(mcs, axis=1).astype(np.float32)
            MC /= MC.sum(-1, keepdims=True)
        return Predictions(probs=P, embeddings=_l2(np.concatenate(feats)), mc_probs=MC)

    def predict_proba(self, images):
        return self.predict(images).probs

    def embed(self, images):
        return self.predict(images).embeddings

    def mc_predict_proba(self, images, T: int = 20, seed: int = 0):
        return self.predict(images, mc_samples=T, seed=seed).mc_probs

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, feature_layer={self.feature_layer!r}, device={self.device.type})"
