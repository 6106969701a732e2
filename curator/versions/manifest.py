"""A version as a JSON manifest (URI, sha256, label per member), and back.

Why its own module: a manifest leaves the database, so it carries its own
proof: ``checksum`` over its items' labels (``labels.checksum_of``, the same
value the version has) and ``seal`` over every field (``manifest_seal``).
``import_manifest`` checks the whole manifest (shape, checksum, seal) and
hashes any files not yet ingested before it writes, then writes samples and
the version in one transaction that stores nothing if it fails.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from curator.exceptions import NotFoundError, StoreError, ValidationError
from curator.names import dataset_name, version_name
from curator.store import versions as store
from curator.store.versions import VersionInfo
from curator.versions.exports import _check_out, _write_atomic
from curator.versions.labels import checksum_of
from curator.versions.workflow import _tx, create, members

MANIFEST_FORMAT = "curator-version-manifest/1"


def export_manifest(name: str, path: str | Path | None = None, *, dataset: str | None = None,
                    settings=None) -> dict:
    """A JSON manifest (sample URI, sha256, label per member); written to ``path`` if given.

    ``checksum`` covers the labels of its items, ``seal`` (``manifest_seal``) every
    field; ``import_manifest`` refuses a manifest that no longer matches either.
    """
    if path is not None:
        _check_out(Path(path))
    with _tx(settings) as s:
        info_, items, classes = members(s, name, dataset)
    doc = {
        "format": MANIFEST_FORMAT,
        "dataset": info_.dataset,
        "version": info_.name,
        "message": info_.message,
        "parent": info_.parent,
        "checksum": info_.checksum,
        "size": info_.size,
        "classes": classes,
        "counts": info_.counts,
        "lineage": info_.lineage,
        "items": [{"uri": m.uri, "sha256": m.sha256, "label": m.label} for m in items],
    }
    doc["seal"] = manifest_seal(doc)
    if path is not None:
        data = json.dumps(doc, indent=1).encode()
        _write_atomic(Path(path), lambda fh: fh.write(data))
    return doc


def manifest_seal(doc: dict) -> str:
    """sha256 over every field of a manifest but ``seal`` (canonical JSON), so an edited
    name, dataset, parent, count or item is seen even where the checksum still matches."""
    body = {k: v for k, v in doc.items() if k != "seal"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()).hexdigest()


_HEX = frozenset("0123456789abcdef")


def _read_manifest(path: Path) -> dict:
    """The manifest at ``path``, its shape checked item by item (nothing is written yet)."""
    try:
        doc = json.loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise ValidationError(f"manifest {path} does not exist; check the path") from None
    except IsADirectoryError:
        raise ValidationError(f"manifest {path} is a folder; give the .json file written by version export") from None
    except PermissionError:
        raise ValidationError(f"manifest {path} cannot be read: permission denied; check its permissions") from None
    except (OSError, ValueError) as exc:
        raise ValidationError(f"manifest {path} is not readable JSON ({_short(exc)}); it is damaged or not a manifest") from None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT or not isinstance(doc.get("items"), list):
        raise ValidationError(
            f"manifest {path} is not a curator version manifest (expected format {MANIFEST_FORMAT!r} "
            "with an items list); write one with: curator version export NAME --format manifest"
        )
    for key in ("dataset", "version", "message", "checksum", "seal"):
        if doc.get(key) is not None and not isinstance(doc[key], str):
            raise ValidationError(f"manifest {path}: {key!r} must be a string; got {doc[key]!r}")
    if not doc["items"]:
        raise ValidationError(f"manifest {path} lists no items; a version cannot be empty")
    uris = set()
    for i, item in enumerate(doc["items"]):
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("uri", "sha256", "label")):
            raise ValidationError(f"manifest {path}: item {i} needs string uri, sha256 and label; got {_short(item)}")
        if len(item["sha256"]) != 64 or not _HEX.issuperset(item["sha256"]):
            raise ValidationError(f"manifest {path}: item {i} has sha256 {_short(item['sha256'])}, not 64 hex digits")
        if not item["uri"] or item["uri"] in uris:
            raise ValidationError(f"manifest {path}: item {i} has an empty or repeated uri {_short(item['uri'])}")
        uris.add(item["uri"])
    return doc


def _short(value, n: int = 60) -> str:
    text = repr(value) if not isinstance(value, BaseException) else str(value)
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _check_manifest(doc: dict, path: Path, allow_unverified: bool) -> bool:
    """Whether the manifest verifies (its checksum over its items and its seal over every field);
    refuses one that does not, unless ``allow_unverified``."""
    again = "re-export it (curator version export NAME --format manifest)"
    unverified = "or pass --allow-unverified (allow_unverified=True) to import it as it is"
    checksum, seal = doc.get("checksum"), doc.get("seal")
    if checksum is None or seal is None:
        if allow_unverified:
            return False
        missing = " and ".join(k for k, v in (("checksum", checksum), ("seal", seal)) if v is None)
        raise ValidationError(f"manifest {path} has no {missing}, so it cannot be verified; {again} {unverified}")
    computed = checksum_of((item["sha256"], item["label"]) for item in doc["items"])
    problem = None
    if computed != checksum:
        problem = f"its items give checksum {computed[:12]}... but it states {checksum[:12]}... (labels or files edited)"
    elif manifest_seal(doc) != seal:
        problem = "its fields no longer match its seal (name, dataset, parent, counts or items edited)"
    if problem is None:
        return True
    if allow_unverified:
        return False
    raise ValidationError(f"manifest {path} was changed since it was exported: {problem}; nothing was imported; {again} {unverified}")


def import_manifest(path: str | Path, *, dataset: str | None = None, name: str | None = None,
                    message: str | None = None, allow_unverified: bool = False, settings=None) -> VersionInfo:
    """Re-create a version from a manifest, in one transaction that stores nothing if it fails.

    The manifest is checked whole before anything is written: its shape, its
    checksum (over the items' sha256 and labels) and its seal (over every
    field); a manifest missing either, or not matching, is refused unless
    ``allow_unverified``. Samples are found by URI in the target dataset
    (default: the manifest's); files not yet ingested are read and their hashes
    checked against the manifest, then samples, dataset and version are written
    together.
    """
    from curator.ingest._common import IngestReport, write_records
    from curator.ingest.folder import read_record
    from curator.settings import load_settings

    settings = settings or load_settings()
    path = Path(path)
    doc = _read_manifest(path)
    verified = _check_manifest(doc, path, allow_unverified)
    if not (dataset or doc.get("dataset")):
        raise ValidationError(f"manifest {path} names no dataset; pass --dataset NAME")
    dataset = dataset_name(dataset or doc["dataset"])
    name = version_name(name or doc.get("version") or path.stem)
    with _tx(settings) as s:  # read only: which samples the dataset has already
        known = store.samples_by_uri(s, store.find_dataset(s, dataset))
    records, uri_of = [], {}
    for item in doc["items"]:  # hashing files is slow: done before the write transaction
        if item["uri"] in known:
            uri_of[item["uri"]] = item["uri"]
            continue
        p = Path(item["uri"])
        if not p.is_file():
            raise ValidationError(
                f"manifest {path}: sample {item['uri']} is neither in dataset {dataset!r} nor on disk; "
                "restore the file or import into the dataset that holds it (--dataset)"
            )
        record = read_record(p, p.parent, None, class_folders=False)
        if record.sha256 != item["sha256"]:
            raise ValidationError(
                f"manifest {path}: file {item['uri']} has sha256 {record.sha256[:12]}... but the manifest says "
                f"{item['sha256'][:12]}...; the file changed since the export"
            )
        records.append(record)
        uri_of[item["uri"]] = record.uri
    source = f"manifest:{doc.get('version')}" + ("" if verified else " (unverified)")
    with _tx(settings) as s:
        if records:
            write_records(settings, dataset, [records], IngestReport(dataset), total=len(records), session=s)
        ds = store.find_dataset(s, dataset)
        if ds is None:
            raise NotFoundError(f"dataset {dataset!r} does not exist and the manifest brings no new files to create it")
        by_uri = store.samples_by_uri(s, ds)
        labels: dict[int, str] = {}
        for item in doc["items"]:
            sid, sha = by_uri[uri_of[item["uri"]]]
            if sha != item["sha256"]:
                raise ValidationError(
                    f"manifest {path}: {item['uri']} has sha256 {sha[:12]}... in the dataset but "
                    f"{item['sha256'][:12]}... in the manifest; the file changed since the export"
                )
            labels[sid] = item["label"]
        created = create(s, name, dataset=dataset, message=message or doc.get("message"),
                         labels=labels, source=source)
        if verified and created.checksum != doc["checksum"]:  # cannot happen after the checks above: a guard
            raise StoreError(f"manifest {path}: imported checksum {created.checksum} differs from the manifest's; "
                             "nothing was imported")
        return created


