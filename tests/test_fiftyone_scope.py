"""The App acts on what the user sees: the long operators (score, select, push) may run as
delegated operations with progress, and score and select act on the App's selection or
current view. Run through FiftyOne's own machinery (no browser): ``execute_operator`` with a
selection or a view, and a delegated run queued and then executed by FiftyOne's
``DelegatedOperationService``, as ``fiftyone delegated launch`` does.
"""

from __future__ import annotations

import pytest

from fiftyone_data import make_workspace

pytestmark = pytest.mark.fiftyone

URI = "@curator/fiftyone"


@pytest.fixture
def synced(settings, fiftyone_db, monkeypatch):
    """(workspace data, the synced FiftyOne dataset, pool ids), with a small model trained."""
    import fiftyone

    from curator import rounds
    from curator.integrations.fiftyone import sync
    from curator.integrations.fiftyone.app import install
    from curator.store.queries import dataset_id
    from curator.store.session import transaction

    install(fiftyone_db["FIFTYONE_PLUGINS_DIR"])
    monkeypatch.delenv("CURATOR_WORKSPACE", raising=False)
    data = make_workspace(settings)
    labeled = sorted(data["human"])
    rounds.train_model(settings, "digits", labeled, [data["human"][i] for i in labeled], steps=20)
    sync(settings, "digits")
    with transaction(settings) as s:
        pool = rounds.pool_ids(s, dataset_id(s, "digits"))[0].tolist()
    yield data, fiftyone.load_dataset("curator-digits"), pool
    fiftyone.delete_datasets("*")


def _fo_ids(ds, curator_ids):
    from fiftyone import ViewField as F

    return ds.match(F("curator_id").is_in(list(curator_ids))).values("id")


def test_long_operators_may_be_delegated(fiftyone_db):
    import fiftyone.operators as foo

    from curator.integrations.fiftyone.app import install

    install(fiftyone_db["FIFTYONE_PLUGINS_DIR"])
    delegable = {op.name for op in foo.list_operators() if op.plugin_name == URI and op.config.allow_delegated_execution}
    assert delegable == {"score_pool", "select_batch", "push_to_label_studio"}
    assert all(op.config.allow_immediate_execution for op in foo.list_operators() if op.plugin_name == URI)


@pytest.mark.slow
def test_delegated_select_acts_on_the_selection_and_reports_progress(settings, synced):
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionContext, ExecutionRunState

    from curator.store import rounds as store_rounds
    from curator.store.queries import dataset_id
    from curator.store.session import transaction

    data, ds, pool = synced
    chosen = pool[5:11]  # six pool samples, and a labeled one that is not in the pool
    selected = _fo_ids(ds, chosen + [sorted(data["human"])[0]])
    queued = foo.execute_operator(f"{URI}/select_batch", ctx={
        "dataset": ds, "selected": selected, "request_delegation": True,
        "params": {"policy": "entropy", "budget": 3, "seed": 0, "model": ""}})
    assert queued.delegated
    with transaction(settings) as s:  # queued only: nothing selected yet
        assert store_rounds.numbers(s, dataset_id(s, "digits")) == [1]

    svc = DelegatedOperationService()
    done, = svc.execute_queued_operations(operator=f"{URI}/select_batch")
    assert done.error is None, done.error
    assert done.result["summary"] == "round 2: 3 samples selected by entropy from a pool of 6 (the 6 pool samples of 7 in view)"
    doc = svc.get(queued.result["id"])
    assert doc.run_state == ExecutionRunState.COMPLETED
    assert (doc.status.progress, doc.status.label) == (1.0, "round 2 recorded")
    with transaction(settings) as s:
        r2 = store_rounds.get(s, dataset_id(s, "digits"), 2)
        picked = store_rounds.sample_ids(s, r2).tolist()
    assert len(picked) == 3 and set(picked) <= set(chosen)

    # the push form defaults to the round of the selected samples
    form = foo.get_operator(f"{URI}/push_to_label_studio").resolve_input(ExecutionContext(request_params={
        "dataset_name": ds.name, "selected": _fo_ids(ds, picked[:2]), "params": {}})).to_json()
    assert form["type"]["properties"]["round"]["default"] == "2"


def test_score_acts_on_the_current_view(settings, synced):
    import fiftyone.operators as foo
    from fiftyone import ViewField as F

    data, ds, pool = synced
    seen = pool[:8]
    view = ds.match(F("curator_id").is_in(seen + sorted(data["human"])[:2]))
    result = foo.execute_operator(f"{URI}/score_pool", ctx={
        "view": view, "params": {"model": "", "mc_samples": 2, "subsample": 0}})
    assert "scored 8 pool samples (the 8 pool samples of 10 in view)" in result.result["summary"]
    ds.reload()
    assert sorted(ds.exists("curator_bald").values("curator_id")) == sorted(seen)

    # a selection with no pool sample in it is refused, and nothing is scored
    labeled = _fo_ids(ds, sorted(data["human"])[:3])
    with pytest.raises(Exception, match="none of the 3 samples in view is in the unlabeled pool"):
        foo.execute_operator(f"{URI}/score_pool", ctx={"dataset": ds, "selected": labeled,
                                                        "params": {"model": "", "mc_samples": 2}})


@pytest.mark.labelstudio
@pytest.mark.slow
def test_delegated_push_sends_only_the_selected_samples_of_the_round(ls_round, fiftyone_db, monkeypatch):
    """The push operator acts on the App's selection like score and select: a delegated run pushes
    just the selected samples of the round, reports progress batch by batch, and leaves the round
    unpushed until the whole of it is sent."""
    import fiftyone
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    from curator.integrations.fiftyone import sync
    from curator.integrations.fiftyone.app import install
    from curator.integrations.labelstudio.client import Client
    from curator.integrations.labelstudio.push import push
    from curator.store import rounds as store_rounds
    from curator.store.queries import dataset_id
    from curator.store.session import transaction

    settings, number, ranked, project = ls_round
    install(fiftyone_db["FIFTYONE_PLUGINS_DIR"])
    for env, value in {"CURATOR_WORKSPACE": str(settings.workspace), "CURATOR_DB_URL": settings.db_url,
                       "CURATOR_LABELSTUDIO_URL": settings.labelstudio_url,
                       "CURATOR_LABELSTUDIO_TOKEN": settings.labelstudio_token}.items():
        monkeypatch.setenv(env, value)
    try:
        sync(settings, "mnist89", fo_name="ls-scope")
        ds = fiftyone.load_dataset("ls-scope")
        chosen = ranked[2:5]
        outside = [i for i in ds.values("curator_id") if i not in ranked][:2]  # not in the round: ignored
        queued = foo.execute_operator(f"{URI}/push_to_label_studio", ctx={
            "dataset": ds, "selected": _fo_ids(ds, chosen + outside), "request_delegation": True,
            "params": {"round": str(number), "project": project}})
        assert queued.delegated
        svc = DelegatedOperationService()
        done, = svc.execute_queued_operations(operator=f"{URI}/push_to_label_studio")
        assert done.error is None, done.error
        assert done.result["summary"].startswith(
            f"round {number} (3 of the round in view) -> Label Studio project {project!r}: 3 tasks imported")
        doc = svc.get(queued.result["id"])
        assert (doc.status.progress, doc.status.label) == (1.0, "pushed")

        with transaction(settings) as s:
            ds_id = dataset_id(s, "mnist89")
            status = next(r.status for r in store_rounds.list_rounds(s, ds_id) if r.number == number)
        assert status != "pushed"  # a part of the round only
        report = push(settings, "mnist89", number, project=project)
        assert (report.imported, report.already_linked) == (len(ranked) - 3, 3)
        index = Client.from_settings(settings).task_index(report.project_id)
        assert sorted(index) == sorted(ranked) and all(len(v) == 1 for v in index.values())
        with transaction(settings) as s:
            assert next(r.status for r in store_rounds.list_rounds(s, ds_id) if r.number == number) == "pushed"
    finally:
        fiftyone.delete_datasets("*")
