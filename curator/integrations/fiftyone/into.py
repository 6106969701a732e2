"""Write curator's fields into the user's OWN FiftyOne dataset (``curator fiftyone sync --into``).

``sync`` builds a FiftyOne dataset of curator's own; a team that already reviews its data in a
FiftyOne dataset of its own wants curator's state next to its fields, not in a second copy. Here:

* every curator sample is matched to one sample of the user's dataset by its file path (resolved),
  or by a field the user names (``match=FIELD``: its values are the file paths curator ingested, or
  curator sample ids when the field holds integers); a curator sample with no match, or with two,
  is an error naming it, and nothing is written;
* only curator's namespaced fields are added or updated (``curator_*``: scores, prediction, round,
  rank, duplicate group, human label, version); a field of the user's, whatever its name, is never
  written: a ``curator_*`` field that curator did not write there first is an error too;
* only values that differ are written, so a second run changes nothing (idempotent); samples of the
  user's that curator does not hold are left as they are;
* the fields curator wrote are listed in ``info["curator_fields"]``, with ``complete: False`` while a
  write is under way (FiftyOne has no transaction), so an interrupted run is seen and the next one
  completes it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from pathlib import Path

from curator.exceptions import FiftyOneError, ValidationError

INFO_KEY = "curator_fields"
#: sync's un-prefixed fields, renamed into curator's namespace (the user's own may bear those names).
RENAME = {"prediction": "curator_prediction", "human_label": "curator_human_label",
          "version_label": "curator_version_label"}
#: sync's fields that are not curator's to write into a user's dataset (the user's own ground truth).
LEAVE = ("ground_truth",)


@dataclasses.dataclass
class IntoReport:
    fo_dataset: str
    dataset: str
    match: str
    matched: int = 0
    not_in_curator: int = 0  # samples of the user's dataset curator does not hold: untouched
    fields: list[str] = dataclasses.field(default_factory=list)
    changed: dict[str, int] = dataclasses.field(default_factory=dict)  # field -> values written
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    repaired: bool = False
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _key(value):
    """A match key: an int stays an id, anything else is a path, resolved."""
    if value is None:
        return None
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return int(value)
    return str(Path(str(value)).expanduser().resolve())


def sync_into(settings, dataset: str, fo_dataset: str, *, match: str = "filepath",
              duplicates: bool = True) -> IntoReport:
    """Add or update curator's ``curator_*`` fields on the samples of the user's FiftyOne dataset
    ``fo_dataset`` that hold the samples of curator ``dataset``. Everything is read and matched
    before the first write."""
    from curator.integrations.fiftyone._fo import fiftyone, load_fo_dataset
    from curator.integrations.fiftyone.sync import collect, _declare_type, _normal, _value
    from curator.names import dataset_name

    dataset = dataset_name(dataset)
    start = time.perf_counter()
    fo = fiftyone()
    ds = load_fo_dataset(fo_dataset)
    schema = ds.get_field_schema()
    if match != "filepath" and match not in schema:
        raise ValidationError(
            f"--match {match!r}: FiftyOne dataset {fo_dataset!r} has no such field (fields: "
            f"{', '.join(sorted(schema))}); name the field that holds the file paths curator ingested")
    cols = collect(settings, dataset, duplicates=duplicates)

    fields = {}
    for field, kind in cols.types.items():
        if field in LEAVE:
            continue
        fields[RENAME.get(field, field)] = (kind, cols.values[field])
    info = dict(ds.info.get(INFO_KEY) or {})
    ours = set(info.get("fields", []))
    if info and info.get("dataset") not in (None, dataset):
        raise FiftyOneError(
            f"FiftyOne dataset {fo_dataset!r} holds the fields of curator dataset {info.get('dataset')!r}, "
            f"not {dataset!r}; write {dataset!r} into another dataset")
    theirs = sorted(f for f in fields if f in schema and f not in ours)
    if theirs:
        raise FiftyOneError(
            f"FiftyOne dataset {fo_dataset!r} already has field(s) {', '.join(theirs)} that curator did not "
            "write; rename them in FiftyOne (curator never overwrites a field of yours)")

    # match: every curator sample to exactly one sample of the user's
    fo_ids, keys = ds.values(["id", match]) if len(ds) else ([], [])
    where: dict = {}
    twice = None
    for fid, key in zip(fo_ids, keys):
        k = _key(key)
        if k is None:
            continue
        if k in where:
            twice = twice or k
        where[k] = fid
    ints = any(isinstance(k, int) for k in where)
    want = [int(i) for i in cols.ids.tolist()] if ints else [_key(u) for u in cols.uris]
    at = [where.get(k) for k in want]
    lost = [cols.uris[j] for j, fid in enumerate(at) if fid is None]
    if lost:
        how = "curator sample id" if ints else "file path"
        raise ValidationError(
            f"{len(lost)} of {len(want)} curator sample(s) of {dataset!r} have no sample in FiftyOne dataset "
            f"{fo_dataset!r} with that {how} in field {match!r}, e.g. {lost[0]}; add them to it, or name the "
            "field that holds curator's file paths: --match FIELD")
    if twice is not None and twice in set(want):
        raise ValidationError(
            f"two samples of FiftyOne dataset {fo_dataset!r} have {match} = {twice}; a match must be one "
            "sample: name a field that is unique with --match FIELD")

    report = IntoReport(fo_dataset=fo_dataset, dataset=dataset, match=match, matched=len(at),
                        not_in_curator=len(fo_ids) - len(set(at)), fields=sorted(fields),
                        skipped=dict(cols.skipped))
    report.repaired = info.get("complete") is False
    ds.info[INFO_KEY] = {**info, "dataset": dataset, "fields": sorted(ours | set(fields)), "complete": False}
    ds.save()
    schema = ds.get_field_schema()
    for field, (kind, _) in fields.items():
        _declare_type(fo, ds, schema, field, kind)
    for gone in sorted(ours - set(fields)):  # written by an earlier run, no longer curator's state
        if gone in schema:
            ds.delete_sample_field(gone)
    pos = {fid: k for k, fid in enumerate(fo_ids)}
    for field, (kind, values) in fields.items():
        if kind == "classification":
            have = [None if lab is None else (lab, conf) for lab, conf in
                    zip(ds.values(f"{field}.label"), ds.values(f"{field}.confidence"))]
        else:
            have = ds.values(field)
        changed = {}
        for j, fid in enumerate(at):
            w = _normal(kind, values[j])
            if w != have[pos[fid]]:
                changed[fid] = _value(fo, kind, w)
        if changed:
            ds.set_values(field, changed, key_field="id", progress=False)
        report.changed[field] = len(changed)
    ds.info[INFO_KEY] = {"dataset": dataset, "fields": sorted(fields), "match": match, "complete": True,
                         "synced_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    ds.save()
    report.seconds = round(time.perf_counter() - start, 3)
    return report
