"""The simulation study: k = 3, 5, 7 domains x ground truths x seeds, each a run of
``acquisition_sim.py`` (decision vs random vs the paper's grid), then one table.

    .venv/bin/python benchmarks/acquisition_study.py [--run] [--ks 3 5 7]
        [--laws additive joint joint:additive drift:joint] [--seeds 0 1] [--rounds 6] [--q 4]
        [--no-discrepancy] [--root benchmarks/results/study]

A law spec is TRUTH or TRUTH:FITTED (``joint:additive``: the additive law fitted to joint
truths; ``drift:joint``: the joint law fitted to a truth outside both families; see
``acquisition_sim.py``); results go to ``k{K}_{TRUTH}`` or ``k{K}_{TRUTH}_{FITTED}``.

--run runs every configuration whose ``curves.csv`` is missing (--ablation: also the
``random-cheap`` ablation, random runs from decision's cheap corner, in ``k*_*_ablation``) (Laplace refits; about 5-25
minutes each on 2 cores; refits learn the discrepancy unless --no-discrepancy), then summarises.
Per configuration and strategy the table gives the compute after which the TRUE excess loss of
the recommended mixture stays below 0.1 % of the optimal loss (median over seeds; "never" when
a seed does not get there within the study, in which case its compute at the end is a lower
bound), the saving of decision against each baseline, the final excess loss, and honesty over
every refit: the share where the true excess exceeds 3x the posterior's expected excess loss
(``over3x``) and where the true h* lies outside its 90 % bounds (``hout``). Writes
``summary.csv`` and ``study.png`` under --root.
"""
from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from acquisition_sim import compute_to_reach, honesty  # noqa: E402  (this folder's simulator)

TOL = 1e-3


def reach(g: pd.DataFrame, tol: float = TOL) -> tuple[float, bool]:
    """(compute after which excess stays <= tol, reached?); (final compute, False) if never."""
    flops = compute_to_reach(g, tol)
    return (flops, True) if np.isfinite(flops) else (float(g["flops"].max()), False)


def config_dir(k: int, spec: str) -> str:
    """``k3_joint`` for a truth fitted with its own law, ``k3_joint_additive`` otherwise."""
    return f"k{k}_" + "_".join(spec.split(":"))


def summarise(root: Path, ks, laws) -> pd.DataFrame:
    rows = []
    for k in ks:
        for law in laws:
            f = root / config_dir(k, law) / "curves.csv"
            if not f.exists():
                continue
            df = pd.read_csv(f)
            abl = root / f"{config_dir(k, law)}_ablation" / "curves.csv"
            if abl.exists():
                df = pd.concat([df, pd.read_csv(abl)], ignore_index=True)
            per = {}
            for s, g in df.groupby("strategy"):
                r = [reach(gg) for _, gg in g.groupby("seed")]
                flops = np.array([x for x, _ in r])
                final = g.sort_values("round").groupby("seed").tail(1)
                per[s] = {"median": float(np.median(flops)), "all_reached": all(ok for _, ok in r),
                          "n_reached": sum(ok for _, ok in r), "n": len(r),
                          "final_excess": float(final["excess_rel"].mean()),
                          "final_flops": float(final["flops"].mean()),
                          "honesty": honesty(g) if "hstar_outside" in g else None}
            row = {"k": k, "law": law, "seeds": per.get("decision", {}).get("n", 0)}
            for s in ("decision", "random", "grid", "random-cheap"):
                if s not in per:
                    continue
                p = per[s]
                row[f"{s}_flops_to_0.1pct"] = p["median"]
                row[f"{s}_reached"] = f"{p['n_reached']}/{p['n']}"
                row[f"{s}_final_excess_pct"] = 100 * p["final_excess"]
                if p["honesty"]:
                    row[f"{s}_over3x_pct"] = 100 * p["honesty"]["excess_over_3x_eel"]
                    row[f"{s}_hout_pct"] = 100 * p["honesty"]["hstar_outside_90"]
                    row[f"{s}_field_pct"] = 100 * p["honesty"]["with_field"]
                    row[f"{s}_refits"] = p["honesty"]["refits"]
            if "field_ell" in df:  # decision's batches bought from a posterior with / without a field
                g = df[df["strategy"] == "decision"].sort_values(["seed", "round"]).copy()
                g["next_batch"] = g.groupby("seed")["batch_flops"].shift(-1)
                has = g["field_ell"].notna()
                for key, m in (("field", has), ("nofield", ~has)):
                    b = g.loc[m, "next_batch"].dropna()
                    row[f"decision_batch_flops_{key}"] = float(b.median()) if len(b) else None
            d = per.get("decision")
            for s in ("random", "grid", "random-cheap"):
                if d and s in per:
                    # a baseline that never got there: its final compute is a lower bound
                    ratio = per[s]["median"] / d["median"]
                    row[f"saving_vs_{s}"] = (">=" if not per[s]["all_reached"] else "") + \
                        (f"{ratio:.1f}x" if d["all_reached"] else "n/a (decision not reached)")
            rows.append(row)
    return pd.DataFrame(rows)


def plot(root: Path, ks, laws) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfgs = [(k, law) for k in ks for law in laws
            if (root / config_dir(k, law) / "curves.csv").exists()]
    if not cfgs:
        return
    cols = min(3, len(cfgs))
    rows = math.ceil(len(cfgs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    colours = {"decision": "tab:blue", "random": "tab:orange", "grid": "tab:green",
               "random-cheap": "tab:gray"}
    for ax, (k, law) in zip(axes.flat, cfgs):
        df = pd.read_csv(root / config_dir(k, law) / "curves.csv")
        abl = root / f"{config_dir(k, law)}_ablation" / "curves.csv"
        if abl.exists():
            df = pd.concat([df, pd.read_csv(abl)], ignore_index=True)
        for (s, seed), g in df.groupby(["strategy", "seed"]):
            ax.plot(g["flops"], np.maximum(g["excess_rel"], 1e-6), marker="o", ms=2.5, lw=1,
                    color=colours.get(s, "k"), label=s if seed == df["seed"].min() else None)
        ax.axhline(TOL, color="k", ls="--", lw=0.7)
        ax.set(xscale="log", yscale="log", title=f"k={k}, {law.replace(':', ' fitted ')}",
               xlabel="compute (FLOPs)",
               ylabel="true excess / optimal loss")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(cfgs):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(root / "study.png", dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", action="store_true")
    ap.add_argument("--ks", type=int, nargs="+", default=[3, 5, 7])
    ap.add_argument("--laws", nargs="+", default=["additive", "joint"],
                    help="TRUTH or TRUTH:FITTED, e.g. joint:additive drift:joint")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--q", type=int, default=4)
    ap.add_argument("--root", default="benchmarks/results/study")
    ap.add_argument("--strategies", nargs="+", default=None,
                    help="passed to acquisition_sim.py (default: decision random grid)")
    ap.add_argument("--no-discrepancy", action="store_true",
                    help="refits without the model discrepancy")
    ap.add_argument("--ablation", action="store_true",
                    help="with --run: also random-cheap (random runs in decision's cheap corner)")
    a = ap.parse_args()
    root = Path(a.root)
    if a.run:
        for k in a.ks:
            for law in a.laws:
                out = root / config_dir(k, law)
                if (out / "curves.csv").exists():
                    continue
                truth, _, fitted = law.partition(":")
                cmd = [sys.executable, str(HERE / "acquisition_sim.py"), "--k", str(k), "--law",
                       truth, "--method", "laplace", "--rounds", str(a.rounds), "--q", str(a.q),
                       "--seeds", *map(str, a.seeds), "--out", str(out)]
                cmd += ["--fit-law", fitted] if fitted else []
                cmd += ["--no-discrepancy"] if a.no_discrepancy else []
                cmd += ["--strategies", *a.strategies] if a.strategies else []
                print(" ".join(cmd), flush=True)
                subprocess.run(cmd, check=True)
                abl = root / f"{config_dir(k, law)}_ablation"
                if a.ablation and not (abl / "curves.csv").exists():
                    cmd[cmd.index("--out") + 1] = str(abl)
                    subprocess.run(cmd + ["--strategies", "random-cheap"], check=True)
    table = summarise(root, a.ks, a.laws)
    if table.empty:
        sys.exit(f"no results under {root}; run with --run")
    table.to_csv(root / "summary.csv", index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 30,
                           "display.float_format", "{:.3g}".format):
        print(table.to_string(index=False))
    plot(root, a.ks, a.laws)


if __name__ == "__main__":
    main()
