"""The campaign report on a finished synthetic campaign: every section is there and drawn, the
page opens in headless Chromium (Debian's package; .ci/run installs it) and its screenshot is
not blank, and the CLI writes it. The fits are ``tests.support.fakefit.fake_fit`` (a real
Posterior around the synthetic truth): a real fit costs minutes on this machine, and the report
is what is under test here."""
from __future__ import annotations

import re
import shutil
import subprocess

import pandas as pd
import pytest

from planner import cli
from planner.campaign.campaign import run_campaign, suggest
from planner.report.build import build_report
from planner.report.context import SECTIONS
from tests.support.fakefit import fake_fit, patch_fit
from trainers.base import RunSpec
from trainers.synthetic import SyntheticTrainer

DOMS = ["a", "b", "c"]


def prior_table(path, n=2):
    """Runs from before the planner (with a checkpoint each), in the runs-table schema."""
    tr = SyntheticTrainer(domains=DOMS, checkpoints=[0.5])
    rows = []
    for i, h in enumerate([(0.6, 0.2, 0.2), (0.2, 0.2, 0.6), (0.2, 0.6, 0.2)][:n]):
        s = RunSpec(run_id=f"old{i}", N=2_000_000, D=300_000_000, h=dict(zip(DOMS, h)), seed=i)
        r = tr(s)
        for D, losses in list(r.checkpoints) + [(s.D, r.losses)]:
            rows.append({"run_id": s.run_id, "N": s.N, "D": D,
                         **{f"h_{d}": w for d, w in s.h.items()},
                         **{f"loss_{t}": losses[t] for t in ("a", "b")}})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def campaign_config(prior, **over):
    c = {"domains": DOMS, "targets": {"a": 1.0, "b": 0.5},
         "target_budget": {"N": 1e9, "D": 2e10},
         "space": {"N": [1e6, 5e7], "D": [1e8, 1e9]}, "budget": {"max_runs": 6},
         "batch_size": 2,
         "acquisition": {"name": "decision", "candidates": 200, "fantasies": 8, "draws": 64},
         "trainer": {"path": "trainers.synthetic:SyntheticTrainer",
                     "args": {"domains": DOMS, "checkpoints": [0.5]}},
         "executor": {"kind": "inprocess"}, "prior_runs": str(prior),
         # a's data allows at most 2 x 2e9 / 2e10 = 0.2 of the target run
         "domain_tokens": {"a": 2.0e9}, "max_epochs": 2,
         "stop": {"expected_excess_loss": 1e-6},
         "fit": {"method": "nuts", "min_runs": 4, "background": False}}
    c.update(over)
    return c


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished campaign and its report (built with the fake fit, holdout included)."""
    root = tmp_path_factory.mktemp("report")
    out = root / "camp"
    with pytest.MonkeyPatch.context() as mp:
        patch_fit(mp, fake_fit)
        res = run_campaign(campaign_config(prior_table(root / "prior.csv")), out)
        assert res.stop_reason == "budget" and res.completed == 6
        rep = build_report(out)
    return out, rep


@pytest.mark.slow
def test_report_has_every_section(finished):
    out, rep = finished
    assert rep.path == out / "report.html" and rep.errors == {}
    page = rep.path.read_text()
    assert 'class="section-error"' not in page
    for sid, title in SECTIONS:
        m = re.search(rf'<section id="{re.escape(sid)}"><h2>([^<]*)</h2>(.*?)</section>', page, re.S)
        assert m is not None, sid
        assert m.group(1) == title
        assert len(m.group(2)) > 80, sid  # the section says something
    sec = {sid: re.search(rf'<section id="{re.escape(sid)}">(.*?)</section>', page, re.S).group(1)
           for sid, _ in SECTIONS}
    # figures are embedded (self-contained page): h* intervals + ternary (k = 3), predicted
    # loss, predicted vs observed, loss vs compute, EEL, purchases, ArviZ traces
    assert sec["h-star"].count("data:image/png;base64,") == 2 and "ternary" in sec["h-star"]
    for sid in ("predicted-loss", "pred-vs-obs", "loss-vs-compute", "eel", "purchases",
                "diagnostics"):
        assert "data:image/png;base64," in sec[sid], sid
    assert "src=\"http" not in page and "<script" not in page
    # the recommendation with its predicted loss and interval
    assert "predicted loss is <b>" in sec["summary"] and "90 % interval" in sec["summary"]
    # the cap on domain a (2 x 2e9 / 2e10 = 0.2) binds and the report says so
    assert "Data caps bind for: a" in sec["summary"] and "Binding caps: a" in sec["caps"]
    # the held-out check ran (calibration.holdout_check) and is tabulated
    assert "mean relative error" in sec["holdout"] and "Not available" not in sec["holdout"]
    assert (out / "report_holdout.json").exists()
    # diagnostics with plain-language warnings (the fake fit has 2.5 % divergences)
    assert "r_hat" in sec["diagnostics"] and "divergent transitions" in sec["diagnostics"]
    # the runs table marks imported runs; every run is listed
    assert sec["runs"].count('<tr class="imported completed">') == 2
    assert len(re.findall(r"<tr class=\"[a-z]+ (completed|failed)\">", sec["runs"])) == 8
    # EEL table has one row per refit
    assert sec["eel"].count("<tr>") >= 2


@pytest.mark.slow
def test_report_screenshot_in_headless_chromium(finished, tmp_path):
    out, rep = finished
    exe = shutil.which("chromium")
    if not exe:  # .ci/run installs Debian's package; a plain scripts/test may not have it
        pytest.skip("chromium is not installed (apt-get install chromium, as .ci/run does)")
    shot = tmp_path / "shot.png"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
           "--window-size=1200,3000", rep.path.resolve().as_uri()]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Uncaught" not in p.stderr
    import matplotlib.image as mpimg

    img = mpimg.imread(str(shot))
    assert img.shape[:2] == (3000, 1200)
    gray = img[..., :3].mean(axis=2)
    # not blank: varied pixels, a fair share of them not white (text, tables, figures)
    assert gray.std() > 0.1
    assert (gray < 0.9).mean() > 0.05


@pytest.mark.slow
def test_cli_report_and_a_campaign_without_a_fit(finished, tmp_path, capsys):
    out, _ = finished
    alt = tmp_path / "r.html"
    assert cli.main(["report", str(out), "--no-holdout", "--out", str(alt)]) == 0
    assert "report written to" in capsys.readouterr().out
    assert "Not computed (report built with --no-holdout)" in alt.read_text()
    # no campaign there: one line, exit code 2
    assert cli.main(["report", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no campaign in")
    # a campaign with runs proposed but none finished: every section says why it is empty
    fresh = tmp_path / "fresh"
    suggest(fresh, 2, config=campaign_config(prior_table(tmp_path / "p.csv", n=1),
                                             fit={"method": "map", "min_runs": 20}))
    rep = build_report(fresh)
    assert rep.errors == {}
    page = rep.path.read_text()
    assert "No posterior yet" in page and page.count("<section id=") == len(SECTIONS)
