"""The ML backend and the annotation webhook receiver (issue 17).

The receiver's exactly-once rules are checked by posting payloads, shaped as
Label Studio 1.23 sends them (webhooks/utils.py), straight to the handler on
SQLite and PostgreSQL: no server needed. The tests marked ``labelstudio``
connect the backend to a real server, whose own calls (health, setup,
predict, webhooks) must reach it; a server that refuses callbacks to
127.0.0.1 (Label Studio's default SSRF rules; ``curator labelstudio up``
allows that one address) is replaced by one the session starts.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from sqlalchemy import select

from curator.integrations.labelstudio import TOOL
from curator.integrations.labelstudio.backend import Backend
from curator.integrations.labelstudio.webhooks import SECRET_HEADER
from curator.store import annotations as store
from curator.store.schema import Annotation
from curator.store.session import transaction
from ls_fixtures import LS_DATASET as DS, make_round, with_database

SECRET = "test-secret-0123456789abcdef"


def _post(url: str, body: dict, secret: str | None = SECRET) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers[SECRET_HEADER] = secret
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _rows(settings):
    with transaction(settings) as s:
        return sorted(tuple(r) for r in s.execute(select(
            Annotation.external_id, Annotation.sample_id, Annotation.label, Annotation.skipped, Annotation.deleted,
            Annotation.annotator, Annotation.updated_at)).all())


@pytest.fixture
def served(db_settings, small_idx):
    """A backend on a free port over a database with a recorded project (external id 900001) whose
    tasks 1000+rank carry the round's samples; no Label Studio server."""
    settings = dataclasses.replace(db_settings, labelstudio_webhook_secret=SECRET)
    number, ranked, project = make_round(settings, small_idx, n=4)
    from curator.store import rounds as store_rounds
    from curator.store.queries import dataset_id

    with transaction(settings) as s:
        ds = dataset_id(s, DS)
        rnd = store_rounds.get(s, ds, number)
        store.add_project(s, TOOL, project, external_id=900001, dataset_id=ds, label_config="<View/>",
                          from_name="label", to_name="image", image_field="image")
        store.add_links(s, TOOL, project, rnd.id, [(sid, 1000 + r) for r, sid in enumerate(ranked)])
    backend = Backend(settings, DS, SECRET, port=0)
    backend.start()
    try:
        yield settings, backend, ranked, project
    finally:
        backend.shutdown()
        backend.server_close()


def _event(action: str, ann_id: int, task: int, label: str | None, updated: str, by: int = 7) -> dict:
    result = [] if label is None else [{"from_name": "label", "to_name": "image", "type": "choices",
                                        "value": {"choices": [label]}}]
    return {"action": action, "project": {"id": 900001},
            "annotation": {"id": ann_id, "task": task, "result": result, "was_cancelled": label is None,
                           "completed_by": by, "created_at": "2026-01-01T10:00:00.000000Z", "updated_at": updated},
            "task": {"id": task}}


def test_events_are_recorded_once_in_any_order(served):
    """Duplicated, reordered and late events change nothing twice; a delete removes once and stays."""
    settings, backend, ranked, project = served
    hook = f"{backend.url}/webhook"
    created = _event("ANNOTATION_CREATED", 501, 1000, "3", "2026-01-01T10:00:00.100000Z")
    newer = _event("ANNOTATION_UPDATED", 501, 1000, "5", "2026-01-01T10:05:00.000000Z")
    older = _event("ANNOTATION_UPDATED", 501, 1000, "4", "2026-01-01T10:02:00.000000Z")

    assert _post(hook, created)[1]["outcomes"] == {"501": "added"}
    once = _rows(settings)
    assert [(r[0], r[1], r[2], r[4], r[5]) for r in once] == [("501", ranked[0], "3", False, "7")]
    assert _post(hook, created)[1]["outcomes"] == {"501": "duplicate"}
    assert _rows(settings) == once

    assert _post(hook, newer)[1]["outcomes"] == {"501": "updated"}
    assert _post(hook, older)[1]["outcomes"] == {"501": "stale"}  # out of order: older than what is stored
    assert _post(hook, created)[1]["outcomes"] == {"501": "duplicate"}
    assert [r[2] for r in _rows(settings)] == ["5"]

    # the create of another answer arrives after its own update (reordered): the newer one wins
    assert _post(hook, _event("ANNOTATION_UPDATED", 502, 1001, "8", "2026-01-01T11:00:00Z"))[1]["outcomes"] == {
        "502": "added"}
    assert _post(hook, _event("ANNOTATION_CREATED", 502, 1001, "1", "2026-01-01T10:59:00Z"))[1]["outcomes"] == {
        "502": "stale"}

    deleted = {"action": "ANNOTATIONS_DELETED", "project": {"id": 900001}, "annotations": [{"id": 501}]}
    assert _post(hook, deleted)[1]["outcomes"] == {"501": "deleted"}
    after_delete = _rows(settings)
    assert _post(hook, deleted)[1]["outcomes"] == {"501": "duplicate"}
    late = _event("ANNOTATION_UPDATED", 501, 1000, "6", "2026-01-01T10:06:00Z")  # sent before the delete
    assert _post(hook, late)[1]["outcomes"] == {"501": "stale"}
    assert _rows(settings) == after_delete
    assert {r[0]: (r[2], r[4]) for r in after_delete} == {"501": ("5", True), "502": ("8", False)}
    with transaction(settings) as s:
        events = store.events_of(s, TOOL, project)
    assert [e.outcome for e in events] == ["added", "updated", "stale", "added", "stale", "deleted", "stale"]
    # a skipped answer and a task curator did not push
    assert _post(hook, _event("ANNOTATION_CREATED", 503, 1002, None, "2026-01-01T12:00:00Z"))[1]["outcomes"] == {
        "503": "added"}
    assert [r[3] for r in _rows(settings) if r[0] == "503"] == [True]
    assert _post(hook, _event("ANNOTATION_CREATED", 504, 77, "2", "2026-01-01T12:00:00Z"))[1]["outcomes"] == {
        "504": "unlinked"}
    assert "504" not in {r[0] for r in _rows(settings)}


def test_concurrent_duplicates_store_one_row(served):
    """The same event delivered eight times at once: one answer, one event row."""
    settings, backend, ranked, project = served
    event = _event("ANNOTATION_CREATED", 601, 1001, "2", "2026-01-01T10:00:00Z")
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(_post(f"{backend.url}/webhook", event)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outcomes = sorted(a[1]["outcomes"]["601"] for a in answers)
    assert outcomes == ["added"] + ["duplicate"] * 7
    assert [r[0] for r in _rows(settings)] == ["601"]
    with transaction(settings) as s:
        assert len(store.events_of(s, TOOL, project)) == 1


def test_bad_secret_is_refused(served):
    """A webhook without the secret, or with another, is refused (403) and records nothing."""
    settings, backend, ranked, project = served
    event = _event("ANNOTATION_CREATED", 701, 1000, "2", "2026-01-01T10:00:00Z")
    assert _post(f"{backend.url}/webhook", event, secret=None)[0] == 403
    assert _post(f"{backend.url}/webhook", event, secret=SECRET[:-1] + "x")[0] == 403
    assert _rows(settings) == []
    with transaction(settings) as s:
        assert store.events_of(s, TOOL, project) == []
    status, body = _post(f"{backend.url}/setup", {"project": "900001.1", "schema": "<View/>"}, secret=None)
    assert status == 200 and body == {"model_version": "curator:no-model"}


# --------------------------------------------------------------------------- against a real server


def _accepts_loopback(settings) -> bool:
    """Whether the server may call back to 127.0.0.1 (a webhook there is accepted)."""
    from curator.integrations.labelstudio.client import Client

    client = Client.from_settings(settings)
    label_config = ('<View><Image name="image" value="$image"/><Choices name="label" toName="image">'
                    '<Choice value="a"/></Choices></View>')
    pid = client.http("POST", "api/projects", "probe project", json={"title": "curator-probe",
                                                                      "label_config": label_config})["id"]
    try:
        client.http("POST", "api/webhooks/", "probe webhook", json={"project": pid, "url": "http://127.0.0.1:9/x"})
        return True
    except Exception:
        return False
    finally:
        client.http("DELETE", f"api/projects/{pid}/", "delete probe project")


@pytest.fixture(scope="session")
def ls_live(ls_server, tmp_path_factory):
    """A server that may call curator back on 127.0.0.1: the session's, or one started here."""
    if _accepts_loopback(ls_server):
        yield ls_server
        return
    import secrets
    import socket

    from curator.integrations.labelstudio import server
    from curator.settings import Settings

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(workspace=tmp_path_factory.mktemp("lslive") / "ws", labelstudio_url=f"http://127.0.0.1:{port}",
                        labelstudio_token=secrets.token_hex(20))
    server.start(settings, timeout=600, echo=lambda _m: None)
    try:
        yield settings
    finally:
        server.stop(settings, echo=lambda _m: None)


def _wait(what, check, timeout: float = 15.0):
    """Poll ``check`` until it returns a truthy value (the webhook arrives asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.05)


@pytest.fixture
def live(ls_live, db_settings, small_idx, tmp_path):
    """A pushed round, a backend on a free port connected to its project (webhook + ML backend)."""
    from curator.integrations.labelstudio.backend import connect
    from curator.integrations.labelstudio.client import Client
    from curator.integrations.labelstudio.push import push

    settings = dataclasses.replace(with_database(ls_live, db_settings.db_url, tmp_path),
                                   labelstudio_webhook_secret=SECRET)
    number, ranked, project = make_round(settings, small_idx, n=6)
    report = push(settings, DS, number, project=project)
    client = Client.from_settings(settings)
    backend = Backend(settings, DS, SECRET, port=0, client=client)
    backend.start()
    try:
        info = connect(settings, project, backend.url)
        yield settings, backend, ranked, project, report.project_id, info, client
    finally:
        backend.shutdown()
        backend.server_close()


@pytest.mark.labelstudio
@pytest.mark.slow
def test_label_studio_calls_setup_and_predict(live):
    """Label Studio's own calls reach the backend; tasks get curator's prediction, stored or computed."""
    from curator import rounds
    from curator.store.queries import dataset_id
    from curator.store.schema import Score

    settings, backend, ranked, project, pid, info, client = live
    assert backend.calls["/health"] >= 1 and backend.calls["/setup"] >= 1  # connect: Label Studio validated it
    from curator.integrations.labelstudio.backend import connect

    reconnected = connect(settings, project, backend.url)  # a restarted loop on the same port: updates what exists
    assert (reconnected["ml_backend_id"], reconnected["webhook_id"]) == (info["ml_backend_id"], info["webhook_id"])
    # push to a connected project stores no prediction (the backend serves them when a task opens),
    # and its reconciliation listing does not make Label Studio predict every listed task either
    from curator.integrations.labelstudio.push import push

    before = backend.calls["/predict"]
    again = push(settings, DS, 1, project=project, predictions={sid: ("3", 0.9, "x:1") for sid in ranked})
    assert (again.imported, again.predictions, again.predictions_on_demand) == (0, 0, True)
    assert backend.calls["/predict"] == before
    # a model trained on four labelled samples (saved, so the backend can load it) and a stored
    # prediction of it for two samples, with a confidence no model would give by chance
    with transaction(settings) as s:
        truth = store.linked_truth(s, TOOL, project)
    train = ranked[:4]
    model = rounds.train_model(settings, DS, train, [truth[i] for i in train], steps=2)
    with transaction(settings) as s:
        s.add_all([Score(sample_id=sid, kind=k, value=v, model_id=model.model_id)
                   for sid in ranked[4:] for k, v in (("prediction", 7.0), ("confidence", 0.123))])
        version = store.model_label(s, model.model_id)
    # a labeler opens a task that has no prediction: Label Studio asks the backend there and then
    # (not through the task list: with predictions on, listing tasks asks for the page's predictions too)
    with transaction(settings) as s:
        task_of = store.links(s, TOOL, project)
    before = backend.calls["/predict"]
    opened = client.http("GET", f"api/tasks/{task_of[ranked[0]]}", "open task")
    assert backend.calls["/predict"] == before + 1, (dict(backend.calls), opened.get("predictions"))
    assert [p["model_version"] for p in opened["predictions"]] == [version]
    before = backend.calls["/predict"]
    client.http("POST", "api/dm/actions", "retrieve predictions", params={"id": "retrieve_tasks_predictions",
                                                                          "project": pid},
                json={"selectedItems": {"all": True, "excluded": []}, "project": pid})
    assert backend.calls["/predict"] > before
    index = client.task_index(pid)
    for sid in ranked:
        task = client.http("GET", f"api/tasks/{index[sid][0]}", "read task")
        (pred,) = task["predictions"]
        assert pred["model_version"] == version
        (choice,) = pred["result"][0]["value"]["choices"]
        if sid in ranked[4:]:
            assert (choice, pred["score"]) == ("7", pytest.approx(0.123))
        else:  # computed on demand by the saved model
            assert choice in [str(c) for c in model.classes] and 0.0 < pred["score"] <= 1.0
    # Label Studio's own test call (the "Test" button): one random task through /predict
    test = client.http("POST", f"api/ml/{info['ml_backend_id']}/predict/test", "test predict",
                       params={"random": "true"})
    assert test["status"] == 200 and test["response"][0]["model_version"] == version


@pytest.mark.labelstudio
@pytest.mark.slow
def test_webhooks_record_annotations_and_pull_agrees(live):
    """Annotations made through the API arrive by webhook; pull afterwards finds nothing to change."""
    from curator.integrations.labelstudio import oracle
    from curator.integrations.labelstudio.pull import pull

    settings, backend, ranked, project, pid, info, client = live
    done = oracle.annotate(settings, project, sample_ids=ranked[:3], client=client)
    rows = _wait("3 answers by webhook", lambda: (r := _rows(settings)) and len(r) == 3 and r)
    with transaction(settings) as s:
        truth = store.linked_truth(s, TOOL, project)
    assert {r[1]: r[2] for r in rows} == {sid: truth[sid] for sid in ranked[:3]}
    assert {r[5] for r in rows} == {client.check()["email"]}

    wrong = str((int(truth[ranked[0]]) + 1) % 10)
    oracle.update_label(settings, done.annotation_ids[ranked[0]], wrong, project, client=client)
    _wait("the update by webhook", lambda: any(r[1] == ranked[0] and r[2] == wrong for r in _rows(settings)))
    client.http("DELETE", f"api/annotations/{done.annotation_ids[ranked[1]]}", "delete annotation")
    _wait("the delete by webhook", lambda: any(r[1] == ranked[1] and r[4] for r in _rows(settings)))

    stored = _rows(settings)
    report = pull(settings, project)
    assert (report.new, report.updated, report.deleted) == (0, 0, 0)
    assert _rows(settings) == stored


# --------------------------------------------------------------------------- agreement (pure numpy)


def test_cohen_kappa_by_hand():
    """50 items, two labelers: 20 both yes, 5 yes/no, 10 no/yes, 15 both no.
    p_o = 35/50 = 0.7; p_e = (25*30 + 25*20) / 50^2 = 0.5; kappa = (0.7 - 0.5) / 0.5 = 0.4."""
    from curator.integrations.labelstudio.agreement import cohen_kappa, report

    a = ["y"] * 20 + ["y"] * 5 + ["n"] * 10 + ["n"] * 15
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    answers = [(i, "ann", x) for i, x in enumerate(a)] + [(i, "bob", x) for i, x in enumerate(b)]
    got = report(answers)
    assert got["cohen_kappa"] == pytest.approx(0.4)
    # two labelers, every item twice: Fleiss' pi here = (0.7 - p_e') / (1 - p_e'), p_e' from the pooled
    # marginals (45 y, 55 n of 100): 0.45^2 + 0.55^2 = 0.505 -> (0.7 - 0.505) / 0.495
    assert got["fleiss_kappa"] == pytest.approx((0.7 - 0.505) / 0.495)
    assert got["per_labeler"]["ann"] == {"items": 50, "agreement": pytest.approx(0.7),
                                         "mean_cohen_kappa": pytest.approx(0.4)}
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None  # one label throughout: undefined, not 1


def test_fleiss_kappa_published_example():
    """Fleiss (1971) / the Wikipedia table: 10 items, 14 raters, 5 categories -> kappa 0.210."""
    from curator.integrations.labelstudio.agreement import fleiss_kappa, fleiss_per_class

    n = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                  [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])
    assert fleiss_kappa(n) == pytest.approx(0.2099, abs=1e-4)
    # per category, by hand for category 1: p_1 = 20/140; sum_i n_i1 (14 - n_i1) = 2*12 + 7*7 + 3*11 + 2*12
    # + 6*8 = 178; kappa_1 = 1 - 178 / (13 * 140 * p_1 * (1 - p_1))
    p1 = 20 / 140
    assert fleiss_per_class(n)[0] == pytest.approx(1 - 178 / (13 * 140 * p1 * (1 - p1)))


def test_krippendorff_alpha_published_example():
    """Krippendorff (2011), 4 coders, 12 units, missing answers: nominal alpha = 0.743."""
    from curator.integrations.labelstudio.agreement import krippendorff_alpha

    table = {"A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
             "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
             "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
             "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]}
    answers = [(u, who, str(v)) for who, row in table.items() for u, v in enumerate(row) if v is not None]
    assert krippendorff_alpha(answers) == pytest.approx(0.743, abs=5e-4)


def test_majority_and_dawid_skene():
    """A labeler who is always wrong is outvoted by majority and discounted by Dawid-Skene."""
    from curator.integrations.labelstudio.agreement import dawid_skene, majority

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 60)
    answers = []
    for i, t in enumerate(truth):
        answers.append((i, "good", str(t)))
        answers.append((i, "fair", str(t if rng.random() < 0.8 else (t + 1) % 3)))
        answers.append((i, "bad", str((t + 1) % 3)))
    assert majority([(0, "x", "b"), (0, "y", "a")]) == {0: "a"}  # a tie goes to the first label, reproducibly
    labels, accuracy = dawid_skene(answers)
    assert sum(labels[i] == str(t) for i, t in enumerate(truth)) == len(truth)
    assert accuracy["good"] > 0.95 and accuracy["bad"] < 0.05


@pytest.mark.labelstudio
@pytest.mark.slow
def test_overlap_two_gives_agreement_by_hand(ls_server, small_idx, tmp_path):
    """--overlap 2: two labelers answer each task; pull's agreement figures match a hand computation.

    Four tasks; labeler A answers 1, 1, 2, 2 and labeler B 1, 2, 2, 2 (one disagreement).
    Cohen: p_o = 3/4, p_e = (2*1 + 2*3) / 16 = 1/2, kappa = 1/2. Fleiss: pooled 3 x "1", 5 x "2",
    p_e = (9 + 25) / 64, kappa = (48 - 34) / (64 - 34) = 7/15. Krippendorff: D_o = 2/8,
    D_e = (64 - 34) / (8 * 7), alpha = 1 - (2/8) / (30/56) = 8/15.
    """
    from curator.integrations.labelstudio import oracle
    from curator.integrations.labelstudio.client import Client
    from curator.integrations.labelstudio.pull import pull
    from curator.integrations.labelstudio.push import push

    settings = with_database(ls_server, None, tmp_path)
    number, ranked, project = make_round(settings, small_idx, n=4)
    report = push(settings, DS, number, project=project, overlap=2)
    client = Client.from_settings(settings)
    assert client.project(report.project_id)["maximum_annotations"] == 2
    a = dict(zip(ranked, ["1", "1", "2", "2"]))
    b = dict(zip(ranked, ["1", "2", "2", "2"]))
    oracle.annotate(settings, project, sample_ids=ranked, labels=a, annotator="overlap-a@example.org", client=client)
    oracle.annotate(settings, project, sample_ids=ranked, labels=b, annotator="overlap-b@example.org", client=client)
    got = pull(settings, project).as_dict()["agreement"]
    assert (got["items"], got["labelers"]) == (4, 2)
    assert got["cohen_kappa"] == pytest.approx(0.5)
    assert got["fleiss_kappa"] == pytest.approx(7 / 15)
    assert got["krippendorff_alpha"] == pytest.approx(8 / 15)
    assert got["per_labeler"]["overlap-a@example.org"]["agreement"] == pytest.approx(0.75)
    assert got["per_class"]["1"]["answers"] == 3 and got["per_class"]["2"]["answers"] == 5
    # raising the overlap of an existing project on a later push
    push(settings, DS, number, project=project, overlap=3)
    assert client.project(report.project_id)["maximum_annotations"] == 3
