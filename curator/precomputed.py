"""Precomputed embeddings and predicted probabilities, read from a file and checked (no database).

A team that already ran its model brings the outputs instead of the model:

* ``.npy``: the (n, d) array, with ``ids=`` a second file naming each row's sample: a ``.npy``
  of integer sample ids, or a text file of sample ids or URIs, one a line;
* ``.npz``: arrays ``embeddings`` (or ``probs``) and ``ids`` (sample ids) or ``uris``;
* ``.parquet`` (needs pyarrow): a column ``id`` or ``uri`` and a list column ``embedding``
  (or ``probs``);
* ``fiftyone:DATASET.FIELD`` (needs fiftyone): a vector field of a FiftyOne dataset, its samples
  matched by file path (read in ``curator.embeddings``: the core never imports fiftyone).

``read`` returns the rows' keys (sample ids or URIs) and the float array, every value checked
here: 2-D, numeric, finite, at least one row, keys as many as rows. Matching the keys to a
dataset's samples (no missing, extra or duplicate ones) is ``match``; storing is
``curator.embeddings.import_embeddings`` / ``import_predictions``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from curator.exceptions import MissingExtraError, ValidationError

__all__ = ["read", "match", "check_array", "check_probs", "FORMATS", "probs_files", "write_probs", "probs_of"]

FORMATS = ".npy (with --ids), .npz, .parquet, fiftyone:DATASET.FIELD"
_ARRAY = {"embeddings": ("embeddings", "embedding"), "probs": ("probs", "probabilities")}


def read(source: str, what: str = "embeddings", ids=None) -> tuple[np.ndarray | list[str], np.ndarray]:
    """(keys, float64 array (n, d)) of ``source``; ``what`` is "embeddings" or "probs"."""
    source = str(source)
    if source.startswith("fiftyone:"):  # read in curator.embeddings (the core never imports fiftyone)
        raise ValidationError(f"--from {source}: a FiftyOne field is read by curator.embeddings.import_embeddings")
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise ValidationError(f"--from {source}: no such file; give a {FORMATS} file")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            X = _load_npy(path)
            if ids is None:
                raise ValidationError(f"--from {source}: a .npy file holds no sample ids; pass --ids FILE (a .npy of "
                                      "sample ids, or a text file of sample ids or URIs, one a line), or use .npz")
            keys = _read_ids(Path(ids).expanduser())
        elif suffix == ".npz":
            keys, X = _read_npz(path, what)
        elif suffix == ".parquet":
            keys, X = _read_parquet(path, what)
        else:
            raise ValidationError(f"--from {source}: unknown format {suffix or '(no suffix)'}; give a {FORMATS} file")
        if ids is not None and suffix != ".npy":
            raise ValidationError(f"--from {source}: --ids goes with a .npy file only (this file names its samples)")
    return keys, check_array(X, source, what, len(keys))


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise ValidationError(f"{path} holds Python objects (pickled), which curator does not load; save a "
                                  "numeric array with np.save") from None
        raise ValidationError(f"{path} is not a readable .npy file ({exc}); save it again with np.save") from None
    except OSError as exc:
        raise ValidationError(f"{path} is not a readable .npy file ({exc}); save it again with np.save") from None


def _read_ids(path: Path):
    """Sample ids (integers) or URIs of a ``--ids`` file: a .npy of integers or text, one a line."""
    if not path.is_file():
        raise ValidationError(f"--ids {path}: no such file; give a .npy of sample ids or a text file, one a line")
    if path.suffix.lower() == ".npy":
        keys = _load_npy(path)
        return _keys(keys, str(path))
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    lines = [ln for ln in lines if ln]
    if lines and all(ln.isdigit() for ln in lines):
        return np.array([int(ln) for ln in lines], dtype=np.int64)
    return lines


def _keys(values, where: str):
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValidationError(f"{where}: the ids must be one column (1-D); got shape {arr.shape}")
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind in "UO" and all(isinstance(v, str) for v in arr.tolist()):
        return [str(v) for v in arr.tolist()]
    raise ValidationError(f"{where}: ids must be integer sample ids or URI strings; got {arr.dtype}")


def _read_npz(path: Path, what: str):
    try:
        z = np.load(path, allow_pickle=False)
        names = set(z.files)
    except Exception as exc:
        raise ValidationError(f"{path} is not a readable .npz file ({type(exc).__name__}); save it with "
                              "np.savez(path, embeddings=E, ids=ids)") from None
    array = next((n for n in _ARRAY[what] if n in names), None)
    key = "ids" if "ids" in names else "uris" if "uris" in names else None
    if array is None or key is None:
        raise ValidationError(f"{path} has arrays {sorted(names)}; it needs {_ARRAY[what][0]!r} and 'ids' (sample ids) "
                              f"or 'uris': np.savez(path, {_ARRAY[what][0]}=X, ids=ids)")
    try:
        return _keys(z[key], f"{path}[{key}]"), z[array]
    except ValueError as exc:
        raise ValidationError(f"{path}: an array holds Python objects ({exc}); store numbers and strings only") \
            from None


def _read_parquet(path: Path, what: str):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingExtraError("pyarrow", "parquet") from None
    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise ValidationError(f"{path} is not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    cols = set(table.column_names)
    array = next((n for n in ("embedding", "embeddings") if n in cols), None) if what == "embeddings" \
        else next((n for n in _ARRAY["probs"] if n in cols), None)
    key = "id" if "id" in cols else "uri" if "uri" in cols else None
    if array is None or key is None:
        want = "'embedding'" if what == "embeddings" else "'probs'"
        raise ValidationError(f"{path} has columns {sorted(cols)}; it needs 'id' (sample id) or 'uri', and a list "
                              f"column {want}")
    rows = table.column(array).to_pylist()
    widths = {len(r) if r is not None else -1 for r in rows}
    if -1 in widths or len(widths) > 1:
        raise ValidationError(f"{path}: column {array!r} has rows of different lengths or empty rows "
                              f"({sorted(widths)[:4]}); every row needs the same number of values")
    try:
        X = np.array(rows, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValidationError(f"{path}: column {array!r} holds non-numbers; store lists of floats") from None
    return _keys(np.array(table.column(key).to_pylist()), f"{path}[{key}]"), X


def check_array(X, source: str, what: str, n_keys: int) -> np.ndarray:
    X = np.asarray(X)
    if X.dtype.kind not in "fiu" or X.dtype == bool:
        raise ValidationError(f"--from {source}: the {what} are {X.dtype}, not numbers; store floats")
    if X.ndim != 2 or X.shape[1] < 1:
        raise ValidationError(f"--from {source}: the {what} must be 2-D (samples, values); got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValidationError(f"--from {source}: no rows; it holds no {what}")
    if X.shape[0] != n_keys:
        raise ValidationError(f"--from {source}: {X.shape[0]} rows of {what} but {n_keys} ids; give one id per row")
    X = X.astype(np.float64)
    bad = ~np.isfinite(X).all(1)
    if bad.any():
        raise ValidationError(f"--from {source}: {int(bad.sum())} rows of {what} hold NaN or infinite values "
                              f"(e.g. row {int(np.flatnonzero(bad)[0])}); fix or drop them")
    return X


def match(keys, sample_ids: np.ndarray, uris: list[str], source: str) -> np.ndarray:
    """Row of ``keys`` for each of the dataset's samples (``sample_ids``, ``uris``, in id order).

    Every sample must have exactly one row: a duplicate, an unknown (extra) or a missing key is a
    ValidationError naming how many and an example. URIs match as stored, or as resolved paths.
    """
    sample_ids = np.asarray(sample_ids, dtype=np.int64)
    if isinstance(keys, np.ndarray):
        keys = keys.tolist()
        index = {int(i): k for k, i in enumerate(sample_ids.tolist())}
        kind = "sample id"
    else:
        index = {}
        for k, u in enumerate(uris):
            index[str(u)] = k
            if "://" not in str(u):
                index.setdefault(str(Path(u).resolve()), k)
        keys = [k if k in index or "://" in k else str(Path(k).resolve()) for k in keys]
        kind = "URI"
    seen: dict = {}
    dup = [k for k in keys if k in seen or seen.setdefault(k, True) is None]
    if dup:
        raise ValidationError(f"--from {source}: {len(dup)} duplicate {kind}s (e.g. {dup[0]!r}); give one row per "
                              "sample")
    unknown = [k for k in keys if k not in index]
    if unknown:
        raise ValidationError(f"--from {source}: {len(unknown)} {kind}s are not samples of the dataset (e.g. "
                              f"{unknown[0]!r}); drop those rows or ingest the samples first")
    rows = np.full(len(sample_ids), -1, dtype=np.int64)
    for r, k in enumerate(keys):
        rows[index[k]] = r
    if (rows < 0).any():
        miss = int(sample_ids[rows < 0][0])
        raise ValidationError(f"--from {source}: {int((rows < 0).sum())} samples of the dataset have no row (e.g. "
                              f"sample {miss}); give a row for every sample")
    return rows


def check_probs(P: np.ndarray, classes: list[str], source: str, atol: float = 1e-3) -> np.ndarray:
    """Predicted probabilities: one column per class of the dataset, non-negative, rows summing to 1."""
    if not classes:
        raise ValidationError(f"--from {source}: the dataset has no class list yet to match the probability "
                              "columns against; declare its classes first")
    if P.shape[1] != len(classes):
        raise ValidationError(f"--from {source}: {P.shape[1]} probability columns but the dataset has "
                              f"{len(classes)} classes ({', '.join(classes[:10])}); one column per class, in that order")
    if (P < -atol).any():
        raise ValidationError(f"--from {source}: negative probabilities (e.g. row {int(np.flatnonzero((P < -atol).any(1))[0])}); "
                              "give softmax outputs, not logits")
    sums = P.sum(1)
    off = np.abs(sums - 1) > atol
    if off.any():
        r = int(np.flatnonzero(off)[0])
        raise ValidationError(f"--from {source}: {int(off.sum())} rows do not sum to 1 (row {r} sums to "
                              f"{sums[r]:.4f}); give softmax outputs, not logits")
    return np.clip(P, 0, None) / np.clip(P, 0, None).sum(1, keepdims=True)


# -- imported probabilities, kept for selection -------------------------------------------------
#
# The scores ``curator score --from`` stores are one number a kind; a policy ranks on the whole
# probability matrix (entropy, margin, ...), so the matrix is kept too: two files beside the
# embedding sets (not an embedding set: probabilities are not a space to measure distances in),
# named by dataset and model row, written whole (temporary name, then moved) in the step that
# records the model row.


def probs_files(dataset_id: int, model_id: int) -> tuple[str, str]:
    """File names of the (n, classes) float32 matrix and its int64 sample ids."""
    return f"probs-{dataset_id}-{model_id}.f32", f"probs-{dataset_id}-{model_id}.ids.i64"


def write_probs(root, dataset_id: int, model_id: int, tmp_probs: Path, tmp_ids: Path) -> None:
    """Move matrix and ids written under temporary names into place (the import's write step)."""
    import os

    vec, ids = probs_files(dataset_id, model_id)
    os.replace(tmp_probs, Path(root) / vec)
    os.replace(tmp_ids, Path(root) / ids)


def probs_of(root, dataset_id: int, model_id: int, sample_ids, n_classes: int, name: str = "") -> np.ndarray:
    """The imported probabilities of ``sample_ids``, row for row (float32); a clear error when the
    files are gone or lack some of the samples (added after the import)."""
    from curator.exceptions import NotFoundError

    vec, ids_name = probs_files(dataset_id, model_id)
    root = Path(root)
    if not (root / vec).is_file() or not (root / ids_name).is_file():
        raise NotFoundError(f"the probabilities of imported predictions {name or model_id!r} are not stored (imported "
                            "before they were kept); import them again: curator score --from FILE --name NAME")
    stored = np.fromfile(root / ids_name, dtype=np.int64)
    P = np.fromfile(root / vec, dtype=np.float32).reshape(len(stored), int(n_classes))
    want = np.asarray(sample_ids, dtype=np.int64).ravel()
    pos = {int(i): k for k, i in enumerate(stored.tolist())}
    rows = [pos.get(int(i), -1) for i in want.tolist()]
    if min(rows, default=0) < 0:
        miss = [int(i) for i, r in zip(want.tolist(), rows) if r < 0]
        raise ValidationError(f"imported predictions {name or model_id!r} lack {len(miss)} pool samples (e.g. sample "
                              f"{miss[0]}) added after the import; import predictions for every sample again")
    return P[np.asarray(rows, dtype=np.int64)]
