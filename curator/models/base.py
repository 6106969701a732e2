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

__all__ = ["ModelAdapter", "Predictions", "TorchAdapter", "ScriptAdapter", "InputSpec", "mc_dropout",
           "dropout_layers", "images_to_tensor", "default_device"]


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


_DROPOUT_NAMES = {"Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"}


def dropout_layers(module) -> list:
    """The dropout submodules of ``module``, in eager or TorchScript form (scripted layers are
    not instances of ``nn.Dropout``; their ``original_name`` says what they were)."""
    import torch.nn as nn

    return [m for m in module.modules()
            if isinstance(m, nn.modules.dropout._DropoutNd) or getattr(m, "original_name", None) in _DROPOUT_NAMES]


@contextlib.contextmanager
def mc_dropout(module) -> Iterator[None]:
    """Dropout layers in training mode, everything else (batch norm ...) in eval mode.

    Restores every submodule's previous mode on exit.
    """
    modes = {m: m.training for m in module.modules()}
    module.eval()
    for m in dropout_layers(module):
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


def _uint8_batch(x: np.ndarray):
    """Decoded uint8 images to a float (n, C, H, W) tensor in [0, 1]. Decoded images are
    channels-last (``curator.images``), so a last axis of 1, 3 or 4 is the channel axis even
    when the height is also 3 or 4; (n, C, H, W) is taken when the last axis cannot be one."""
    import torch

    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4):
        x = np.moveaxis(x, -1, 1)
    elif x.ndim != 4 or x.shape[1] not in (1, 3, 4):
        raise ValidationError(f"images must be (n, H, W), (n, H, W, C) or (n, C, H, W) with C in 1, 3, 4; "
                              f"got shape {x.shape}")
    return torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0)


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """The input a model declares: what decoded uint8 images are turned into before its forward.

    ``size`` (H, W) resizes every image (bilinear, antialiased; ``None`` keeps the decoded size,
    which must then be the same within a batch); ``channels`` (1 or 3) converts grayscale to RGB
    (repeated) or RGB to grayscale (ITU-R 601 luma), and drops an alpha channel (``None`` keeps
    what was decoded, alpha included); ``mean``/``std`` (one value per channel, on the [0, 1] scale) normalise.
    Decoding code reads it to resize and normalise per model (issue 15); float arrays are taken
    as already prepared and pass unchanged.
    """

    size: tuple[int, int] | None = None
    channels: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self):
        def bad(what):
            return ValidationError(f"input spec: {what}; e.g. InputSpec(size=(224, 224), channels=3, "
                                   "mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))")

        if self.size is not None:
            size = (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)
            if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                         and v >= 1 for v in size):
                raise bad(f"size must be (height, width) of positive whole numbers; got {self.size!r}")
            object.__setattr__(self, "size", tuple(int(v) for v in size))
        if self.channels is not None and self.channels not in (1, 3):
            raise bad(f"channels must be 1 (grayscale) or 3 (RGB); got {self.channels!r}")
        for field in ("mean", "std"):
            value = getattr(self, field)
            if value is None:
                continue
            value = (float(value),) if isinstance(value, (int, float)) else tuple(float(v) for v in value)
            if self.channels is not None and len(value) not in (1, self.channels):
                raise bad(f"{field} has {len(value)} values for {self.channels} channel(s)")
            if self.channels is None and len(value) > 1:
                raise bad(f"{field} has {len(value)} values but channels is not declared; declare channels")
            if not all(np.isfinite(value)) or (field == "std" and min(value) <= 0):
                raise bad(f"{field} must be finite{' and positive' if field == 'std' else ''}; got {value}")
            object.__setattr__(self, field, value)

    def to_tensor(self, images):
        """uint8 images ((n, H, W), (n, H, W, C), or a list of (H, W[, C]) of any sizes) to the
        float (n, C, H, W) tensor the model takes; float arrays go through ``images_to_tensor``."""
        import torch

        if isinstance(images, np.ndarray) and images.dtype != np.uint8:
            return images_to_tensor(images)
        if isinstance(images, np.ndarray):
            x = self._channels(_uint8_batch(images))
            if self.size is not None and tuple(x.shape[-2:]) != self.size:
                x = torch.nn.functional.interpolate(x, size=self.size, mode="bilinear", antialias=True,
                                                    align_corners=False)
            return self._normalise(x)
        items = [self._one(np.asarray(im)) for im in images]
        if not items:
            raise ValidationError("images is empty; nothing to predict")
        shapes = {tuple(t.shape) for t in items}
        if len(shapes) > 1:
            raise ValidationError(f"images of different sizes or channels ({sorted(shapes)[:3]}) need a declared "
                                  "input size: give the model an InputSpec(size=(H, W), channels=C)")
        return self._normalise(torch.stack(items))

    def _one(self, im):
        import torch

        if im.dtype != np.uint8 or im.ndim not in (2, 3) or (im.ndim == 3 and im.shape[-1] not in (1, 3, 4)):
            raise ValidationError(f"each image must be uint8 (H, W) or (H, W, C) with C in 1, 3, 4; "
                                  f"got dtype {im.dtype}, shape {im.shape}")
        x = self._channels(_uint8_batch(im[None]))
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            x = torch.nn.functional.interpolate(x, size=self.size, mode="bilinear", antialias=True,
                                                align_corners=False)
        return x[0]

    def _channels(self, x):
        if x.shape[1] == 4 and self.channels is not None:  # RGBA: alpha is not part of the picture
            x = x[:, :3]
        c = x.shape[1]
        if self.channels is None or c == self.channels:
            return x
        if self.channels == 3 and c == 1:
            return x.expand(-1, 3, -1, -1).contiguous()
        if self.channels == 1 and c == 3:
            w = x.new_tensor([0.299, 0.587, 0.114])[None, :, None, None]
            return (x * w).sum(1, keepdim=True)
        raise ValidationError(f"images with {c} channels cannot be converted to {self.channels}")

    def _normalise(self, x):
        if self.mean is not None:
            x = x - x.new_tensor(self.mean)[None, :, None, None]
        if self.std is not None:
            x = x / x.new_tensor(self.std)[None, :, None, None]
        return x


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


def infer_input_spec(module) -> InputSpec:
    """What can be read off a module: the input channels of its first Conv2d (else undeclared)."""
    import torch.nn as nn

    for m in module.modules():
        if isinstance(m, nn.Conv2d) or getattr(m, "original_name", None) == "Conv2d":
            channels = getattr(m, "in_channels", None)
            return InputSpec(channels=channels if channels in (1, 3) else None)
    return InputSpec()


def as_input_spec(value, where: str) -> InputSpec | None:
    if value is None or isinstance(value, InputSpec):
        return value
    if isinstance(value, dict):
        try:
            return InputSpec(**value)
        except TypeError as exc:
            raise ValidationError(f"{where}: bad input spec {value!r} ({exc}); "
                                  "keys: size, channels, mean, std") from None
    raise ValidationError(f"{where}: input spec must be a curator.models.InputSpec or a dict; "
                          f"got {type(value).__name__}")


def last_linear(module) -> str | None:
    """Name of the last ``nn.Linear`` in ``module`` (registration order), or None."""
    import torch.nn as nn

    names = [n for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else None


class TorchAdapter:
    """Wrap a classifier ``module`` (logits out) and the name of its feature layer.

    Parameters
    ----------
    module : torch.nn.Module returning (batch, classes) logits.
    feature_layer : name of the submodule (as in ``module.named_modules()``)
        whose output is the embedding, e.g. ``"fc1"`` or ``"backbone.avgpool"``;
        ``None``: the input of the last ``nn.Linear`` (the penultimate features).
    transform : optional callable taking a NumPy batch and returning the input
        tensor; by default ``input_spec.to_tensor``.
    input_spec : the declared input (size, channels, mean/std; an InputSpec or a dict);
        by default the module's own ``input_spec`` attribute, else what its first Conv2d says.
    classes : the class names, one per output column (checked at predict).
    batch_size, device : inference batches; ``device=None`` picks CUDA when present.
    """

    def __init__(self, module, feature_layer: str | None = None, *, name: str | None = None,
                 transform: Callable | None = None, batch_size: int = 512, device=None,
                 input_spec: InputSpec | dict | None = None, classes=None):
        import torch

        names = dict(module.named_modules())
        self.name = name or type(module).__name__
        self.feature_input = feature_layer is None
        if feature_layer is None:
            feature_layer = last_linear(module)
            if feature_layer is None:
                raise ValidationError(
                    f"model {self.name} has no torch.nn.Linear layer, so its embedding layer cannot be guessed; "
                    "name it: package.module:factory#layer, or feature_layer=..."
                )
        if feature_layer not in names:
            known = [n for n in names if n][:20]
            raise ValidationError(
                f"feature_layer {feature_layer!r} is not a submodule of {type(module).__name__}; "
                f"known: {', '.join(known)}"
            )
        self.module = module
        self.feature_layer = feature_layer
        self.input_spec = (as_input_spec(input_spec, f"model {self.name}")
                           or as_input_spec(getattr(module, "input_spec", None), f"model {self.name}")
                           or infer_input_spec(module))
        self.transform = transform or self.input_spec.to_tensor
        self.batch_size = batch_size
        self.classes = list(classes) if classes is not None else None
        self.device = torch.device(device) if device is not None else default_device()
        self.module.to(self.device)

    @property
    def has_dropout(self) -> bool:
        """Whether MC dropout can sample: the module has at least one dropout layer."""
        return bool(dropout_layers(self.module))

    def _check_mc(self, mc_samples: int) -> None:
        if mc_samples and not self.has_dropout:
            raise ValidationError(
                f"model {self.name} has no dropout layer, so it cannot give MC-dropout samples "
                f"(asked for {mc_samples}); use a policy that does not need mc_probs (entropy, margin, "
                "least_confidence, novelty, kcenter, badge, typical, coverage) or add torch.nn.Dropout "
                "before the model's last layer"
            )

    @property
    def version(self) -> str:
        return checksum_of(self.module)[:16]

    # -- forward helpers ---------------------------------------------------
    def _input(self, images):
        return self.transform(images).to(self.device)

    def _forward_with_features(self, x):
        store = {}

        def hook(_m, inp, out):
            store["f"] = inp[0] if self.feature_input else out

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
        self._check_mc(mc_samples)
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
        if self.classes is not None and P.shape[1] != len(self.classes):
            raise ValidationError(
                f"model {self.name} gives {P.shape[1]} class probabilities but {len(self.classes)} classes "
                f"are declared ({', '.join(map(str, self.classes[:5]))}{'...' if len(self.classes) > 5 else ''}); "
                "make the model's last layer as wide as the class list, or declare its classes"
            )
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
        layer = f"<input of {self.feature_layer}>" if self.feature_input else self.feature_layer
        return f"{type(self).__name__}({self.name!r}, feature_layer={layer!r}, device={self.device.type})"


class ScriptAdapter(TorchAdapter):
    """A TorchScript module (``torch.jit.save``): Python hooks cannot see inside it, so the
    embedding comes from an exported ``embed(x)`` method or from ``forward`` returning
    ``(logits, features)``."""

    def __init__(self, module, *, name: str, **kwargs):
        import torch

        returns = module.forward.schema.returns
        self.returns_pair = len(returns) == 1 and isinstance(returns[0].type, torch.TupleType)
        if not self.returns_pair and not hasattr(module, "embed"):
            raise ValidationError(
                f"TorchScript model {name} gives no embedding: forward returns only logits and there is no "
                "embed method; export one (@torch.jit.export def embed(self, x) returning the features) "
                "or return (logits, features) from forward, then save it again with torch.jit.save"
            )
        self.feature_input = False
        self.module = module
        self.feature_layer = "forward[1]" if self.returns_pair else "embed()"
        self.name = name
        self.input_spec = as_input_spec(kwargs.pop("input_spec", None), f"model {name}") or infer_input_spec(module)
        self.transform = kwargs.pop("transform", None) or self.input_spec.to_tensor
        self.batch_size = kwargs.pop("batch_size", 512)
        classes = kwargs.pop("classes", None)
        self.classes = list(classes) if classes is not None else None
        device = kwargs.pop("device", None)
        if kwargs:
            raise ValidationError(f"TorchScript model {name}: unknown options {sorted(kwargs)}")
        self.device = torch.device(device) if device is not None else default_device()
        self.module.to(self.device)

    def _logits(self, x):
        out = self.module(x)
        return out[0] if self.returns_pair else out

    def _forward_with_features(self, x):
        if self.returns_pair:
            logits, f = self.module(x)
        else:
            logits, f = self.module(x), self.module.embed(x)
        return logits, f.flatten(1)

    def _mc_logits(self, x, T: int):
        with mc_dropout(self.module):
            return [self._logits(x) for _ in range(T)]
