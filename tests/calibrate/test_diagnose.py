"""The one list of warnings (``planner.calibrate.diagnose``) and reusing a learned discrepancy
on a later fit (``calibrate.heldout.attach_discrepancy``). Posteriors come from
``tests.support.fakefit`` (real Posterior objects with ArviZ diagnostics computed from their
draws); the discrepancies are real ``fit_slope`` results on constructed held-out errors."""
from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd

from planner.calibrate.diagnose import (
    HOLDOUT_CACHE,
    cached_holdout,
    fit_warnings,
    holdout_warnings,
    merge_warnings,
)
from planner.calibrate.heldout import attach_discrepancy, largest_scale_split, split_key
from planner.model import discrepancy as disc_mod
from planner.model.laws import scale_inputs
from planner.model.runs import runs_from_frame
from tests.support.badfit import disagreeing_fit
from tests.support.fakefit import fake_fit
from trainers.base import RunSpec
from trainers.synthetic import SyntheticTrainer

DOMS = ["a", "b", "c"]


def table(n_runs: int = 8, seed: int = 0, N_max: float = 3e7):
    tr = SyntheticTrainer(domains=DOMS)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_runs):
        h = rng.dirichlet(np.ones(3))
        N = float(np.exp(rng.uniform(np.log(1e6), np.log(N_max))))
        spec = RunSpec(run_id=f"r{i}", N=int(N), D=int(3e8), h=dict(zip(DOMS, h)), seed=i)
        rows.append({"run_id": spec.run_id, "N": spec.N, "D": spec.D,
                     **{f"h_{d}": w for d, w in spec.h.items()},
                     "loss_a": tr(spec).losses["a"]})
    return runs_from_frame(pd.DataFrame(rows), domains=DOMS, targets=["a"])


def learned(coverage_errors: float = 0.0, n: int = 6):
    """A real ``fit_slope`` result on n held-out errors: ``coverage_errors`` of them (a share)
    far outside the law's intervals (10 sd), the rest inside."""
    bad = round(coverage_errors * n)
    e = np.where(np.arange(n) < bad, 0.1, 0.001)
    return disc_mod.fit_slope(e, np.full(n, 1e-4), 0.0, np.full(n, 1.0))


def test_clean_posterior_has_no_warnings_and_each_bad_diagnostic_is_named():
    tab = table()
    post = fake_fit(tab, targets=["a"], divergences=0)
    d = post["a"].diagnostics
    # fake_fit has 80 draws: a real (small) ESS; make the sampler look healthy explicitly
    post["a"].diagnostics = {**d, "r_hat_max": 1.002, "ess_bulk_min": 400.0}
    post["a"].discrepancy = learned(0.0)
    assert post["a"].discrepancy["evidence"]["coverage90_without"] == 1.0
    assert fit_warnings(post) == []

    # r_hat of chains that really disagree (ArviZ on shifted draws)
    bad = disagreeing_fit(tab, targets=["a"])
    r = bad["a"].diagnostics["r_hat_max"]
    assert 1.2 < r < 1.4, r
    w = fit_warnings(bad)
    assert any(x.startswith("a: chains disagree (max r_hat") and f"{r:.3f}" in x for x in w), w
    assert any("few effective draws" in x for x in w)  # 80 draws: ESS < 100
    assert any("no model discrepancy" in x for x in w)

    lap = copy.deepcopy(post)
    lap["a"].diagnostics = {"method": "laplace", "mode_converged": False,
                            "min_hessian_eigenvalue": 0.5}
    assert fit_warnings(lap) == [("a: the search for the posterior mode did NOT converge (min "
                                  "Hessian eigenvalue 0.5): the Laplace draws may sit in the "
                                  "wrong place; confirm with fit.method: nuts")]
    lap["a"].diagnostics["mode_converged"] = True
    assert fit_warnings(lap) == []
    mp = copy.deepcopy(post)
    mp["a"].diagnostics = {"method": "map"}
    assert len(fit_warnings(mp)) == 1 and "a MAP fit" in fit_warnings(mp)[0]

    pri = copy.deepcopy(post)
    pri["a"].discrepancy = disc_mod.prior_default("only one (N, D) scale observed")
    assert fit_warnings(pri) == [("a: the model discrepancy is the prior's (s1 = 0.02), not "
                                  "learned from the data: only one (N, D) scale observed")]
    # the law misses the held-out scale: 4 of 6 errors far outside its intervals
    miss = copy.deepcopy(post)
    miss["a"].discrepancy = learned(4 / 6)
    (w,) = fit_warnings(miss)
    assert "the law alone misses the held-out largest scale" in w and "held 33 % of 6" in w
    # one or two of six missing (67-83 % coverage) is not a warning
    miss["a"].discrepancy = learned(2 / 6)
    assert fit_warnings(miss) == []


def test_saved_diagnostics_with_nan_do_not_break_the_warnings(tmp_path):
    post = fake_fit(table(), targets=["a"], divergences=0)
    post["a"].diagnostics = {"method": "nuts", "r_hat_max": None, "ess_bulk_min": None,
                             "divergences": None, "divergence_rate": None}
    post["a"].discrepancy = learned(0.0)
    assert fit_warnings(post) == []


def test_holdout_warnings_and_the_cache_keyed_by_snapshot(tmp_path):
    check = {"targets": {"a": {"with_discrepancy": {"coverage_90": 0.4}},
                         "b": {"with_discrepancy": {"coverage_90": 0.85}}}}
    (w,) = holdout_warnings(check)
    assert w.startswith("a: only 40 % of the held-out losses fall inside the 90 % intervals")
    assert holdout_warnings(None) == []
    post = fake_fit(table(), targets=["a"], divergences=0)
    post["a"].diagnostics.update(r_hat_max=1.0, ess_bulk_min=500.0)
    post["a"].discrepancy = learned(0.0)
    assert fit_warnings(post, holdout=check) == [w]
    assert merge_warnings(["x", "y"], ["y", "z"], None) == ["x", "y", "z"]
    # the report's cache: read back only for the snapshot it was computed on
    key = json.dumps({"snapshot": 3, "n_obs": 10}, sort_keys=True)
    (tmp_path / HOLDOUT_CACHE).write_text(json.dumps({"key": key, "result": check}))
    assert cached_holdout(tmp_path, 3) == check
    assert cached_holdout(tmp_path, 4) is None and cached_holdout(tmp_path, None) is None
    (tmp_path / HOLDOUT_CACHE).write_text("not json")
    assert cached_holdout(tmp_path, 3) is None


def test_attached_discrepancy_measures_distance_from_the_new_fit_s_runs():
    """A discrepancy learned on an early fit and attached to a later one: the slope (and the
    mixture field) carry over unchanged, the distance is the later fit's."""
    early, late = table(6, seed=1, N_max=3e6), table(12, seed=1, N_max=3e7)
    p0 = fake_fit(early, targets=["a"])
    p0["a"].discrepancy = learned(0.5)
    p0["a"].discrepancy["mixture_field"] = {"length_scale": 0.4, "s1": 0.05, "s1_log_sd": 0.3,
                                            "share": 0.5}
    p0.meta["discrepancy"] = {"split": {"rule": "largest N", "N": 1.0}, "refits_since_learned": 0}
    p1 = fake_fit(late, targets=["a"])
    before = copy.deepcopy(p1["a"].diagnostics)
    out = attach_discrepancy(p1, p0, note="reused")
    assert p1["a"].discrepancy is None and p1["a"].diagnostics == before  # argument unchanged
    assert out["a"].discrepancy == p0["a"].discrepancy
    assert out["a"].discrepancy is not p0["a"].discrepancy
    assert out["a"].diagnostics["discrepancy"]["note"] == "reused"
    assert out.meta["discrepancy"]["split"] == {"rule": "largest N", "N": 1.0}
    # at the later fit's largest run the distance is 0 (no extra error); the earlier fit,
    # which never saw that run, puts it away from the data
    i = int(np.argmax(late.N))
    logn, logd = (np.asarray(v) for v in scale_inputs(late.N[i:i + 1], late.D[i:i + 1]))
    assert np.all(disc_mod.log_sd(out["a"], logn, logd) < 1e-12)
    assert np.all(disc_mod.log_sd(p0["a"], logn, logd) > 1e-3)


def test_split_key_ignores_the_row_count():
    tab = table(8)
    _, info = largest_scale_split(tab)
    more = dict(info, n_heldout_rows=info["n_heldout_rows"] + 3)
    assert split_key(info) == split_key(more)
    assert split_key(info) != split_key(dict(info, N=info["N"] * 2))
    assert split_key(None) == (None, None, None)
