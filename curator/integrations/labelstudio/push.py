"""Push a selection round to a Label Studio project, exactly once per (project, sample).

Label Studio does not de-duplicate imports, so curator does, in four steps:

1. reconcile: list the project's tasks by ``data.sample_id`` and record a
   ``TaskLink`` for every selected sample the server already has (a push
   killed after the server imported a batch but before the database commit
   leaves exactly these). A new project needs no listing; an existing one whose
   task ids are exactly the recorded links needs only the ids (``_server_state``);
2. import only the samples without a link, in batches, in rank order, without
   their pre-annotations (Label Studio validates an inline prediction one by one:
   86 % of its import time);
3. commit the links of each batch in its own transaction as soon as the
   server confirmed it. The unique (tool, project, sample_id) constraint
   refuses a second link whatever happens. The tasks are now in the labelers' queue;
4. pre-annotations for the round's tasks that have none on the server, in
   ``import/predictions`` requests (none when curator's ML backend is connected:
   Label Studio asks it when a task opens). A push killed before this step is
   completed by the next one; a task that has a prediction never gets a second.

Queue order: the project uses *Sequential sampling* and tasks are imported in
rank order, so the labelers' default queue (the next-task endpoint) serves
rank 0 first; a saved Data Manager view "round N by rank" orders by
``data.rank`` for "Label All Tasks" from the view (it also covers samples
imported late by a resumed push). Uncertainty sampling was not used: it orders
by the prediction score only, which matches uncertainty policies but not
curator's diversity-aware ranking, and faking the score would show labelers a
wrong confidence.

Images reach the server one of three ways (``media``: local-files, upload, serve; see
``curator.integrations.labelstudio.media``, which also says how the default is chosen).
With local-files, files under the workspace's media folder are served by Label Studio's
local-file storage (a storage connection per top folder, never synced, which
only authorises serving); images ingested from elsewhere are embedded as
base64 data URIs when small (``EMBED_MAX``, MNIST-like), so the server needs
no access outside the media folder; larger ones are symlinked into
``media/_linked/<sha256>`` (one link per pushed file, nothing else exposed).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import mimetypes
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote


from curator.exceptions import LabelStudioError, ValidationError
from curator.integrations.labelstudio import TOOL
from curator.integrations.labelstudio.client import Client, NotOnServer
from curator.integrations.labelstudio.labelconfig import LabelConfig, image_classification, validate
from curator.store.locks import hold

if TYPE_CHECKING:  # typing only: every query is built in curator.store (annotations, rounds)
    from sqlalchemy.orm import Session

EMBED_MAX = 256 * 1024
LINK_DIR = "_linked"
DEFAULT_BATCH = 2000
#: How long a push waits for another push to the same project before giving up (one ``error:`` line).
LOCK_WAIT_S = 600.0


@dataclasses.dataclass
class PushReport:
    project: str
    project_id: int
    round_id: int  # the store's key of the round (task links point at it)
    dataset: str = ""
    round: int = 0  # the round's number within its dataset: what commands take and print
    selected: int = 0
    already_linked: int = 0
    reconciled: int = 0  # found on the server without a link (interrupted push)
    imported: int = 0
    duplicates_removed: int = 0
    predictions: int = 0  # pre-annotations imported (tasks of the round that had none on the server)
    predictions_on_demand: bool = False  # none imported: the project's ML backend serves them when a task opens
    created_project: bool = False
    view_id: int | None = None
    url: str = ""

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class _Item:
    sample_id: int
    rank: int
    score: float | None
    uri: str
    sha256: str


def default_project_name(dataset: str) -> str:
    return f"curator-{dataset}"


# -- database reads/writes (take a session, never commit; queries live in curator.store) ------
def _round_items(s: Session, dataset: str, number: int):
    """(the round, its dataset, its items in rank order) of round ``number`` of ``dataset``."""
    import math

    from curator.store import annotations as store
    from curator.store import rounds as store_rounds
    from curator.store.queries import dataset_id

    rnd = store_rounds.get(s, dataset_id(s, dataset), number)
    ds = store.dataset_info(s, rnd.dataset_id)
    got = store_rounds.items(s, rnd)
    if not len(got):
        raise ValidationError(f"round {number} of dataset {ds.name!r} has no selected samples; nothing to push")
    files = store.sample_files(s, got.sample_id.tolist())
    return rnd, ds, [_Item(int(sid), int(rank), None if math.isnan(score) else float(score), *files[int(sid)])
                     for rank, sid, score in zip(got.rank, got.sample_id, got.score)]


def _stored_predictions(s: Session, rnd, classes: list[str]) -> dict[int, tuple[str, float, str]]:
    """Predictions stored as scores of the round's model: kind "prediction" (class
    index) and "confidence". Empty when the round recorded none."""
    from curator.store import annotations as store
    from curator.store import rounds as store_rounds

    if rnd.model_id is None:
        return {}
    version = store.model_label(s, rnd.model_id)
    got = store.latest_scores(s, rnd.dataset_id, model_id=rnd.model_id, kinds=("prediction", "confidence"),
                              sample_ids=store_rounds.sample_ids(s, rnd).tolist())
    pred, conf = got.get("prediction", {}), got.get("confidence", {})
    return {
        sid: (classes[int(k)], float(conf.get(sid, 0.0)), version)
        for sid, k in pred.items()
        if 0 <= int(k) < len(classes)
    }


def project_row(s: Session, name: str):
    """The recorded Label Studio project ``name`` (a ``store.annotations.ProjectInfo``), or None."""
    from curator.store import annotations as store

    return store.project(s, TOOL, name)


def _links(s: Session, name: str) -> dict[int, int]:
    from curator.store import annotations as store

    return store.links(s, TOOL, name)


def drop_links(s: Session, name: str, sample_ids: list[int] | None = None) -> int:
    """Forget task links (the server lost the tasks); annotations stay, detached."""
    from curator.store import annotations as store

    return store.drop_links(s, TOOL, name, sample_ids)


def _commit_links(settings, name: str, round_id: int, pairs: list[tuple[int, int]]) -> None:
    """One transaction per confirmed batch (a seam the interruption tests cut)."""
    from curator.store import annotations as store
    from curator.store.session import transaction

    with transaction(settings) as s:
        store.add_links(s, TOOL, name, round_id, pairs)


# -- images ---------------------------------------------------------------------------------
def image_url(uri: str, sha256: str, media_root: Path) -> tuple[str, str | None]:
    """(URL for the task, top folder of the media root that must be a storage, or None)."""
    # Fast path, string only: an absolute path already inside the (resolved) media root is
    # served through that path. Resolving every file (a realpath per component) was most of
    # curator's share of a 10,000-task push.
    plain = os.path.normpath(uri)
    root = str(media_root) + os.sep
    if os.path.isabs(plain) and plain.startswith(root) and os.sep in plain[len(root):]:
        rel_text = plain[len(root):].replace(os.sep, "/")
        return "/data/local-files/?d=" + quote(rel_text), rel_text.split("/", 1)[0]
    path = Path(uri)
    try:
        rel = path.resolve().relative_to(media_root)
    except ValueError:
        rel = None
    if rel is not None and len(rel.parts) > 1:
        return "/data/local-files/?d=" + quote(rel.as_posix()), rel.parts[0]
    size = path.stat().st_size
    if size <= EMBED_MAX:
        mime = mimetypes.guess_type(path.name)[0] or "image/png"
        return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii"), None
    link = media_root / LINK_DIR / f"{sha256}{path.suffix.lower()}"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        os.symlink(path.resolve(), link)
    return "/data/local-files/?d=" + quote(f"{LINK_DIR}/{link.name}"), LINK_DIR


def _signed(settings, url: str) -> str:
    """A local-files URL (``image_url``) as a signed URL of curator's media server; data URIs unchanged."""
    from urllib.parse import unquote

    from curator.integrations.labelstudio import media

    prefix = "/data/local-files/?d="
    return media.signed_url(settings, unquote(url[len(prefix):])) if url.startswith(prefix) else url


#: Files per upload request (Django's DATA_UPLOAD_MAX_NUMBER_FILES, Label Studio's default 100).
UPLOAD_FILES = 100


def _upload(client: Client, pid: int, name: str, items: list[_Item]) -> dict[int, str]:
    """Upload the images of ``items`` to the server (no tasks made: ``commit_to_project=false``);
    sample_id -> the URL the server serves its copy at. A push killed after an upload leaves
    unused uploads on the server, never a task twice (tasks are still reconciled by sample id)."""
    out: dict[int, str] = {}
    for start in range(0, len(items), UPLOAD_FILES):
        chunk = items[start : start + UPLOAD_FILES]
        files = {}  # a dict: the SDK's request sends a list of files as nothing at all
        for it in chunk:
            path = Path(it.uri)
            mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            files[f"s{it.sample_id}"] = (f"s{it.sample_id}{path.suffix.lower()}", path.read_bytes(), mime)
        resp = client.http("POST", f"api/projects/{pid}/import", f"upload {len(chunk)} images to {name!r}",
                           files=files, params={"commit_to_project": "false"})
        ids = (resp or {}).get("file_upload_ids") or []
        if len(ids) != len(chunk):
            raise LabelStudioError(
                f"Label Studio at {client.url} stored {len(ids)} of {len(chunk)} uploaded images for {name!r}; "
                "push again (nothing was imported for them)"
            )
        listed = client.http("GET", f"api/projects/{pid}/file-uploads", f"list uploads of {name!r}",
                             params={"ids": json.dumps(ids)})
        by_id = {int(f["id"]): str(f["file"]) for f in listed or []}
        for it, fid in zip(chunk, ids):
            stored = by_id.get(int(fid))
            if stored is None or not stored.rsplit("/", 1)[-1].endswith(f"s{it.sample_id}{Path(it.uri).suffix.lower()}"):
                raise LabelStudioError(
                    f"Label Studio at {client.url} did not list upload {fid} as sample {it.sample_id}'s image; "
                    "push again"
                )
            out[it.sample_id] = "/data/" + stored.lstrip("/")
    return out


def _check_images(items: list[_Item]) -> None:
    missing = [it for it in items if not os.path.isfile(it.uri)]
    if missing:
        shown = ", ".join(f"sample {it.sample_id} ({it.uri})" for it in missing[:3])
        raise ValidationError(
            f"{len(missing)} selected image(s) are missing on disk: {shown}"
            f"{' ...' if len(missing) > 3 else ''}; restore the files (or ingest them again) "
            "and push again; nothing was pushed"
        )


# -- server side ----------------------------------------------------------------------------
def _ensure_storages(client: Client, project_id: int, media_root: Path, folders: set[str]) -> None:
    if not folders:
        return
    existing = {
        st.path
        for st in client.call("list storages", client.sdk.import_storage.local.list, project=project_id)
    }
    for folder in sorted(folders):
        path = str(media_root / folder)
        if path not in existing:
            client.call(
                f"connect local storage {path}",
                client.sdk.import_storage.local.create,
                project=project_id, path=path, title=f"curator media {folder}", use_blob_urls=False,
            )


def _ensure_view(client: Client, project_id: int, round_number: int) -> int:
    title = f"round {round_number} by rank"
    views = client.call("list views", client.sdk.views.list, project=project_id)
    for v in views:
        if (v.data or {}).get("title") == title:
            return v.id
    view = client.call(
        "create view",
        client.sdk.views.create,
        project=project_id,
        data={
            "title": title,
            "ordering": ["tasks:data.rank"],
            "filters": {
                "conjunction": "and",
                "items": [{"filter": "filter:tasks:data.round", "operator": "equal",
                           "type": "Number", "value": round_number}],
            },
        },
    )
    return view.id


def _task(cfg: LabelConfig, item: _Item, url: str, round_number: int, dataset: str) -> dict:
    """One task, without its pre-annotation: Label Studio's import validates an inline prediction
    through its label interface, one by one (86 % of the server's import time); they follow in
    ``import/predictions`` requests (``_prediction``)."""
    return {"data": {
        cfg.image_field: url,
        "sample_id": item.sample_id,
        "round": round_number,
        "rank": item.rank,
        "score": item.score,
        "dataset": dataset,
    }}


def _prediction(cfg: LabelConfig, task_id: int, pred) -> dict:
    label, score, version = pred
    return {"task": int(task_id), "model_version": str(version), "score": float(score),
            "result": [{"from_name": cfg.from_name, "to_name": cfg.to_name, "type": "choices",
                        "value": {"choices": [str(label)]}}]}


def _resolve_project(client, settings, name, ds, cfg, recreate, report, model_version, overlap=None):
    """The server project of ``name``: recorded, found by title, or created. Returns its row values.

    ``overlap``: labelers per task (Label Studio's ``maximum_annotations``, on every task); set on
    a new project, and on an existing one when given (so it can be raised between rounds)."""
    from curator.store import annotations as store
    from curator.store.session import transaction

    with transaction(settings) as s:
        row = project_row(s, name)
        known = None if row is None else (row.external_id, row.label_config)
    if known is not None:
        pid, stored_xml = known
        try:
            client.project(pid)
            if stored_xml != cfg.xml:
                raise ValidationError(
                    f"project {name!r} already exists with another labeling configuration; "
                    "push to a new project (--project NAME) to use this one"
                )
            _set_overlap(client, pid, overlap)
            return pid
        except NotOnServer:
            if not recreate:
                raise LabelStudioError(
                    f"project {name!r} (id {pid}) no longer exists on {client.url} (deleted on the "
                    "server); push again with --recreate to create it anew and push its samples "
                    "again, or use another --project"
                ) from None
            with transaction(settings) as s:
                store.drop_project(s, TOOL, name)  # its links go, its annotations stay, detached
    found = client.find_projects(name)
    if found:  # created by a push that died before recording it
        pid = min(p["id"] for p in found)
        _set_overlap(client, pid, overlap)
    else:
        kwargs = dict(
            title=name,
            label_config=cfg.xml,
            description=f"curator dataset {ds.name}: selected samples, queue in rank order",
            sampling="Sequential sampling",
            show_collab_predictions=True,
            maximum_annotations=overlap or 1,
            overlap_cohort_percentage=100,
        )
        if model_version:
            kwargs["model_version"] = model_version
        pid = client.call(f"create project {name!r}", client.sdk.projects.create, **kwargs).id
        drop_retried_copies(client, name, pid)
        report.created_project = True
    with transaction(settings) as s:
        store.add_project(s, TOOL, name, external_id=pid, dataset_id=ds.id, label_config=cfg.xml,
                          from_name=cfg.from_name, to_name=cfg.to_name, image_field=cfg.image_field)
    return pid


def drop_retried_copies(client, name: str, pid: int) -> list[int]:
    """Delete the empty projects titled ``name`` other than ``pid``, which one create just returned.

    Label Studio on SQLite runs a whole request again when it failed on "database is locked"
    (``core/middleware.py`` ``DatabaseIsLockedRetryMiddleware``, up to 15 times), and creating a
    project is not one transaction there: on a busy server one create call can leave several
    projects of the title, and answers with the last (seen as three projects of one title after
    two concurrent pushes, 2026-12-01). None of that title existed before the call (the caller
    looked, under the project's lock), so the others are this call's half-made copies: deleted,
    so that every later lookup by title finds the one project curator recorded. A copy holding
    tasks (never one of these) is left alone. Returns the ids deleted.
    """
    dropped = []
    for other in client.find_projects(name):
        if other["id"] != pid and not client.project(other["id"]).get("task_number"):
            client.http("DELETE", f"api/projects/{other['id']}", f"delete a copy of project {name!r}")
            dropped.append(other["id"])
    return dropped


def _set_overlap(client, pid: int, overlap: int | None) -> None:
    if overlap is not None:
        client.http("PATCH", f"api/projects/{pid}", f"set {overlap} labelers per task",
                    json={"maximum_annotations": int(overlap), "overlap_cohort_percentage": 100})


def push(
    settings,
    dataset: str,
    number: int,
    *,
    project: str | None = None,
    label_config: str | None = None,
    predictions: dict[int, tuple[str, float, str]] | None = None,
    batch_size: int = DEFAULT_BATCH,
    recreate: bool = False,
    replace_deleted: bool = False,
    client: Client | None = None,
    lock_wait: float = LOCK_WAIT_S,
    overlap: int | None = None,
    only: "Collection[int] | None" = None,
    on_progress: "Callable[[int, int], None] | None" = None,
    media: str | None = None,
) -> PushReport:
    """Send round ``number`` of ``dataset`` to the Label Studio project ``project`` (see module docstring).

    ``predictions``: sample_id -> (label, score, model_version), shown as
    pre-annotations; when omitted, "prediction"/"confidence" Score rows of the
    round's model are used if present. ``label_config``: a user XML
    configuration, validated against the dataset's classes. ``recreate``: the
    project was deleted on the server, make a new one. ``replace_deleted``:
    push again samples whose task was deleted by hand. ``overlap``: how many labelers
    answer each task (default: the project's setting; 1 for a new project).
    ``only``: push just these samples of the round (the App's selection or view); only a push
    of the whole round marks it pushed (a later one finds the part already linked). ``on_progress(done, total)`` is called after each batch.
    ``media``: how images reach the server (``curator.integrations.labelstudio.media``: local-files,
    upload, serve; default the ``labelstudio_media`` setting, auto).

    Two pushes to one project at once: the project's lock (``curator.store.locks``,
    held from the reconciliation to the last recorded link) makes the second
    wait up to ``lock_wait`` seconds and then find the work done; a project that
    does not exist yet is created once.
    """
    if batch_size < 1:
        raise ValidationError(f"batch_size must be >= 1, got {batch_size}")
    if overlap is not None and (isinstance(overlap, bool) or int(overlap) != overlap or overlap < 1):
        raise ValidationError(f"overlap must be a whole number of labelers >= 1, got {overlap!r}")
    from curator.integrations.labelstudio import media as media_modes

    media_mode = media_modes.choose(settings, media)
    given = (project, label_config, predictions)
    plan = _plan(settings, dataset, number, *given, only=only)  # everything checked before the server is touched
    client = client or Client.from_settings(settings)
    client.check()
    with hold(settings, f"{TOOL}:project:{plan.name}", wait=lock_wait, what=f"project {plan.name!r}",
              on_wait=lambda m: print(f"{m}...", file=sys.stderr, flush=True)):
        # read again under the lock: another push may have created the project or linked samples meanwhile
        return _push(settings, _plan(settings, dataset, number, *given, only=only), client, batch_size, recreate,
                     replace_deleted, overlap, media_mode, on_progress=on_progress)


@dataclasses.dataclass
class _Plan:
    round_id: int
    rnd_number: int
    ds: object  # store.annotations.DatasetInfo
    ds_name: str
    items: list
    name: str
    cfg: LabelConfig
    predictions: dict
    whole: bool = True  # the whole round (not a part given as ``only``)


def _plan(settings, dataset, number, project, label_config, predictions, *, only=None) -> _Plan:
    """What to push where, read in one transaction and validated (round, project, config, images)."""
    from curator.store.session import transaction

    with transaction(settings) as s:
        rnd, ds, items = _round_items(s, dataset, number)
        whole = True
        if only is not None:
            keep = {int(i) for i in only}
            part = [it for it in items if it.sample_id in keep]
            if not part:
                raise ValidationError(f"none of the {len(keep)} samples given is in round {number} of dataset "
                                      f"{dataset!r}; choose samples of that round, or push the whole round")
            whole, items = len(part) == len(items), part
        rnd_number, ds_name, classes = rnd.number, ds.name, list(ds.classes)
        if predictions is None:
            predictions = _stored_predictions(s, rnd, classes)
        name = project or default_project_name(ds_name)
        row = project_row(s, name)
        if row is not None and row.dataset_id != ds.id:
            raise ValidationError(
                f"project {row.name!r} belongs to another dataset; pass another --project"
            )
        linked = _links(s, name)
        if label_config is None and row is not None:  # the project keeps the configuration it was made with
            label_config = row.label_config
    cfg = validate(label_config, classes, source="the labeling configuration") if label_config \
        else image_classification(classes)
    unknown = sorted({p[0] for p in predictions.values()} - set(cfg.choices))
    if unknown:
        raise ValidationError(f"predictions use labels {unknown[:5]} that are not choices of the labeling configuration")
    _check_images([it for it in items if it.sample_id not in linked])  # before touching the server
    return _Plan(rnd.id, rnd_number, ds, ds_name, items, name, cfg, predictions, whole)


def _push(settings, plan: _Plan, client: Client, batch_size: int, recreate: bool,
          replace_deleted: bool, overlap: int | None = None, media_mode: str = "local-files",
          on_progress=None) -> PushReport:
    """The push proper, under the project's lock: reconcile, import, record."""
    from curator.store.session import transaction

    round_id, rnd_number, ds, ds_name, items, name, cfg, predictions = (
        plan.round_id, plan.rnd_number, plan.ds, plan.ds_name, plan.items, plan.name, plan.cfg, plan.predictions)
    versions = sorted({str(p[2]) for p in predictions.values()})
    report = PushReport(project=name, project_id=0, round_id=round_id, dataset=ds_name, round=rnd_number,
                        selected=len(items), url=client.url)
    pid = _resolve_project(client, settings, name, ds, cfg, recreate, report, versions[-1] if versions else None,
                           overlap)
    report.project_id = pid

    # 1. reconcile with the server by sample id
    with transaction(settings) as s:
        links = _links(s, name)
    on_server, predicted = _server_state(client, pid, links, fresh=report.created_project)
    selected = {it.sample_id for it in items}
    gone = sorted(sid for sid, tid in links.items() if sid in selected and tid not in on_server.get(sid, []))
    if gone:
        if not replace_deleted:
            raise LabelStudioError(
                f"{len(gone)} task(s) of project {name!r} were deleted on the server (samples "
                f"{gone[:5]}{' ...' if len(gone) > 5 else ''}); push again with --replace-deleted to "
                "send them again, or leave them out"
            )
        with transaction(settings) as s:
            drop_links(s, name, gone)
        links = {k: v for k, v in links.items() if k not in set(gone)}
    found = []
    for it in items:
        ids = on_server.get(it.sample_id, [])
        if len(ids) > 1:
            report.duplicates_removed += _remove_duplicates(client, it.sample_id, ids, links.get(it.sample_id))
        if it.sample_id in links:
            report.already_linked += 1
        elif ids:
            found.append((it.sample_id, ids[0]))
    if found:
        _commit_links(settings, name, round_id, found)
        report.reconciled = len(found)
    todo = [it for it in items if it.sample_id not in links and not on_server.get(it.sample_id)]

    # 2. import the rest, rank order, batch by batch
    media_root = Path(settings.media_dir).resolve()
    came_back = set(gone)
    _check_images([it for it in todo if it.sample_id in came_back])  # a task deleted by hand brings back
    # a sample whose file _plan did not check (it was linked then); the others were checked under this lock
    urls, folders = {}, set()
    for it in todo:
        urls[it.sample_id], folder = image_url(it.uri, it.sha256, media_root)
        if folder:
            folders.add(folder)
    if media_mode == "local-files":
        _ensure_storages(client, pid, media_root, folders)
    elif media_mode == "serve":
        urls = {sid: _signed(settings, url) for sid, url in urls.items()}
    from curator._progress import progress

    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]

    def body(batch: list[_Item]) -> bytes:
        """The import request of ``batch``, encoded (pure: no server, no database)."""
        return json.dumps([_task(cfg, it, urls[it.sample_id], rnd_number, ds_name) for it in batch]).encode()

    # The next batch's body is encoded in a thread while the server imports this one (the server
    # is the slow side); links are still committed batch by batch, after the server confirmed it
    # and before the next import is sent.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="curator-push") as pool:
        upcoming = None if media_mode == "upload" or not batches else pool.submit(body, batches[0])
        for k, batch in enumerate(progress(batches, total=len(todo), desc=f"push to {name}", weight=len)):
            if media_mode == "upload":
                urls.update(_upload(client, pid, name, [it for it in batch if not urls[it.sample_id].startswith("data:")]))
                encoded = body(batch)
            else:
                encoded = upcoming.result()
                upcoming = pool.submit(body, batches[k + 1]) if k + 1 < len(batches) else None
            resp = client.http("POST", f"api/projects/{pid}/import", f"import {len(batch)} tasks into {name!r}",
                               json=encoded, params={"return_task_ids": "true"})
            _confirm(settings, client, name, round_id, batch, resp, report)
            if on_progress is not None:
                on_progress(report.imported, len(todo))
    # 3. pre-annotations of the round's tasks that have none on the server (those just imported,
    # and those of a push killed before this step), one request per PREDICTIONS_BATCH
    with transaction(settings) as s:
        linked = _links(s, name)
    missing = [(linked[it.sample_id], predictions[it.sample_id]) for it in items
               if it.sample_id in predictions and it.sample_id in linked and linked[it.sample_id] not in predicted]
    if missing and not report.created_project and client.project(pid).get("evaluate_predictions_automatically"):
        # an ML backend is connected (``curator labelstudio connect``): Label Studio asks it for the
        # prediction of a task opened without one, so none is stored now (issue 17 item 1)
        # (and the project's model_version stays "", as connect set it, so the UI shows the backend's)
        report.predictions_on_demand, versions = True, []
    else:
        report.predictions = import_predictions(client, pid, name, cfg, missing)
    _finish(settings, client, pid, rnd_number, ds, versions, report, whole=plan.whole)
    return report


#: Predictions per ``import/predictions`` request at most: each stays well inside the read timeout on a
#: loaded server (10,000 in one request outlasted 60 s at load 18). ``client.parallel`` are sent at once.
PREDICTIONS_BATCH = 2_000
#: Fewer than this many are not split (the live loop's top-up: one request, its latency).
PREDICTIONS_MIN = 500


def import_predictions(client: Client, pid: int, name: str, cfg: LabelConfig, pairs: list) -> int:
    """Import ``(task id, (label, score, model_version))`` pairs as pre-annotations; how many.
    ``cfg``: anything with the labeling config's ``from_name`` and ``to_name`` (a recorded project too).

    Resumable: a push killed before (or during) this step leaves tasks without a prediction,
    which the next push finds (``total_predictions`` 0 in ``_server_state``) and completes; a
    task that has one is never given another."""
    if not pairs:
        return 0
    # as many requests as the server has processes, each at most PREDICTIONS_BATCH: rounds of
    # ``parallel`` equal batches (10,000 on 2 processes: 6 of 1,667, 3 rounds, instead of 5 of 2,000)
    rounds = -(-len(pairs) // (PREDICTIONS_BATCH * client.parallel))
    size = max(-(-len(pairs) // (rounds * client.parallel)), PREDICTIONS_MIN)  # a few: one request
    chunks = [pairs[start : start + size] for start in range(0, len(pairs), size)]

    def send(chunk: list) -> int:
        body = json.dumps([_prediction(cfg, tid, pred) for tid, pred in chunk]).encode()
        resp = client.http("POST", f"api/projects/{pid}/import/predictions",
                           f"import {len(chunk)} pre-annotations into {name!r}", json=body)
        return int((resp or {}).get("created", -1))

    # Each request is independent (its own tasks): one that fails leaves its tasks without a
    # prediction, which the next push completes, as before; the others finish first (the pool waits).
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(client.parallel, len(chunks)), thread_name_prefix="curator-predictions") as pool:
        futures = [pool.submit(send, chunk) for chunk in chunks]
    done = 0
    for chunk, future in zip(chunks, futures):
        created = future.result()  # the first failure, raised once all have ended
        if created != len(chunk):
            raise LabelStudioError(
                f"Label Studio at {client.url} stored {created} of {len(chunk)} pre-annotations for {name!r}; "
                "push again: tasks without one get theirs"
            )
        done += created
    return done


def _server_state(client: Client, pid: int, links: dict[int, int], *, fresh: bool):
    """(sample_id -> task ids on the server, ids of tasks that have a prediction).

    A project this push created has nothing yet: no request. Otherwise a listing of task ids and
    prediction counts (no task data) is checked against the recorded links: when the server holds
    exactly the linked tasks, that is the whole index. Any other task (a push killed before its
    commit, a copy imported by hand) or a linked task gone (deleted by hand) costs the full
    listing by ``data.sample_id``, as before."""
    from curator.integrations.labelstudio.client import index_by_sample

    if fresh:
        return {}, set()
    # no links yet (a push that died before its first commit): the full listing at once
    listed = client.tasks(pid, "id,total_predictions" if links else "id,data,total_predictions",
                          expected=len(links) or None)  # the linked tasks' pages at once
    predicted = {int(t["id"]) for t in listed if int(t.get("total_predictions") or 0) > 0}
    if links and {int(t["id"]) for t in listed} == set(links.values()) and len(listed) == len(links):
        return {sid: [tid] for sid, tid in links.items()}, predicted
    return (index_by_sample(listed) if not links else client.task_index(pid)), predicted


def _confirm(settings, client: Client, name: str, round_id: int, batch: list[_Item], resp, report: PushReport) -> None:
    """Record the links of an imported batch (one transaction), or fail when the server's answer
    does not account for every task."""
    ids = (resp or {}).get("task_ids") or []
    if len(ids) != len(batch):
        raise LabelStudioError(
            f"Label Studio at {client.url} imported {len(ids)} of {len(batch)} tasks into {name!r}; "
            "push again: curator reconciles by sample id"
        )
    _commit_links(settings, name, round_id, [(it.sample_id, int(t)) for it, t in zip(batch, ids)])
    report.imported += len(batch)


def _finish(settings, client: Client, pid: int, rnd_number: int, ds, versions: list[str], report: PushReport,
            *, whole: bool = True) -> None:
    """3. Queue order (the round's view), the project's model version, and the round's status."""
    from curator.store import rounds as store_rounds
    from curator.store.session import transaction

    report.view_id = _ensure_view(client, pid, rnd_number)
    if versions:
        client.call("set model version", client.sdk.projects.update, id=pid, model_version=versions[-1])
    if not whole:  # a part of the round: a whole-round push marks it
        return
    with transaction(settings) as s:
        store_rounds.set_status(s, ds.id, rnd_number, "pushed", only_from=("pending", "selected"))


def _remove_duplicates(client: Client, sample_id: int, ids: list[int], linked: int | None) -> int:
    """Several tasks carry one sample (imported outside curator): keep the linked (or first)
    one, delete the copies that nobody annotated, refuse to touch annotated ones."""
    keep = linked if linked in ids else ids[0]
    removed = 0
    for tid in ids:
        if tid == keep:
            continue
        task = client.http("GET", f"api/tasks/{tid}", f"read task {tid}")
        if task.get("total_annotations") or task.get("annotations"):
            raise LabelStudioError(
                f"sample {sample_id} has several annotated tasks ({ids}) on {client.url}; "
                "delete the extra ones by hand and push again"
            )
        client.http("DELETE", f"api/tasks/{tid}", f"delete duplicate task {tid}")
        removed += 1
    ids[:] = [keep]
    return removed
