"""CLI round trip on a tiny table (fit -> predict -> optimum) and bad input -> exit 2, one line."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from planner.cli import main
from tests.support.sim import TRUE_ADDITIVE, grid_design, simulate

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    N, D, H = grid_design(5, [1e7, 3e7, 1e8], [1e9, 3e9], seed=2)
    df = simulate("additive", TRUE_ADDITIVE, N, D, H, 0.005, seed=3)
    df.to_csv(d / "runs.csv", index=False)
    df[["N", "D", "h_code", "h_web", "h_books"]].head(4).to_csv(d / "design.csv", index=False)
    return d


@pytest.mark.slow
def test_round_trip(tiny):
    post = tiny / "post"
    assert main(["fit", str(tiny / "runs.csv"), "--law", "additive", "--method", "nuts",
                 "--warmup", "150", "--samples", "150", "--out", str(post)]) == 0
    assert (post / "meta.json").exists() and (post / "posterior_0.nc").exists()
    assert main(["predict", str(post), str(tiny / "design.csv"), "--out", str(tiny / "pred.csv")]) == 0
    pred = pd.read_csv(tiny / "pred.csv")
    truth = pd.read_csv(tiny / "runs.csv").head(4)["loss_web"]
    assert {"pred_web", "pred_web_lo", "pred_web_hi"} <= set(pred.columns)
    # in-sample, 30 noisy runs: the posterior mean is within 2 % (4 noise sds) of the data
    assert ((pred["pred_web"] - truth).abs() / truth).max() < 0.02
    assert (pred["pred_web_lo"] < pred["pred_web"]).all() and (pred["pred_web"] < pred["pred_web_hi"]).all()
    assert main(["optimum", str(post), "--N", "1e9", "--D", "2e10", "--out", str(tiny / "opt.json")]) == 0
    opt = json.loads((tiny / "opt.json").read_text())
    assert set(opt) >= {"mean", "lo", "hi", "loss", "expected_excess_loss"}
    assert set(opt["loss"]) == {"mean", "lo", "hi"}
    assert abs(sum(opt["mean"].values()) - 1) < 1e-9
    for dmn in opt["mean"]:
        assert opt["lo"][dmn] <= opt["mean"][dmn] <= opt["hi"][dmn]


@pytest.mark.slow
def test_mixture_discrepancy_end_to_end(tmp_path, capsys):
    """Joint-law truth, additive Laplace fit with the held-out-scale discrepancy (12 mixtures x
    N in 1e7..1e8 x 2 D), optimum at (1e9, 2e10). The additive fit cannot follow how h* moves
    with scale: its choice's true excess loss there is 0.016 nats (computed from the truth
    below). Without the mixture field the posterior claims 0.0012 (13x too confident); with it,
    0.089 (conservative). The test asks only for the side of the truth each lands on."""
    import jax.numpy as jnp
    import numpy as np

    from planner.model.laws import get_law, scale_inputs
    from planner.model.posterior import Posterior
    from tests.support.sim import TRUE_JOINT, as_jax

    N, D, H = grid_design(12, [1e7, 3e7, 1e8], [1e9, 3e9], seed=5)
    simulate("joint", TRUE_JOINT, N, D, H, 0.003, seed=6).to_csv(tmp_path / "runs.csv", index=False)
    post_dir = tmp_path / "post"
    assert main(["fit", str(tmp_path / "runs.csv"), "--law", "additive", "--method", "laplace",
                 "--out", str(post_dir)]) == 0
    assert "smooth over mixtures" in capsys.readouterr().out
    assert main(["optimum", str(post_dir), "--N", "1e9", "--D", "2e10",
                 "--out", str(tmp_path / "opt.json")]) == 0
    opt = json.loads((tmp_path / "opt.json").read_text())
    assert opt["mixture_discrepancy_targets"] == 1
    h = np.array([[opt["recommended"][d] for d in ("code", "web", "books")]])
    g = np.random.default_rng(0).dirichlet(np.ones(3), 4000)
    ln, ld = scale_inputs(np.full(4001, 1e9), np.full(4001, 2e10))
    true = np.asarray(get_law("joint").predict(as_jax(TRUE_JOINT), ln, ld,
                                               jnp.asarray(np.concatenate([h, g]))))
    regret = true[0] - true.min()
    assert regret > 0.005
    assert opt["expected_excess_loss"] > regret
    from planner.decide.optimum import recommend
    without = recommend(Posterior.load(post_dir), 1e9, 2e10, mixture_field=False)
    assert without["mixture_discrepancy_targets"] == 0
    assert without["expected_excess_loss"] < regret / 3


@pytest.mark.parametrize("make,args_fn,match", [
    (lambda d: d.assign(h_code=d["h_code"] + 0.1), lambda p: ["fit", p, "--out", "x"], "sum to"),
    (lambda d: d.assign(N=-d["N"]), lambda p: ["fit", p, "--out", "x"], "N must be a positive"),
    (lambda d: d, lambda p: ["fit", p, "--law", "cubic", "--out", "x"], "unknown law"),
    (lambda d: d, lambda p: ["fit", p, "--targets", "zzz", "--out", "x"], "unknown target"),
    (lambda d: d.head(5), lambda p: ["fit", p, "--method", "map", "--out", "x"], "more rows than parameters"),
    (lambda d: d, lambda p: ["fit", p + ".missing", "--out", "x"], "not found"),
])
def test_bad_input_exit_2(tiny, tmp_path, capsys, make, args_fn, match):
    df = make(pd.read_csv(tiny / "runs.csv"))
    p = tmp_path / "runs.csv"
    df.to_csv(p, index=False)
    assert main(args_fn(str(p))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err


@pytest.mark.slow
def test_console_script_bad_input_one_line(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("N,D,h_a,h_b,loss_a\n1e7,1e9,0.5,0.6,3.0\n")
    exe = ROOT / ".venv" / "bin" / "planner"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "planner.cli"]
    r = subprocess.run(cmd + ["fit", str(p), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "sum to 1.1" in lines[0], r.stderr
    r = subprocess.run(cmd + ["optimum", str(tmp_path / "none"), "--N", "-1", "--D", "1e9", "--out", "o.json"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
