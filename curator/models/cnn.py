"""The built-in image classifier: a small CNN in plain PyTorch, trained with fixed seeds.

No torchvision and no downloaded weights: it trains from scratch on the
labeled set of each round, which is what the active-learning protocol of Gal
et al. (2017) does. Dropout sits only in the head, so the T passes of MC
dropout reuse one pass through the convolutions.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from curator._validation import check_positive_int
from curator.exceptions import ValidationError
from curator.models.base import TorchAdapter, default_device, images_to_tensor

__all__ = ["SmallCNN", "CNNAdapter", "train_classifier", "load_classifier"]


#: Default share of the last training steps whose weights are averaged (``train_classifier(average=)``).
#: Measured on 200 MNIST-1989 digits, 150 steps, 5 seeds (tests/test_training_stability.py): 0.25 gave
#: test error 18.9 % (sd 1.2), seeds disagreeing on 13.6 % of digits; no averaging 18.3 % (sd 1.3), 15.3 %;
#: 0.5 20.2 % (sd 1.0), 15.1 % (half of a short run is still far from converged).
AVERAGE_TAIL = 0.25


def _nn():
    import torch.nn as nn

    return nn


def SmallCNN(in_channels: int = 1, num_classes: int = 10, channels=(16, 32), hidden: int = 128,
             dropout=(0.25, 0.5), input_size=None):
    """Two 5x5 conv + max-pool blocks, then dropout-dense-dropout-dense.

    Any image size of at least 14x14 runs: an adaptive pool brings the
    feature map to 4x4. But the filters learn shapes at the scale they were
    trained at, so the model records that size: ``input_size`` (H, W), set by
    the first batch it trains on (``config``, saved with the weights), and
    declares it with its channels as its ``input_spec``, through which pools of
    other sizes are resized. The embedding is the ``hidden``-wide dense layer
    (submodule ``"act"``).
    """
    import torch
    import torch.nn as nn

    class _SmallCNN(nn.Module):
        def __init__(self):
            super().__init__()
            c1, c2 = channels
            self.config = dict(in_channels=in_channels, num_classes=num_classes, channels=list(channels),
                               hidden=hidden, dropout=list(dropout),
                               input_size=None if input_size is None else [int(v) for v in input_size])
            self.register_buffer("mean", torch.zeros(in_channels))
            self.register_buffer("std", torch.ones(in_channels))
            self.trunk = nn.Sequential(
                nn.Conv2d(in_channels, c1, 5), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
                nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            )
            self.drop1 = nn.Dropout(dropout[0])
            self.fc1 = nn.Linear(c2 * 16, hidden)
            self.act = nn.ReLU()
            self.drop2 = nn.Dropout(dropout[1])
            self.fc2 = nn.Linear(hidden, num_classes)

        def head(self, t):
            return self.fc2(self.drop2(self.act(self.fc1(self.drop1(t)))))

        def features(self, x):
            x = (x - self.mean[None, :, None, None]) / self.std[None, :, None, None]
            return self.trunk(x)

        def forward(self, x):
            if self.training and self.config["input_size"] is None:  # the size it learns at
                self.config["input_size"] = [int(x.shape[-2]), int(x.shape[-1])]
            return self.head(self.features(x))

        @property
        def input_spec(self):
            """Size and channels; the mean/std normalisation is applied inside (its buffers)."""
            from curator.models.base import InputSpec

            size = self.config.get("input_size")
            return InputSpec(size=tuple(size) if size else None, channels=self.config["in_channels"])

    return _SmallCNN()


class CNNAdapter(TorchAdapter):
    """Adapter of the built-in CNN: MC dropout re-runs only the head."""

    def __init__(self, module, *, name: str = "smallcnn", batch_size: int = 1024, device=None, classes=None):
        super().__init__(module, "act", name=name, batch_size=batch_size, device=device)
        self.classes = list(classes) if classes is not None else list(range(module.config["num_classes"]))

    def _mc_logits(self, x, T: int):
        from curator.models.base import mc_dropout

        t = self.module.features(x)
        with mc_dropout(self.module):
            return [self.module.head(t) for _ in range(T)]

    def input_record(self) -> dict:
        """The declared input as plain data (for the model's stored params and file): size and
        channels, which the decoder applies, and the mean/std the model applies itself."""
        spec = self.input_spec
        return {"size": list(spec.size) if spec.size else None, "channels": spec.channels,
                "mean": [round(float(v), 6) for v in self.module.mean.tolist()],
                "std": [round(float(v), 6) for v in self.module.std.tolist()], "normalised_by": "model"}

    def save(self, path) -> Path:
        """Write weights and configuration (its input size included) to ``path`` (a ``.pt`` file)."""
        import torch

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        torch.save({"config": self.module.config, "state_dict": self.module.state_dict(),
                    "classes": self.classes, "name": self.name, "input_spec": self.input_record()}, buf)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(buf.getvalue())
        tmp.replace(path)
        return path

    def evaluate(self, images, labels) -> float:
        """Error rate on ``images`` with integer ``labels``."""
        P = self.predict_proba(images)
        return float((P.argmax(1) != np.asarray(labels)).mean())


def load_classifier(path, device=None) -> CNNAdapter:
    """The CNNAdapter saved at ``path`` by ``CNNAdapter.save``."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ValidationError(f"model file {path} does not exist; train one with curator.models.train_classifier")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
        module = SmallCNN(**blob["config"])
        module.load_state_dict(blob["state_dict"])
    except PermissionError:
        raise ValidationError(f"model file {path} cannot be read: permission denied; check its permissions") from None
    except Exception as exc:  # torch raises many kinds (unpickling, zip, key, shape) for one cause: a bad file
        raise ValidationError(
            f"model file {path} is not a curator model (corrupt, truncated or another format: "
            f"{type(exc).__name__}); pass a .pt file saved by curator"
        ) from None
    return CNNAdapter(module, name=blob.get("name", "smallcnn"), device=device, classes=blob.get("classes"))


def _augment(x, gen, max_rotate=10.0, max_scale=0.1, max_shift=0.1):
    """Random small affine warps (rotation, scale, shift), one per image."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    u = torch.rand(n, 4, generator=gen) * 2 - 1
    ang = u[:, 0] * math.radians(max_rotate)
    scale = 1 + u[:, 1] * max_scale
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos, -sin, u[:, 2] * max_shift * 2], 1),
                         torch.stack([sin, cos, u[:, 3] * max_shift * 2], 1)], 1).to(x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def train_classifier(images: np.ndarray, labels, *, num_classes: int | None = None, seed: int = 0,
                     epochs: int | None = None, steps: int | None = None, batch_size: int = 64,
                     lr: float = 1e-3, weight_decay: float = 5e-4, augment: bool = True,
                     channels=(16, 32), hidden: int = 128, device=None, classes=None,
                     init: CNNAdapter | None = None, sample_weight=None,
                     average: float = AVERAGE_TAIL) -> CNNAdapter:
    """Train the built-in CNN from scratch on labeled ``images`` and integer ``labels``.

    The same ``seed`` and inputs give the same weights on the CPU (the
    process's global torch RNG is left untouched). Give either ``epochs`` or
    ``steps``; by default 50 epochs, at least 200 and at most 2,000 steps, which
    suits the small labeled sets of early rounds. ``init`` starts from the
    weights of a previous model instead (a cheap warm start between rounds);
    its architecture and input normalisation are kept. ``sample_weight``: a
    weight per image in the loss (pseudo-labels of the semi-supervised recipe
    weighted by their confidence, labels by 1); None is the plain recipe.

    ``average``: the returned weights are the uniform average of the weights
    after each of the last ``average`` share of the steps (tail averaging, as
    in SWA; 0 = the last step's weights). A small labeled set gives noisy
    minibatch gradients, so the last step lands anywhere in a wide basin and
    the error jumps between rounds; the average sits near the basin's centre
    (see ``AVERAGE_TAIL``, and benchmarks/label_efficiency/README.md).
    """
    import torch
    import torch.nn.functional as F

    y = np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValidationError(f"labels must be a 1-D integer array; got dtype {y.dtype}, shape {y.shape}")
    if len(y) != len(images):
        raise ValidationError(f"labels has {len(y)} entries but images has {len(images)}")
    if len(y) == 0:
        raise ValidationError("no labeled images to train on")
    if y.min() < 0:
        raise ValidationError("labels must be non-negative class indices")
    num_classes = int(num_classes or (int(y.max()) + 1))
    if y.max() >= num_classes:
        raise ValidationError(f"labels go up to {y.max()} but num_classes is {num_classes}")
    batch_size = check_positive_int(batch_size, name="batch_size", caller="train_classifier")
    per_epoch = math.ceil(len(y) / batch_size)
    if steps is None:
        steps = epochs * per_epoch if epochs else min(2000, max(200, 50 * per_epoch))
    steps = check_positive_int(steps, name="steps", caller="train_classifier")
    if isinstance(average, bool) or not isinstance(average, (int, float)) or not 0 <= average < 1:
        raise ValidationError(f"train_classifier: average (share of the last steps whose weights are averaged) "
                              f"must be in [0, 1); got {average!r}")
    avg_from = steps - max(1, int(round(average * steps))) if average > 0 else steps
    device = torch.device(device) if device is not None else default_device()
    Wt = None
    if sample_weight is not None:
        w = np.asarray(sample_weight, dtype=np.float32)
        if w.shape != y.shape or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValidationError(f"sample_weight must be {len(y)} finite non-negative numbers, not all 0; "
                                  f"got shape {w.shape}")
        Wt = torch.from_numpy(w)

    X = images_to_tensor(images)
    Y = torch.from_numpy(y.astype(np.int64))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        if init is not None:
            model = SmallCNN(**init.module.config)
            model.load_state_dict(init.module.state_dict())
            if model.config["num_classes"] != num_classes or model.config["in_channels"] != X.shape[1]:
                raise ValidationError("init: the previous model has other classes or input channels")
        else:
            model = SmallCNN(X.shape[1], num_classes, channels=channels, hidden=hidden)
            model.mean.copy_(X.mean((0, 2, 3)))
            model.std.copy_(X.std((0, 2, 3)).clamp_min(1e-3) if len(X) > 1 else torch.ones(X.shape[1]))
        model.to(device)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        model.train()
        bs = min(batch_size, len(Y))
        order = torch.randperm(len(Y), generator=gen)
        cursor = 0
        avg, n_avg = None, 0
        for step in range(steps):
            if cursor + bs > len(order):
                order = torch.cat([order[cursor:], torch.randperm(len(Y), generator=gen)])
                cursor = 0
            idx = order[cursor: cursor + bs]
            cursor += bs
            xb, yb = X[idx], Y[idx]
            if augment:
                xb = _augment(xb, gen)
            if Wt is None:
                loss = F.cross_entropy(model(xb.to(device)), yb.to(device))
            else:  # weighted mean over the batch
                wb = Wt[idx].to(device)
                per = F.cross_entropy(model(xb.to(device)), yb.to(device), reduction="none")
                loss = (per * wb).sum() / wb.sum().clamp_min(1e-12)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step >= avg_from:
                n_avg += 1
                with torch.no_grad():
                    if avg is None:
                        avg = [p.detach().clone() for p in model.parameters()]
                    else:
                        for a, p in zip(avg, model.parameters()):
                            a.add_(p.detach() - a, alpha=1.0 / n_avg)
        if avg is not None:
            with torch.no_grad():
                for a, p in zip(avg, model.parameters()):
                    p.copy_(a)
    model.eval()
    return CNNAdapter(model, device=device, classes=classes)
