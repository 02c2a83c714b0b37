"""Every warning the report gives also reaches the user without it: in the table `planner run`
ends with, in `planner status` (and `--json`) and in recommendation.json's ``warnings`` list.

The bad case is constructed honestly: ``tests.support.badfit.disagreeing_fit`` is a posterior
whose two chains really disagree (ArviZ computes its r_hat, about 1.3, from the draws), and the
trainer answers from the joint law while the fits are centred on an additive truth, so the
held-out checks have something to find. Every fitting path uses it (the discrepancy's inner fit
and the report's held-out check too)."""
from __future__ import annotations

import html
import json
import re

import yaml

from planner.calibrate.diagnose import HOLDOUT_CACHE, fit_warnings
from planner.campaign.campaign import campaign_status, load_campaign
from planner.campaign.lock import CampaignLock
from planner.cli import main as planner_main
from planner.report.build import build_report
from tests.support.badfit import disagreeing_fit
from tests.support.fakefit import patch_fit

DOMS = ["a", "b", "c"]


def flat(text: str) -> str:
    """The text with rich's line wrapping undone (the status table wraps long values)."""
    return re.sub(r"\s+", " ", text)


def config(tmp_path):
    c = {"domains": DOMS, "targets": {"a": 1.0}, "target_budget": {"N": 1e9, "D": 2e10},
         "space": {"N": [1e6, 5e7], "D": [1e8, 1e9]}, "budget": {"max_runs": 10},
         "batch_size": 2, "acquisition": "random",
         "trainer": {"path": "trainers.synthetic:SyntheticTrainer",
                     "args": {"law": "joint", "domains": DOMS, "checkpoints": [0.5]}},
         "executor": {"kind": "inprocess"},
         "fit": {"method": "nuts", "min_runs": 10, "background": False}}
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(c))
    return p


def test_warnings_reach_run_status_json_and_the_report(tmp_path, monkeypatch, capsys):
    patch_fit(monkeypatch, disagreeing_fit)
    out = tmp_path / "camp"
    assert planner_main(["run", str(config(tmp_path)), "--out", str(out)]) == 0
    table = flat(capsys.readouterr().out)

    rec = json.loads((out / "recommendation.json").read_text())
    assert {"mean", "lo", "hi", "loss", "expected_excess_loss"} <= set(rec)
    warns = rec["warnings"]
    r_hat = [w for w in warns if w.startswith("a: chains disagree (max r_hat")]
    assert len(r_hat) == 1, warns
    assert float(re.search(r"r_hat ([0-9.]+)", r_hat[0]).group(1)) > 1.2
    # the same function on the saved snapshot gives the same list
    assert fit_warnings(load_campaign(out).posterior()) == warns

    # planner run's final table lists every one of them
    assert f"warnings ({len(warns)})" in table
    # the law alone misses the held-out largest scale (joint truth, additive fits): trust low
    assert rec["trust"]["level"] == "low" and rec["trust"]["reasons"]
    assert flat(f"trust low: {rec['trust']['reasons'][0]}") in table
    for w in warns:
        assert flat(w) in table, w
    # planner status and planner status --json
    assert planner_main(["status", str(out)]) == 0
    status = flat(capsys.readouterr().out)
    for w in warns:
        assert flat(w) in status, w
    assert planner_main(["status", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["warnings"] == warns

    # the report: its warnings (the posterior's and the held-out check's) are listed in its
    # summary; afterwards status and recommendation.json carry every one of them
    shown = report_warnings(out)
    assert set(warns) <= set(shown)
    assert set(shown) <= set(campaign_status(out)["warnings"])
    assert set(shown) <= set(json.loads((out / "recommendation.json").read_text())["warnings"])

    # a held-out check that finds the intervals too narrow. The real one above found the
    # held-out losses covered; its cached result is edited to 40 % coverage (the report reads
    # the cache back; computing the check is tested in tests/calibrate)
    cache = out / HOLDOUT_CACHE
    c = json.loads(cache.read_text())
    c["result"]["targets"]["a"]["with_discrepancy"]["coverage_90"] = 0.4
    cache.write_text(json.dumps(c))
    bad = "a: only 40 % of the held-out losses fall inside the 90 % intervals"
    # while a planner holds the campaign, the report leaves recommendation.json alone; status
    # adds the check's warnings of the recommendation's snapshot itself
    lock = CampaignLock(out)
    lock.acquire()
    try:
        shown = report_warnings(out)
    finally:
        lock.release()
    assert any(w.startswith(bad) for w in shown)
    assert not any(w.startswith(bad) for w in
                   json.loads((out / "recommendation.json").read_text())["warnings"])
    st = campaign_status(out)
    assert set(shown) <= set(st["warnings"])
    assert planner_main(["status", str(out)]) == 0
    assert flat(bad) in flat(capsys.readouterr().out)
    # 40 % coverage is far below nominal: trust is low for that reason too
    low = "a: the held-out check found only 40 % of the held-out losses inside"
    assert st["trust"]["level"] == "low" and any(r.startswith(low) for r in st["trust"]["reasons"])
    # with no planner running it is written into recommendation.json too (nothing else changes
    # but the trust reasons)
    shown = report_warnings(out)
    after = json.loads((out / "recommendation.json").read_text())
    assert set(shown) <= set(after["warnings"]) and after["warnings"][:len(warns)] == warns
    assert after["trust"] == st["trust"]
    assert {k: v for k, v in after.items() if k not in ("warnings", "trust")} == \
        {k: v for k, v in rec.items() if k not in ("warnings", "trust")}

    # a held-out check that fails (not bad input) loses its own section only; the summary
    # still lists the posterior's warnings
    cache.unlink()

    def broken(*a, **k):
        raise RuntimeError("sampler exploded")

    monkeypatch.setattr("planner.report.context.holdout_check", broken)
    rep = build_report(out)
    assert set(rep.errors) == {"holdout"} and "sampler exploded" in rep.errors["holdout"]
    assert r_hat[0] in html.unescape(rep.path.read_text())


def report_warnings(out) -> list[str]:
    """Build the report; the warnings its summary lists (the r_hat one also in diagnostics)."""
    rep = build_report(out)
    assert rep.errors == {}
    page = rep.path.read_text()
    summary = re.search(r'<section id="summary">(.*?)</section>', page, re.DOTALL).group(1)
    shown = [html.unescape(w) for w in re.findall(
        r"<li>(.*?)</li>", re.search(r'<ul class="warnings">(.*?)</ul>', summary, re.DOTALL).group(1))]
    diag = html.unescape(re.search(r'<section id="diagnostics">(.*?)</section>', page,
                                   re.DOTALL).group(1))
    assert "a: chains disagree (max r_hat" in diag
    return shown
