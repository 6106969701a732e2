"""Bad-input corpus (issue 13), names and command arguments: every case is refused with one
``error:`` line before any work, the database unchanged and nothing written outside the workspace.

Each case runs on SQLite and on PostgreSQL (the ``sandbox`` fixture). The state a case needs (a
small dataset with a train and a test split, input files) is made once per test through the
Python API, before ``refused`` takes its snapshot. A case that trained a model first would be
slow and would store it: the corpus stays fast because refusals come first.
"""

from __future__ import annotations

import numpy as np
import pytest

from badinput import refused, run, sandbox  # noqa: F401  (sandbox is a fixture)
from conftest import ROOT

DS = "pool"


@pytest.fixture
def state(sandbox):  # noqa: F811
    """Dataset ``pool`` (40 train + 10 test random 8x8 images with labels) and the input files."""
    from curator.ingest import ingest_arrays

    rng = np.random.default_rng(0)
    root = sandbox.root
    for split, n in (("train", 40), ("test", 10)):
        x, y = rng.integers(0, 256, (n, 8, 8), dtype=np.uint8), np.arange(n) % 2
        np.save(root / f"{split}.npy", x)
        np.save(root / f"{split}-labels.npy", y)
        ingest_arrays(x, y, dataset=DS, name=split, split=split, settings=sandbox.settings)
    (root / "corrupt.pt").write_bytes(b"PK\x03\x04 this is not a model" * 10)
    (root / "malformed.toml").write_text("[curator\nworkspace = ")
    (root / "unknown.toml").write_text('[curator]\nworkspaec = "ws"\n')
    (root / "badtype.toml").write_text("[curator]\nworkspace = 5\n")
    (root / "nottable.toml").write_text("curator = 3\n")
    return sandbox


def case(id_, argv, match, *, marks=()):
    return pytest.param(argv, match, id=id_, marks=marks)


NAME_RULE = "not allowed"
NAMES = [
    case("name-empty", ["ingest", "{root}/train.npy", "--dataset", ""], "dataset name is empty"),
    case("name-dotdot", ["ingest", "{root}/train.npy", "--dataset", "../../x"], NAME_RULE),
    case("name-absolute", ["ingest", "{root}/train.npy", "--dataset", "{root}/abs"], NAME_RULE),
    case("name-newline", ["ingest", "{root}/train.npy", "--dataset", "a\nb"], NAME_RULE),
    case("name-control-char", ["ingest", "{root}/train.npy", "--dataset", "a\x07b"], NAME_RULE),
    case("name-slash", ["ingest", "{root}/train.npy", "--dataset", "a/b"], NAME_RULE),
    case("name-backslash", ["ingest", "{root}/train.npy", "--dataset", "a\\b"], NAME_RULE),
    case("name-too-long", ["ingest", "{root}/train.npy", "--dataset", "a" * 101], NAME_RULE),
    case("name-space", ["ingest", "{root}/train.npy", "--dataset", "my data"], NAME_RULE),
    case("name-dot", ["ingest", "{root}/train.npy", "--dataset", "."], NAME_RULE),
    case("name-non-ascii", ["ingest", "{root}/train.npy", "--dataset", "zahlen-\u00fc"], NAME_RULE),
    case("name-leading-dash", ["ingest", "{root}/train.npy", "--dataset", "-x"], NAME_RULE),
    case("select-name-dotdot", ["select", "--dataset", "../pool", "-n", "1"], NAME_RULE),
    case("score-name-absolute", ["score", "--dataset", "/tmp/pool"], NAME_RULE),
    case("embed-name-slash", ["embed", "--dataset", "a/b"], NAME_RULE),
    case("dedup-name-newline", ["dedup", "-d", "pool\n"], NAME_RULE),
    case("loop-name-empty", ["loop", "-d", ""], "dataset name is empty"),
    case("report-name-dotdot", ["report", "-d", ".."], NAME_RULE),
    case("fiftyone-sync-name-dotdot", ["fiftyone", "sync", "--dataset", "../x"], NAME_RULE),
    case("fiftyone-sync-version-slash", ["fiftyone", "sync", "--dataset", DS, "--version", "v/1"], "version name"),
    case("fiftyone-import-name-slash", ["fiftyone", "import", "fo", "--dataset", "a/b"], NAME_RULE),
    case("pull-project-slash", ["pull", "--project", "a/b"], "project title"),
    case("pull-project-control", ["pull", "--project", "a\tb"], "project title"),
    case("push-project-empty", ["push", "--round", "1", "--project", "  "], "project title is empty"),
    case("push-project-too-long", ["push", "--round", "1", "--project", "p" * 201], "project title"),
]

SELECT = [
    case("select-budget-zero", ["select", "--dataset", DS, "--budget", "0"], "--budget"),
    case("select-budget-negative", ["select", "--dataset", DS, "--budget", "-1"], "--budget"),
    case("select-budget-not-int", ["select", "--dataset", DS, "--budget", "ten"], "--budget"),
    case("select-budget-larger-than-pool", ["select", "--dataset", DS, "--budget", "1000"], "larger than the pool"),
    case("select-budget-larger-than-subsample", ["select", "--dataset", DS, "-n", "10", "--subsample", "5"], "budget 10"),
    case("select-budget-missing", ["select", "--dataset", DS], "--budget"),
    case("select-subsample-zero", ["select", "--dataset", DS, "-n", "2", "--subsample", "0"], "--subsample"),
    case("select-subsample-negative", ["select", "--dataset", DS, "-n", "2", "--subsample", "-5"], "--subsample"),
    case("select-param-not-json", ["select", "--dataset", DS, "-n", "2", "--param", "novelty_weight=abc"], "not JSON"),
    case("select-param-no-equals", ["select", "--dataset", DS, "-n", "2", "--param", "oops"], "NAME=VALUE"),
    case("select-param-unknown", ["select", "--dataset", DS, "-n", "2", "--param", "foo=1"], "foo"),
    case("select-param-bad-value", ["select", "--dataset", DS, "-n", "2", "--param", 'novelty_weight="abc"'], "novelty_weight"),
    case("select-param-to-function-policy", ["select", "--dataset", DS, "-n", "2", "-p", "entropy", "--param", "k=1"], "k"),
    case("select-policy-unknown", ["select", "--dataset", DS, "-n", "2", "--policy", "nope"], "nope"),
    case("select-dataset-unknown", ["select", "--dataset", "nope", "-n", "2"], "dataset 'nope' does not exist"),
    case("select-split-empty", ["select", "--dataset", DS, "-n", "2", "--split", "validation"], "split 'validation'"),
    case("select-model-missing", ["select", "--dataset", DS, "-n", "2", "--model", "{root}/missing.pt"], "missing.pt"),
    case("select-model-corrupt", ["select", "--dataset", DS, "-n", "2", "--model", "{root}/corrupt.pt"], "corrupt.pt"),
    case("select-model-unknown-id", ["select", "--dataset", DS, "-n", "2", "--model", "999"], "model 999"),
    case("select-no-labels-no-model", ["select", "--dataset", DS, "-n", "2"], "no labels"),
    case("select-mc-one", ["select", "--dataset", DS, "-n", "2", "--mc", "1"], "mc"),
    case("select-mc-negative", ["select", "--dataset", DS, "-n", "2", "--mc", "-2"], "--mc"),
    case("select-bald-without-mc", ["select", "--dataset", DS, "-n", "2", "-p", "bald", "--mc", "0"], "MC-dropout"),
    case("select-seed-negative", ["select", "--dataset", DS, "-n", "2", "--seed", "-1"], "--seed"),
    case("select-steps-zero", ["select", "--dataset", DS, "-n", "2", "--steps", "0"], "--steps"),
    case("select-executor-unknown", ["select", "--dataset", DS, "-n", "2", "--executor", "spark"], "--executor"),
    case("dedup-executor-unknown", ["dedup", "--dataset", DS, "--executor", "dask"], "--executor"),
    case("select-unknown-option", ["select", "--dataset", DS, "-n", "2", "--budgett", "3"], "--budgett"),
    case("score-dataset-unknown", ["score", "--dataset", "nope"], "dataset 'nope' does not exist"),
    case("score-subsample-zero", ["score", "--dataset", DS, "--subsample", "0"], "--subsample"),
    case("score-mc-one", ["score", "--dataset", DS, "--mc", "1"], "mc"),
    case("score-model-corrupt", ["score", "--dataset", DS, "--model", "{root}/corrupt.pt"], "corrupt.pt"),
    case("score-top-zero", ["score", "--dataset", DS, "--top", "0"], "--top"),
    case("embed-batch-size-zero", ["embed", "--dataset", DS, "--batch-size", "0"], "--batch-size"),
    case("embed-dataset-unknown", ["embed", "--dataset", "nope"], "dataset 'nope' does not exist"),
]

DEDUP = [
    case("dedup-threshold-zero", ["dedup", "-d", DS, "-t", "0"], "threshold"),
    case("dedup-threshold-above-one", ["dedup", "-d", DS, "-t", "1.5"], "threshold"),
    case("dedup-threshold-negative", ["dedup", "-d", DS, "-t", "-0.5"], "threshold"),
    case("dedup-threshold-nan", ["dedup", "-d", DS, "-t", "nan"], "threshold"),
    case("dedup-threshold-not-a-number", ["dedup", "-d", DS, "-t", "high"], "--threshold"),
    case("dedup-dataset-unknown", ["dedup", "-d", "nope"], "dataset 'nope' does not exist"),
    case("dedup-model-unknown", ["dedup", "-d", DS, "--model", "nope"], "model 'nope'"),
]

LABELSTUDIO = [
    case("push-round-zero", ["push", "--round", "0"], "round 0 of dataset 'pool' does not exist (rounds: none yet)"),
    case("push-dataset-unknown", ["push", "--round", "1", "-d", "nope"], "dataset 'nope' does not exist"),
    case("push-round-negative", ["push", "--round", "-3"], "--round"),
    case("push-round-not-int", ["push", "--round", "first"], "--round"),
    case("push-round-unknown", ["push", "--round", "999"], "round 999"),
    case("push-round-missing", ["push"], "--round"),
    case("push-batch-size-zero", ["push", "--round", "1", "--batch-size", "0"], "--batch-size"),
    case("push-predictions-missing", ["push", "--round", "1", "--predictions", "{root}/nope.json"], "nope.json"),
    case("pull-dataset-unknown", ["pull", "--dataset", "nope"], "dataset 'nope' does not exist"),
    case("pull-project-unknown", ["pull", "--project", "never pushed"], "never pushed"),
    case("labelstudio-up-timeout-zero", ["labelstudio", "up", "--timeout", "0"], "--timeout"),
]

LOOP = [
    case("loop-budget-zero", ["loop", "-d", DS, "--budget", "0"], "--budget"),
    case("loop-rounds-negative", ["loop", "-d", DS, "--rounds", "-1"], "--rounds"),
    case("loop-initial-zero", ["loop", "-d", DS, "--initial", "0"], "--initial"),
    case("loop-seed-negative", ["loop", "-d", DS, "--seed", "-1"], "--seed"),
    case("loop-subsample-negative", ["loop", "-d", DS, "--subsample", "-1"], "--subsample"),
    case("loop-target-error-above-one", ["loop", "-d", DS, "--target-error", "1.5"], "--target-error"),
    case("loop-policy-unknown", ["loop", "-d", DS, "--policy", "nope"], "nope"),
    case("loop-labeler-unknown", ["loop", "-d", DS, "--labeler", "crowd"], "--labeler"),
    case("loop-dataset-unknown", ["loop", "-d", "nope"], "dataset 'nope' does not exist"),
    case("loop-test-split-without-truth", ["loop", "-d", DS, "--test-split", "holdout"], "'holdout'"),
    case("report-target-error-zero", ["report", "-d", DS, "--target-error", "0"], "--target-error"),
    case("report-dataset-unknown", ["report", "-d", "nope"], "dataset 'nope' does not exist"),
]

INGEST_AND_CONFIG = [
    case("ingest-batch-size-zero", ["ingest", "{root}/train.npy", "-d", "more", "--batch-size", "0"], "--batch-size"),
    case("ingest-batch-size-negative", ["ingest", "{root}/train.npy", "-d", "more", "--batch-size", "-1"],
         "--batch-size"),
    case("ingest-dataset-missing", ["ingest", "{root}/train.npy"], "--dataset"),
    case("config-malformed-toml", ["--config", "{root}/malformed.toml", "config"], "not valid TOML"),
    case("config-unknown-key", ["--config", "{root}/unknown.toml", "config"], "workspaec"),
    case("config-bad-value-type", ["--config", "{root}/badtype.toml", "config"], "workspace must be a string"),
    case("config-section-not-table", ["--config", "{root}/nottable.toml", "datasets"], "must be a table"),
    case("config-file-missing", ["--config", "{root}/none.toml", "datasets"], "none.toml"),
    case("unknown-command", ["selct", DS], "selct"),
    case("demo-name-slash", ["demo", "--dataset", "a/b"], NAME_RULE),
    case("demo-policy-unknown", ["demo", "--policy", "nope"], "nope"),
]


@pytest.mark.parametrize("argv, match", NAMES + SELECT + DEDUP + LABELSTUDIO + LOOP + INGEST_AND_CONFIG)
def test_refused(state, argv, match):
    root = str(state.root)
    refused(state, [a.replace("{root}", root) for a in argv], match=match)


def test_absolute_name_writes_nothing_at_that_path(state):
    """The refused absolute name left no folder there (nor in the media folder under any spelling)."""
    target = state.root / "abs"
    refused(state, ["ingest", state.root / "train.npy", "--dataset", str(target)], match=NAME_RULE)
    assert not target.exists()
    assert sorted(p.name for p in (state.workspace / "media").iterdir()) == [DS]


def test_case_differs_one_dataset(state):
    """`POOL`, `Pool` and `pool` are one dataset: ingesting again under another case adds nothing,
    and every command finds it under any case."""
    import json

    from curator.store.queries import dataset_summaries

    code, out, err = run(["ingest", state.root / "train.npy", "--labels", state.root / "train-labels.npy",
                          "--dataset", "POOL", "--split", "train", "--json"])
    assert code == 0, err
    assert json.loads(out)["added"] == 0 and json.loads(out)["existing"] == 40
    rows = dataset_summaries(state.settings)
    assert [(r["name"], r["samples"]) for r in rows] == [(DS, 50)]
    code, out, err = run(["dedup", "-d", "Pool", "--json"])
    assert code == 0, err
    assert json.loads(out)["dataset"] == DS and json.loads(out)["samples"] == 50
    # a new dataset given in capitals is stored in lower case
    code, _, err = run(["ingest", state.root / "test.npy", "--dataset", "Digits-2"])
    assert code == 0, err
    assert sorted(r["name"] for r in dataset_summaries(state.settings)) == ["digits-2", DS]
    assert (state.workspace / "media" / "digits-2").is_dir()


def test_python_api_checks_names_before_writing(state):
    """The library refuses what the CLI refuses: a bad name writes no file and no row."""
    from badinput import db_digest, files_outside

    from curator.exceptions import ValidationError
    from curator.ingest import ingest_arrays, ingest_idx
    from curator.report import write_report

    before = db_digest(state.settings), files_outside(state.root, state.workspace)
    sample = state.root / "train.npy"
    with pytest.raises(ValidationError, match="not allowed"):
        ingest_arrays(sample, dataset="../../escape", settings=state.settings)
    with pytest.raises(ValidationError, match="not allowed"):
        ingest_arrays(sample, dataset=str(state.root / "abs"), settings=state.settings)
    idx = ROOT / "datasets" / "mnist1989" / "test-images-idx3-ubyte.gz"
    with pytest.raises(ValidationError, match="empty"):
        ingest_idx(idx, dataset="", settings=state.settings)
    with pytest.raises(ValidationError, match="not allowed"):
        write_report(state.settings, "../reports")
    assert (db_digest(state.settings), files_outside(state.root, state.workspace)) == before
    assert sorted(p.name for p in (state.workspace / "media").iterdir()) == [DS]
