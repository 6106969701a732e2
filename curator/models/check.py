"""Conformance check for model adapters, built-in or brought (like ``check_policy`` for policies).

    from curator.models import check_model
    check_model("mypkg.models:resnet18")     # raises ValidationError listing every broken rule

The rules (docs/models.md): ``predict`` gives probabilities of shape (n, classes), finite, rows
summing to 1; embeddings of shape (n, d), finite, L2-normalised; the same images and seed give
the same answer, in one batch or in parts (executors cut the pool into shards); uint8 images of
any size and of either channel count are accepted when the model declares an input size; MC
dropout gives (T, n, classes) with passes that differ and repeat for a seed, and a model
without dropout refuses MC samples with a ValidationError that says so. Empty input is a
ValidationError.
"""

from __future__ import annotations

import numpy as np

from curator.exceptions import ValidationError

__all__ = ["check_model", "synthetic_images"]


def synthetic_images(n: int, size: tuple[int, int], channels: int, seed: int = 0) -> np.ndarray:
    """``n`` uint8 images with some structure (blobs on noise), (n, H, W) or (n, H, W, 3)."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty((n, h, w, channels), dtype=np.uint8)
    for i in range(n):
        cy, cx, r = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w, rng.uniform(0.1, 0.3) * min(h, w)
        blob = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r)[..., None]
        colour = rng.integers(0, 256, size=channels)
        noise = rng.integers(0, 64, size=(h, w, channels))
        out[i] = np.where(blob, colour, noise).astype(np.uint8)
    return out[..., 0] if channels == 1 else out


def check_model(adapter_or_spec, *, n: int = 6, T: int = 4, seed: int = 0, size: tuple[int, int] | None = None,
                atol: float = 1e-4, **spec_options) -> object:
    """Run an adapter (or a spec, resolved with ``spec_options``) through the protocol; return it.

    Every violation is collected and reported in one ValidationError, so a plugin author sees
    all of them at once.
    """
    from curator.models.spec import resolve_model

    adapter = resolve_model(adapter_or_spec, **spec_options)
    name = getattr(adapter, "name", type(adapter).__name__)
    problems: list[str] = []

    def attempt(what, fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except Exception as exc:
            problems.append(f"{what} raised {type(exc).__name__}: {exc}")
            return None

    spec = getattr(adapter, "input_spec", None)
    channels = getattr(spec, "channels", None) or 1
    base = size or getattr(spec, "size", None) or (32, 32)
    images = synthetic_images(n, base, channels, seed=seed)

    classes = getattr(adapter, "classes", None)
    pred = attempt("predict(images)", adapter.predict, images, seed=seed)
    if pred is None and size is None and getattr(spec, "size", None) is None:
        problems.append(f"the model declares no input size; pass size=(H, W) to check_model (it tried {base}) "
                        "or declare it: InputSpec(size=(H, W))")
    if pred is not None:
        P, E = np.asarray(pred.probs), np.asarray(pred.embeddings)
        k = len(classes) if classes is not None else (P.shape[1] if P.ndim == 2 else None)
        if P.ndim != 2 or P.shape != (n, k):
            problems.append(f"probs have shape {P.shape}, expected ({n}, {k}) (images, classes)")
        elif not np.isfinite(P).all():
            problems.append("probs contain NaN or infinite values")
        else:
            if (P < -atol).any():
                problems.append("probs contain negative values")
            if not np.allclose(P.sum(1), 1.0, atol=atol):
                problems.append(f"probs rows do not sum to 1 (sums {np.round(P.sum(1)[:4], 4).tolist()}...)")
            if k is not None and k < 2:
                problems.append(f"probs have {k} class; a classifier needs at least 2")
        if E.ndim != 2 or E.shape[0] != n or E.shape[1] < 1:
            problems.append(f"embeddings have shape {E.shape}, expected ({n}, d)")
        elif not np.isfinite(E).all():
            problems.append("embeddings contain NaN or infinite values")
        elif not np.allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-3):
            problems.append("embeddings are not L2-normalised (row norms differ from 1)")
        if pred.mc_probs is not None:
            problems.append("predict without mc_samples returned mc_probs; return None")

        again = attempt("predict(images) a second time", adapter.predict, images, seed=seed)
        if again is not None and P.shape == np.shape(again.probs) and E.shape == np.shape(again.embeddings):
            if not (np.allclose(P, again.probs, atol=1e-6, equal_nan=True)
                    and np.allclose(E, again.embeddings, atol=1e-6, equal_nan=True)):
                problems.append(f"predict is not deterministic: two calls with seed {seed} differ")
        part = attempt("predict(images[:2])", adapter.predict, images[:2], seed=seed)
        if part is not None and P.ndim == 2 and np.shape(part.probs) == P[:2].shape:
            if not np.allclose(part.probs, P[:2], atol=1e-4, equal_nan=True):
                problems.append("predict depends on the batch: the first 2 images alone get other probs "
                                "(executors cut the pool into shards; put batch norm in eval mode)")
        for method, ref in (("predict_proba", P), ("embed", E)):
            out = attempt(f"{method}(images)", getattr(adapter, method), images)
            if out is not None and (np.shape(out) != ref.shape or not np.allclose(out, ref, atol=1e-5, equal_nan=True)):
                problems.append(f"{method} disagrees with predict")

        if getattr(spec, "size", None) is not None:
            other = (base[0] + 7, base[1] + 5)
            for what, imgs in (("larger images", synthetic_images(2, other, channels, seed=seed + 1)),
                               ("the other channel count", synthetic_images(2, base, 4 - channels, seed=seed + 2)),
                               ("a list of mixed sizes", [synthetic_images(1, base, channels)[0],
                                                          synthetic_images(1, other, 3)[0]])):
                got = attempt(f"predict({what})", adapter.predict, imgs, seed=seed)
                if got is not None and np.shape(got.probs) != (2, P.shape[1] if P.ndim == 2 else -1):
                    problems.append(f"predict({what}) gave probs of shape {np.shape(got.probs)}")

        _check_mc(adapter, images, n, P.shape[1] if P.ndim == 2 else None, T, seed, atol, problems)

    try:
        adapter.predict(images[:0], seed=seed)
    except ValidationError:
        pass
    except Exception as exc:
        problems.append(f"predict on no images raised {type(exc).__name__}, not ValidationError")
    else:
        problems.append("predict on no images did not raise ValidationError")

    version = attempt("version", lambda: adapter.version)
    if version is not None and (not isinstance(version, str) or not version or version != adapter.version):
        problems.append(f"version must be a non-empty string that does not change between calls; got {version!r}")

    if problems:
        raise ValidationError(f"model {name} breaks the adapter protocol ({len(problems)} problem"
                              f"{'s' if len(problems) > 1 else ''}): " + "; ".join(problems))
    return adapter


def _check_mc(adapter, images, n, k, T, seed, atol, problems):
    has_dropout = getattr(adapter, "has_dropout", None)
    try:
        mc = adapter.predict(images, mc_samples=T, seed=seed).mc_probs
    except ValidationError as exc:
        if has_dropout:
            problems.append(f"predict(mc_samples={T}) raised ValidationError for a model with dropout: {exc}")
        elif "dropout" not in str(exc).lower():
            problems.append(f"predict(mc_samples={T}) on a model without dropout must say so; it said: {exc}")
        return
    except Exception as exc:
        problems.append(f"predict(mc_samples={T}) raised {type(exc).__name__}: {exc}")
        return
    if has_dropout is False:
        problems.append(f"predict(mc_samples={T}) on a model without dropout must raise ValidationError "
                        "(all passes would be equal), not return samples")
        return
    mc = None if mc is None else np.asarray(mc)
    if mc is None or mc.shape != (T, n, k):
        problems.append(f"mc_probs have shape {None if mc is None else mc.shape}, expected ({T}, {n}, {k})")
        return
    if not np.isfinite(mc).all():
        problems.append("mc_probs contain NaN or infinite values")
        return
    if not np.allclose(mc.sum(-1), 1.0, atol=atol):
        problems.append("mc_probs rows do not sum to 1")
    if np.allclose(mc, mc[:1], atol=1e-7):
        problems.append(f"the {T} MC-dropout passes are all equal: dropout is not active at prediction")
    try:
        again = adapter.predict(images, mc_samples=T, seed=seed).mc_probs
    except Exception as exc:
        problems.append(f"predict(mc_samples={T}) a second time raised {type(exc).__name__}: {exc}")
        return
    if np.shape(again) != mc.shape or not np.allclose(again, mc, atol=1e-6):
        problems.append(f"MC dropout is not reproducible: two calls with seed {seed} differ")
