"""Policies: the public API, conformance of every registered policy (synthetic and real
MNIST features), registration by decorator and by entry point, and composition."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from conftest import MNIST, require
from curator import Pool, policies
from curator.exceptions import BudgetError, CuratorError, EmptyPoolError, NotFoundError, ValidationError
from curator.testing import check_policy, make_pool

BUILTINS = ["random", "entropy", "margin", "least_confidence", "variation_ratio", "bald", "novelty",
            "kcenter", "badge", "curator"]


@pytest.fixture(scope="session")
def mnist_pool():
    """Real features: a small CNN trained briefly on 200 MNIST digits, applied to 400 others."""
    require(MNIST)
    from curator.ingest.idx import iter_images, read_labels
    from curator.models import train_classifier

    _, X = next(iter_images(MNIST / "train-images-idx3-ubyte.gz", 600))
    y = read_labels(MNIST / "train-labels-idx1-ubyte.gz")[:600].astype(np.int64)
    model = train_classifier(X[:200], y[:200], num_classes=10, seed=0, steps=150, channels=(8, 16), device="cpu")
    pred = model.predict(X[200:], mc_samples=10, seed=0)
    lab = model.predict(X[:200]).embeddings
    pool = Pool(embeddings=pred.embeddings, probs=pred.probs, mc_probs=pred.mc_probs, labeled_embeddings=lab)
    return pool, y[200:]


def test_public_api_as_written():
    pool = make_pool(n=50)
    idx = policies.get("entropy").select(pool, budget=10, seed=0)
    assert isinstance(idx, np.ndarray) and idx.dtype == np.int64 and len(set(idx.tolist())) == 10
    assert set(BUILTINS) <= set(policies.available())
    # entropy picks the most uncertain samples
    H = -(pool.probs * np.log(pool.probs)).sum(1)
    assert set(idx.tolist()) == set(np.argsort(-H)[:10].tolist())


@pytest.mark.parametrize("name", policies.available())
def test_every_registered_policy_conforms(name):
    check_policy(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", policies.available())
def test_every_registered_policy_conforms_on_mnist_features(name, mnist_pool):
    pool, _ = mnist_pool
    check_policy(name, pool=pool, budgets=(1, 10))


@pytest.mark.slow
def test_uncertainty_policies_pick_misclassified_digits_on_mnist(mnist_pool):
    pool, y = mnist_pool
    wrong = pool.probs.argmax(1) != y
    base = wrong.mean()
    assert 0.02 < base < 0.6  # the briefly trained model makes some mistakes
    for name in ("entropy", "margin", "least_confidence", "bald", "curator"):
        idx = policies.get(name).select(pool, budget=40, seed=0)
        assert wrong[idx].mean() > 1.5 * base, name
    rand = np.mean([wrong[policies.get("random").select(pool, budget=40, seed=s)].mean() for s in range(5)])
    assert rand < 1.5 * base


@pytest.mark.slow
def test_curator_batch_is_more_diverse_than_its_uncertainty_term_on_mnist(mnist_pool):
    pool, _ = mnist_pool
    E = np.asarray(pool.unit_embeddings)

    def sims(idx):
        S = E[idx] @ E[idx].T
        return S[~np.eye(len(idx), dtype=bool)]

    bald = policies.get("bald").select(pool, budget=20, seed=0)  # curator's uncertainty with MC passes
    cur = policies.get("curator").select(pool, budget=20, seed=0)
    assert sims(cur).max() < sims(bald).max()
    assert sims(cur).mean() < sims(bald).mean()


def test_same_seed_same_selection_other_seed_other_ties():
    pool = Pool(embeddings=np.eye(40, 4)[np.arange(40) % 4] + 0.0, probs=np.full((40, 4), 0.25))
    a = policies.get("entropy").select(pool, budget=5, seed=1)
    assert np.array_equal(a, policies.get("entropy").select(pool, budget=5, seed=1))
    others = {tuple(policies.get("entropy").select(pool, budget=5, seed=s)) for s in range(6)}
    assert len(others) > 1  # all scores tie: the seeded generator breaks ties


def test_selection_does_not_touch_global_random_state():
    pool = make_pool()
    state = np.random.get_state()[1].copy()
    for name in BUILTINS:
        policies.get(name).select(pool, budget=5, seed=0)
    assert np.array_equal(state, np.random.get_state()[1])


def test_unknown_policy_names_the_closest():
    with pytest.raises(NotFoundError, match="did you mean 'entropy'"):
        policies.get("entorpy")
    with pytest.raises(NotFoundError, match="Available: .*bald"):
        policies.get("no-such-policy")


def test_bald_without_mc_probs_says_what_is_missing():
    pool = Pool(embeddings=np.random.default_rng(0).normal(size=(20, 3)), probs=np.full((20, 2), 0.5))
    with pytest.raises(ValidationError, match="needs mc_probs"):
        policies.get("bald").select(pool, budget=2, seed=0)
    with pytest.raises(ValidationError, match="needs labeled_embeddings|needs embeddings|needs probs"):
        policies.get("badge").select(Pool(probs=np.full((20, 2), 0.5)), budget=2, seed=0)


def test_budget_errors():
    pool = make_pool(n=20)
    with pytest.raises(BudgetError, match="larger than the pool"):
        policies.get("margin").select(pool, budget=21, seed=0)
    with pytest.raises(BudgetError, match="at least 1"):
        policies.get("margin").select(pool, budget=0, seed=0)
    with pytest.raises(BudgetError, match="integer"):
        policies.get("margin").select(pool, budget=2.5, seed=0)
    with pytest.raises(EmptyPoolError):
        Pool(embeddings=np.zeros((0, 3)))


def test_bad_policy_parameters_are_named():
    with pytest.raises(ValidationError, match="accepts: novelty_weight"):
        policies.get("curator", novelty_wieght=1.0)
    assert policies.get("novelty", k=3).k == 3


# -- registration --------------------------------------------------------------------------

def test_register_function_and_class_by_decorator():
    @policies.register("test_first_rows")
    def first_rows(pool, budget, rng):
        return np.arange(budget)

    @policies.register("test_negative_index", requires=("embeddings",))
    def negative_index(pool):
        """Prefers late rows."""
        return np.arange(len(pool), dtype=float)

    @policies.register("test_cls")
    class Last(policies.Policy):
        requires = ("probs",)

        def score(self, pool):
            return -pool.probs[:, 0]

    try:
        pool = make_pool(n=30)
        assert {"test_first_rows", "test_negative_index", "test_cls"} <= set(policies.available())
        assert policies.get("test_first_rows").select(pool, 3, seed=0).tolist() == [0, 1, 2]
        assert policies.get("test_negative_index").select(pool, 2, seed=0).tolist() == [29, 28]
        for name in ("test_first_rows", "test_negative_index", "test_cls"):
            check_policy(name)
        with pytest.raises(ValidationError, match="already registered"):
            policies.register("test_cls")(lambda pool: np.zeros(len(pool)))
    finally:
        for name in ("test_first_rows", "test_negative_index", "test_cls"):
            policies.unregister(name)
    assert "test_cls" not in policies.available()


def test_decorator_cannot_replace_a_builtin():
    with pytest.raises(ValidationError, match="cannot replace the built-in policy 'entropy'"):
        policies.register("entropy")(lambda pool: np.zeros(len(pool)))
    assert type(policies.get("entropy")).__name__ == "Entropy"


def test_broken_policy_is_caught_by_the_contract():
    @policies.register("test_repeats")
    def repeats(pool, budget, rng):
        return np.zeros(budget, dtype=np.int64)

    try:
        with pytest.raises(Exception, match="repeated positions"):
            policies.get("test_repeats").select(make_pool(), 3, seed=0)
        with pytest.raises((AssertionError, CuratorError)):
            check_policy("test_repeats")
    finally:
        policies.unregister("test_repeats")


def _install_plugin(tmp_path, monkeypatch, dist: str, entries: dict[str, str], module_src: str):
    """A real installed distribution: a module and a dist-info with entry_points.txt on sys.path."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / f"{dist}_mod.py").write_text(textwrap.dedent(module_src))
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "\n".join(f"{k} = {v}" for k, v in entries.items())
    (info / "entry_points.txt").write_text(f"[curator.policies]\n{lines}\n")
    monkeypatch.syspath_prepend(str(site))
    return site


PLUGIN_SRC = """
    import numpy as np
    from curator.policies import Policy

    class Smallest(Policy):
        '''Picks the samples with the smallest first embedding coordinate.'''
        requires = ("embeddings",)

        def score(self, pool):
            return -np.asarray(pool.embeddings[:, 0], dtype=float)

    def middle(pool, budget, rng):
        n = len(pool)
        start = (n - budget) // 2
        return np.arange(start, start + budget)
"""


def test_entry_point_plugin_is_found_without_changes_to_curator(tmp_path, monkeypatch):
    _install_plugin(tmp_path, monkeypatch, "curator_plugin_demo",
                    {"smallest_first": "curator_plugin_demo_mod:Smallest",
                     "middle_rows": "curator_plugin_demo_mod:middle"}, PLUGIN_SRC)
    policies.rescan()
    try:
        names = policies.available()
        assert "smallest_first" in names and "middle_rows" in names
        assert "entry point smallest_first" in policies.origin("smallest_first")
        E = np.arange(20, dtype=float)[:, None] * np.array([[1.0, 1.0]])
        pool = Pool(embeddings=E[::-1].copy())
        assert policies.get("smallest_first").select(pool, 2, seed=0).tolist() == [19, 18]
        assert policies.get("middle_rows").select(pool, 4, seed=0).tolist() == [8, 9, 10, 11]
        check_policy("smallest_first")
        check_policy("middle_rows")
    finally:
        policies.unregister("smallest_first")
        policies.unregister("middle_rows")
        sys.modules.pop("curator_plugin_demo_mod", None)


def test_entry_point_plugin_cannot_replace_a_builtin(tmp_path, monkeypatch):
    _install_plugin(tmp_path, monkeypatch, "curator_plugin_evil", {"bald": "curator_plugin_evil_mod:middle"},
                    PLUGIN_SRC.replace("Smallest", "Other"))
    with pytest.raises(ValidationError) as exc:
        policies.rescan()
    msg = str(exc.value)
    assert "curator_plugin_evil_mod:middle" in msg and "built-in policy 'bald'" in msg
    monkeypatch.undo()
    policies.rescan()
    assert type(policies.get("bald")).__name__ == "BALD"


# -- composition ---------------------------------------------------------------------------

def test_weighted_combination_follows_its_weights():
    from curator.policies.compose import Weighted

    pool = make_pool(n=100)
    only_margin = Weighted({"margin": 1.0, "novelty": 0.0}).select(pool, 10, seed=0)
    assert set(only_margin.tolist()) == set(policies.get("margin").select(pool, 10, seed=0).tolist())
    mixed = Weighted({"margin": 1.0, "novelty": 1.0})
    check_policy(mixed)
    assert mixed.requires == ("probs", "embeddings")
    with pytest.raises(ValidationError, match="no per-sample score"):
        Weighted({"kcenter": 1.0})


def test_subsample_quota_filter_and_diverse_compose():
    from curator.policies.compose import ClassQuota, Diverse, Filter, Subsample

    pool = make_pool(n=200, classes=5)
    sub = Subsample("entropy", size=50)
    check_policy(sub)
    a = sub.select(pool, 10, seed=3)
    assert np.array_equal(a, sub.select(pool, 10, seed=3))

    quota = ClassQuota("entropy", max_fraction=0.2)
    idx = quota.select(pool, 10, seed=0)
    counts = np.bincount(pool.probs[idx].argmax(1), minlength=5)
    assert counts.max() <= 2
    check_policy(quota)

    even = Filter("margin", keep=lambda p: np.arange(len(p)) % 2 == 0)
    assert (even.select(pool, 10, seed=0) % 2 == 0).all()
    with pytest.raises(BudgetError, match="pass the filter"):
        even.select(pool, 150, seed=0)

    nested = Diverse(Subsample(ClassQuota("bald"), size=120), factor=4)
    check_policy(nested)
    assert "policy" in nested.get_params()


def test_curator_is_a_composition_and_drops_in_batch_duplicates():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(60, 8))
    E = np.vstack([base, np.repeat(base[:1], 30, axis=0)])  # 30 copies of one (uncertain) sample
    P = np.full((90, 3), [0.9, 0.05, 0.05])
    P[60:] = P[0] = [0.34, 0.33, 0.33]
    pool = Pool(embeddings=E, probs=P)
    idx = policies.get("curator").select(pool, budget=8, seed=0)
    copies = np.isin(idx, np.r_[0, np.arange(60, 90)])
    assert copies.sum() <= 1
    assert policies.get("curator").get_params()["novelty_weight"] == 0.3
