"""Learning-curve forecast: how many more labels until a target error?

Test error against the number of labels is fitted with a power law with an
offset, ``err(n) = c + a * n**-b`` (the usual shape of learning curves: the
error falls as a power of the data and levels off at an irreducible ``c``).
Fitting is a grid over the exponent ``b`` with a linear least-squares solve
for ``a`` and ``c`` at each ``b``: numpy only, no optimiser to diverge.
The uncertainty band comes from a bootstrap over the observed points.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from curator.exceptions import ValidationError

#: Exponents tried by the fit; learning curves of image classifiers sit well inside.
EXPONENTS = np.linspace(0.05, 2.0, 196)
#: Marginal gain (error points per 100 extra labels) below which labels "stop paying off".
PAYOFF_PER_100 = 0.001
#: With fewer points the offset of the curve is barely determined: the summary says so.
ROUGH_BELOW_POINTS = 6


@dataclasses.dataclass(frozen=True)
class Curve:
    a: float
    b: float
    c: float

    def __call__(self, n):
        return self.c + self.a * np.asarray(n, dtype=float) ** -self.b

    def labels_for(self, target: float) -> float:
        """Labels needed to reach ``target`` error (inf when the curve levels off above it)."""
        if target <= self.c or self.a <= 0:
            return float("inf")
        return float(((target - self.c) / self.a) ** (-1.0 / self.b))

    def payoff_limit(self, per_100: float = PAYOFF_PER_100) -> float:
        """Labels beyond which 100 more labels lower the error by less than ``per_100``."""
        if self.a <= 0:
            return 0.0
        # |d err / dn| * 100 = a * b * n**-(b+1) * 100 = per_100
        return float((self.a * self.b * 100.0 / per_100) ** (1.0 / (self.b + 1.0)))


def _check(n_labels, errors) -> tuple[np.ndarray, np.ndarray]:
    n = np.asarray(n_labels, dtype=float)
    e = np.asarray(errors, dtype=float)
    if n.shape != e.shape or n.ndim != 1:
        raise ValidationError(f"n_labels and errors must be 1-D of one length, got {n.shape} and {e.shape}")
    if len(n) < 3:
        raise ValidationError(f"a learning curve needs at least 3 points, got {len(n)}; run more rounds")
    if not (np.isfinite(n).all() and np.isfinite(e).all()) or (n <= 0).any():
        raise ValidationError("n_labels must be positive and finite, errors finite")
    return n, e


def fit_curve(n_labels, errors) -> Curve:
    """Least-squares fit of ``c + a * n**-b`` with ``a >= 0`` and ``0 <= c <= min(errors)``."""
    n, e = _check(n_labels, errors)
    x = n[None, :] ** -EXPONENTS[:, None]  # (exponents, points)
    xm, em = x.mean(axis=1), e.mean()
    var = ((x - xm[:, None]) ** 2).sum(axis=1)
    a = np.where(var > 0, ((x - xm[:, None]) * (e - em)).sum(axis=1) / np.maximum(var, 1e-300), 0.0)
    c = np.clip(em - a * xm, 0.0, e.min())
    # with c clipped, refit a alone, kept non-negative
    a = np.maximum(((e - c[:, None]) * x).sum(axis=1) / (x * x).sum(axis=1), 0.0)
    sse = ((c[:, None] + a[:, None] * x - e) ** 2).sum(axis=1)
    i = int(np.argmin(sse))
    return Curve(float(a[i]), float(EXPONENTS[i]), float(c[i]))


@dataclasses.dataclass(frozen=True)
class Forecast:
    curve: Curve
    target: float
    labels_now: int
    labels_needed: float  # total labels to reach target (point estimate of the fit)
    low: float  # 10th percentile
    high: float  # 90th percentile
    payoff_limit: float
    points: int = ROUGH_BELOW_POINTS  # learning-curve points the fit used

    @property
    def more_labels(self) -> float:
        return max(self.labels_needed - self.labels_now, 0.0)

    def summary(self) -> str:
        rough = f"rough, from {self.points} points: " if self.points < ROUGH_BELOW_POINTS else ""
        if not np.isfinite(self.labels_needed):
            some = f"; 10% of refits reach it by {self.low:,.0f} labels" if np.isfinite(self.low) else ""
            return (f"{rough}target error {self.target:.3f} looks out of reach: the curve levels off at "
                    f"{self.curve.c:.3f}{some}; more labels stop paying off near {self.payoff_limit:,.0f}")
        high = "unbounded" if not np.isfinite(self.high) else f"{self.high:,.0f}"
        return (
            f"{rough}about {self.more_labels:,.0f} more labels to reach error {self.target:.3f} "
            f"(total {self.labels_needed:,.0f}; 80% band {self.low:,.0f} to {high}); "
            f"more labels stop paying off near {self.payoff_limit:,.0f}"
        )


def forecast(n_labels, errors, target: float, *, n_boot: int = 200, seed: int = 0) -> Forecast:
    """Fit the curve and bootstrap the labels needed to reach ``target`` error."""
    n, e = _check(n_labels, errors)
    if not 0 < target < 1:
        raise ValidationError(f"target error must be in (0, 1), got {target}")
    curve = fit_curve(n, e)
    rng = np.random.default_rng(seed)
    needed = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(n), len(n))
        if len(np.unique(n[pick])) < 3:
            continue
        needed.append(fit_curve(n[pick], e[pick]).labels_for(target))
    needed = np.array(needed) if needed else np.array([curve.labels_for(target)])
    point = curve.labels_for(target)
    return Forecast(
        curve=curve,
        target=target,
        labels_now=int(n.max()),
        labels_needed=point,
        low=_percentile(needed, 10),
        high=_percentile(needed, 90),
        payoff_limit=curve.payoff_limit(),
        points=len(n),
    )


def _percentile(values: np.ndarray, q: float) -> float:
    """Percentile that treats inf (target out of reach) as larger than any number."""
    values = np.sort(values)
    i = min(int(np.ceil(q / 100 * len(values))) - 1, len(values) - 1)
    return float(values[max(i, 0)])
