"""Validation experiment: does the campaign's recommended mixture beat the obvious alternatives?

After a campaign (e.g. ``planner run configs/quickstart.yaml --out campaigns/quickstart``):

    .venv/bin/python benchmarks/validate_quickstart.py configs/quickstart.yaml campaigns/quickstart
        [--N 1e6 --D 1e7] [--seeds 0,1] [--out validation.json] [--threads 2] [--device auto]
        [--trainer-arg precision=fp32] [--runs RUNS.csv]

It trains, with the campaign's own trainer (``trainer.path`` / ``trainer.args`` of the config),
three mixtures at the target budget (or at ``--N``/``--D``, the largest your machine allows):

  recommended  the posterior mean of h* in ``CAMPAIGN_DIR/recommendation.json``
  uniform      1/k on every domain
  best seen    the heuristic a practitioner uses without a model: the mixture of the final run
               with the lowest objective sum_t w_t L_t among the largest quarter of the campaign's
               runs by compute 6ND (runs from ``planner runs CAMPAIGN_DIR``)

and reports each one's measured target losses and weighted objective beside the campaign's
prediction: ``recommendation.json["loss"]`` (mean and 90 % interval of the objective at the
target budget) for the recommended mixture, and, when the campaign has a posterior snapshot
(``CAMPAIGN_DIR/posteriors/*``), ``planner predict`` at the trained (N, D) for all three
mixtures and every target. Whether a measured loss falls inside its interval is reported too.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainers.base import RunSpec, load_trainer  # noqa: E402


def planner_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "planner.cli", *args], capture_output=True, text=True)


def normalised(h: dict[str, float], domains: list[str]) -> dict[str, float]:
    w = np.array([max(float(h.get(d, 0.0)), 0.0) for d in domains])
    return dict(zip(domains, (w / w.sum()).tolist()))


def objective(losses: dict[str, float], weights: dict[str, float]) -> float:
    """sum_t w_t L_t: the planner's objective (weights as in the config, not normalised)."""
    return sum(w * losses[t] for t, w in weights.items())


def read_runs(campaign: Path, runs: str | None) -> pd.DataFrame:
    if runs is not None:
        return pd.read_parquet(runs) if runs.endswith((".parquet", ".pq")) else pd.read_csv(runs)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "runs.csv"
        proc = planner_cli("runs", str(campaign), "--out", str(out))
        if proc.returncode != 0:
            raise SystemExit(f"planner runs failed: {proc.stderr.strip()}")
        return pd.read_csv(out)


def best_seen(df: pd.DataFrame, domains: list[str], weights: dict[str, float]) -> tuple[dict, dict]:
    """The best mixture among the largest quarter of final runs by compute (see module doc)."""
    if "run_id" in df.columns:  # keep each run's final observation (its largest D)
        df = df.sort_values("D").groupby("run_id", as_index=False).tail(1)
    cols = [f"loss_{t}" for t in weights]
    df = df.dropna(subset=cols)
    df = df.assign(compute=6.0 * df["N"] * df["D"],
                   objective=sum(w * df[f"loss_{t}"] for t, w in weights.items()))
    top = df[df["compute"] >= df["compute"].quantile(0.75)]
    row = top.loc[top["objective"].idxmin()]
    h = normalised({d: row.get(f"h_{d}", 0.0) for d in domains}, domains)
    info = {"run_id": str(row.get("run_id", "")), "N": float(row["N"]), "D": float(row["D"]),
            "objective": float(row["objective"]), "runs_considered": int(len(top))}
    return h, info


def posterior_predictions(campaign: Path, mixtures: dict[str, dict], domains: list[str], N: float,
                          D: float) -> pd.DataFrame | None:
    snaps = sorted((campaign / "posteriors").glob("*")) if (campaign / "posteriors").is_dir() else []
    if not snaps:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        design = pd.DataFrame([{"N": N, "D": D, **{f"h_{d}": h[d] for d in domains}}
                               for h in mixtures.values()])
        design.to_csv(Path(tmp) / "design.csv", index=False)
        proc = planner_cli("predict", str(snaps[-1]), str(Path(tmp) / "design.csv"),
                           "--out", str(Path(tmp) / "pred.csv"))
        if proc.returncode != 0:
            print(f"warning: planner predict failed: {proc.stderr.strip()}", file=sys.stderr)
            return None
        pred = pd.read_csv(Path(tmp) / "pred.csv")
    pred.index = list(mixtures)
    return pred


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config")
    p.add_argument("campaign_dir")
    p.add_argument("--N", type=float, default=None, help="model size (default: target_budget.N)")
    p.add_argument("--D", type=float, default=None, help="tokens (default: target_budget.D)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds; losses are averaged")
    p.add_argument("--device", default=None, help="trainer device override (auto, cpu, cuda)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads override")
    p.add_argument("--trainer-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="override a trainer arg (value parsed as YAML), e.g. precision=fp32")
    p.add_argument("--runs", default=None,
                   help="the campaign's runs table (default: exported with `planner runs`)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    a = p.parse_args(argv)

    cfg = yaml.safe_load(Path(a.config).read_text())
    campaign = Path(a.campaign_dir)
    domains = list(cfg["domains"])
    weights = ({t: 1.0 for t in cfg["targets"]} if isinstance(cfg["targets"], list)
               else {t: float(w) for t, w in cfg["targets"].items()})
    N = float(a.N or cfg["target_budget"]["N"])
    D = float(a.D or cfg["target_budget"]["D"])
    at_target = (N, D) == (float(cfg["target_budget"]["N"]), float(cfg["target_budget"]["D"]))
    rec = json.loads((campaign / "recommendation.json").read_text())

    seen_h, seen_info = best_seen(read_runs(campaign, a.runs), domains, weights)
    mixtures = {"recommended": normalised(rec["mean"], domains),
                "uniform": {d: 1.0 / len(domains) for d in domains},
                "best_seen": seen_h}
    args = dict(cfg["trainer"].get("args") or {})
    if a.device:
        args["device"] = a.device
    if a.threads:
        args["num_threads"] = a.threads
    for kv in a.trainer_arg:
        key, value = kv.split("=", 1)
        args[key] = yaml.safe_load(value)
    trainer = load_trainer(cfg["trainer"]["path"], args)
    seeds = [int(s) for s in a.seeds.split(",")]

    results: dict[str, dict] = {}
    for name, h in mixtures.items():
        runs = [trainer(RunSpec(run_id=f"validate-{name}-{s}", N=int(N), D=int(D), h=h, seed=s))
                for s in seeds]
        losses = {t: float(np.mean([r.losses[t] for r in runs])) for t in weights}
        results[name] = {"h": h, "losses": losses, "objective": objective(losses, weights),
                         "seeds": seeds, "N_real": runs[0].metadata.get("N"),
                         "seconds": sum(r.metadata.get("seconds", 0.0) for r in runs)}
        print(f"trained {name}: objective {results[name]['objective']:.4f} "
              f"({results[name]['seconds']:.0f} s)", flush=True)

    pred = posterior_predictions(campaign, mixtures, domains, N, D)
    for name, res in results.items():
        if pred is not None:
            res["predicted"] = {t: {"mean": float(pred.loc[name, f"pred_{t}"]),
                                    "lo": float(pred.loc[name, f"pred_{t}_lo"]),
                                    "hi": float(pred.loc[name, f"pred_{t}_hi"])}
                                for t in weights if f"pred_{t}" in pred.columns}
            for t, q in res["predicted"].items():
                q["measured_inside"] = bool(q["lo"] <= res["losses"][t] <= q["hi"])
    rec_loss = rec.get("loss", {})
    results["recommended"]["campaign_prediction"] = {
        **{k: rec_loss.get(k) for k in ("mean", "lo", "hi")}, "at_target_budget": at_target,
        "measured_inside": (bool(rec_loss["lo"] <= results["recommended"]["objective"] <= rec_loss["hi"])
                            if at_target and "lo" in rec_loss else None)}

    print(f"\nvalidation at N={N:.3g}, D={D:.3g} ({'target budget' if at_target else 'NOT the target budget'}),"
          f" seeds {seeds}; best seen = run {seen_info['run_id']} (N={seen_info['N']:.3g}, D={seen_info['D']:.3g})")
    print(f"{'mixture':12s} {'objective':>9s}  " + "  ".join(f"{t:>22s}" for t in weights) + "   h")
    for name, res in results.items():
        cells = []
        for t in weights:
            q = res.get("predicted", {}).get(t)
            cells.append(f"{res['losses'][t]:.4f}" + (f" [{q['lo']:.3f},{q['hi']:.3f}]" if q else " " * 14))
        h = " ".join(f"{d}={w:.2f}" for d, w in res["h"].items())
        print(f"{name:12s} {res['objective']:9.4f}  " + "  ".join(f"{c:>22s}" for c in cells) + f"   {h}")
    cp = results["recommended"]["campaign_prediction"]
    if cp.get("mean") is not None:
        print(f"campaign prediction for the recommended objective at the target budget: "
              f"{cp['mean']:.4f} [{cp['lo']:.4f}, {cp['hi']:.4f}] (90 %); "
              f"expected excess loss {rec.get('expected_excess_loss')}")
    if a.out:
        Path(a.out).write_text(json.dumps({"N": N, "D": D, "at_target_budget": at_target,
                                           "best_seen_run": seen_info, "results": results,
                                           "recommendation": rec}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
