"""Pull annotations from a Label Studio project into the Annotation table.

Incremental. First the proof of ``_changed_since``: the project's live counters and one
Data Manager list, with annotations, of the tasks touched after the cursor (the newest task
time the previous pull saw, ``label_projects.pulled_at``), or on a first pull of the tasks
with an answer; when the counters add up, those tasks are all that is read (none when nothing
changed: two small requests for 10,000 tasks). The list carries the annotations through the
Data Manager's ``expand`` (``Client.tasks``), a fifth of what the export or the list's
per-task serialiser cost the server. When the proof fails (a task deleted or imported by hand,
a count that does not add up) a cheap list of every task's id, ``updated_at`` and annotation
counts finds the tasks that changed (another number of annotations than the database holds,
or touched after the cursor), and only those are read with their annotations.
New annotations are inserted, changed ones (answer, skip, annotator or
``updated_at``) updated, and those gone from the server (deleted, or their
task deleted by hand) marked ``deleted``. A pull run twice changes nothing the
second time; the database writes are one transaction.

Skipped tasks (``was_cancelled``) are stored with ``skipped=True`` and no
label. Every annotator's answer is kept; the agreed label and the agreement
come from ``curator.store.annotations.agreed_labels``, the one definition.
Every query is built in ``curator.store.annotations``; this module reads
(one transaction), talks to the server (no session open), then writes (one
transaction).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys

from curator.exceptions import LabelStudioError, NotFoundError
from curator.integrations.labelstudio import TOOL
from curator.integrations.labelstudio.client import Client, NotOnServer
from curator.store.locks import hold


@dataclasses.dataclass
class PullReport:
    project: str
    tasks: int = 0  # linked tasks on the server
    new: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    skipped: int = 0  # live skipped answers, all told
    missing_tasks: list[int] = dataclasses.field(default_factory=list)  # sample ids whose task is gone
    unlinked_tasks: int = 0  # tasks on the server that curator did not push (ignored)
    labeled_samples: int = 0  # samples of the dataset with an agreed label
    disagreements: int = 0  # of which the annotators did not all agree
    #: agreement between labelers on the project's tasks answered 2+ times (``agreement.report``)
    agreement: dict | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.timezone.utc)


def _naive(value: dt.datetime | None) -> dt.datetime | None:
    """UTC without tzinfo: SQLite returns naive datetimes, PostgreSQL aware ones."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def _label(result: list[dict], from_name: str) -> str | None:
    for item in result or []:
        if item.get("from_name") == from_name and item.get("type") == "choices":
            choices = (item.get("value") or {}).get("choices") or []
            if choices:
                return str(choices[0])
    return None


#: What a pull needs of each task, annotations included, from the Data Manager's paged list
#: (``Client.tasks(annotations=True)``); the annotations' own fields are named ``annotations.<field>``.
FULL_FIELDS = "id,updated_at,total_annotations,cancelled_annotations,annotations," + ",".join(
    f"annotations.{f}" for f in ("id", "result", "completed_by", "was_cancelled", "created_at", "updated_at"))
#: Tasks per page of that list: each request stays well inside the read timeout on a loaded
#: server (one export of 10,000 tasks did not, and a retry redid all of it). 5,000 tasks cost the
#: server about what 1,000 did through its per-task serialiser before (~1 ms a task at load 16).
FULL_PAGE = 5000


def _everything(client: Client, project_id: int, filters: list[dict] | None = None,
                conjunction: str = "and", expected: int | None = None) -> list[dict]:
    """Every task (or those ``filters`` select) with its annotations, page by page (the export's
    content, without its single, unbounded request and at a fifth of its cost); with ``expected``
    (about how many), the pages at once, one per server process."""
    return client.tasks(project_id, FULL_FIELDS, page_size=FULL_PAGE, filters=filters, conjunction=conjunction,
                        annotations=True, expected=expected)


def _details(client: Client, project_id: int, task_ids: list[int], batch: int = 500) -> list[dict]:
    """Tasks with their annotations: an export of just ``task_ids`` (every task, page by page,
    when most changed)."""
    if not task_ids:
        return []
    if len(task_ids) > 4 * batch:
        return _everything(client, project_id)
    out = []
    for start in range(0, len(task_ids), batch):
        out.extend(client.export(project_id, all_tasks=True, ids=task_ids[start : start + batch]))
    return out


#: What the listing of a later pull reads of each task.
LIST_FIELDS = "id,updated_at,total_annotations,cancelled_annotations"
#: The Data Manager's datetime filter format (data_manager/managers.py ``DATETIME_FORMAT``).
DM_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


#: A first pull's selection: the tasks with an answer (submitted or skipped), by Label Studio's own
#: per-task counters (model fields: a plain WHERE, no aggregate over the project).
ANSWERED = [{"filter": f"filter:tasks:{f}", "operator": "greater", "type": "Number", "value": 0}
            for f in ("total_annotations", "cancelled_annotations")]


def _changed_since(client: Client, project_id: int, cursor, links: dict, live_by_task: dict) -> list[dict] | None:
    """The tasks touched after ``cursor`` (the newest task time the last pull saw; with no cursor,
    a first pull: the tasks with an answer), with their annotations, when the project's live
    counters prove every other task unchanged; None when they do not (the caller lists every task,
    as before).

    The proof, in two cheap requests instead of a listing of every task (~0.5-0.8 ms of the
    server's CPU a task): the server holds as many tasks as curator has links, every task touched
    since the cursor is linked, and the server's answers (submitted + skipped, its live project
    counters) exceed curator's live ones by exactly what the touched tasks' counts add. Label
    Studio bumps a task's ``updated_at`` when an answer is created or edited, so an untouched
    task can only have lost answers, and the sum leaves no room for that; a deleted or foreign
    task shows in the task count or as an unlinked row. Touched tasks are then re-read as before.
    One case it cannot see: a linked task without answers deleted in a project that also holds
    as many tasks curator did not push, from before the cursor (the counts still match); its
    sample is listed in ``missing_tasks`` by the next full listing (every push lists the task ids).
    """
    proj = client.project(project_id)
    answers = int(proj.get("total_annotations_number") or 0) + int(proj.get("skipped_annotations_number") or 0)
    if not links or int(proj.get("task_number") or 0) != len(links):
        return None
    # how many tasks the selection holds, about: at most one per new answer (edits add none: a
    # listing larger than that is read at once from its second round of pages)
    expected = min(len(links), max(0, answers - sum(len(v) for v in live_by_task.values())))
    if cursor is None:  # never pulled: an untouched task is one without answers (the same sum proves it)
        since = _everything(client, project_id, ANSWERED, conjunction="or", expected=expected)
    else:
        since = _everything(client, project_id, [{
            "filter": "filter:tasks:updated_at", "operator": "greater", "type": "Datetime",
            "value": cursor.strftime(DM_TIME)}], expected=expected)
    gained = 0
    for task in since:
        tid = int(task["id"])
        if tid not in links:
            return None
        count = int(task.get("total_annotations") or 0) + int(task.get("cancelled_annotations") or 0)
        gained += count - len(live_by_task.get(tid, ()))
    if answers - sum(len(v) for v in live_by_task.values()) != gained:
        return None
    return since


def _users(client: Client) -> dict[int, str]:
    return {u.id: u.email for u in client.call("list users", client.sdk.users.list)}


def pull(settings, project: str, *, client: Client | None = None, lock_wait: float | None = None) -> PullReport:
    """Bring the annotations of ``project`` up to date with the server (see module docstring).

    Two pulls (or a pull and a push) of one project at once: the project's lock
    (``curator.store.locks``, the one push takes) makes the second wait up to
    ``lock_wait`` seconds, then read what the first stored and find nothing new,
    instead of both inserting the same answers (the second would fail on the
    unique (tool, external_id)).
    """
    from curator.integrations.labelstudio.push import LOCK_WAIT_S

    with hold(settings, f"{TOOL}:project:{project}", wait=LOCK_WAIT_S if lock_wait is None else lock_wait,
              what=f"project {project!r}", on_wait=lambda m: print(f"{m}...", file=sys.stderr, flush=True)):
        return _pull(settings, project, client)


def _pull(settings, project: str, client: Client | None) -> PullReport:
    """The pull proper, under the project's lock: read, ask the server, write."""
    from curator.store import annotations as store
    from curator.store.session import transaction

    with transaction(settings) as s:
        row = store.project(s, TOOL, project)
        if row is None:
            known = store.project_names(s, TOOL)
            raise NotFoundError(
                f"no Label Studio project {project!r} in the database (known: {', '.join(known) or 'none'}); "
                "push a round to it first"
            )
        pid, from_name, dataset, row_id = row.external_id, row.from_name, row.dataset_id, row.id
        cursor = _naive(row.pulled_at)
        links = store.link_index(s, TOOL, project)
        stored: dict[str, store.StoredAnnotation] = {}
        live_by_task: dict[int, set[str]] = {}
        for ann in store.annotations_of(s, TOOL, project):
            stored[ann.external_id] = ann
            if not ann.deleted:
                live_by_task.setdefault(ann.task_id, set()).add(ann.external_id)

    client = client or Client.from_settings(settings)
    client.check()
    try:
        # Only the tasks touched since the last pull (answered ones on a first pull), with their
        # annotations; the others proven unchanged by the project's counters.
        quick = _changed_since(client, pid, cursor, links, live_by_task)
        if quick is not None:
            listing = quick
        else:  # cheap: ids, update times and annotation counts of every task
            listing = client.tasks(pid, LIST_FIELDS, expected=len(links))
    except NotOnServer:
        raise LabelStudioError(
            f"project {project!r} (id {pid}) no longer exists on {client.url} (deleted on the server); "
            "nothing was changed; push again with --recreate to make a new project"
        ) from None
    report = PullReport(project=project)
    now = dt.datetime.now(dt.timezone.utc)

    # Which tasks changed since the last pull: another annotation count, or touched after the
    # cursor (Label Studio bumps a task's updated_at when one of its annotations changes).
    on_server, changed, newest = (set(links) if quick is not None else set()), [], cursor
    for task in listing:
        tid = int(task["id"])
        if tid not in links:
            report.unlinked_tasks += 1
            continue
        on_server.add(tid)
        updated = _naive(_time(task.get("updated_at")))
        count = int(task.get("total_annotations") or 0) + int(task.get("cancelled_annotations") or 0)
        if count != len(live_by_task.get(tid, ())) or (count and (cursor is None or (updated and updated > cursor))):
            changed.append(tid)
        if updated and (newest is None or updated > newest):
            newest = updated
    if quick is not None:  # the listing carries the annotations
        wanted = set(changed)
        details = [t for t in listing if int(t["id"]) in wanted]
    else:
        details = _details(client, pid, changed)
    users = _users(client) if details else {}

    with transaction(settings) as s:
        seen, new_rows, changes = set(), [], []
        for task in details:
            tid = int(task["id"])
            if tid not in links:
                continue
            link_id, sid = links[tid]
            for ann in task.get("annotations") or []:
                ext = str(ann["id"])
                seen.add(ext)
                by = ann.get("completed_by")
                if isinstance(by, dict):
                    annotator = by.get("email")
                else:
                    annotator = users.get(by, None if by is None else str(by))
                label = _label(ann.get("result"), from_name)
                skipped = bool(ann.get("was_cancelled")) or label is None
                label = None if skipped else label
                updated = _time(ann.get("updated_at"))
                old = stored.get(ext)
                if old is None:
                    new_rows.append(store.NewAnnotation(
                        sample_id=sid, task_link_id=link_id, external_id=ext, label=label, skipped=skipped,
                        annotator=annotator, created_at=_time(ann.get("created_at")) or now, updated_at=updated))
                elif (old.label, old.skipped, old.deleted, old.annotator, old.updated_at) != (
                    label, skipped, False, annotator, _naive(updated)
                ):
                    changes.append(store.AnnotationChange(id=old.id, label=label, skipped=skipped,
                                                          annotator=annotator, updated_at=updated))
                else:
                    report.unchanged += 1
        examined = set(changed) | (set(links) - on_server)  # tasks whose annotations were re-read, or are gone
        gone = [
            stored[ext].id
            for tid in examined
            for ext in live_by_task.get(tid, ())
            if ext not in seen
        ]
        report.unchanged += sum(len(live_by_task.get(tid, ())) for tid in on_server - set(changed))
        report.missing_tasks = sorted(sid for tid, (_, sid) in links.items() if tid not in on_server)
        report.tasks = len(on_server)
        store.add_annotations(s, TOOL, new_rows)
        store.change_annotations(s, changes)
        store.mark_deleted(s, gone, now)
        report.new, report.updated, report.deleted = len(new_rows), len(changes), len(gone)
        store.set_pulled_at(s, row_id, newest)
        report.skipped = store.count_skipped(s, TOOL, project)
        agreed = store.agreed_labels(s, dataset)
        report.labeled_samples = len(agreed)
        report.disagreements = sum(1 for _, agreement, _ in agreed.values() if agreement < 1.0)
        answers = store.answers_of_project(s, TOOL, project)
    from curator.integrations.labelstudio.agreement import report as agreement_report

    report.agreement = agreement_report(answers)
    return report
