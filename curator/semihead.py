"""Semi-supervised training: a classifier that learns from the labels AND the unlabeled pool.

A few labels say little on their own; the pool says where the classes' dense
regions are. The head here works on any embedding of the pool (the built-in
label-free ones below, the self-supervised encoder, a user model's features):

1. Label propagation over the kNN graph of the embedding
   (``curator.semisupervised.propagate``, Zhou et al. 2004; Iscen et al. 2019's
   affinities) gives every pool sample class probabilities and a confidence
   (1 - normalised entropy).
2. New samples (a test set) take the affinity-weighted vote of their nearest
   pool rows' propagated probabilities (``extend``): the pool's structure, not
   the few labels alone, decides.
3. ``pseudo_labels`` returns the most confident propagated labels, balanced per
   class and weighted by confidence (Iscen et al.'s weights), for a model that
   trains on images: the built-in CNN trains on labels + these
   (``curator.rounds.train_model`` with ``semi=``), so its scores and
   embeddings work as before.

4. ``self_train`` (a second stage, opt-in): the built-in CNN trains on the
   whole pool's propagated labels, then propagation runs again over the kNN
   graph of the CNN's embedding. The pixels-level CNN extends to new images
   better than a vote of neighbours, and its embedding has purer neighbours
   than the label-free one (MNIST, 20 labels: 2.6 % -> 1.9 % test error;
   benchmarks/label_efficiency/POOL_AWARE.md).

Embeddings are named (``EMBEDDINGS``; ``register_embedding`` adds one, e.g. the
self-supervised encoder): a name is recorded with the model, so a round says
which embedding its pseudo-labels came from.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Callable

import numpy as np

from curator.exceptions import ValidationError

__all__ = ["EMBEDDINGS", "register_embedding", "embed_pool", "deskew", "PcaEmbedding", "Head", "fit_head",
           "fit_semisupervised", "pseudo_labels", "pool_vectors", "pool_pseudo_labels", "SemiConfig", "SelfTrained",
           "self_train"]


# -- label-free embeddings of a pool ---------------------------------------------------------


def _gray(images) -> np.ndarray:
    """(n, H, W) float32 luma in [0, 1] from (n, H, W), (n, H, W, C) or (n, C, H, W) arrays."""
    X = np.asarray(images)
    if X.ndim == 4:
        if X.shape[-1] in (1, 3, 4):
            X = X[..., :3]
        elif X.shape[1] in (1, 3, 4):
            X = np.moveaxis(X[:, :3], 1, -1)
        else:
            raise ValidationError(f"images must be (n, H, W) or (n, H, W, C); got shape {X.shape}")
        X = X.mean(-1) if X.shape[-1] == 3 else X[..., 0]
    if X.ndim != 3 or len(X) == 0:
        raise ValidationError(f"images must be a non-empty (n, H, W) or (n, H, W, C) array; got shape {X.shape}")
    X = X.astype(np.float32)
    if X.max() > 1.0:
        X = X / 255.0
    if not np.isfinite(X).all():
        raise ValidationError("images hold NaN or infinite values; pass finite pixel values")
    return X


def deskew(images) -> np.ndarray:
    """Each image sheared so its foreground's principal slant is vertical and centred (moments).

    Handwriting's largest nuisance is slant; undoing it with the image's own
    second moments (no labels) makes same-class neighbours nearer (on MNIST
    pixels the 10-NN purity goes up, see docs/semisupervised.md). Foreground:
    the pixels brighter than the image's median (dark background) or darker
    (light background), so it works on either polarity.
    """
    from scipy import ndimage

    X = _gray(images)
    n, H, W = X.shape
    yy, xx = np.mgrid[:H, :W].astype(np.float32)
    out = np.empty_like(X)
    for i in range(n):
        im = X[i]
        med = float(np.median(im))
        fg = np.abs(im - med)
        t = float(fg.sum())
        if t <= 1e-6:
            out[i] = im
            continue
        cy, cx = float((yy * fg).sum() / t), float((xx * fg).sum() / t)
        m11 = float(((yy - cy) * (xx - cx) * fg).sum() / t)
        m02 = float(((yy - cy) ** 2 * fg).sum() / t)
        a = m11 / m02 if m02 > 1e-6 else 0.0
        M = np.array([[1.0, 0.0], [a, 1.0]])
        off = np.array([cy, cx]) - M @ np.array([(H - 1) / 2, (W - 1) / 2])
        out[i] = ndimage.affine_transform(im, M, offset=off, order=1, cval=med)
    return out


@dataclasses.dataclass
class PcaEmbedding:
    """PCA of (optionally deskewed) pixels, fitted on the pool without labels.

    ``whiten`` divides component j by s_j ** whiten (0: plain PCA, 1: full
    whitening): partial whitening keeps the small components (stroke details
    that tell 4 from 9) from drowning under the few largest (thickness, size).
    """

    dims: int = 50
    whiten: float = 0.0
    deskew: bool = False
    fit_rows: int = 10_000  #: the basis is fitted on at most this many pool rows (evenly spaced)
    mean: np.ndarray | None = None
    basis: np.ndarray | None = None

    def _pixels(self, images) -> np.ndarray:
        X = deskew(images) if self.deskew else _gray(images)
        return X.reshape(len(X), -1)

    def fit(self, images) -> "PcaEmbedding":
        X = self._pixels(images)
        step = max(1, len(X) // self.fit_rows)
        S0 = X[::step]
        self.mean = S0.mean(0)
        _, s, Vt = np.linalg.svd(S0 - self.mean, full_matrices=False)
        d = min(self.dims, len(s))
        self.basis = (Vt[:d].T / np.maximum(s[:d], 1e-6) ** self.whiten).astype(np.float32)
        return self

    def transform(self, images) -> np.ndarray:
        if self.basis is None:
            raise ValidationError("PcaEmbedding: call fit(pool images) before transform")
        return ((self._pixels(images) - self.mean) @ self.basis).astype(np.float32)


#: name -> factory of an object with ``fit(pool_images) -> self`` and ``transform(images) -> (n, d)``.
EMBEDDINGS: dict[str, Callable[[], object]] = {
    "pca": lambda: PcaEmbedding(dims=50),
    "deskew-pca": lambda: PcaEmbedding(dims=50, deskew=True),
}


def register_embedding(name: str, factory: Callable[[], object]) -> None:
    """Make ``name`` usable wherever an embedding is named (e.g. the self-supervised encoder)."""
    if not isinstance(name, str) or not name:
        raise ValidationError(f"embedding name must be a non-empty string; got {name!r}")
    EMBEDDINGS[name] = factory


def embed_pool(name: str, pool_images, *others):
    """Fit embedding ``name`` on ``pool_images`` (no labels); return the pool's vectors and each of ``others``'."""
    if name not in EMBEDDINGS:
        raise ValidationError(f"unknown embedding {name!r}; choose one of {', '.join(sorted(EMBEDDINGS))}")
    emb = EMBEDDINGS[name]().fit(pool_images)
    return (emb.transform(pool_images), *(emb.transform(o) for o in others))


# -- the head --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Head:
    """A fitted semi-supervised head: propagated probabilities of the rows it was fitted on."""

    embeddings: np.ndarray  #: (n, d) the rows the graph was built on
    probs: np.ndarray  #: (n, C) propagated class probabilities (labeled rows: their label)
    confidence: np.ndarray  #: (n,) in [0, 1]
    labeled: np.ndarray  #: positions of the labeled rows
    k: int
    gamma: float

    def predict_proba(self, queries=None, *, neighbours: tuple | None = None) -> np.ndarray:
        """(m, C) probabilities of new samples: the affinity-weighted vote of their k nearest rows.

        ``neighbours``: (similarities, positions) of the queries' nearest rows
        (``curator.index.search`` on unit rows), found once for a test set that
        is scored round after round; else searched here from ``queries``.
        """
        from curator.semisupervised import Propagation, extend

        if neighbours is None:
            if queries is None:
                raise ValidationError("predict_proba: pass queries (embeddings of new samples) or their neighbours")
            res = Propagation(self.probs, self.probs.argmax(1), self.confidence, np.ones(len(self.probs), bool), 0)
            return extend(res, self.embeddings, queries, k=self.k, gamma=self.gamma)
        sims, nbr = (np.asarray(a) for a in neighbours)
        sims, nbr = sims[:, : self.k], nbr[:, : self.k]
        w = np.where(nbr >= 0, np.maximum(sims.astype(np.float64), 0.0) ** self.gamma, 0.0) + 1e-12
        P = (w[:, :, None] * self.probs[np.maximum(nbr, 0)]).sum(1)
        return (P / P.sum(1, keepdims=True)).astype(np.float32)


def _labels_array(labels, n: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,) or y.dtype.kind not in "iu":
        raise ValidationError(f"labels must be an integer array of shape ({n},), one per embedding row, "
                              f"-1 for unlabeled; got dtype {y.dtype}, shape {y.shape}")
    return y.astype(np.int64)


def fit_head(embeddings, labels, *, classes: int | None = None, k: int = 10, alpha: float = 0.99,
             gamma: float = 3.0, iterations: int = 30, neighbours: tuple | None = None) -> Head:
    """Fit the head on ``embeddings`` (n, d: labeled and unlabeled rows) and ``labels`` (n,; -1 = unlabeled).

    Labeled rows keep their label (probability 1) in the result: propagation
    only fills in the unlabeled ones. ``neighbours``: the rows' kNN graph
    (``curator.semisupervised.knn_graph``), when built before.
    """
    from curator.semisupervised import propagate

    E = np.asarray(embeddings, np.float32) if not isinstance(embeddings, np.ndarray) else embeddings
    if E.ndim != 2:
        raise ValidationError(f"embeddings must be a 2-D array (n, d); got shape {np.shape(E)}")
    y = _labels_array(labels, len(E))
    pos = np.flatnonzero(y >= 0)
    res = propagate(E, pos, y[pos], classes=classes, k=k, alpha=alpha, gamma=gamma, iterations=iterations,
                    neighbours=neighbours)
    probs = res.probs.copy()
    probs[pos] = 0.0
    probs[pos, y[pos]] = 1.0
    conf = res.confidence.copy()
    conf[pos] = 1.0
    return Head(embeddings=np.asarray(E, np.float32), probs=probs, confidence=conf, labeled=pos, k=int(k),
                gamma=float(gamma))


def fit_semisupervised(embeddings, labels, **kwargs) -> np.ndarray:
    """Class probabilities (n, C) of every row of ``embeddings`` from ``labels`` (-1 = unlabeled) and the rows.

    The function-level entry for a user's own model: pass its embedding of
    the labeled and unlabeled samples; ``kwargs`` as ``fit_head``.
    """
    return fit_head(embeddings, labels, **kwargs).probs


def pseudo_labels(head: Head, *, per_class: int, min_confidence: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positions, labels, weights) of the most confident unlabeled rows, at most ``per_class`` per class.

    Balanced per class so a large easy class does not crowd out a hard one
    (Iscen et al. weight by class size for the same reason); weight = the
    row's confidence. Rows below ``min_confidence`` are left out.
    """
    if isinstance(per_class, bool) or not isinstance(per_class, numbers.Integral) or per_class < 0:
        raise ValidationError(f"per_class must be an integer >= 0; got {per_class!r}")
    unl = np.ones(len(head.probs), bool)
    unl[head.labeled] = False
    pred = head.probs.argmax(1)
    keep = []
    for c in range(head.probs.shape[1]):
        cand = np.flatnonzero(unl & (pred == c) & (head.confidence >= min_confidence))
        if len(cand):
            keep.append(cand[np.argsort(-head.confidence[cand], kind="stable")[:per_class]])
    pos = np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)
    return pos, pred[pos], head.confidence[pos].astype(np.float32)


def pool_vectors(name: str, cold: np.ndarray) -> np.ndarray:
    """The loop's pool embedding ``name`` from the samples' cold-start vectors (``curator.coldstart``).

    "coldstart": the vectors as they are (centred thumbnails: every image kind);
    "coldstart-pca": their PCA (50 components, partly whitened, fitted on these rows).
    """
    cold = np.asarray(cold, np.float32)
    if name == "coldstart":
        return cold
    if name == "coldstart-pca":
        mu = cold.mean(0)
        step = max(1, len(cold) // 10_000)
        _, s, Vt = np.linalg.svd(cold[::step] - mu, full_matrices=False)
        d = min(50, len(s))
        return ((cold - mu) @ (Vt[:d].T / np.maximum(s[:d], 1e-6) ** 0.5)).astype(np.float32)
    raise ValidationError(f"unknown pool embedding {name!r} for the loop; use coldstart or coldstart-pca")


@dataclasses.dataclass(frozen=True)
class SemiConfig:
    """How the built-in recipe learns from the pool (recorded in the model's params)."""

    embedding: str = "coldstart"  #: the pool embedding the graph is built on (``pool_vectors``)
    k: int = 10  #: neighbours per sample in the graph
    #: pseudo-labels per class: ``ratio`` x the labels per class, at most ``max_per_class``
    ratio: int = 10
    max_per_class: int = 200
    min_confidence: float = 0.0
    max_pool: int = 20_000  #: unlabeled samples in the graph (a seeded subsample above it): bounded cost

    def params(self) -> dict:
        return {"semi_supervised": True, **{f"semi_{k}": v for k, v in dataclasses.asdict(self).items()}}


def pool_pseudo_labels(cold: np.ndarray, y: np.ndarray, n_classes: int, semi: SemiConfig):
    """The built-in recipe's pseudo-labels: rows 0..len(y)-1 of ``cold`` are the labeled samples
    (labels ``y``), the rest the unlabeled pool. Returns (pool positions, labels, weights, params to
    record): per class ``semi.ratio`` x the labels per class, at most ``semi.max_per_class``."""
    n_pool = len(cold) - len(y)
    info = semi.params()
    if n_pool < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), \
            {**info, "semi_pseudo_labels": 0, "semi_pool": max(n_pool, 0)}
    vectors = pool_vectors(semi.embedding, cold)
    labels = np.concatenate([np.asarray(y, np.int64), np.full(n_pool, -1, np.int64)])
    head = fit_head(vectors, labels, classes=n_classes, k=semi.k)
    per_class = min(semi.max_per_class, semi.ratio * -(-len(y) // n_classes))
    pos, y_extra, w = pseudo_labels(head, per_class=per_class, min_confidence=semi.min_confidence)
    return pos - len(y), y_extra, w, {**info, "semi_pseudo_labels": int(len(pos)), "semi_pool": int(n_pool)}



# -- self-training: a CNN on the pool's propagated labels, then propagation on its embedding ----

#: Default optimiser steps (batches of ``SELF_TRAIN_BATCH``) of ``self_train``. Measured on two data
#: sets at 20 labels (benchmarks/label_efficiency/POOL_AWARE.md): MNIST (60,000-image pool; about 13
#: passes over the pool) and scikit-learn's 8 x 8 digits (1,297; about 60 passes): enough on both for the
#: CNN to beat the propagation it learns from, and bounded so the cost does not grow with the pool.
SELF_TRAIN_STEPS = 600
SELF_TRAIN_BATCH = 128
#: A human label weighs this many times an average pseudo-label while there are at most 2 labels per
#: class; above that the labels' total weight stays at that level (each weighs proportionally less), so
#: a few labels are not drowned by thousands of pseudo-labels, and many labels do not drown the pool.
SELF_TRAIN_LABEL_WEIGHT = 50.0
_CNN_MIN_SIDE = 14  # the built-in CNN's smallest input side (two 5x5 conv + pool blocks)


@dataclasses.dataclass(frozen=True)
class SelfTrained:
    """The result of ``self_train``: the CNN and the head fitted on its embedding of the pool."""

    head: Head  #: propagation over the kNN graph of ``model``'s embedding of the pool
    model: object  #: the built-in CNN (``curator.models.cnn.CNNAdapter``) trained on the pseudo-labels
    scale: int  #: integer upsampling applied to images smaller than the CNN's smallest input

    def embed(self, images) -> np.ndarray:
        """The CNN's (unit) embedding of ``images`` (same kind and size as the pool's)."""
        return np.asarray(self.model.embed(_cnn_images(images, self.scale)), np.float32)

    def predict_proba(self, images=None, *, neighbours: tuple | None = None) -> np.ndarray:
        """(m, C) probabilities of new images: the weighted vote of their nearest pool rows in the CNN's
        embedding (``neighbours``: found before with ``curator.index.search`` on ``self.embed`` rows)."""
        if neighbours is not None:
            return self.head.predict_proba(neighbours=neighbours)
        if images is None:
            raise ValidationError("SelfTrained.predict_proba: pass images or their neighbours")
        return self.head.predict_proba(self.embed(images))


def _cnn_images(images, scale: int) -> np.ndarray:
    X = np.asarray(images, np.float32)
    if scale == 1:
        return X
    from scipy import ndimage

    zoom = (1, scale, scale) if X.ndim == 3 else (1, scale, scale, 1)
    return ndimage.zoom(X, zoom, order=1)


def self_train(pool_images, head: Head, labels, *, steps: int = SELF_TRAIN_STEPS,
               batch_size: int = SELF_TRAIN_BATCH, label_weight: float = SELF_TRAIN_LABEL_WEIGHT,
               k: int | None = None, seed: int = 0, device=None) -> SelfTrained:
    """Second stage of the semi-supervised head: learn the pool's propagated labels with the built-in CNN.

    Why: label propagation on a fixed, label-free embedding flattens at the
    embedding's neighbour purity (MNIST: about 2.7 % test error from 20 to 100
    labels), and a new image only gets a vote of its neighbours. The CNN,
    trained with augmentation on *every* pool image's propagated label (weight
    = the head's confidence; the human labels weighted up, see
    ``SELF_TRAIN_LABEL_WEIGHT``), learns features whose neighbours agree more
    often; propagating the human labels again over their kNN graph corrects
    part of the pseudo-labels' errors instead of copying them.

    ``pool_images``: (n, H, W) or (n, H, W, C), the rows ``head`` was fitted on,
    in the same order; ``labels``: (n,) integers, -1 = unlabeled, the labels
    ``head`` was fitted with. Images smaller than 14 pixels a side are upsampled
    by an integer factor for the CNN. Cost: ``steps`` batches of ``batch_size``
    plus one embedding pass over the pool (MNIST's 60,000: about 5 CPU minutes
    on 2 cores), whatever the pool size.
    """
    from curator.models.cnn import train_classifier
    from curator.semisupervised import _unit, knn_graph
    from curator._validation import check_positive_int

    if not isinstance(head, Head):
        raise ValidationError("self_train: head must be a fitted Head (curator.semihead.fit_head); "
                              f"got {type(head).__name__}")
    n, C = head.probs.shape
    X = np.asarray(pool_images)
    if X.ndim not in (3, 4) or len(X) != n:
        raise ValidationError(f"self_train: pool_images must be (n, H, W) or (n, H, W, C) with n = {n} "
                              f"(the head's rows); got shape {X.shape}")
    if X.dtype.kind not in "fiu" or not np.isfinite(X).all():
        raise ValidationError("self_train: pool_images must hold finite numbers (no NaN or infinity)")
    y = _labels_array(labels, n)
    pos = np.flatnonzero(y >= 0)
    if not np.array_equal(pos, np.sort(head.labeled)) or (y[pos] >= C).any():
        raise ValidationError("self_train: labels must be the ones the head was fitted with (same labeled rows, "
                              f"classes below {C}); refit the head with fit_head(embeddings, labels) first")
    steps = check_positive_int(steps, name="steps", caller="self_train")
    batch_size = check_positive_int(batch_size, name="batch_size", caller="self_train")
    if isinstance(label_weight, bool) or not isinstance(label_weight, numbers.Real) or not label_weight > 0 \
            or not np.isfinite(label_weight):
        raise ValidationError(f"self_train: label_weight must be a positive number; got {label_weight!r}")
    k = head.k if k is None else check_positive_int(k, name="k", caller="self_train")
    side = min(X.shape[1:3])
    scale = 1 if side >= _CNN_MIN_SIDE else -(-_CNN_MIN_SIDE // side)

    target = head.probs.argmax(1).astype(np.int64)
    target[pos] = y[pos]
    w = head.confidence.astype(np.float32).copy()
    w[pos] = float(w.mean()) * float(label_weight) / max(1.0, len(pos) / (2 * C))
    images = _cnn_images(X, scale)
    model = train_classifier(images, target, num_classes=C, seed=seed, steps=steps, batch_size=batch_size,
                             augment=True, sample_weight=w, average=0.3, device=device)
    F = _unit(np.asarray(model.embed(images), np.float32))
    new = fit_head(F, y, classes=C, k=k, gamma=head.gamma, neighbours=knn_graph(F, k))
    return SelfTrained(head=new, model=model, scale=scale)
