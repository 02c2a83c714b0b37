"""Acquisition that knows the law may be wrong: a candidate nearer the target than every
observed run shrinks the target's mixture field (``discrepancy.mixture_field``) and is credited
for it; without a field (no discrepancy, or a white one) the scores are the law's alone and equal
the implementation's before the field was modelled (commit 1e19a0c).

The posteriors are ``fake_fit`` draws (real ``Posterior`` objects around the synthetic trainer's
law) with a discrepancy attached by hand, so the field's size is known; every number downstream
(optima with the field, decision matrices, fantasies, scores) is computed for real."""
import copy

import numpy as np
import pandas as pd
import pytest

from planner.decide.acquisition import (
    Pending,
    add_pending,
    decision_state,
    make_fantasies,
    per_cost,
    score_candidates,
    select_batch,
)
from planner.decide.optimum import recommend
from planner.decide.registry import propose
from planner.decide.space import Candidates, Space, sample_candidates
from planner.decide.strategies import DesignRequest
from planner.model.runs import runs_from_frame
from tests.decide.test_acquisition import _table
from tests.support.fakefit import fake_fit

DOMAINS = ["code", "web", "books"]
TN, TD = 7e9, 1.5e11
SPACE = Space(tuple(DOMAINS), 1e6, 1e8, 1e8, 3e9)


def _corner_table(n=30, seed=0):
    """Runs in the cheap corner only (N 1e6-3e6, D 1e8-3e8), as a decision campaign starts:
    the target (7e9, 1.5e11) is about 10 e-folds away."""
    rng = np.random.default_rng(seed)
    H = rng.dirichlet(np.ones(3), n)
    df = pd.DataFrame({"N": np.exp(rng.uniform(np.log(1e6), np.log(3e6), n)),
                       "D": np.exp(rng.uniform(np.log(1e8), np.log(3e8), n)),
                       "run_id": [f"r{i}" for i in range(n)]})
    for i, d in enumerate(DOMAINS):
        df[f"h_{d}"] = H[:, i]
    df["loss_web"] = 3.0
    return df


def _with_discrepancy(post, s1, field=True, ell=0.4, share=0.5, log_sd=0.3):
    """A copy of ``post`` whose targets carry a discrepancy with slope s1; with a mixture field
    of length scale ell (a smooth one, as ``fit_slope`` reports it) or white (no field)."""
    post = copy.copy(post)
    post.per_target = dict(post.per_target)
    for t in post.targets:
        tp = post.per_target[t] = copy.copy(post[t])
        fld = {"length_scale": ell, "s1": s1, "s1_log_sd": log_sd, "share": share}
        tp.discrepancy = {"kind": "heldout-scale", "s0": 0.0, "s1": s1, "s1_log_sd": log_sd,
                          "mixture_field": fld if field else None, "evidence": {}}
    return post


@pytest.fixture(scope="module")
def corner():
    return fake_fit(runs_from_frame(_corner_table()), targets=["web"], seed=1)


@pytest.fixture(scope="module")
def field_state(corner):
    # s1 = 0.002 per e-fold over ~10 e-folds: a field of about 1.4 % on log-loss at the target,
    # whose share of the EEL (about 1 % of the loss) is 50x the law's (0.02 %)
    return decision_state(_with_discrepancy(corner, 0.002), TN, TD)


@pytest.fixture(scope="module")
def law_state(corner):
    return decision_state(corner, TN, TD)


# --------------------------------------------------------------------------- no field: as before
def test_without_discrepancy_scores_equal_the_previous_implementation():
    # numbers printed by the implementation at commit 1e19a0c (before fields were modelled) for
    # this posterior, these candidates and fantasies; the same float64 operations in the same
    # order, so only summation-order differences between BLAS builds (~1e-15) may separate them
    post = fake_fit(runs_from_frame(_table()), targets=["web"], seed=1)
    st = decision_state(post, TN, TD)
    N = np.array([1684266., 51443012., 10858461., 3361093., 6732971., 22858190., 78337757.,
                  2622803.])
    D = np.array([2.368680480e+09, 1.794714920e+08, 9.823169190e+08, 4.076695620e+08,
                  6.529329390e+08, 2.858221920e+08, 1.444176429e+09, 1.154189530e+08])
    H = np.array([[0.2901861644431864, 0.1207430650031051, 0.5890707705537085],
                  [0.2817557385352882, 0.6402385198588515, 0.0780057416058603],
                  [0.7964638936954973, 0.03597453343771747, 0.1675615728667852],
                  [0.05235927671397073, 0.5897738796487634, 0.3578668436372659],
                  [0.08190757882940218, 0.6667919082375406, 0.25130051293305716],
                  [0.5380319775523673, 0.09510534331062763, 0.36686267913700504],
                  [0.18954092033581332, 0.8104590796641866, 0.],
                  [0.5430190294321642, 0.09900808818445583, 0.35797288238337993]])
    before = [1.1501566229199511e-05, 2.0667429800219628e-04, 1.3793024956937350e-05,
              2.0272175987776087e-04, 2.3372897849155416e-04, 4.5981476185757986e-05,
              3.7685953576177544e-04, 3.4153442488776831e-05]
    before_pending = [3.6355798395171224e-05, 2.1244171909506893e-04, 8.3961078034072711e-05,
                      2.3101248944468189e-04, 2.6468844731522556e-04, 5.7921409142430713e-05,
                      4.2114593818801116e-04, 7.2529626381157009e-05]
    assert st.eel_now == pytest.approx(0.0011637154342611922, rel=1e-10)
    assert not st.has_field and len(st.ratios) == 1
    fant = make_fantasies(st, 16, seed=2)
    np.testing.assert_allclose(score_candidates(st, fant, N, D, H), before, rtol=1e-9)
    one = Candidates(N[:1], D[:1], H[:1], tuple(DOMAINS))
    pend = add_pending(st, fant, Pending(np.zeros((16, st.n_draws))), one)
    assert pend.ratio == 1.0  # no field: a run's distance to the target changes nothing
    np.testing.assert_allclose(score_candidates(st, fant, N, D, H, pend), before_pending,
                               rtol=1e-9)


def test_white_discrepancy_leaves_the_decision_to_the_law(corner, law_state):
    # a white discrepancy (no structure over mixtures) scales every mixture's loss alike in
    # expectation and is independent between mixtures: it cannot favour one, so the EEL, the
    # stopping quantity and the scores are the law's alone, whatever a run's distance
    st = decision_state(_with_discrepancy(corner, 0.05, field=False), TN, TD)
    assert not st.has_field and st.eel_now == law_state.eel_now
    cand = sample_candidates(SPACE, 64, seed=1, faces=0.2)
    fant = make_fantasies(st, 16, seed=0)
    np.testing.assert_array_equal(score_candidates(st, fant, cand.N, cand.D, cand.H),
                                  score_candidates(law_state, fant, cand.N, cand.D, cand.H))


# --------------------------------------------------------------------------- with a field
@pytest.mark.slow
def test_eel_now_is_recommends_total_uncertainty(corner, field_state, law_state):
    # the stopping rule compares recommend()'s expected excess loss with its tolerance; the
    # acquisition's EEL at r = 1 is the same estimator on the same draws and fields (the same
    # optimiser; 1e-9 covers mirror-descent results compiled in a different program)
    rec = recommend(_with_discrepancy(corner, 0.002), TN, TD)
    assert field_state.eel_now == pytest.approx(rec["expected_excess_loss"], rel=1e-9)
    # the field dominates: the law's own share is the EEL without it
    assert field_state.eel_now > 20 * law_state.eel_now


def test_field_share_shrinks_with_the_distance(field_state):
    st = field_state
    np.testing.assert_allclose(st.ratios, np.arange(1, 9) / 8)
    w = np.full(st.n_draws, 1.0 / st.n_draws)
    total = np.array([float(np.min(w @ st.Lmat[i]) - w @ st.Lstar[i] + st.field_eel[i])
                      for i in range(len(st.ratios))])
    assert total[-1] == pytest.approx(st.eel_now, rel=1e-12)
    # levels share their fields' random numbers, so the total falls smoothly with the ratio
    # (measured: about linearly, 0.0012 at r = 1/8 to 0.024 at r = 1)
    assert np.all(np.diff(total) > 0)
    assert total[0] < 0.1 * total[-1]


def test_nearer_run_scores_higher_than_an_equally_cheap_far_one(field_state):
    st = field_state
    # the same cost (6 N D = 1.8e17) and mixture: one balanced toward the target (ratio 0.72,
    # credited at 0.75), one all tokens (ratio 0.88, credited at 1: no credit)
    N = np.array([3e7, 1e6])
    D = np.array([1e9, 3e10])
    H = np.full((2, 3), 1.0 / 3)
    r = st.ratio(N, D)
    assert r[0] < 0.75 and 0.875 < r[1] < 1
    fant = make_fantasies(st, 24, seed=0)
    sc = score_candidates(st, fant, N, D, H)
    assert (sc >= 0).all()
    # the near run buys the field down from level 1 to 0.75: about a quarter of the field's
    # share (0.024 -> 0.016), 40x what either run's outcome does to the law's parameters
    assert sc[0] - sc[1] > 0.5 * float(st.field_eel[-1] - st.field_eel[5])


@pytest.mark.slow
def test_per_flop_choice_buys_larger_runs_only_when_the_field_dominates(corner, field_state,
                                                                        law_state):
    cand = sample_candidates(SPACE, 400, seed=0, faces=0.2)
    picks = {}
    small = decision_state(_with_discrepancy(corner, 2e-6), TN, TD)  # field EEL << the law's
    for name, st in (("law", law_state), ("small field", small), ("field", field_state)):
        fant = make_fantasies(st, 24, seed=0)
        sc = per_cost(score_candidates)(st, fant, cand.N, cand.D, cand.H)
        assert (sc >= 0).all()
        picks[name] = int(np.argmax(sc))
    f = cand.flops()
    # without a field, or with one far below the law's uncertainty, the cheapest corner wins
    # per FLOP (measured: ~1e15 FLOPs, the space's cheapest decile); with a dominant field a
    # run about 20x dearer that leaves the field at 7/8 of its amplitude wins
    assert f[picks["law"]] < 3e15 and f[picks["small field"]] < 3e15
    assert f[picks["field"]] > 10 * f[picks["law"]]
    assert field_state.ratio(cand.N[[picks["field"]]], cand.D[[picks["field"]]])[0] <= 0.875


def test_pending_near_run_takes_the_field_credit_from_its_duplicate(field_state):
    st = field_state
    fant = make_fantasies(st, 24, seed=0)
    near = Candidates(np.array([3e7]), np.array([1e9]), np.full((1, 3), 1.0 / 3), tuple(DOMAINS))
    alone = score_candidates(st, fant, near.N, near.D, near.H)[0]
    pend = add_pending(st, fant, Pending(np.zeros((24, st.n_draws))), near)
    assert pend.ratio == pytest.approx(st.ratio(near.N, near.D)[0])
    again = score_candidates(st, fant, near.N, near.D, near.H, pend)[0]
    # once it is pending, its duplicate brings the same distance again (no field credit) and
    # only the law's information, which is small here
    assert 0 <= again < 0.1 * alone
    picks = select_batch(st, sample_candidates(SPACE, 200, seed=3, faces=0.2), 3, fant)
    assert len({i for i, _ in picks}) == len(picks)


@pytest.mark.slow
def test_decision_strategy_with_a_field(corner):
    post = _with_discrepancy(corner, 0.002)
    req = DesignRequest(post, None, [], SPACE, seed=0, q=2, target_N=TN, target_D=TD,
                        options={"candidates": 300, "draws": 64})
    props = propose("decision", req)
    assert len(props) == 2
    assert all(p.strategy == "decision" for p in props)
    assert min(p.info["field_ratio"] for p in props) < 1  # it buys a run nearer the target


def test_an_absurd_field_still_gives_finite_scores(corner):
    # the study met a calibration on one held-out run with s1 = 0.31 and log-sd 0.97: at 10
    # e-folds some draws' amplitudes overflow exp(a^2 / 2). Capped (AMP_MAX), the matrices stay
    # finite, the field's share grows with the ratio, and the batch is chosen by score (the
    # nearest affordable runs), not left to the space-filling filler
    st = decision_state(_with_discrepancy(corner, 0.31, log_sd=0.97), TN, TD,
                        ratios=[0.5, 0.75])
    assert np.isfinite(np.asarray(st.Lmat)).all() and np.isfinite(st.eel_now)
    assert np.all(np.diff(np.asarray(st.field_eel)) > 0)
    cand = sample_candidates(SPACE, 200, seed=0, faces=0.2)
    fant = make_fantasies(st, 16, seed=0)
    sc = score_candidates(st, fant, cand.N, cand.D, cand.H)
    assert np.isfinite(sc).all() and (sc >= 0).all()
    picks = select_batch(st, cand, 2, fant)
    assert len(picks) == 2 and st.ratio(cand.N[[picks[0][0]]], cand.D[[picks[0][0]]])[0] < 1
