"""Push, pull and the oracle against a real Label Studio server (one per session, see ls_fixtures)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
from sqlalchemy import func, select

from curator.exceptions import LabelStudioError, ValidationError
from curator.integrations.labelstudio import oracle
from curator.integrations.labelstudio import push as push_mod
from curator.integrations.labelstudio.client import Client
from curator.integrations.labelstudio.pull import pull
from curator.integrations.labelstudio.push import push
from curator.store.schema import Annotation, LabelProject, Sample, TaskLink
from curator.store.queries import agreed_labels
from curator.store.session import transaction
from ls_fixtures import LS_DATASET as DS, make_round, with_database

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]


def _truth(settings, ids):
    with transaction(settings) as s:
        return dict(s.execute(select(Sample.id, Sample.gt_label).where(Sample.id.in_(ids))).all())


def _links(settings, project):
    with transaction(settings) as s:
        return dict(s.execute(select(TaskLink.sample_id, TaskLink.task_id).where(TaskLink.project == project)).all())


def _annotations(settings):
    with transaction(settings) as s:
        rows = s.execute(select(Annotation.sample_id, Annotation.label, Annotation.skipped, Annotation.deleted,
                                Annotation.annotator, Annotation.external_id)).all()
        return [tuple(r) for r in rows]


def _dataset_id(settings):
    from curator.store.queries import dataset_id

    with transaction(settings) as s:
        return dataset_id(s, "mnist89")


def test_push_queue_oracle_pull_update(ls_server, db_settings, small_idx, tmp_path, monkeypatch):
    """The whole loop on SQLite and PostgreSQL: push, re-push, queue order, answers, pull, edits."""
    from curator.integrations.labelstudio import pull as pull_mod

    proofs = []  # what each later pull's quick path listed (None: it fell back to listing every task)
    real_since = pull_mod._changed_since
    monkeypatch.setattr(pull_mod, "_changed_since", lambda *a: proofs.append(real_since(*a)) or proofs[-1])
    settings = with_database(ls_server, db_settings.db_url, tmp_path)
    number, ranked, project = make_round(settings, small_idx)
    truth = _truth(settings, ranked)
    outside = tmp_path / "elsewhere.png"  # an image ingested from outside the media folder
    with transaction(settings) as s:
        sample = s.get(Sample, ranked[5])
        shutil.copy(sample.uri, outside)
        sample.uri = str(outside)
    wrong = {sid: str((int(truth[sid]) + 1) % 10) for sid in ranked}
    predictions = {sid: (wrong[sid] if i % 2 else truth[sid], 0.5 + i / 100, "cnn-v1")
                   for i, sid in enumerate(ranked)}

    report = push(settings, DS, number, project=project, predictions=predictions, batch_size=5)
    assert (report.imported, report.already_linked, report.created_project, report.predictions) == (12, 0, True, 12)
    client = Client.from_settings(settings)
    index = client.task_index(report.project_id)
    assert sorted(index) == sorted(ranked) and all(len(v) == 1 for v in index.values())
    assert _links(settings, project) == {sid: ids[0] for sid, ids in index.items()}

    task = client.http("GET", f"api/tasks/{index[ranked[1]][0]}", "read task")
    assert task["data"]["rank"] == 1 and task["data"]["round"] == 1
    assert task["data"]["image"].startswith("/data/local-files/?d=")
    (pred,) = task["predictions"]
    assert pred["model_version"] == "cnn-v1" and pred["score"] == pytest.approx(0.51)
    assert pred["result"][0]["value"]["choices"] == [wrong[ranked[1]]]
    served = client.sdk._client_wrapper.httpx_client.request(task["data"]["image"].lstrip("/"), method="GET")
    assert served.status_code == 200 and served.content[:4] == b"\x89PNG"
    embedded = client.http("GET", f"api/tasks/{index[ranked[5]][0]}", "read task")["data"]["image"]
    assert embedded.startswith("data:image/png;base64,")

    again = push(settings, DS, number, project=project, predictions=predictions)
    assert (again.imported, again.already_linked, again.predictions) == (0, 12, 0)  # one prediction a task
    assert sum(len(v) for v in client.task_index(report.project_id).values()) == 12

    # The queue serves rank order (sequential sampling over rank-ordered imports).
    done = oracle.annotate(settings, project, limit=5, skip={ranked[3]})
    assert done.order == ranked[:5] and (done.annotated, done.skipped) == (4, 1)

    first = pull(settings, project)
    assert (first.new, first.updated, first.deleted, first.skipped) == (5, 0, 0, 1)
    # a first pull lists only the answered tasks (the skipped one too), proven complete by the counters
    assert sorted(t["id"] for t in proofs[-1]) == sorted(index[sid][0] for sid in ranked[:5])
    agreed = agreed_labels_of(settings)
    assert {sid: lab for sid, (lab, _, _) in agreed.items()} == {sid: truth[sid] for sid in ranked[:5] if sid != ranked[3]}
    assert (pull(settings, project).new, pull(settings, project).updated) == (0, 0)
    assert proofs[-2:] == [[], []]  # nothing changed, proven by the counters without listing the tasks

    # A second annotator disagrees on rank 0; both answers are kept.
    other = oracle.annotate(settings, project, sample_ids=[ranked[0]], labels={ranked[0]: wrong[ranked[0]]},
                            annotator="second@example.org")
    second = pull(settings, project)
    assert second.new == 1 and second.disagreements == 1
    assert [t["id"] for t in proofs[-1]] == [index[ranked[0]][0]]  # only the answered task was listed
    rows = [r for r in _annotations(settings) if r[0] == ranked[0]]
    assert sorted(r[4] for r in rows)[1] == "second@example.org" and len(rows) == 2
    assert agreed_labels_of(settings)[ranked[0]][1:] == (0.5, 2)

    # The second annotator corrects the answer; the pull updates it and agreement is back.
    oracle.update_label(settings, other.annotation_ids[ranked[0]], truth[ranked[0]], project)
    third = pull(settings, project)
    assert (third.new, third.updated, third.deleted) == (0, 1, 0)
    assert agreed_labels_of(settings)[ranked[0]] == (truth[ranked[0]], 1.0, 2)

    # An annotation deleted on the server is marked deleted, not removed.
    client.http("DELETE", f"api/annotations/{done.annotation_ids[ranked[1]]}", "delete annotation")
    fourth = pull(settings, project)
    assert (fourth.new, fourth.updated, fourth.deleted) == (0, 0, 1)
    assert ranked[1] not in agreed_labels_of(settings)
    assert [r[3] for r in _annotations(settings) if r[0] == ranked[1]] == [True]
    assert pull(settings, project).deleted == 0


def agreed_labels_of(settings):
    with transaction(settings) as s:
        return agreed_labels(s, _dataset_id(settings))


def test_interrupted_push_then_rerun_keeps_each_sample_once(ls_round, monkeypatch):
    settings, number, ranked, project = ls_round
    real = push_mod._commit_links
    calls = {"n": 0}

    def dies_on_second_batch(*args):
        calls["n"] += 1
        if calls["n"] == 2:  # the server imported batch 2; the process dies before the commit
            raise KeyboardInterrupt
        real(*args)

    predictions = {sid: (str(i % 10), 0.5, "cnn-v1") for i, sid in enumerate(ranked)}
    monkeypatch.setattr(push_mod, "_commit_links", dies_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        push(settings, DS, number, project=project, batch_size=4, predictions=predictions)
    monkeypatch.setattr(push_mod, "_commit_links", real)
    assert len(_links(settings, project)) == 4
    client = Client.from_settings(settings)
    with transaction(settings) as s:
        pid = s.scalar(select(LabelProject.external_id).where(LabelProject.name == project))
    assert sum(len(v) for v in client.task_index(pid).values()) == 8

    # A copy of one task imported by hand (Label Studio does not de-duplicate) is removed too.
    copy = client.http("GET", f"api/tasks/{client.task_index(pid)[ranked[0]][0]}", "read task")["data"]
    client.http("POST", f"api/projects/{pid}/import", "import copy", json=[{"data": copy}])

    report = push(settings, DS, number, project=project, batch_size=4, predictions=predictions)
    assert (report.already_linked, report.reconciled, report.imported, report.duplicates_removed) == (4, 4, 4, 1)
    index = client.task_index(pid)
    assert sorted(index) == sorted(ranked) and all(len(v) == 1 for v in index.values())
    assert _links(settings, project) == {sid: v[0] for sid, v in index.items()}
    # The killed push imported tasks but no pre-annotation; the rerun gave every task one, and
    # a third push (the cheap reconciliation: ids and prediction counts match the links) none.
    assert report.predictions == 12
    assert sorted(t["total_predictions"] for t in client.tasks(pid, "id,total_predictions")) == [1] * 12
    assert push(settings, DS, number, project=project, predictions=predictions).predictions == 0


def test_server_down_and_wrong_token(ls_round, tmp_path):
    settings, number, _, project = ls_round
    from ls_fixtures import _free_port

    down = dataclasses.replace(settings, labelstudio_url=f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(LabelStudioError, match="does not answer.*curator labelstudio up") as err:
        push(down, DS, number, project=project)
    assert down.labelstudio_url in str(err.value)
    bad_token = "wrong-" + settings.labelstudio_token[::-1]
    with pytest.raises(LabelStudioError, match="refused the API token") as err:
        push(dataclasses.replace(settings, labelstudio_token=bad_token), DS, number, project=project)
    assert bad_token not in str(err.value) and settings.labelstudio_token not in str(err.value)
    with transaction(settings) as s:
        assert s.scalar(select(func.count()).select_from(TaskLink)) == 0
        assert s.scalar(select(func.count()).select_from(LabelProject)) == 0


def test_project_deleted_on_server(ls_round):
    settings, number, ranked, project = ls_round
    first = push(settings, DS, number, project=project)
    client = Client.from_settings(settings)
    client.http("DELETE", f"api/projects/{first.project_id}", "delete project")
    with pytest.raises(LabelStudioError, match="no longer exists.*--recreate"):
        push(settings, DS, number, project=project)
    with pytest.raises(LabelStudioError, match="no longer exists"):
        pull(settings, project)
    assert len(_links(settings, project)) == 12  # nothing changed
    again = push(settings, DS, number, project=project, recreate=True)
    assert again.project_id != first.project_id and again.imported == 12
    assert sorted(client.task_index(again.project_id)) == sorted(ranked)


def _cli(settings, monkeypatch, capsys, *args):
    """Run the curator CLI against ``settings``; return (exit code, stdout, stderr)."""
    from curator.cli import main

    monkeypatch.setenv("CURATOR_DB_URL", settings.db_url)
    monkeypatch.setenv("CURATOR_WORKSPACE", str(settings.workspace))
    monkeypatch.setenv("CURATOR_LABELSTUDIO_URL", settings.labelstudio_url)
    monkeypatch.setenv("CURATOR_LABELSTUDIO_TOKEN", settings.labelstudio_token)
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


def test_push_finds_the_round_by_its_number_within_the_dataset(ls_server, db_settings, small_idx, tmp_path,
                                                               monkeypatch, capsys):
    """`curator push --round 1 -d mnist89` pushes mnist89's round 1, whose id is 2 (another dataset's
    round 1 was recorded first); without --dataset, two datasets are a one-line error naming both."""
    from curator.ingest import ingest_idx
    from curator.store import rounds as store_rounds
    from curator.store.schema import Round

    settings = with_database(ls_server, db_settings.db_url, tmp_path)
    ingest_idx(*small_idx, dataset="other", split="train", settings=settings)
    with transaction(settings) as s:
        other = _dataset_id_of(s, "other")
        first = s.scalars(select(Sample.id).where(Sample.dataset_id == other).order_by(Sample.id).limit(5)).all()
        store_rounds.create(s, other, first, [0.5] * 5, policy="p", params=None, budget=5, seed=0, model_id=None)
    number, ranked, project = make_round(settings, small_idx)

    def run(*args):
        return _cli(settings, monkeypatch, capsys, *args)

    code, out, err = run("push", "--round", str(number), "--project", project)
    assert code == ValidationError.exit_code and err.count("\n") == 1
    assert "several datasets exist (mnist89, other); pass --dataset NAME" in err
    code, out, err = run("push", "--round", str(number), "-d", "MNIST89", "--project", project, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["dataset"], report["round"], report["imported"]) == (DS, 1, len(ranked))
    with transaction(settings) as s:
        ours = s.scalar(select(Round).where(Round.dataset_id == _dataset_id_of(s, DS), Round.number == 1))
        assert report["round_id"] == ours.id != 1 and ours.status == "pushed"
        assert s.scalar(select(Round.status).where(Round.id == 1)) == "selected"  # other's round 1: untouched
    index = Client.from_settings(settings).task_index(report["project_id"])
    assert sorted(index) == sorted(ranked)
    code, _, err = run("push", "--round", "2", "-d", DS, "--project", project)
    assert code == 4 and "round 2 of dataset 'mnist89' does not exist (rounds: 1)" in err


def _dataset_id_of(s, name):
    from curator.store.queries import dataset_id

    return dataset_id(s, name)


def test_task_deleted_by_hand(ls_round, monkeypatch, capsys):
    settings, number, ranked, project = ls_round
    first = push(settings, DS, number, project=project)
    oracle.annotate(settings, project, limit=1)
    assert pull(settings, project).new == 1
    client = Client.from_settings(settings)
    task_id = _links(settings, project)[ranked[0]]
    client.http("DELETE", f"api/tasks/{task_id}", "delete task")
    code, _, err = _cli(settings, monkeypatch, capsys, "pull", "--project", project)
    assert code == LabelStudioError.exit_code and "were deleted on the server" in err
    assert [r[3] for r in _annotations(settings) if r[0] == ranked[0]] == [True]  # the deletion is stored
    report = pull(settings, project)
    assert report.missing_tasks == [ranked[0]] and report.deleted == 0
    with pytest.raises(LabelStudioError, match="deleted on the server.*--replace-deleted"):
        push(settings, DS, number, project=project)
    again = push(settings, DS, number, project=project, replace_deleted=True)
    assert again.imported == 1
    index = client.task_index(first.project_id)
    assert sorted(index) == sorted(ranked) and all(len(v) == 1 for v in index.values())


def test_missing_image_and_bad_config_reach_nothing(ls_round, tmp_path):
    settings, number, ranked, project = ls_round
    with transaction(settings) as s:
        s.get(Sample, ranked[2]).uri = str(tmp_path / "gone.png")
    with pytest.raises(ValidationError, match=f"missing on disk: sample {ranked[2]}"):
        push(settings, DS, number, project=project)
    bad = ('<View><Image name="img" value="$image"/><Choices name="c" toName="img">'
           '<Choice value="0"/><Choice value="1"/></Choices></View>')
    with pytest.raises(ValidationError, match="lacks the dataset's classes"):
        push(settings, DS, number, project=project + "b", label_config=bad)
    client = Client.from_settings(settings)
    assert client.find_projects(project) == [] and client.find_projects(project + "b") == []


def test_user_config_and_cli(ls_round, monkeypatch, capsys):
    settings, number, ranked, project = ls_round
    config = settings.workspace / f"{project}.xml"
    choices = "".join(f'<Choice value="{c}"/>' for c in range(10))
    config.write_text(f'<View><Text name="t" value="$dataset"/><Image name="pic" value="$image"/>'
                      f'<Choices name="digit" toName="pic">{choices}<Choice value="unsure"/></Choices></View>')

    def run(*args):
        return _cli(settings, monkeypatch, capsys, *args)

    code, out, _ = run("push", "--round", str(number), "--project", project, "--label-config", str(config), "--json")
    assert code == 0 and json.loads(out)["imported"] == 12
    oracle.annotate(settings, project, limit=2)
    code, out, _ = run("pull", "--project", project, "--json")
    assert code == 0 and json.loads(out)["new"] == 2
    assert {r[1] for r in _annotations(settings)} <= {str(c) for c in range(10)}
    code, out, _ = run("labelstudio", "status")
    assert code == 0 and "running" in out
    settings = dataclasses.replace(settings, labelstudio_token="not-the-token-123")
    code, out, err = run("pull", "--project", project)
    assert code == LabelStudioError.exit_code and "refused the API token" in err
    assert "not-the-token-123" not in err + out


@pytest.mark.browser
def test_screenshot_of_the_queue_shows_the_task_and_its_preannotation(ls_round, tmp_path):
    """A pushed task, opened from the round's view in headless Chromium, with the model's guess."""
    import os

    from conftest import unavailable
    from ls_fixtures import CHROMIUM, screenshot_task

    if not os.path.exists(CHROMIUM):
        unavailable(f"{CHROMIUM} is missing: apt-get install -y chromium (tests/services.sh does)")
    settings, number, ranked, project = ls_round
    truth = _truth(settings, ranked)
    predictions = {sid: (truth[sid], 0.42, "cnn-v1") for sid in ranked}
    report = push(settings, DS, number, project=project, predictions=predictions)
    task_id = _links(settings, project)[ranked[0]]
    out = screenshot_task(settings, report.project_id, report.view_id, task_id, tmp_path / "queue.png",
                          expect_text=f"Sample {ranked[0]}, rank 0")
    assert out.stat().st_size > 20_000
    from PIL import Image

    with Image.open(out) as img:
        assert img.size == (1400, 900) and len(img.convert("L").getcolors(256) or []) > 50  # not a blank page
    if os.environ.get("CURATOR_LS_SCREENSHOT"):
        shutil.copy(out, os.environ["CURATOR_LS_SCREENSHOT"])


def test_predictions_from_the_rounds_stored_scores(ls_round):
    """Without explicit predictions, push shows the round model's "prediction"/"confidence" scores."""
    from curator.store.schema import Model, Round, Score

    settings, number, ranked, project = ls_round
    with transaction(settings) as s:
        model = Model(name="cnn", version="r1", checksum="0" * 64)
        s.add(model)
        s.flush()
        s.scalar(select(Round).where(Round.number == number)).model_id = model.id
        s.add_all([Score(sample_id=sid, kind="prediction", value=float(i % 10), model_id=model.id) for i, sid in enumerate(ranked)]
                  + [Score(sample_id=sid, kind="confidence", value=0.3, model_id=model.id) for sid in ranked])
    report = push(settings, DS, number, project=project)
    task = Client.from_settings(settings).http("GET", f"api/tasks/{_links(settings, project)[ranked[3]]}", "read task")
    (pred,) = task["predictions"]
    assert (pred["model_version"], pred["score"]) == ("cnn:r1", pytest.approx(0.3))
    assert pred["result"][0]["value"]["choices"] == ["3"] and report.imported == 12


def test_restart_on_the_same_data_takes_the_new_token(tmp_path):
    """`curator labelstudio up` with another token on an existing data folder: projects kept,
    the new token accepted, the old one refused, neither written to the server log."""
    import secrets

    from curator.integrations.labelstudio import server
    from curator.integrations.labelstudio.labelconfig import image_classification
    from curator.settings import Settings
    from ls_fixtures import _free_port

    quiet = lambda _m: None  # noqa: E731
    first = Settings(workspace=tmp_path / "ws", labelstudio_url=f"http://127.0.0.1:{_free_port()}",
                     labelstudio_token=secrets.token_hex(20))
    server.start(first, timeout=600, echo=quiet)
    try:
        client = Client.from_settings(first)
        client.call("create", client.sdk.projects.create, title="kept-project",
                    label_config=image_classification(["0", "1"]).xml)
    finally:
        server.stop(first, echo=quiet)
    second = dataclasses.replace(first, labelstudio_token=secrets.token_hex(20))
    server.start(second, timeout=600, echo=quiet)
    try:
        assert [p["title"] for p in Client.from_settings(second).find_projects("kept-project")] == ["kept-project"]
        with pytest.raises(LabelStudioError, match="refused the API token"):
            Client.from_settings(first).check()
    finally:
        server.stop(second, echo=quiet)
    log = (server.data_dir(second) / "server.log").read_text()
    assert first.labelstudio_token not in log and second.labelstudio_token not in log


def test_copies_a_retried_create_left_are_dropped(ls_server, tmp_path):
    """Label Studio on SQLite re-runs a create that hit "database is locked", so one create call
    can leave several projects of one title (three after two concurrent pushes on a busy shared
    server): the push keeps the one it was answered, deletes the empty others, never one with tasks."""
    import uuid

    settings = with_database(ls_server, None, tmp_path)
    client = Client.from_settings(settings)
    name = f"t-{uuid.uuid4().hex[:10]}"
    make = lambda: client.call("create", client.sdk.projects.create, title=name).id  # noqa: E731
    early, kept, late, full = make(), make(), make(), make()
    client.http("POST", f"api/projects/{full}/import", "import", json=[{"data": {"text": "x"}}])
    try:
        assert sorted(push_mod.drop_retried_copies(client, name, kept)) == [early, late]
        assert sorted(p["id"] for p in client.find_projects(name)) == [kept, full]
        assert push_mod.drop_retried_copies(client, name, kept) == []
    finally:
        for pid in (kept, full):
            client.http("DELETE", f"api/projects/{pid}", "delete project")
