"""Acquisition: the EEL identity with recommend(), pending runs lower a duplicate's value,
pools restrict candidates, grid baseline, and bad input."""
import numpy as np
import pandas as pd
import pytest

from planner.config.parse import config_from_dict
from planner.core.errors import InputError
from planner.decide.acquisition import (
    decision_state,
    make_fantasies,
    outcome_loglik,
    score_candidates,
    select_batch,
)
from planner.decide.grid import grid_design, simplex_lattice
from planner.decide.optimum import recommend
from planner.decide.registry import propose
from planner.decide.space import Space
from planner.decide.strategies import DesignRequest
from planner.model.runs import runs_from_frame
from tests.support.fakefit import fake_fit

DOMAINS = ["code", "web", "books"]
TN, TD = 7e9, 1.5e11


def _table(n=12, seed=0):
    rng = np.random.default_rng(seed)
    H = rng.dirichlet(np.ones(3), n)
    df = pd.DataFrame({"N": np.geomspace(1e6, 1e8, n), "D": np.geomspace(1e8, 3e9, n),
                       "run_id": [f"r{i}" for i in range(n)]})
    for i, d in enumerate(DOMAINS):
        df[f"h_{d}"] = H[:, i]
    df["loss_web"] = 3.0
    return df


@pytest.fixture(scope="module")
def post():
    return fake_fit(runs_from_frame(_table()), targets=["web"], seed=1)


@pytest.mark.slow
def test_eel_now_equals_recommend(post):
    # the decision set contains the Bayes choice, and with uniform weights the minimum over the
    # set is attained there (up to mirror-descent tolerance), so both compute the same number
    st = decision_state(post, TN, TD)
    rec = recommend(post, TN, TD)
    assert st.eel_now == pytest.approx(rec["expected_excess_loss"], rel=1e-3, abs=1e-9)
    assert st.eel_now >= 0


def test_scores_nonnegative_and_pending_duplicate_is_worth_less(post):
    st = decision_state(post, TN, TD)
    space = Space(tuple(DOMAINS), 1e6, 1e8, 1e8, 3e9)
    from planner.decide.space import sample_candidates
    cand = sample_candidates(space, 300, seed=0, faces=0.2)
    fant = make_fantasies(st, 32, seed=0)
    sc = score_candidates(st, fant, cand.N, cand.D, cand.H)
    assert sc.shape == (300,) and (sc >= 0).all() and sc.max() > 0
    best = int(np.argmax(sc))
    one = cand.subset([best])
    pending = outcome_loglik(st, fant, one.N, one.D, one.H)[0]
    again = score_candidates(st, fant, one.N, one.D, one.H, pending=pending)
    # once its outcome is pending, buying the same run again teaches strictly less
    assert again[0] < sc[best]
    picks = select_batch(st, cand, 4, fant)
    assert len({i for i, _ in picks}) == len(picks)


def test_pool_restricts_candidates(post, tmp_path):
    pool = _table(n=30, seed=5)
    path = tmp_path / "pool.csv"
    pool.to_csv(path, index=False)
    observed = pool.head(3)
    space = Space(tuple(DOMAINS), 1e6, 1e8, 1e8, 3e9)
    req = DesignRequest(post, observed, [], space, seed=0, q=3, target_N=TN, target_D=TD,
                        options={"pool": str(path)})
    props = propose("decision", req)
    assert len(props) == 3
    keys = {(round(r.N), round(r.D)) for r in pool.itertuples()}
    seen = {(round(r.N), round(r.D)) for r in observed.itertuples()}
    for p in props:
        assert (p.N, p.D) in keys and (p.N, p.D) not in seen


def test_grid_is_a_simplex_lattice_by_size():
    L = simplex_lattice(3, 4)
    assert len(L) == 15 and np.allclose(L.sum(1), 1)
    g = grid_design(Space(tuple(DOMAINS), 1e6, 1e8, 1e8, 3e9), n_sizes=3, min_mixtures=10)
    # r = 3 is the first lattice with >= 10 points: C(3 + 2, 2) = 10 mixtures at each of 3 sizes
    assert len(g) == 3 * 10 and g.N[0] == pytest.approx(1e6) and g.N[-1] == pytest.approx(1e8)


def _cfg(**over):
    base = {"domains": DOMAINS, "targets": {"web": 1.0}, "target_budget": {"N": TN, "D": TD},
            "space": {"N": [1e6, 1e8], "D": [1e8, 3e9]}, "budget": {"flops": 1e19},
            "trainer": {"path": "trainers.synthetic:SyntheticTrainer", "args": {}}}
    base.update(over)
    return base


def test_bad_acquisition_input(tmp_path):
    pool = _table(n=5)
    path = tmp_path / "pool.csv"
    pool.to_csv(path, index=False)
    with pytest.raises(InputError, match="larger than the candidate set"):
        config_from_dict(_cfg(batch_size=8, acquisition={"name": "decision", "pool": str(path)}))
    with pytest.raises(InputError, match="smaller than the cheapest run"):
        config_from_dict(_cfg(budget={"flops": 1e10}))
    with pytest.raises(InputError, match="target_budget.N"):
        config_from_dict(_cfg(target_budget={"N": -1, "D": TD}))
    with pytest.raises(InputError, match="min_weight"):
        config_from_dict(_cfg(space={"N": [1e6, 1e8], "D": [1e8, 3e9], "min_weight": 0.5}))
