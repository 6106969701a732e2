"""The App plugin, run through FiftyOne's own operator machinery (no browser).

The plugin is installed into the session's private plugins folder the way
the README says, found by FiftyOne's plugin discovery, and its operators run
with ``fiftyone.operators.execute_operator``: form validation (``resolve_input``)
and execution happen exactly as when the App calls them.
"""

from __future__ import annotations

import pytest

from fiftyone_data import make_workspace

pytestmark = pytest.mark.fiftyone

URI = "@curator/fiftyone"


@pytest.fixture
def fo(fiftyone_db):
    import fiftyone

    from curator.integrations.fiftyone.app import install

    install(fiftyone_db["FIFTYONE_PLUGINS_DIR"])
    yield fiftyone
    fiftyone.delete_datasets("*")


@pytest.fixture
def synced(settings, fo, monkeypatch):
    from curator.integrations.fiftyone import sync

    monkeypatch.delenv("CURATOR_WORKSPACE", raising=False)
    data = make_workspace(settings)
    sync(settings, "digits")
    return data, fo.load_dataset("curator-digits")


def run(operator, ds, **params):
    import fiftyone.operators as foo

    return foo.execute_operator(f"{URI}/{operator}", ctx={"dataset": ds, "params": params})


def form(operator, ds, **params):
    """The operator's resolved input form as JSON, as the App receives it."""
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionContext

    op = foo.get_operator(f"{URI}/{operator}")
    ctx = ExecutionContext(request_params={"dataset_name": ds.name, "params": params})
    return op.resolve_input(ctx).to_json()


def test_plugin_is_discovered_with_all_operators(fo):
    import fiftyone.operators as foo
    import fiftyone.plugins as fop

    assert URI in [p.name for p in fop.list_plugins()]
    names = {op.uri for op in foo.list_operators() if op.plugin_name == URI}
    assert names == {f"{URI}/{n}" for n in (
        "refresh_curator", "score_pool", "select_batch", "push_to_label_studio", "pull_annotations",
        "create_version")}


def test_create_version_from_the_app_and_resync(settings, synced):
    from curator import versions

    data, ds = synced
    result = run("create_version", ds, name="from-app", message="reviewed in FiftyOne")
    assert result.result["summary"].startswith(f"version from-app: {len(data['human'])} labeled samples")
    (info,) = versions.list_versions(dataset="digits", settings=settings)
    assert (info.name, info.message) == ("from-app", "reviewed in FiftyOne")
    ds.reload()  # the operator re-synced: the App shows which version holds each label
    assert {s.curator_id for s in ds if s.curator_version == "from-app"} == set(data["human"])

    with pytest.raises(Exception, match="version 'from-app' already exists in dataset 'digits'"):
        run("create_version", ds, name="from-app")
    assert len(versions.list_versions(dataset="digits", settings=settings)) == 1


def test_select_batch_form_rejects_a_budget_larger_than_the_pool(synced):
    data, ds = synced
    pool = len(set(data["ids"]) - set(data["human"]) - set(data["round"]) - {data["duplicate"][1]})
    schema = form("select_batch", ds, policy="entropy", budget=pool + 1)
    budget = schema["type"]["properties"]["budget"]
    assert budget["invalid"] and budget["error_message"] == (
        f"budget {pool + 1} is larger than the pool ({pool} samples); choose at most {pool}")
    assert "curator" in schema["type"]["properties"]["policy"]["type"]["values"]
    assert not form("select_batch", ds, policy="entropy", budget=pool)["type"]["properties"]["budget"]["invalid"]
    with pytest.raises(Exception, match=rf"larger than the pool \({pool} samples\)"):
        run("select_batch", ds, policy="entropy", budget=pool + 1, seed=0)


def test_operators_refuse_a_dataset_curator_did_not_sync(fo):
    plain = fo.Dataset("not-curator")
    schema = form("select_batch", plain)
    error = schema["type"]["properties"]["curator_error"]
    assert error["invalid"] and "was not synced by curator" in error["error_message"]
    with pytest.raises(Exception, match="was not synced by curator"):
        run("refresh_curator", plain)


def test_refresh_picks_up_new_state(settings, synced, fo):
    from curator.store.models import Annotation
    from curator.store.session import transaction

    data, ds = synced
    sid = data["ids"][40]
    with transaction(settings) as s:
        s.add(Annotation(sample_id=sid, tool="test", external_id="late", label="7"))
    run("refresh_curator", ds)
    ds.reload()
    assert ds.match(fo.ViewField("curator_id") == sid).first().human_label.label == "7"


@pytest.mark.slow
def test_score_then_select_from_the_app(settings, synced, fo):
    """score_pool scores with the dataset's newest model and stores scores and
    predictions; select_batch records round 2; the App's dataset shows both."""
    from curator import rounds
    from curator.store.queries import dataset_id
    from curator.store.session import transaction

    data, ds = synced
    with transaction(settings) as s:
        pool = rounds.pool_ids(s, dataset_id(s, "digits"))[0].tolist()
    labeled = sorted(data["human"])
    model = rounds.train_model(settings, "digits", labeled, [data["human"][i] for i in labeled], steps=20)
    result = run("score_pool", ds, model="", mc_samples=2, subsample=0)
    assert result.result["summary"].startswith(f"scored {len(pool)} pool samples with model {model.model_id}:")
    ds.reload()
    scored = ds.match(fo.ViewField("curator_id").is_in(pool))
    assert None not in scored.values("curator_bald") and None not in scored.values("curator_novelty")
    confidences = scored.values("prediction.confidence")
    assert all(0.0 < c <= 1.0 for c in confidences) and len(set(confidences)) > 1  # the model's own

    result = run("select_batch", ds, policy="entropy", budget=4, seed=0, model="")
    assert result.result["summary"].startswith("round 2: 4 samples selected by entropy")
    ds.reload()
    batch = ds.load_saved_view("next-batch")
    assert batch.values("curator_round") == [2] * 4 and batch.values("curator_rank") == [0, 1, 2, 3]
    assert set(batch.values("curator_id")) <= set(pool)
