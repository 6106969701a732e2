"""A user's own model for the procedural RGB set, given to the loop as ``shape_model:factory``.

What a team without a pretrained network could bring: a FIXED feature extractor (64 random
zero-mean 5x5 filters, seeded, on each image standardised per channel so a shape's colour and the
background's brightness drop out; rectified both ways, pooled globally and on a 4x4 grid) and a
linear head that the fit hook trains on the human labels (L2-regularised softmax regression on
standardised features, LBFGS). No pretrained weights, nothing downloaded. The head is the last
``nn.Linear``, so curator's embedding is the standardised features. No dropout: a policy then scores
one pass, not 20 MC passes over the pool (20x the CPU of every round on the shared VM).

Why random filters: a CNN trained from scratch on 20-100 labels stayed at chance on this set (the
README's first table); random features + a linear head are the classic small-label baseline, cheap
enough to retrain for every cross-validation fold (about 10 ms an image on the shared VM).
"""

from __future__ import annotations

FILTERS, KERNEL, SIDE, GRID = 64, 5, 32, 4
L2 = 1e-2  # per-sample weight decay of the head (set once from a 2,000-image seed-0 draw, not tuned per run)


def factory(num_classes: int = 8):
    import torch
    from torch import nn

    from curator.models import InputSpec

    class RandomFeatures(nn.Module):
        def __init__(self):
            super().__init__()
            gen = torch.Generator().manual_seed(1234)
            w = torch.randn(FILTERS, 3, KERNEL, KERNEL, generator=gen)
            w -= w.mean((1, 2, 3), keepdim=True)
            self.register_buffer("weight", w / w.flatten(1).norm(dim=1)[:, None, None, None])
            dim = 2 * FILTERS * 4
            self.register_buffer("mu", torch.zeros(dim))
            self.register_buffer("sd", torch.ones(dim))
            self.head = nn.Linear(dim, num_classes)

        def raw(self, x):
            x = (x - x.mean((2, 3), keepdim=True)) / (x.std((2, 3), keepdim=True) + 1e-2)
            h = nn.functional.conv2d(x, self.weight, padding=KERNEL // 2)
            h = torch.cat([torch.relu(h), torch.relu(-h)], 1)
            g = nn.functional.adaptive_avg_pool2d(h, GRID)
            return torch.cat([h.amax((2, 3)), h.mean((2, 3)), g.amax((2, 3)), g.std((2, 3))], 1)

        def forward(self, x):
            return self.head((self.raw(x) - self.mu) / self.sd)

    net = RandomFeatures()
    net.input_spec = InputSpec(size=(SIDE, SIDE), channels=3)
    return net


def fit(model, images, labels, *, classes, seed):
    """Train the head on the labeled images (the filters stay fixed): standardise the features on
    the labeled set, then L2-regularised softmax regression to convergence (LBFGS, full batch)."""
    import torch

    with torch.no_grad():
        f = torch.cat([model.raw(model.input_spec.to_tensor(images[i:i + 256])) for i in range(0, len(images), 256)])
        model.mu.copy_(f.mean(0))
        model.sd.copy_(f.std(0, unbiased=False) + 1e-3)
        z = (f - model.mu) / model.sd
    y = torch.as_tensor(labels, dtype=torch.long)
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)
    opt = torch.optim.LBFGS(model.head.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model.head(z), y) + L2 * model.head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return model
