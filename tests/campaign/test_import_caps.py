"""Data limits and imported runs.

Caps: ``domain_tokens`` x ``max_epochs`` bound each weight of the target run,
h_i <= max_epochs * tokens_i / D*; the per-draw optima and the Bayes choice on the capped
simplex match a brute-force grid for k = 3, and the campaign's recommendation respects them.
Import: ``prior_runs`` rows are observations from the start (the first fit uses them before any
run is bought), are marked ``imported`` and do not spend the budget."""
from __future__ import annotations

import hashlib
import json

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from planner.campaign.campaign import campaign_status, export_runs, run_campaign
from planner.campaign.ledger import Ledger
from planner.config.parse import config_from_dict
from planner.config.store import config_fingerprint, config_to_dict
from planner.core.errors import InputError
from planner.decide.optimum import optimum_draws, recommend
from planner.model.laws import get_law, scale_inputs
from planner.model.posterior import Posterior, TargetPosterior
from tests.support.fakefit import fake_fit, patch_fit
from tests.support.sim import DOMAINS3, TRUE_ADDITIVE
from trainers.base import RunSpec
from trainers.synthetic import SyntheticTrainer

M = 200  # brute-force grid spacing 1/200


def base_config(**over):
    d = {"domains": list(DOMAINS3), "targets": {"web": 1.0},
         "target_budget": {"N": 7e9, "D": 1e11},
         "space": {"N": [1e6, 5e7], "D": [1e8, 1e9]}, "budget": {"max_runs": 10},
         "trainer": {"path": "trainers.synthetic:SyntheticTrainer", "args": {}}}
    d.update(over)
    return d


# --------------------------------------------------------------------------------- config
def test_caps_config_validation_and_fingerprint():
    cfg = config_from_dict(base_config(domain_tokens={"web": 1.5e10, "code": 2.5e10},
                                       max_epochs=2))
    assert cfg.weight_caps() == pytest.approx({"code": 0.5, "web": 0.3, "books": 1.0})
    assert cfg.weight_upper() == pytest.approx((0.5, 0.3, 1.0))
    assert config_from_dict(config_to_dict(cfg)) == cfg
    # max_epochs defaults to 1 with domain_tokens; no caps without them
    one = config_from_dict(base_config(domain_tokens={"web": 1.5e10}))
    assert one.max_epochs == 1.0 and one.weight_caps()["web"] == pytest.approx(0.15)
    plain = config_from_dict(base_config())
    assert plain.weight_caps() is None and plain.weight_upper() is None
    # unset, the new keys leave the fingerprint of older campaigns unchanged
    old = {k: v for k, v in config_to_dict(plain).items()
           if k not in ("executor", "domain_tokens", "max_epochs")}
    old["fit"] = {k: v for k, v in old["fit"].items() if k != "discrepancy_every"}  # newer still
    assert config_fingerprint(plain) == hashlib.sha256(
        json.dumps(old, sort_keys=True).encode()).hexdigest()[:16]
    assert config_fingerprint(cfg) != config_fingerprint(plain)
    bad = [({"domain_tokens": {"wiki": 1e9}}, "domain_tokens names 'wiki'"),
           ({"max_epochs": 2}, "max_epochs needs domain_tokens"),
           ({"domain_tokens": {"web": -1}}, "domain_tokens.web must be > 0"),
           ({"domain_tokens": {"web": 1e9}, "max_epochs": 0}, "max_epochs must be > 0"),
           ({"domain_tokens": {"web": 1e10, "code": 1e10, "books": 1e10}},
            "allows only 0.3 of target_budget.D"),
           ({"domain_tokens": {"web": 1e9}, "space": {"N": [1e6, 5e7], "D": [1e8, 1e9],
                                                     "min_weight": 0.05}},
            "below space.min_weight")]
    for over, msg in bad:
        with pytest.raises(InputError, match=msg.replace(".", r"\.").replace("(", r"\(")):
            config_from_dict(base_config(**over))


# --------------------------------------------------------------------------------- optimum
def simplex_grid(m=M):
    i, j = np.meshgrid(np.arange(m + 1), np.arange(m + 1), indexing="ij")
    keep = i + j <= m
    return np.stack([i[keep], j[keep], m - i[keep] - j[keep]], 1) / m


def draws_posterior(S=4, seed=0) -> Posterior:
    """A few posterior draws around the additive truth (C spread so the optima differ)."""
    rng = np.random.default_rng(seed)
    draws = {"E": np.full(S, TRUE_ADDITIVE["E"]),
             "C": np.asarray(TRUE_ADDITIVE["C"]) * np.exp(0.4 * rng.standard_normal((S, 3))),
             "g": np.asarray(TRUE_ADDITIVE["g"]) * np.exp(0.1 * rng.standard_normal((S, 3))),
             **{k: np.full(S, TRUE_ADDITIVE[k]) for k in ("A", "a", "B", "b")},
             "sigma": np.full(S, 0.005)}
    tp = TargetPosterior("web", draws, {"method": "nuts"})
    return Posterior("additive", list(DOMAINS3), ["web"], {"web": tp})


@pytest.mark.slow
def test_capped_optimum_matches_brute_force_k3():
    cfg = config_from_dict(base_config(domain_tokens={"web": 1.5e10, "code": 2.5e10},
                                       max_epochs=2))
    N, D = cfg.target_budget.N, cfg.target_budget.D
    hi = np.asarray(cfg.weight_upper())
    post = draws_posterior()
    law = get_law("additive")
    logn, logd = (float(v) for v in scale_inputs(N, D))
    G = simplex_grid()
    Gc = G[(G <= hi + 1e-12).all(1)]
    params = post["web"].law_params("additive")
    S = post["web"].n_draws

    def values(grid, s):
        p = {k: v[s] for k, v in params.items()}
        return np.asarray(law.predict(p, jnp.full(len(grid), logn), jnp.full(len(grid), logd),
                                      jnp.asarray(grid)))

    od = optimum_draws(post, N, D, {"web": 1.0}, hi=hi)
    uncapped_web = []
    for s in range(S):
        v = values(Gc, s)
        h = od["h_star"][s]
        assert abs(h.sum() - 1) < 1e-9 and (h >= -1e-12).all() and (h <= hi + 1e-9).all()
        # continuous mirror descent is at least as good as the capped grid, and next to it
        assert od["loss_at_star"][s] <= v.min() + 1e-10
        np.testing.assert_allclose(h, Gc[v.argmin()], atol=2.5 / M)
        uncapped_web.append(G[values(G, s).argmin()][1])
    # the caps matter: without them some draw puts more than 0.3 on web
    assert max(uncapped_web) > hi[1] + 0.05
    # the Bayes choice minimises the posterior mean loss on the capped simplex
    mean = np.mean([values(Gc, s) for s in range(S)], axis=0)
    hb = od["h_bayes"]
    assert (hb <= hi + 1e-9).all()
    assert float(np.mean(od["loss_at_bayes"])) <= mean.min() + 1e-10
    np.testing.assert_allclose(hb, Gc[mean.argmin()], atol=2.5 / M)
    # recommend() reports the caps and which bind
    rec = recommend(post, N, D, {"web": 1.0}, hi=hi)
    assert rec["caps"] == pytest.approx({"code": 0.5, "web": 0.3, "books": 1.0})
    at_cap = [d for d, c, v in zip(DOMAINS3, hi, hb) if c < 1 and v >= c - 1e-6]
    assert rec["caps_binding"] == at_cap and "web" in at_cap
    assert all(rec["recommended"][d] <= c + 1e-9 for d, c in zip(DOMAINS3, hi))


# --------------------------------------------------------------------------------- import
DOMS = ["a", "b", "c"]


def write_prior(path) -> list[str]:
    """Four runs from before the planner, each with two checkpoint rows (12 observations, more
    than the law's 11 parameters, so the first fit can use them alone): two with run ids (one
    of them ``r00002``, an id the planner would use itself), two without."""
    tr = SyntheticTrainer(domains=DOMS)
    runs = [("r00002", 2e6, 2e8, (0.6, 0.2, 0.2)), ("old-1", 5e6, 3e8, (0.2, 0.6, 0.2)),
            (None, 1e7, 4e8, (0.2, 0.2, 0.6)), (None, 3e6, 6e8, (1 / 3, 1 / 3, 1 / 3))]
    rows = []
    for i, (rid, N, D, h) in enumerate(runs):
        for d in (D / 4, D / 2, D):
            r = tr(RunSpec(run_id=rid or f"x{i}", N=int(N), D=int(d), h=dict(zip(DOMS, h)), seed=i))
            rows.append({"run_id": rid, "N": N, "D": d, **{f"h_{k}": w for k, w in zip(DOMS, h)},
                         "loss_a": r.losses["a"]})
    pd.DataFrame(rows).to_csv(path, index=False)
    return rows


def test_prior_runs_are_counted_from_the_start_and_marked(tmp_path, monkeypatch):
    rows = write_prior(tmp_path / "prior.csv")
    cfg = {"domains": DOMS, "targets": {"a": 1.0}, "target_budget": {"N": 1e9, "D": 2e10},
           "space": {"N": [1e6, 5e7], "D": [1e8, 1e9]}, "budget": {"max_runs": 2},
           "batch_size": 2, "acquisition": "grid", "prior_runs": str(tmp_path / "prior.csv"),
           "domain_tokens": {"a": 2e9}, "max_epochs": 1,  # cap on a: 0.1
           "trainer": {"path": "trainers.synthetic:SyntheticTrainer", "args": {"domains": DOMS}},
           "executor": {"kind": "inprocess"},
           "fit": {"method": "nuts", "min_runs": 4, "background": False}}
    # the loop's own fitter (planner.campaign.planner.default_fitter: fit, then recommend with the caps)
    # runs with a fast stand-in for the sampler
    patch_fit(monkeypatch, fake_fit)
    out = tmp_path / "camp"
    res = run_campaign(cfg, out)
    assert res.stop_reason == "budget" and res.completed == 2
    with Ledger.open(out, readonly=True) as lg:
        runs = lg.runs()
        snaps = lg.snapshots()
    imported = [r for r in runs if r.source == "imported"]
    bought = [r for r in runs if r.source == "planner"]
    assert len(imported) == 4 and all(r.status == "completed" for r in imported)
    assert {"r00002", "old-1"} <= {r.run_id for r in imported}
    # the planner's own ids skip the one the import took
    assert len(bought) == 2 and "r00002" not in {r.run_id for r in bought}
    assert len({r.run_id for r in runs}) == 6
    # counted from the start: the first fit holds exactly the imported runs, and the first
    # runs bought already come from the configured strategy (not the pre-fit random design)
    assert sorted(snaps[0]["run_ids"]) == sorted(r.run_id for r in imported)
    assert snaps[0]["n_obs"] == len(rows)
    assert all(r.strategy == "grid" for r in bought)
    # imported runs do not spend the budget, and are marked in the exported runs table
    st = campaign_status(out)
    assert st["spent"]["runs_committed"] == 2 and st["counts"]["completed"] == 6
    assert st["sources"] == {"imported": 4, "planner": 2}
    df = export_runs(out)
    assert (df["source"] == "imported").sum() == len(rows) and len(df) == len(rows) + 2
    # the recommendation respects the data cap on a (1 x 2e9 / 2e10 = 0.1), which binds
    rec = json.loads((out / "recommendation.json").read_text())
    assert rec["recommended"]["a"] <= 0.1 + 1e-9 and rec["hi"]["a"] <= 0.1 + 1e-9
    assert rec["caps_binding"] == ["a"] and st["caps"] == pytest.approx({"a": 0.1})
    # resuming imports nothing twice
    run_campaign(cfg, out)
    assert campaign_status(out)["counts"]["completed"] == 6
