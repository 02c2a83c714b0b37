"""Which strategy chose each run (ledger, `planner runs`, `planner status`), `planner runs`
without --out, and a decision campaign that waits for its first fit after its initial design
instead of buying more initial runs while that fit runs."""
from __future__ import annotations

import io
import time

import pandas as pd

from planner.campaign.campaign import campaign_status, tell
from planner.campaign.ledger import Ledger
from planner.cli import main as planner_main
from tests.campaign.test_campaign import DOMS, TRAINER
from tests.campaign.test_recovery import prior_rows
from tests.support.fakefit import stub_fitter

FIT_SECONDS = 1.5


def slow_fitter(obs, cfg, seed):
    """The stub fitter, taking long enough that the old loop bought more initial runs meanwhile."""
    time.sleep(FIT_SECONDS)
    return stub_fitter(obs, cfg, seed)


def test_decision_waits_for_its_first_fit_and_every_run_names_its_strategy(tmp_path, capsys):
    from planner.campaign.campaign import run_campaign

    pd.DataFrame(prior_rows()).to_csv(tmp_path / "prior.csv", index=False)
    c = {"domains": DOMS, "targets": {"a": 1.0}, "target_budget": {"N": 1e9, "D": 2e10},
         "space": {"N": [1e6, 5e7], "D": [1e8, 1e9]}, "budget": {"max_runs": 6},
         "batch_size": 2, "prior_runs": str(tmp_path / "prior.csv"),
         "acquisition": {"name": "decision", "candidates": 100, "fantasies": 4, "draws": 32},
         # 5 observations per run: 3 prior rows + 2 runs = 13 > the law's 11 parameters
         "trainer": {"path": TRAINER, "args": {"domains": DOMS, "checkpoints": 4,
                                               "sleep_s": 0.2}},
         "executor": {"kind": "inprocess", "threads": 2, "max_retries": 0},
         "fit": {"method": "map", "min_runs": 5, "background": True}}
    out = tmp_path / "camp"
    res = run_campaign(c, out, fitter=slow_fitter)
    assert res.stop_reason == "budget" and res.completed == 6
    with Ledger.open(out, readonly=True) as lg:
        runs = lg.runs()
        first_fit = lg.snapshots()[0]["created_at"]
    by = {}
    for r in runs:
        by.setdefault(r.strategy, []).append(r)
    # the initial design is the 2 runs the first fit needed beyond the 3 prior runs; while
    # that fit ran (1.5 s) nothing else was bought, then decision chose the rest
    assert {k: len(v) for k, v in by.items()} == {"prior": 3, "initial": 2, "decision": 4}
    assert all(r.created_at < first_fit for r in by["initial"])
    assert all(r.created_at > first_fit for r in by["decision"])
    # an external result is `told`
    ext = pd.DataFrame([{"N": 3e6, "D": 2e8, "h_a": 0.2, "h_b": 0.3, "h_c": 0.5, "loss_a": 3.3}])
    tell(out, ext, refit=False)
    # planner runs without --out: the table on stdout, with the strategy of each run
    capsys.readouterr()
    assert planner_main(["runs", str(out)]) == 0
    cap = capsys.readouterr()
    df = pd.read_csv(io.StringIO(cap.out))
    assert df["run_id"].nunique() == 10 and cap.err == ""
    per_run = df.groupby("run_id")["strategy"].first().value_counts().to_dict()
    assert per_run == {"prior": 3, "initial": 2, "decision": 4, "told": 1}
    st = campaign_status(out)
    assert st["strategies"] == {"prior": 3, "initial": 2, "decision": 4, "told": 1}
    assert planner_main(["status", str(out)]) == 0
    assert "chosen by" in capsys.readouterr().out


def test_random_campaign_keeps_buying_while_its_first_fit_runs(tmp_path):
    """The wait is for strategies that use the posterior; random has nothing to wait for."""
    from planner.campaign.campaign import run_campaign

    c = {"domains": DOMS, "targets": {"a": 1.0}, "target_budget": {"N": 1e9, "D": 2e10},
         "space": {"N": [1e6, 5e7], "D": [1e8, 1e9]}, "budget": {"max_runs": 8},
         "batch_size": 2, "acquisition": "random",
         "trainer": {"path": TRAINER, "args": {"domains": DOMS, "checkpoints": 3,
                                               "sleep_s": 0.2}},
         "executor": {"kind": "inprocess", "threads": 2, "max_retries": 0},
         "fit": {"method": "map", "min_runs": 4, "background": True}}
    out = tmp_path / "camp"
    run_campaign(c, out, fitter=slow_fitter)
    with Ledger.open(out, readonly=True) as lg:
        first_fit = lg.snapshots()[0]["created_at"]
        initial = [r for r in lg.runs() if r.strategy == "initial"]
    assert len(initial) > 4 and any(r.created_at < first_fit for r in initial[4:])
