"""Exact and near-duplicate groups, without chaining distinct images together.

Steps (pure arrays in, position arrays out):

1. **Exact duplicates** by content hash (``hashes=``, e.g. the samples' sha256),
   or by identical embedding rows when no hashes are given. Each exact group
   is searched once, so zero-distance ties never reach the index.
2. **Near duplicates** by range search (``curator.index.self_pairs``) on the
   normalised embeddings: every pair with cosine similarity >= ``threshold``.
3. **Grouping around centres, not transitive closure.** Union-find over all
   edges chains A~B~C~... into one group of distinct images (on a clustered
   300,000 pool it built a 324-sample group at pair precision 0.17). Here
   groups are grown greedily around centres: the unassigned sample first in
   centre order (already labeled first, then most near duplicates, then
   highest score, then lowest position) takes every still-unassigned sample
   within the threshold of it. Every member of a group is within the
   threshold of its centre, so a group never spans a chain.
4. **Representative** (first in each returned group, the one kept): an
   already labeled member first, then the highest score, then the lowest
   position. Pool samples within the threshold of a labeled sample join the
   labeled sample's group (labeled samples are centres first), so they are
   dropped as duplicates of what is already labeled.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import numpy as np

from curator.exceptions import EmptyPoolError, ValidationError

#: Default cosine-similarity threshold for near duplicates of the cold-start
#: embedding (``curator.coldstart``). Chosen by ``benchmarks/dedup_scale/threshold.py``
#: as the best pair F1 on 2,000 MNIST training digits with 1,800 planted copies
#: (JPEG, brightness/contrast, 1-pixel shifts, rotations, zoom, noise):
#: precision 0.963, recall 0.888; on MNIST test digits (not tuned on) 0.992 /
#: 0.876; on synthetic colour shapes 1.0 / 0.62 (rotations and shifts of sharp
#: edges fall below it). Full table and advice: docs/dedup.md.
DEFAULT_THRESHOLD = 0.99

#: Rows whose norm is below this are "zero rows": they have no direction.
ZERO_NORM = 1e-12


def check_threshold(threshold, *, caller: str = "find_duplicates") -> float:
    """A cosine threshold in (0, 1]; ``None`` means ``DEFAULT_THRESHOLD``."""
    if threshold is None:
        return DEFAULT_THRESHOLD
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise ValidationError(f"{caller}: threshold must be a number in (0, 1]; got {threshold!r}")
    t = float(threshold)
    if not (0.0 < t <= 1.0):
        raise ValidationError(
            f"{caller}: threshold must be a cosine similarity in (0, 1]; got {t} "
            f"(the default is {DEFAULT_THRESHOLD}; higher finds fewer, closer copies)"
        )
    return t


def check_unit_embeddings(embeddings, *, name: str = "embeddings", caller: str = "find_duplicates",
                          allow_empty: bool = False, copy: bool = True) -> np.ndarray:
    """(n, d) finite float32 rows with non-zero norm, returned normalised (a new array).
    ``copy`` False, for a caller that reads the rows only to find exact copies: a float32 array is
    checked by chunks and returned as given (a memory-mapped set is not copied: 147 MiB at 100k x 384)."""
    if embeddings is None:
        raise ValidationError(f"{caller}: {name} is missing; pass an (n, d) array")
    from curator import index

    if isinstance(embeddings, np.ndarray) and embeddings.ndim == 2 and len(embeddings) and (
            index.is_streamed(len(embeddings)) or (not copy and embeddings.dtype == np.float32)):
        return _check_by_chunks(embeddings, name=name, caller=caller)
    try:
        x = np.array(embeddings, dtype=np.float32, copy=True)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{caller}: {name} is not a numeric array ({exc})") from None
    if x.ndim != 2:
        raise ValidationError(f"{caller}: {name} must be 2-D (n, d); got shape {x.shape}")
    if len(x) == 0 and not allow_empty:
        raise EmptyPoolError(f"{caller}: {name} has no rows; nothing to de-duplicate")
    if x.shape[1] == 0:
        raise ValidationError(f"{caller}: {name} has shape {x.shape}: no columns")
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        rows = np.flatnonzero(~finite)[:5].tolist()
        raise ValidationError(f"{caller}: {name} contains NaN or infinite values (rows {rows}); drop or fix those rows")
    norms = np.linalg.norm(x, axis=1)
    zero = norms < ZERO_NORM
    if zero.any():
        rows = np.flatnonzero(zero)[:5].tolist()
        raise ValidationError(
            f"{caller}: {name} has all-zero rows {rows} (no direction, so no cosine similarity); "
            "drop them or recompute their embeddings"
        )
    x /= norms[:, None]
    return x


def _check_by_chunks(x: np.ndarray, *, name: str, caller: str) -> np.ndarray:
    """The same checks for a base too large to copy (a memory-mapped .npy): read by chunks, and
    ``x`` itself returned un-normalised; the streamed index normalises rows as it reads them."""
    from curator import index

    if x.shape[1] == 0:
        raise ValidationError(f"{caller}: {name} has shape {x.shape}: no columns")
    step = min(index.chunk_rows(x.shape[1]), max(1, (16 << 20) // (4 * x.shape[1])))
    for s in range(0, len(x), step):
        c = np.asarray(x[s:s + step], dtype=np.float32)
        index.release(x)  # a memory map's pages read so far leave the process's RSS
        finite = np.isfinite(c).all(axis=1)
        if not finite.all():
            rows = (np.flatnonzero(~finite)[:5] + s).tolist()
            raise ValidationError(f"{caller}: {name} contains NaN or infinite values (rows {rows}); "
                                  "drop or fix those rows")
        zero = np.linalg.norm(c, axis=1) < ZERO_NORM
        if zero.any():
            rows = (np.flatnonzero(zero)[:5] + s).tolist()
            raise ValidationError(
                f"{caller}: {name} has all-zero rows {rows} (no direction, so no cosine similarity); "
                "drop them or recompute their embeddings"
            )
    return x


def _check_labeled(labeled, n: int) -> np.ndarray:
    """A boolean (n,) mask from a mask or a list of positions."""
    if labeled is None:
        return np.zeros(n, dtype=bool)
    arr = np.asarray(labeled)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise ValidationError(f"find_duplicates: labeled mask has shape {arr.shape}; expected ({n},)")
        return arr.copy()
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValidationError("find_duplicates: labeled must be a boolean mask or integer positions")
    arr = arr.astype(np.int64).ravel()
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise ValidationError(f"find_duplicates: labeled positions must be in [0, {n}); got {arr.min()}..{arr.max()}")
    mask = np.zeros(n, dtype=bool)
    mask[arr] = True
    return mask


def _check_scores(scores, n: int) -> np.ndarray | None:
    if scores is None:
        return None
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (n,):
        raise ValidationError(f"find_duplicates: scores has shape {s.shape}; expected ({n},), one per row")
    if not np.isfinite(s).all():
        raise ValidationError("find_duplicates: scores contains NaN or infinite values; fix or drop them")
    return s


def exact_groups(x: np.ndarray, hashes: Sequence | None = None) -> np.ndarray:
    """Exact-duplicate group id of every row: equal hashes, or identical rows.

    Returns (n,) int64 ids numbered by first occurrence (group of row 0 is 0).
    """
    n = len(x)
    if hashes is not None:
        if len(hashes) != n:
            raise ValidationError(f"find_duplicates: hashes has {len(hashes)} entries but embeddings has {n} rows")
        _, first, inverse = np.unique(np.asarray(hashes), return_index=True, return_inverse=True)
    else:
        _, first, inverse = _unique_rows(x)
    # renumber by first occurrence, for stable output
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.ravel()]


def _unique_rows(x: np.ndarray):
    """np.unique over rows, by a 64-bit multiplicative hash checked byte for byte."""
    from curator import index

    n = len(x)
    words = np.ascontiguousarray(x).view(np.uint32).reshape(n, -1)
    mult = np.random.default_rng(0x5EED).integers(1, 2**63, size=words.shape[1], dtype=np.uint64) | np.uint64(1)
    h = np.empty(n, np.uint64)
    step = max(1, (1 << 22) // max(1, words.shape[1]))
    for s in range(0, n, step):
        h[s:s + step] = (words[s:s + step].astype(np.uint64) * mult).sum(axis=1)
        index.release(words)  # a memory map's pages read so far leave the process's RSS
    keys, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    # a hash collision between different rows would merge them: verify each group, by chunks (a
    # whole-array check made an n x d copy of the rows: 147 MiB at 100k x 384)
    same = _verify_chunked(words, first[inverse])
    if not same.all():  # pragma: no cover - needs a 64-bit collision
        void = np.ascontiguousarray(words).view(np.dtype((np.void, words.shape[1] * 4))).ravel()
        return np.unique(void, return_index=True, return_inverse=True)
    return keys, first, inverse


def _verify_chunked(words: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Whether each row equals its reference row, compared a block of rows at a time (<= 16 MiB)."""
    from curator import index

    out = np.empty(len(words), bool)
    step = max(1, min(65536, (16 << 20) // (4 * max(1, words.shape[1]))))
    for s in range(0, len(words), step):
        out[s:s + step] = (words[s:s + step] == words[ref[s:s + step]]).all(axis=1)
        index.release(words)
    return out


def centre_groups(
    n: int, i: np.ndarray, j: np.ndarray, order_key: tuple[np.ndarray, ...], compared=None
) -> np.ndarray:
    """Greedy centre grouping of an undirected graph: group id per node (-1: alone).

    ``order_key``: arrays passed to ``np.lexsort`` (last key primary) giving
    the centre order. A centre takes every unassigned neighbour; a node with
    no unassigned neighbour left stays alone.

    ``compared``: ``(ci, cj, margin)``, every pair that was judged (verified copies: each candidate
    pair's score minus its threshold, negative where it was found distinct; the edges among them).
    A centre's neighbour then joins only if its *mean* margin over the members it was compared with
    is >= 0 (average linkage over the judged pairs, neighbours in centre order): a look-alike that
    matches a copy just above the threshold but scored well below it against the copy's original
    does not chain into their group, as it did when any edge to the centre sufficed.
    """
    group = np.full(n, -1, np.int64)
    if len(i) == 0:
        return group
    src = np.concatenate([i, j])
    dst = np.concatenate([j, i])
    order = np.argsort(src, kind="stable")
    src, dst = src[order], dst[order]
    starts = np.searchsorted(src, np.arange(n + 1))
    has_edges = np.flatnonzero(np.diff(starts) > 0)
    rank = np.lexsort(tuple(k[has_edges] for k in order_key))
    judged = None if compared is None else _judged_pairs(n, np.diff(starts) > 0, *compared)
    if judged is not None:
        place = np.empty(n, np.int64)
        place[has_edges[rank]] = np.arange(len(has_edges))
    next_id = 0
    for node in has_edges[rank].tolist():
        if group[node] >= 0:
            continue
        nbrs = dst[starts[node]:starts[node + 1]]
        free = nbrs[group[nbrs] < 0]
        if len(free) == 0:
            continue
        if judged is not None:
            free = _average_linkage(node, free[np.argsort(place[free], kind="stable")], n, *judged)
            if len(free) == 0:
                continue
        group[node] = next_id
        group[free] = next_id
        next_id += 1
    return group


def _judged_pairs(n: int, in_graph: np.ndarray, ci, cj, margin):
    """The judged pairs between nodes of the graph as sorted keys ``min * n + max`` and their
    margins (a pair judged twice keeps its higher margin): searched, not a dict (a 100k pool has
    ~1M candidate pairs)."""
    ci, cj = np.asarray(ci, np.int64).ravel(), np.asarray(cj, np.int64).ravel()
    margin = np.asarray(margin, np.float64).ravel()
    if not (len(ci) == len(cj) == len(margin)):
        raise ValidationError(f"compared pairs: {len(ci)}, {len(cj)} positions and {len(margin)} margins; "
                              "give one margin per pair")
    if np.isnan(margin).any():
        raise ValidationError("compared pairs: a margin is NaN; give each judged pair a number (-inf: distinct)")
    sel = (ci != cj) & in_graph[ci] & in_graph[cj]
    keys = np.minimum(ci[sel], cj[sel]) * n + np.maximum(ci[sel], cj[sel])
    order = np.lexsort((margin[sel], keys))
    keys, margin = keys[order], margin[sel][order]
    last = np.append(keys[1:] != keys[:-1], len(keys) > 0)[:len(keys)]  # the highest margin of each key
    return keys[last], margin[last]


def _average_linkage(centre: int, candidates: np.ndarray, n: int, keys: np.ndarray,
                     margins: np.ndarray) -> np.ndarray:
    """The centre's neighbours, in order, that join: each one's mean margin over the members taken
    so far (the centre first) that it was compared with is >= 0 (none compared: it joins, as before)."""
    if len(keys) == 0:
        return candidates
    members = [centre]
    for f in candidates.tolist():
        m = np.asarray(members, np.int64)
        k = np.minimum(f, m) * n + np.maximum(f, m)
        at = np.minimum(np.searchsorted(keys, k), len(keys) - 1)
        found = keys[at] == k
        if not found.any() or margins[at[found]].mean() >= 0:
            members.append(f)
    return np.asarray(members[1:], np.int64)


def find_duplicates(
    embeddings,
    threshold: float | None = None,
    *,
    hashes: Sequence | None = None,
    scores=None,
    labeled=None,
    exact: bool | None = None,
    seed: int = 0,
    return_info: bool = False,
    search=None,
    pairs=None,
    compared=None,
):
    """Groups of exact and near duplicates, as int64 position arrays, representative first
    (then the other members in the same order: labeled, score, position).

    Parameters
    ----------
    embeddings : (n, d) array; rows need not be normalised, but must be finite and non-zero.
    threshold : cosine similarity in (0, 1] above which two samples are copies
        (default ``DEFAULT_THRESHOLD``, chosen for the cold-start embedding).
    hashes : optional (n,) content hashes (e.g. sha256 of the files); equal
        hashes are exact duplicates whatever their embeddings.
    scores : optional (n,) acquisition scores; the highest-scored member of a
        group is its representative (after labeled ones).
    labeled : optional boolean mask or positions of already labeled rows; their
        near duplicates are grouped under them, to be dropped from the pool.
    exact : force (True) or forbid (False) exact search; default by size
        (``curator.index.EXACT_SEARCH_MAX_N``).
    return_info : also return a dict (threshold, index used, counts).
    search : the self-join ``search(x, threshold, exact=, seed=) -> (i, j, sims, info)``
        (default ``curator.index.self_pairs``; an executor passes its own, e.g. the Ray
        executor's distributed one). Its candidate pairs are re-ranked with exact float64
        similarity, so search paths whose float32 noise differs give the same groups.
    pairs : ``(i, j)`` row positions of pairs already known to be copies (``curator.copyverify``:
        verified candidates); they replace the search, and ``threshold`` is only recorded.
    compared : with ``pairs``, ``(ci, cj, margin)``: every pair that was judged, with its score minus
        its threshold (negative: judged distinct); a row then joins a group only where its mean
        margin over the members it was compared with is >= 0 (``centre_groups``), so a look-alike
        does not chain into a group through one of its copies.

    Only groups of two or more are returned, ordered by representative position.
    """
    from curator import index

    t = check_threshold(threshold)
    # with pairs given, the rows only tell exact copies apart: not copied and normalised
    x = check_unit_embeddings(embeddings, copy=pairs is None)
    n = len(x)
    is_labeled = _check_labeled(labeled, n)
    s = _check_scores(scores, n)
    score_key = np.zeros(n) if s is None else s
    positions = np.arange(n, dtype=np.int64)

    # 1. exact duplicates: one unit per exact group, its best member stands for it
    ex = exact_groups(x, hashes)
    n_units = int(ex.max()) + 1
    best = np.lexsort((positions, -score_key, ~is_labeled, ex))  # by unit, best first
    unit_first = np.searchsorted(ex[best], np.arange(n_units))
    unit_rows = best[unit_first]  # representative row of each unit
    unit_size = np.bincount(ex, minlength=n_units)
    unit_labeled = np.bincount(ex, weights=is_labeled, minlength=n_units) > 0

    # 2. near duplicates between units: candidates from the search, kept by exact similarity
    if pairs is not None:
        ui, uj = _unit_pairs(pairs, ex, n)
        search_info = {"index": "given pairs"}
    else:
        # one row per exact group; without exact copies that is every row in order: no second copy
        units = x if len(unit_rows) == n and (unit_rows == positions).all() else index.take_rows(x, unit_rows)
        del x
        ui, uj, _, search_info = (search or index.self_pairs)(units, t, exact=exact, seed=seed)
        ui, uj = np.asarray(ui, np.int64), np.asarray(uj, np.int64)
        keep = _exact_cosines(units, ui, uj) >= t - index.SIM_EPS
        ui, uj = ui[keep], uj[keep]
        del units

    # 3. centre grouping of units
    degree = np.bincount(np.concatenate([ui, uj]), minlength=n_units) + unit_size - 1
    key = (unit_rows, -score_key[unit_rows], -degree, ~unit_labeled)
    judged = None
    if compared is not None:
        if pairs is None:
            raise ValidationError("find_duplicates: compared= needs pairs= (the judged pairs' verdicts)")
        judged = _unit_compared(compared, ex, n)
    g = centre_groups(n_units, ui, uj, key, compared=judged)
    multi = (g < 0) & (unit_size > 1)  # exact groups with no near duplicate
    g[multi] = g.max(initial=-1) + 1 + np.arange(int(multi.sum()))
    row_group = g[ex]

    # 4. expand to rows; representative first by (labeled, score, position)
    member = np.flatnonzero(row_group >= 0)
    order = np.lexsort((member, -score_key[member], ~is_labeled[member], row_group[member]))
    member = member[order]
    cuts = np.flatnonzero(np.diff(row_group[member])) + 1
    groups = [grp for grp in np.split(member, cuts) if len(grp) > 1]
    groups.sort(key=lambda grp: int(grp[0]))
    if not return_info:
        return groups
    info = {
        "threshold": t,
        "samples": n,
        "exact_groups": int((unit_size > 1).sum()),
        "near_pairs": int(len(ui)),
        "groups": len(groups),
        "duplicates": int(sum(len(grp) - 1 for grp in groups)),
        "dropped_near_labeled": int(sum((~is_labeled[grp]).sum() for grp in groups if is_labeled[grp[0]])),
        **{f"search_{k}" if k != "index" else "index": v for k, v in search_info.items()},
    }
    return groups, info


def _unit_pairs(pairs, ex: np.ndarray, n: int):
    """Row pairs -> unique pairs of distinct exact-duplicate units (u < v)."""
    try:
        i, j = (np.asarray(a, dtype=np.int64).ravel() for a in pairs)
    except (TypeError, ValueError):
        raise ValidationError("find_duplicates: pairs must be two integer arrays (i, j)") from None
    if i.shape != j.shape:
        raise ValidationError(f"find_duplicates: pairs have {len(i)} and {len(j)} positions; give one j per i")
    if i.size and (min(i.min(), j.min()) < 0 or max(i.max(), j.max()) >= n):
        raise ValidationError(f"find_duplicates: pair positions must be in [0, {n})")
    u, v = ex[i], ex[j]
    pr = np.unique(np.sort(np.stack([u, v], 1)[u != v], axis=1), axis=0).reshape(-1, 2)
    return pr[:, 0], pr[:, 1]


def _unit_compared(compared, ex: np.ndarray, n: int):
    """Judged row pairs ``(ci, cj, margin)`` -> pairs of exact-duplicate units, margins kept."""
    try:
        ci, cj, margin = compared
        ci, cj = (np.asarray(a, dtype=np.int64).ravel() for a in (ci, cj))
    except (TypeError, ValueError):
        raise ValidationError("find_duplicates: compared must be (i, j, margin): two integer arrays of "
                              "positions and one of margins") from None
    if ci.size and (min(ci.min(), cj.min()) < 0 or max(ci.max(), cj.max()) >= n):
        raise ValidationError(f"find_duplicates: compared pair positions must be in [0, {n})")
    return ex[ci], ex[cj], margin


def _exact_cosines(x, i, j) -> np.ndarray:
    """Float64 cosine of the pairs (i, j) of rows of ``x``: the re-ranking that makes every search
    path agree. Above ``index.STREAM_MIN_N`` the rows are read as stored (not normalised), so the
    inner products are divided by the two norms there."""
    from curator import index

    sims = index.pair_sims(x, i, j)
    if index.is_streamed(len(x)):
        sims = sims / np.sqrt(index.pair_sims(x, i, i) * index.pair_sims(x, j, j))
    return sims


def drop_mask(groups: Sequence[np.ndarray], n: int, labeled=None) -> np.ndarray:
    """Boolean (n,) mask of rows to drop: every member but the representative,
    and never a labeled row (it is already labeled, not a pool sample)."""
    drop = np.zeros(n, dtype=bool)
    for grp in groups:
        drop[grp[1:]] = True
    if labeled is not None:
        drop &= ~_check_labeled(labeled, n)
    return drop


def near_labeled(embeddings, labeled_embeddings, threshold: float | None = None, *, exact: bool | None = None,
                 seed: int = 0) -> np.ndarray:
    """Boolean (n,) mask of pool rows within ``threshold`` of any labeled embedding."""
    from curator import index

    t = check_threshold(threshold, caller="near_labeled")
    x = check_unit_embeddings(embeddings, caller="near_labeled", allow_empty=True)
    out = np.zeros(len(x), dtype=bool)
    if labeled_embeddings is None or len(labeled_embeddings) == 0 or len(x) == 0:
        return out
    lab = check_unit_embeddings(labeled_embeddings, name="labeled_embeddings", caller="near_labeled")
    if lab.shape[1] != x.shape[1]:
        raise ValidationError(
            f"near_labeled: labeled_embeddings has dimension {lab.shape[1]} but embeddings has {x.shape[1]}; "
            "embed both with the same model"
        )
    q, _, _, _ = index.range_search(lab, x, t, exact=exact, seed=seed)
    out[q] = True
    return out


# -- threshold calibrated on the pool itself -------------------------------------------------

#: Fewest samples a calibration accepts: below it the two distributions are a handful of values
#: and the threshold between them is noise.
MIN_CALIBRATION_SAMPLES = 30

#: A distinct sample wrongly merged costs this many missed copies: a lost sample never comes
#: back, a missed copy costs one extra label, and precision must hold on alike-but-distinct pools.
#: Pair precision 0.99 with copies at ~10 % of a pool allows false merges at ~1/1000 of the
#: samples; 100 is the most a 2,000-sample calibration can resolve (10 at first: on MNIST
#: thumbnails it merged 93 of 3,000 distinct digits, pair precision 0.42).
FALSE_MERGE_WEIGHT = 100.0

#: At most this share of the calibration's samples is taken to have a real copy in the pool (their
#: nearest neighbour at least as similar as the 1 % quantile of synthetic copies). Beyond it, copy-like
#: neighbours are taken as distinct look-alikes: an embedding that puts distinct samples as close
#: as copies then gets a high threshold (precision kept) instead of a low one.
MAX_POOL_COPY_SHARE = 0.2


def calibrate_threshold(copy_sims, neighbour_sims, *, false_merge_weight: float = FALSE_MERGE_WEIGHT,
                        copy_like: float | None = None, max_pool_copy_share: float = MAX_POOL_COPY_SHARE) -> dict:
    """The cosine threshold that separates copies from distinct neighbours, from the pool's own data.

    ``copy_sims``: similarity of sampled pool images to a synthetic copy of themselves (the copy
    augmentations); ``neighbour_sims``: similarity of the same samples to their nearest *other*
    pool sample. Rule: minimise ``missed copies + W * merged neighbours`` (shares; W =
    ``false_merge_weight``) over thresholds, and take the middle of the best range (a gap between
    the two distributions gives a range of equal cost; its middle leaves room on both sides).
    A neighbour at least as similar as the 1 % quantile of synthetic copies is taken as a real copy already
    in the pool (pools hold copies: those are not "distinct" and must not push the threshold up),
    for at most ``MAX_POOL_COPY_SHARE`` of the samples (the most similar ones); ``copy_like`` sets that
    cut instead (``curator.copyverify`` calibrates its verified scores with its own tail fit, not this rule).

    Returns a dict: threshold, rule, samples, the quantiles of both distributions, the expected
    shares missed and merged at the threshold, and ``separated`` (whether a gap exists: no copy
    below it and no counted neighbour above it). Too few or non-finite values: ValidationError.
    """
    c = np.asarray(copy_sims, dtype=np.float64).ravel()
    nb = np.asarray(neighbour_sims, dtype=np.float64).ravel()
    if len(c) < MIN_CALIBRATION_SAMPLES or len(nb) < MIN_CALIBRATION_SAMPLES:
        raise ValidationError(
            f"calibrate_threshold: {min(len(c), len(nb))} samples; the calibration needs at least "
            f"{MIN_CALIBRATION_SAMPLES} (a pool that small has no distribution to read a threshold from): "
            "add samples, or pass --threshold")
    if not (np.isfinite(c).all() and np.isfinite(nb).all()):
        raise ValidationError("calibrate_threshold: similarities contain NaN or infinite values; "
                              "recompute the embeddings")
    w = float(false_merge_weight)
    copy_low = float(np.quantile(c, 0.01)) if copy_like is None else float(copy_like)
    order = np.sort(nb)
    n_copies = min(int((nb >= copy_low).sum()), int(max_pool_copy_share * len(nb)))
    distinct = order[: len(order) - n_copies]
    grid = np.unique(np.concatenate([c, distinct]))
    grid = grid[(grid > 0.0) & (grid <= 1.0)]
    if len(grid) == 0:
        raise ValidationError("calibrate_threshold: no positive similarity among synthetic copies; the embedding "
                              "does not keep copies together (pass --threshold)")
    cs, ds = np.sort(c), np.sort(distinct)
    # candidate t just above each value too, so a gap's edges are both candidates
    cand = np.unique(np.concatenate([grid, np.minimum(1.0, np.nextafter(grid, 2.0))]))
    missed = np.searchsorted(cs, cand, side="left") / len(cs)  # copies with sim < t
    merged = (len(ds) - np.searchsorted(ds, cand, side="left")) / len(nb)  # distinct with sim >= t
    cost = missed + w * merged
    best = np.flatnonzero(cost <= cost.min() + 1e-12)
    breaks = np.flatnonzero(np.diff(best) > 1)
    run_end = best[breaks[0]] if len(breaks) else best[-1]  # the first range of least cost
    lo, hi = float(cand[best[0]]), float(cand[run_end])
    t = float(min(1.0, (lo + hi) / 2))
    q = (0.0, 0.01, 0.05, 0.5)
    return {
        "threshold": round(t, 6),
        "best_range": [lo, hi],
        "rule": f"min(missed copies + {w:g} x merged distinct neighbours), middle of the best range",
        "samples": int(len(c)),
        "copy_similarity": {f"q{int(p * 100):02d}": float(np.quantile(c, p)) for p in q},
        "neighbour_similarity": {f"q{int(p * 100):02d}": float(np.quantile(nb, p)) for p in (0.5, 0.95, 0.99, 1.0)},
        "neighbours_taken_as_copies": int(len(nb) - len(distinct)),
        "expected_missed": float((c < t).mean()),
        "expected_merged": float((distinct >= t).sum() / len(nb)),
        "separated": bool(np.quantile(c, 0.01) > (distinct.max() if len(distinct) else -1.0)),
    }
