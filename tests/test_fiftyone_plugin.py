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
    from curator.store.schema import Annotation
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


def test_install_plugin_links_or_copies_and_never_clobbers(tmp_path, capsys):
    from curator.cli import main
    from curator.integrations.fiftyone.app import PLUGIN_SOURCE

    def install(*extra):
        with pytest.raises(SystemExit) as exit_:
            main(["fiftyone", "install-plugin", "--plugins-dir", str(tmp_path / "plugins"), *extra])
        return exit_.value.code, capsys.readouterr()

    code, out = install()
    target = tmp_path / "plugins" / "curator"
    assert code == 0 and target.is_symlink() and target.resolve() == PLUGIN_SOURCE
    code, out = install("--copy")  # replaces its own earlier install
    assert code == 0 and not target.is_symlink() and (target / "fiftyone.yml").read_text() == (
        PLUGIN_SOURCE / "fiftyone.yml").read_text()
    assert not (target / "screenshots").exists()
    (target / "fiftyone.yml").write_text('name: "@someone/else"\n')
    code, out = install()
    assert code == 6 and "is not curator's plugin; move it away first" in out.err
    assert (target / "fiftyone.yml").read_text() == 'name: "@someone/else"\n'


@pytest.mark.labelstudio
@pytest.mark.slow
def test_push_and_pull_from_the_app_with_a_real_label_studio(ls_round, fo, monkeypatch):
    """The App process gets its settings as the plugin's secrets (environment variables)."""
    from curator.integrations.fiftyone import sync
    from curator.integrations.labelstudio import oracle

    settings, _, ranked, project = ls_round
    for env, value in {"CURATOR_WORKSPACE": str(settings.workspace), "CURATOR_DB_URL": settings.db_url,
                       "CURATOR_LABELSTUDIO_URL": settings.labelstudio_url,
                       "CURATOR_LABELSTUDIO_TOKEN": settings.labelstudio_token}.items():
        monkeypatch.setenv(env, value)
    sync(settings, "mnist89", fo_name="ls-review")
    ds = fo.load_dataset("ls-review")
    schema = form("push_to_label_studio", ds)["type"]["properties"]
    assert schema["round"]["type"]["values"] == ["1"]

    result = run("push_to_label_studio", ds, round="1", project=project)
    assert f"round 1 -> Label Studio project {project!r}: {len(ranked)} tasks imported" in result.result["summary"]
    oracle.annotate(settings, project, sample_ids=ranked[:5])
    result = run("pull_annotations", ds, project=project)
    assert result.result["summary"].startswith("5 new, 0 updated, 0 deleted annotations")
    ds.reload()
    labeled = ds.exists("human_label")
    assert sorted(labeled.values("curator_id")) == sorted(ranked[:5])
    assert labeled.values("human_label.label") == labeled.values("ground_truth.label")  # the oracle is right
    assert "token" not in str(ds.info).lower() and settings.labelstudio_token not in str(ds.info)
