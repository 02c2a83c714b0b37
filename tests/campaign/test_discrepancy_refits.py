"""Campaign refits carry the model discrepancy like ``planner fit``: learned on the first fit,
when the largest scale changes, every ``fit.discrepancy_every`` refits and on the final fit;
reused in between; kept across a resume; off with ``discrepancy_every: 0``. The config key is
an addition that leaves older campaigns' fingerprints alone.

Fits are ``tests.support.fakefit.fake_fit`` (a real Posterior around the synthetic truth) in
every fitting path, the discrepancy's inner fit included, so the calibration, the snapshots,
the recommendation and the policy are real; ``test_one_posterior`` does the same with real fits."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from planner.calibrate.heldout import split_key
from planner.campaign.campaign import campaign_status, load_campaign, run_campaign
from planner.campaign.ledger import Ledger
from planner.campaign.planner import Planner
from planner.config.parse import config_from_dict
from planner.config.schema import FitConfig
from planner.config.store import config_fingerprint, config_to_dict
from planner.core.errors import InputError
from planner.model.posterior import Posterior
from tests.support.fakefit import fake_fit, patch_fit

DOMS = ["a", "b", "c"]


def config(**fit):
    return {"domains": DOMS, "targets": {"a": 1.0}, "target_budget": {"N": 1e9, "D": 2e10},
            "space": {"N": [1e6, 5e7], "D": [1e8, 1e9]}, "budget": {"max_runs": 9},
            "batch_size": 1, "acquisition": "random",
            "trainer": {"path": "trainers.synthetic:SyntheticTrainer",
                        "args": {"law": "joint", "domains": DOMS, "checkpoints": [0.5]}},
            "executor": {"kind": "inprocess"},
            "fit": {"method": "nuts", "min_runs": 5, "background": False, **fit}}


def snapshots(out):
    with Ledger.open(out, readonly=True) as lg:
        snaps = lg.snapshots()
    return [(s, Posterior.load(s["path"])) for s in snaps]


def test_discrepancy_every_is_an_addition_with_its_default_in_the_schema():
    cfg = config_from_dict(config())
    assert cfg.fit.discrepancy_every == FitConfig.discrepancy_every == 3
    assert config_from_dict(config(discrepancy_every=0)).fit.discrepancy_every == 0
    with pytest.raises(InputError, match="fit.discrepancy_every"):
        config_from_dict(config(discrepancy_every=-1))
    with pytest.raises(InputError, match="fit.discrepancy_every"):
        config_from_dict(config(discrepancy_every="often"))
    assert config_from_dict(config_to_dict(cfg)) == cfg
    # a campaign created before the key existed stored a config without it: at the default
    # the key is left out of the fingerprint, so that campaign still resumes
    old = {k: v for k, v in config_to_dict(cfg).items()
           if k not in ("executor", "domain_tokens", "max_epochs")}
    old["fit"] = {k: v for k, v in old["fit"].items() if k != "discrepancy_every"}
    assert config_fingerprint(cfg) == hashlib.sha256(
        json.dumps(old, sort_keys=True).encode()).hexdigest()[:16]
    assert config_fingerprint(config_from_dict(config(discrepancy_every=1))) != \
        config_fingerprint(cfg)


@pytest.mark.slow
def test_refits_learn_or_reuse_the_discrepancy_and_a_resume_keeps_it(tmp_path, monkeypatch):
    patch_fit(monkeypatch, fake_fit)
    out = tmp_path / "camp"
    res = run_campaign(config(), out)
    assert res.stop_reason == "budget" and res.completed == 9
    snaps = snapshots(out)
    assert len(snaps) >= 4
    every = 3
    prev = None
    for s, post in snaps:
        md = post.meta["discrepancy"]
        age = md["refits_since_learned"]
        assert all(post[t].discrepancy for t in post.targets)
        rec = s["recommendation"]
        assert rec["snapshot"] == s["id"] and rec["discrepancy"]["refits_since_learned"] == age
        assert rec["discrepancy"]["targets"]["a"]["s1"] == post["a"].discrepancy["s1"]
        if prev is None:
            assert age == 0 and md["reason"] == "no discrepancy learned yet"
        else:
            p_md = prev.meta["discrepancy"]
            changed = split_key(md["split"]) != split_key(p_md["split"])
            if age == 0:  # re-learned: the scale changed, K refits passed, or the final fit
                assert md["reason"] in ("the largest scale changed",
                                        f"{every} refits since it was learned", "final fit")
                if md["reason"] == "the largest scale changed":
                    assert changed
            else:  # reused: the previous one, one refit older, unchanged
                assert age == p_md["refits_since_learned"] + 1 < every and not changed
                assert post["a"].discrepancy == prev["a"].discrepancy
                assert "reused" in post["a"].diagnostics["discrepancy"]["note"]
        prev = post
    assert any(p.meta["discrepancy"]["refits_since_learned"] > 0 for _, p in snaps)
    # the final fit learned it afresh, and that is what the recommendation and status use
    last_s, last = snaps[-1]
    assert last.meta["discrepancy"]["refits_since_learned"] == 0
    rec = json.loads((out / "recommendation.json").read_text())
    # warnings and trust are recomputed whenever recommendation.json is written (they also
    # reflect the report's held-out check and validation runs); the rest is the snapshot's
    assert rec == {**last_s["recommendation"], "warnings": rec["warnings"], "trust": rec["trust"]}
    st = campaign_status(out)
    assert st["discrepancy"] == rec["discrepancy"] and st["warnings"] == rec["warnings"]

    # resume: the planner loads the snapshot with its discrepancy and reuses it on a refit
    cfg = config_from_dict(config())
    with Ledger.open(out) as lg:
        pl = Planner(cfg, lg)
        assert pl.posterior["a"].discrepancy == last["a"].discrepancy
        fo = pl.refit()
        assert fo.error is None
        post = pl.posterior
        assert post.meta["discrepancy"]["refits_since_learned"] == 1
        assert post["a"].discrepancy == last["a"].discrepancy
        # the end of the command learns it afresh on the same fit (no refit of the law)
        pl.finalize()
        again = pl.posterior
        assert again.meta["discrepancy"]["refits_since_learned"] == 0
        assert again.meta["discrepancy"]["reason"] == "final fit"
        for k, v in post["a"].draws.items():
            assert np.array_equal(again["a"].draws[k], v)
        assert load_campaign(out).posterior().meta["discrepancy"]["refits_since_learned"] == 0


@pytest.mark.slow
def test_discrepancy_every_zero_leaves_it_out_and_says_so(tmp_path, monkeypatch):
    patch_fit(monkeypatch, fake_fit)
    out = tmp_path / "camp"
    c = config(discrepancy_every=0)
    c["budget"] = {"max_runs": 6}
    run_campaign(c, out)
    _, post = snapshots(out)[-1]
    assert post["a"].discrepancy is None and "discrepancy" not in post.meta
    rec = json.loads((out / "recommendation.json").read_text())
    assert "discrepancy" not in rec and rec["mixture_discrepancy_targets"] == 0
    assert any("no model discrepancy" in w for w in rec["warnings"])
    assert campaign_status(out)["warnings"] == rec["warnings"]
