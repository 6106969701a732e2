"""Versioned labeled sets: immutable versions with lineage, diffs and exports.

A version freezes the agreed labels of a dataset (``store.annotations.agreed_labels``,
optionally filtered by split or rounds) under a name. It records its parent,
the rounds, policies and models behind its samples, counts per class and a
checksum over the sorted ``(sample sha256, label)`` pairs (see ``checksum_of``),
so a model trained on it can be traced to exactly what it saw.

Storage is compact: each version stores only its changes against its parent
(added, relabeled, removed samples), and a full snapshot when reading through
the chain of changes would cost more than twice the size of the set; so k
changed labels add O(k) bytes and a read walks at most ~2x the set. Labels
are stored as zlib-compressed arrays (sorted sample ids as gaps, codes into a
small vocabulary; ``LabelVersionBlob``), not one row per label. Nothing
rewrites a version: there is no update function, and triggers (migrations
0002, 0004, 0006) make the database refuse UPDATE and DELETE on version
tables, anything added to a version once it is sealed, an INSERT (or SQLite's
REPLACE, or an upsert) over an existing version, seal or blob, and renaming
or deleting a dataset that has versions. What the database cannot refuse
(someone who drops the triggers), ``verify`` detects through the version's
seal (``seal_digest``).

One module per concern, and the database only through ``curator.store.versions``:

- ``labels``: labeled sets as arrays, deltas, codec, checksum (pure: no database);
- ``seal``: the identity digest written last and checked by ``verify``;
- ``workflow``: create / read / diff / verify / list / show, in the caller's
  transaction or in one of their own (``create_version``, ``read_version``...);
- ``manifest``: ``export_manifest`` / ``import_manifest`` (same checksum back);
- ``exports``: ``export_numpy``, ``torch_dataset`` / ``export_torch``,
  ``export_imagefolder``, ``export_table`` (CSV, JSONL), ``export_hf`` (Hugging
  Face ``datasets``), and the atomic writers.

A FiftyOne dataset of a version comes from the FiftyOne integration,
``curator.integrations.fiftyone.sync(settings, dataset, version=NAME)``
(``curator version export NAME --format fiftyone``).

Names load on first use (as in ``curator``), so ``import curator.versions.labels``
costs no SQLAlchemy.
"""

from __future__ import annotations

import importlib

#: name -> submodule that defines it, imported on first access.
_WHERE = {
    # results and records
    "VersionInfo": "curator.store.versions",
    "LabeledSet": "workflow", "VersionDiff": "workflow", "VerifyReport": "workflow", "Member": "workflow",
    # public workflow API (one transaction each)
    "LATEST": "workflow", "create_version": "workflow", "list_versions": "workflow",
    "show_version": "workflow", "read_version": "workflow", "diff_versions": "workflow",
    "verify_version": "workflow", "check_name": "workflow",
    # session-level API (the caller's transaction: the loop, FiftyOne)
    "create": "workflow", "versions_of": "workflow", "info": "workflow", "read": "workflow",
    "diff": "workflow", "verify": "workflow", "members": "workflow",
    # labeled sets as arrays, checksum
    "checksum_of": "labels", "CHUNK": "labels",
    "_Labels": "labels", "_apply": "labels", "_compare": "labels", "_delta_of": "labels",
    "_encode": "labels", "_decode": "labels", "_checksum": "labels",
    # seals
    "SEAL_FORMAT": "seal", "SEALED_COLUMNS": "seal", "seal_digest": "seal", "seal_existing": "seal",
    # manifests
    "MANIFEST_FORMAT": "manifest", "export_manifest": "manifest", "import_manifest": "manifest",
    "manifest_seal": "manifest",
    # files
    "export_numpy": "exports", "export_torch": "exports", "torch_dataset": "exports",
    "export_imagefolder": "exports", "export_table": "exports", "export_hf": "exports",
    "_write_atomic": "exports", "_check_out": "exports",
}

__all__ = [n for n in _WHERE if not n.startswith("_")]


def __getattr__(name: str):
    try:
        module = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module 'curator.versions' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module if "." in module else f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
