"""Sync curator's state into a FiftyOne dataset, for review in the App.

One FiftyOne sample per curator sample (same file path), keyed by the
``curator_id`` field, so running the sync again updates every field in
place and never adds a second copy. What a reviewer sees:

==========================  ===============================================
field                       from
==========================  ===============================================
``curator_id``              the curator sample id (the sync key)
``curator_split``           the split given at ingest
``ground_truth``            benchmark ground truth (``Sample.gt_label``)
``curator_<kind>``          latest score of each kind (entropy, margin,
                            least_confidence, bald, novelty, ...)
``curator_round``,          the latest round that selected the sample, its
``curator_rank``,           rank there (0 = label first) and acquisition
``curator_round_score``     score
``curator_dup_group``,      near-duplicate group (id of its representative),
``curator_is_representative``  as ``curator dedup`` finds them (cold-start
                            embedding, stored once in the embedding store),
                            and whether this sample is the one kept
``prediction``              model prediction, a ``Classification`` with
                            confidence (score kinds ``prediction`` =
                            class index, ``confidence``)
``human_label``             agreed human label (``confidence`` = agreement)
``curator_annotations``     number of live annotations behind it (one per
                            labeler: the number of annotators)
``curator_agreement``,      share of those annotators who gave the agreed
``curator_disagreement``    label; True when 2+ answered and not all agreed
``curator_version``,        the newest version holding the sample, and its
``version_label``           label there
==========================  ===============================================

Saved views: ``next-batch`` (latest round in rank order), ``duplicate-groups``,
``most-uncertain`` (unlabeled, by the first uncertainty score present) and
``disagreements`` (prediction differs from the human label) and
``labeler-disagreements`` (labelers disagree, least agreement first; only
when there is one).

Brain runs ``curator_similarity`` (sort by similarity) and
``curator_visualization`` (2-D map) use the newest stored embeddings of a
trained model, else the cold-start ones; they are recomputed only when the
embeddings or the samples changed.

Nothing is half-synced: everything is read and checked before the first
write to FiftyOne; a new FiftyOne dataset is built under a temporary name and
renamed only when complete (the temporary one is deleted on failure). An
existing one is updated in place (FiftyOne has no transaction over a dataset),
so it is marked ``info["curator"]["complete"] = False`` while that runs; a sync
killed midway leaves the mark, and the next sync, which rewrites every value
that differs, completes it and says so (``SyncReport.repaired``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from curator.exceptions import FiftyOneError, ValidationError

#: Score kinds whose "most uncertain" view is built, in order of preference.
UNCERTAINTY_KINDS = ("entropy", "bald", "margin", "least_confidence", "variation_ratio")
#: Score kinds that carry the model's prediction rather than a score.
PREDICTION_KINDS = ("prediction", "confidence")
INFO_KEY = "curator"
VIEWS = ("next-batch", "duplicate-groups", "most-uncertain", "disagreements", "labeler-disagreements")
SIMILARITY_KEY = "curator_similarity"
VISUALIZATION_KEY = "curator_visualization"


@dataclasses.dataclass
class SyncReport:
    fo_dataset: str
    dataset: str
    scope: str
    samples: int = 0
    added: int = 0
    removed: int = 0
    fields: list[str] = dataclasses.field(default_factory=list)
    views: list[str] = dataclasses.field(default_factory=list)
    similarity: str | None = None
    visualization: str | None = None
    embeddings: str | None = None
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    repaired: bool = False  # the previous sync into this dataset was interrupted; this one completed it

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Columns:
    """Everything a sync writes, read from the store before any write.

    ``values[field]`` is aligned with ``ids``; ``types[field]`` is one of
    int, float, str, bool, classification.
    """

    dataset: str
    scope: dict[str, Any]
    ids: np.ndarray
    uris: list[str]
    values: dict[str, list] = dataclasses.field(default_factory=dict)
    types: dict[str, str] = dataclasses.field(default_factory=dict)
    classes: list[str] = dataclasses.field(default_factory=list)
    latest_round: int | None = None
    embeddings: np.ndarray | None = None  # aligned with ids
    embedding_source: str | None = None  # the model that made them
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)

    def put(self, field: str, kind: str, by_id: dict[int, Any]) -> None:
        self.values[field] = [by_id.get(int(i)) for i in self.ids]
        self.types[field] = kind


def default_name(dataset: str, round: int | None = None, version: str | None = None) -> str:
    if round is not None:
        return f"curator-{dataset}-round-{round}"
    if version is not None:
        return f"curator-{dataset}-{version}"
    return f"curator-{dataset}"


def field_of(kind: str) -> str:
    """FiftyOne field of a score kind: ``least_confidence`` -> ``curator_least_confidence``."""
    return "curator_" + re.sub(r"[^0-9a-zA-Z_]+", "_", kind).strip("_").lower()


# --------------------------------------------------------------------- read


def collect(
    settings, dataset: str, round: int | None = None, version: str | None = None, *, duplicates: bool = True
) -> Columns:
    """Read and check everything to write: the store's state in one read transaction,
    then near-duplicate groups and the embeddings for Brain."""
    from curator.store.session import transaction

    if round is not None and version is not None:
        raise ValidationError("pass a round or a version to sync, not both")
    with transaction(settings) as s:
        cols, all_rows, labeled = _collect(s, settings, dataset, round, version)
    cold = _coldstart(settings, dataset, all_rows) if duplicates else None
    _put_duplicates(cols, all_rows, labeled, cold)
    with transaction(settings) as s:
        _put_embeddings(s, settings, cols, all_rows, cold)
    return cols


def _collect(s, settings, dataset: str, round: int | None, version: str | None):
    from curator.store import annotations as store
    from curator.store import queries
    from curator.store import rounds as store_rounds

    ds_id = queries.dataset_id(s, dataset)
    classes = list(store.dataset_info(s, ds_id).classes)
    rows = store.sample_rows(s, ds_id)
    all_rows = rows
    if not rows:
        raise ValidationError(f"dataset {dataset!r} holds no samples; ingest some first: curator ingest PATH --dataset {dataset}")
    members: dict[int, str] | None = None
    scope: dict[str, Any] = {"dataset": dataset}
    if round is not None:
        in_round = set(store_rounds.sample_ids(s, store_rounds.get(s, ds_id, round)).tolist())
        rows = [r for r in rows if r.id in in_round]
        scope["round"] = round
    if version is not None:
        members = version_labels(s, dataset, version)
        rows = [r for r in rows if r.id in members]
        scope["version"] = version
    if not rows:
        raise ValidationError(f"{describe(scope)} holds no samples; nothing to sync")

    ids = np.fromiter((r.id for r in rows), dtype=np.int64, count=len(rows))
    cols = Columns(dataset=dataset, scope=scope, ids=ids, uris=[r.uri for r in rows], classes=classes)
    missing = [r.uri for r in rows if not Path(r.uri).is_file()]
    if missing:
        raise ValidationError(
            f"{len(missing)} image file(s) of {describe(scope)} are missing, e.g. {missing[0]}; "
            "restore them (or re-ingest from the original source) before syncing"
        )
    cols.put("curator_id", "int", {int(i): int(i) for i in ids})
    cols.put("curator_split", "str", {r.id: r.split for r in rows if r.split})
    gt = {r.id: r.gt_label for r in rows if r.gt_label is not None}
    if gt:
        cols.put("ground_truth", "classification", {k: (v, None) for k, v in gt.items()})

    # Scores: the latest row of each kind wins (rows come in id order).
    by_kind = store.latest_scores(s, ds_id)
    for kind in sorted(set(by_kind) - set(PREDICTION_KINDS)):
        cols.put(field_of(kind), "float", {k: float(v) for k, v in by_kind[kind].items()})
    _put_prediction(cols, by_kind, classes)

    # Rounds: the latest round that selected a sample wins.
    numbers, items = store_rounds.all_items(s, ds_id)
    if len(items):
        rnd, rank, rscore = {}, {}, {}
        for number, sid, r, sc in zip(numbers.tolist(), items.sample_id.tolist(), items.rank.tolist(),
                                      items.score.tolist()):
            rnd[sid], rank[sid], rscore[sid] = number, r, sc
        cols.put("curator_round", "int", rnd)
        cols.put("curator_rank", "int", rank)
        cols.put("curator_round_score", "float", {k: v for k, v in rscore.items() if not np.isnan(v)})
        cols.latest_round = round if round is not None else int(numbers.max())
    else:
        cols.skipped["rounds"] = f"no round selected yet; run: curator select --dataset {dataset}"

    agreed = store.agreed_labels(s, ds_id)
    if agreed:
        cols.put("human_label", "classification", {k: (lab, agr) for k, (lab, agr, _) in agreed.items()})
        cols.put("curator_annotations", "int", {k: n for k, (_, _, n) in agreed.items()})
        # labelers' agreement on the sample: the share who gave the agreed label; a disagreement is
        # a sample answered 2+ times not unanimously (the labeler-disagreements view)
        cols.put("curator_agreement", "float", {k: float(agr) for k, (_, agr, _) in agreed.items()})
        cols.put("curator_disagreement", "bool", {k: n >= 2 and agr < 1.0 for k, (_, agr, n) in agreed.items()})
    else:
        cols.skipped["human_label"] = "no annotations yet; pull them from Label Studio first"

    _put_versions(s, cols, members, version)
    return cols, all_rows, set(agreed)


def describe(scope: dict[str, Any]) -> str:
    if "round" in scope:
        return f"round {scope['round']} of dataset {scope['dataset']!r}"
    if "version" in scope:
        return f"version {scope['version']!r} of dataset {scope['dataset']!r}"
    return f"dataset {scope['dataset']!r}"


def _put_prediction(cols: Columns, by_kind: dict[str, dict[int, float]], classes: list[str]) -> None:
    pred = by_kind.get("prediction")
    if not pred:
        cols.skipped["prediction"] = "no stored predictions (score kind 'prediction'); score the pool first"
        return
    conf = by_kind.get("confidence", {})
    out = {}
    for sid, value in pred.items():
        if value is None or not np.isfinite(value):
            continue  # the model's class is not one of the dataset's
        k = int(round(value))
        label = classes[k] if 0 <= k < len(classes) else str(k)
        out[sid] = (label, conf.get(sid))
    cols.put("prediction", "classification", out)


def version_labels(s, dataset: str, version: str) -> dict[int, str]:
    """sample_id -> label of one version (NotFoundError naming the known versions)."""
    from curator import versions

    return versions.read(s, version, dataset).as_dict()


def _put_versions(s, cols: Columns, members: dict[int, str] | None, version: str | None) -> None:
    from curator import versions

    if members is not None:
        cols.put("curator_version", "str", {k: version for k in members})
        cols.put("version_label", "classification", {k: (v, None) for k, v in members.items()})
        return
    names = [v.name for v in versions.versions_of(s, cols.dataset)]
    if not names:
        cols.skipped["versions"] = f"no version created yet; run: curator version create NAME --dataset {cols.dataset}"
        return
    holder, label = {}, {}
    for name in names:  # oldest first: the newest version holding a sample wins
        for sid, lab in version_labels(s, cols.dataset, name).items():
            holder[sid], label[sid] = name, lab
    cols.put("curator_version", "str", holder)
    cols.put("version_label", "classification", {k: (v, None) for k, v in label.items()})


def _put_duplicates(cols: Columns, all_rows, labeled: set[int], cold: np.ndarray | None) -> None:
    """Near-duplicate groups exactly as ``curator dedup`` finds them by default:
    ``curator.find_duplicates`` over the cold-start embedding of the whole dataset
    (the one its threshold was chosen for), with content hashes, labeled samples kept
    first. Without it (``duplicates=False``), the exact copies found at ingest."""
    ids = np.fromiter((r.id for r in all_rows), dtype=np.int64, count=len(all_rows))
    group: dict[int, int] = {}
    if cold is not None:
        from curator.dedup import find_duplicates

        groups = find_duplicates(
            cold,
            hashes=[r.sha256 for r in all_rows],
            labeled=np.fromiter((int(i) in labeled for i in ids.tolist()), dtype=bool, count=len(ids)),
        )
        for g in groups:
            members = ids[np.asarray(g)].tolist()
            for sid in members:
                group[int(sid)] = int(members[0])
    else:
        cols.skipped["near_duplicates"] = "not computed (duplicates=False); exact copies from ingest only"
        for r in all_rows:
            if r.duplicate_of_id is not None:
                group[r.id] = group.setdefault(r.duplicate_of_id, r.duplicate_of_id)
    scope = set(cols.ids.tolist())
    group = {k: v for k, v in group.items() if k in scope}
    cols.put("curator_dup_group", "int", group)
    cols.put("curator_is_representative", "bool", {int(i): group.get(int(i), int(i)) == int(i) for i in cols.ids})


def _coldstart(settings, dataset: str, all_rows) -> np.ndarray:
    """Cold-start embeddings of every sample, in ``all_rows`` order (computed once, stored)."""
    from curator import embeddings
    from curator.store.session import transaction

    info = embeddings.compute_embeddings(settings, dataset, embeddings.ColdStartEmbedder())
    with transaction(settings) as s:
        ids, E = embeddings.load(s, settings, info.dataset_id, info.model_id)
    want = np.fromiter((r.id for r in all_rows), dtype=np.int64, count=len(all_rows))
    if not np.array_equal(ids, want):  # samples added meanwhile: use what was read
        pos = {int(i): k for k, i in enumerate(ids.tolist())}
        return np.asarray(E[[pos[int(i)] for i in want.tolist()]], dtype=np.float32)
    return np.asarray(E, dtype=np.float32)


def _put_embeddings(s, settings, cols: Columns, all_rows, cold: np.ndarray | None) -> None:
    """Embeddings for Brain: the newest complete stored set of a trained model, else cold-start."""
    from curator import coldstart, embeddings
    from curator.store import annotations as store

    ds_id = all_rows[0].dataset_id
    row = store.newest_trained_embeddings(s, ds_id, exclude_model=coldstart.MODEL_NAME)
    if row is not None:
        model_id, name, version = row
        emb_ids, E = embeddings.load(s, settings, ds_id, model_id)
        cols.embedding_source = f"{name}:{version[:12]}"
    elif cold is not None:
        emb_ids, E = np.fromiter((r.id for r in all_rows), dtype=np.int64, count=len(all_rows)), cold
        cols.embedding_source = "coldstart"
    else:
        cols.skipped["similarity"] = f"no embeddings; compute them: curator embed --dataset {cols.dataset}"
        return
    pos = {int(sid): i for i, sid in enumerate(np.asarray(emb_ids).tolist())}
    take = [pos.get(int(i), -1) for i in cols.ids.tolist()]
    if min(take) < 0:
        cols.skipped["similarity"] = "the newest embeddings miss samples added since; run: curator embed"
        cols.embedding_source = None
        return
    cols.embeddings = np.asarray(E[np.asarray(take)], dtype=np.float32)


# -------------------------------------------------------------------- write


def sync(
    settings,
    dataset: str,
    round: int | None = None,
    version: str | None = None,
    fo_name: str | None = None,
    *,
    similarity: bool = True,
    visualization: str | None = "pca",
    duplicates: bool = True,
) -> SyncReport:
    """Create or update the FiftyOne dataset of a curator dataset, round or version.

    ``similarity`` registers the stored embeddings as a Brain similarity index
    and ``visualization`` ("pca", "tsne" or None) computes a 2-D map from
    them (the newest stored embeddings, else the cold-start ones). ``duplicates``
    computes near-duplicate groups (cold-start embedding, as ``curator dedup``);
    without it only exact copies found at ingest are grouped.
    """
    from curator.integrations.fiftyone._fo import fiftyone

    from curator.names import dataset_name, project_title

    dataset = dataset_name(dataset)  # before FiftyOne is touched: a bad name changes nothing
    fo_name = project_title(fo_name) if fo_name is not None else None
    if visualization not in (None, "pca", "tsne"):
        raise ValidationError(f"visualization: {visualization!r} is not one of pca, tsne, None")
    start = time.perf_counter()
    fo = fiftyone()  # a missing extra fails before any work
    name = fo_name or default_name(dataset, round, version)
    ds = fo.load_dataset(name) if fo.dataset_exists(name) else None
    if ds is not None:
        check_owner(ds, name, dataset)
    cols = collect(settings, dataset, round, version, duplicates=duplicates)
    report = SyncReport(fo_dataset=name, dataset=dataset, scope=describe(cols.scope), skipped=dict(cols.skipped))
    if ds is not None:
        # An update in place cannot be one transaction in FiftyOne: mark it as under way, so
        # an interrupted sync is seen (in the App: info.curator.complete) and the next one,
        # which rewrites whatever differs, says it repaired it.
        info = dict(ds.info.get(INFO_KEY) or {})
        report.repaired = info.get("complete") is False
        ds.info[INFO_KEY] = {**info, "complete": False}
        ds.save()
        _fill(ds, cols, report)
        _finish(ds, cols, report, settings, similarity, visualization)
    else:
        tmp = fo.Dataset(f"{name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            _fill(tmp, cols, report)
            _finish(tmp, cols, report, settings, similarity, visualization)
            if fo.dataset_exists(name):
                raise FiftyOneError(f"FiftyOne dataset {name!r} appeared while syncing; run the sync again")
            tmp.name = name
            tmp.persistent = True
        except BaseException:
            if not tmp.deleted:
                tmp.delete()
            raise
    report.seconds = round_(time.perf_counter() - start)
    return report


def round_(x: float) -> float:
    return float(f"{x:.3f}")


def check_owner(ds, name: str, dataset: str) -> None:
    info = ds.info.get(INFO_KEY)
    if not info:
        raise FiftyOneError(
            f"FiftyOne dataset {name!r} exists but was not made by curator; "
            "choose another name (--name) or delete it in FiftyOne first"
        )
    if info.get("dataset") != dataset:
        raise FiftyOneError(
            f"FiftyOne dataset {name!r} belongs to curator dataset {info.get('dataset')!r}, not "
            f"{dataset!r}; choose another name (--name)"
        )


def _field_type(fo, kind: str):
    return {
        "int": (fo.IntField, {}),
        "float": (fo.FloatField, {}),
        "str": (fo.StringField, {}),
        "bool": (fo.BooleanField, {}),
        "classification": (fo.EmbeddedDocumentField, {"embedded_doc_type": fo.Classification}),
    }[kind]


def _fill(ds, cols: Columns, report: SyncReport) -> None:
    """Declare the fields, drop samples out of scope, write only changed values of the
    others (one column at a time), then insert new samples with all their fields."""
    from curator.integrations.fiftyone._fo import fiftyone

    fo = fiftyone()
    _declare_fields(fo, ds, cols)
    have = ds.values("curator_id") if len(ds) else []
    wanted = set(cols.ids.tolist())
    stale = [c for c in have if c not in wanted]
    if stale:
        ds.delete_samples(ds.match(fo.ViewField("curator_id").is_in(stale)))
        report.removed = len(stale)
    ids = cols.ids.tolist()
    pos = {i: k for k, i in enumerate(ids)}
    if len(ds):
        fo_ids, order = ds.values(["id", "curator_id"])
        at = [pos[c] for c in order]
        for field, values in cols.values.items():
            if field == "curator_id":
                continue
            kind = cols.types[field]
            want = [_normal(kind, values[k]) for k in at]
            if kind == "classification":
                have_values = [
                    None if lab is None else (lab, conf)
                    for lab, conf in zip(ds.values(f"{field}.label"), ds.values(f"{field}.confidence"))
                ]
            else:
                have_values = ds.values(field)
            changed = {fo_ids[j]: _value(fo, kind, w) for j, w in enumerate(want) if w != have_values[j]}
            if changed:
                ds.set_values(field, changed, key_field="id", progress=False)
    present = set(have)
    new = [k for k, i in enumerate(ids) if i not in present]
    if new:
        fields = [(f, cols.types[f], v) for f, v in cols.values.items() if f != "curator_id"]
        ds.add_samples(
            (
                fo.Sample(
                    filepath=cols.uris[k],
                    curator_id=ids[k],
                    **{f: _value(fo, kind, _normal(kind, v[k])) for f, kind, v in fields if v[k] is not None},
                )
                for k in new
            ),
            num_samples=len(new),
            expand_schema=False,  # every field was declared with its type above
            validate=False,  # values are normalised to those types (_normal)
            progress=False,
        )
        report.added = len(new)
    report.samples = len(ds)
    report.fields = sorted(cols.values)


def _declare_fields(fo, ds, cols: Columns) -> None:
    """Give every field its type before writing (an all-None column has no type to infer);
    remove fields an earlier sync wrote that this one no longer has."""
    schema = ds.get_field_schema()
    for field, kind in [("curator_id", "int"), *cols.types.items()]:
        _declare_type(fo, ds, schema, field, kind)
    previous = set((ds.info.get(INFO_KEY) or {}).get("fields", []))
    for gone in sorted(previous - set(cols.values)):
        if gone in schema:
            ds.delete_sample_field(gone)


def _declare_type(fo, ds, schema: dict, field: str, kind: str) -> None:
    """Give ``field`` the type of ``kind`` (re-created if it had another one)."""
    ftype, kw = _field_type(fo, kind)
    if field in schema and not isinstance(schema[field], ftype):
        ds.delete_sample_field(field)
        schema.pop(field)
    if field not in schema:
        ds.add_sample_field(field, ftype, **kw)


def _normal(kind: str, value):
    """The value as FiftyOne gives it back, so unchanged values are recognised."""
    if value is None:
        return None
    if kind == "classification":
        label, conf = value
        return (str(label), None if conf is None else float(conf))
    return {"int": int, "float": float, "str": str, "bool": bool}[kind](value)


def _value(fo, kind: str, value):
    if value is None or kind != "classification":
        return value
    return fo.Classification(label=value[0], confidence=value[1])


def _finish(ds, cols: Columns, report: SyncReport, settings, similarity: bool, visualization: str | None) -> None:
    """Saved views, Brain runs (recomputed only when the embeddings or the sample order
    changed: a digest of both is kept in the dataset's info) and the link back to curator."""
    import hashlib

    from curator.integrations.fiftyone import similarity as sim
    from curator.settings import mask_url

    report.views = save_views(ds, cols)
    previous = (ds.info.get(INFO_KEY) or {}).get("brain", {})
    brain = {}
    if cols.embeddings is not None:
        order = ds.values("curator_id")
        pos = {int(i): k for k, i in enumerate(cols.ids.tolist())}
        E = np.ascontiguousarray(cols.embeddings[np.asarray([pos[c] for c in order])])
        digest = hashlib.sha256(np.asarray(order, dtype=np.int64).tobytes() + E.tobytes()).hexdigest()[:32]
        report.embeddings = cols.embedding_source
        if similarity:
            brain[SIMILARITY_KEY] = digest
            if previous.get(SIMILARITY_KEY) != digest or not ds.has_brain_run(SIMILARITY_KEY):
                sim.register_similarity(ds, E, brain_key=SIMILARITY_KEY)
            report.similarity = SIMILARITY_KEY
        if visualization:
            brain[VISUALIZATION_KEY] = f"{visualization}:{digest}"
            if previous.get(VISUALIZATION_KEY) != brain[VISUALIZATION_KEY] or not ds.has_brain_run(VISUALIZATION_KEY):
                sim.compute_visualization(ds, E, method=visualization, brain_key=VISUALIZATION_KEY)
            report.visualization = VISUALIZATION_KEY
    elif similarity or visualization:
        report.skipped.setdefault("similarity", "no embeddings; compute them: curator embed")
    ds.info[INFO_KEY] = {
        "dataset": cols.dataset,
        "scope": cols.scope,
        "workspace": str(Path(settings.workspace).resolve()),
        "database": mask_url(settings.database_url),
        "fields": sorted(cols.values),
        "brain": brain,
        "synced_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "complete": True,
    }
    ds.save()


def save_views(ds, cols: Columns) -> list[str]:
    """(Re)save curator's views; a view whose fields are absent is removed."""
    from curator.integrations.fiftyone._fo import fiftyone

    F = fiftyone().ViewField
    views = {}
    if cols.latest_round is not None:
        views["next-batch"] = ds.match(F("curator_round") == cols.latest_round).sort_by("curator_rank")
    if "curator_dup_group" in cols.values and any(v is not None for v in cols.values["curator_dup_group"]):
        views["duplicate-groups"] = ds.exists("curator_dup_group").sort_by(
            [("curator_dup_group", 1), ("curator_is_representative", -1), ("curator_id", 1)]
        )
    kind = next((k for k in UNCERTAINTY_KINDS if field_of(k) in cols.values), None)
    if kind is not None:
        view = ds.exists(field_of(kind))
        if "human_label" in cols.values:
            view = view.exists("human_label", False)
        views["most-uncertain"] = view.sort_by(field_of(kind), reverse=True)
    if "prediction" in cols.values and "human_label" in cols.values:
        views["disagreements"] = ds.exists("prediction").exists("human_label").match(
            F("prediction.label") != F("human_label.label")
        )
    if any(cols.values.get("curator_disagreement") or ()):
        views["labeler-disagreements"] = ds.match(F("curator_disagreement") == True).sort_by(  # noqa: E712
            [("curator_agreement", 1), ("curator_id", 1)])
    for name in VIEWS:
        if name in views:
            ds.save_view(name, views[name], description=f"curator: {name.replace('-', ' ')}", overwrite=True)
        elif ds.has_saved_view(name):
            ds.delete_saved_view(name)
    return [n for n in VIEWS if n in views]
