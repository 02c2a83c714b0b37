"""Replay on real runs (issue 5): which RegMix proxy runs should have been bought?

The pool is the RegMix "1M" (512 + 256) and "60M" (256) runs, all on 1B tokens; buying one
answers it from the table (its real Pile-CC loss). The 64 "1B" runs (25B tokens) are never
bought: after every batch each strategy fits the law (Laplace), predicts the 64 tested 1B
mixtures at (N = 1e9, D = 25e9), and picks the lowest; it is scored by the TRUE 1B loss of that
pick (regret = its loss minus the best of the 64), against the compute spent (6 N D per run).

Strategies: ``decision`` (the planner: value of information per FLOP over the pool, starting
from cheap 1M runs), ``random`` (random runs from the whole pool) and ``random-1m`` (RegMix's
own design: random 1M runs only). Reference points: RegMix's choice, the law fitted on all 512
training "1M" runs (the paper regresses on the same 512 runs), and the median of the 64.

    .venv/bin/python benchmarks/regmix_replay.py [--rounds 8 --q 8 --seeds 0]
        [--out benchmarks/results/regmix_replay]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from planner.core.jaxsetup import configure_jax

configure_jax()  # float64 and the compilation cache, before JAX starts
from planner.decide.registry import propose
from planner.decide.space import Space
from planner.decide.strategies import DesignRequest
from planner.infer.dispatch import fit
from planner.model.laws import get_law
from planner.model.regmix import load_regmix
from planner.model.runs import runs_from_frame

REGMIX = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "regmix"
TARGET_N, TARGET_D = 1e9, 25e9


def pick_among(post, test: pd.DataFrame, hcols, target: str) -> int:
    """Index (into ``test``) of the mixture with the lowest posterior-mean loss at 1B/25B."""
    H = test[hcols].to_numpy(float)
    n = len(H)
    p = post.loss_draws(target, np.full(n, TARGET_N), np.full(n, TARGET_D), H).mean(0)
    return int(np.argmin(p))


def run_strategy(name, pool, test, hcols, domains, target, a, seed, pool_path):
    rng = np.random.default_rng(seed)
    cost = 6.0 * pool["N"] * pool["D"]
    n_init = get_law("additive").n_params(len(domains)) + 2
    cheap = pool.index[pool["N"] == pool["N"].min()]
    first = cheap if name in ("decision", "random-1m") else pool.index
    bought = list(rng.choice(first, size=n_init, replace=False))
    space = Space(tuple(domains), float(pool["N"].min()), float(pool["N"].max()),
                  float(pool["D"].min()), float(pool["D"].max()) * (1 + 1e-9))
    best = float(test[f"loss_{target}"].min())
    rows = []
    for r in range(a.rounds + 1):
        obs = pool.loc[bought]
        t0 = time.perf_counter()
        post = fit(runs_from_frame(obs.drop(columns="scale"), targets=[target]),
                   law="additive", method="laplace", seed=seed + r, num_samples=150,
                   num_chains=2, map_starts=a.map_starts)
        j = pick_among(post, test, hcols, target)
        true = float(test[f"loss_{target}"].iloc[j])
        rows.append({"strategy": name, "seed": seed, "round": r, "runs": len(bought),
                     "runs_60m": int((obs["N"] > pool["N"].min()).sum()),
                     "flops": float(cost.loc[bought].sum()), "pick_loss": true,
                     "regret": true - best, "fit_s": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
        if r == a.rounds:
            break
        left = pool.index.difference(bought)
        if name == "random":
            bought += list(rng.choice(left, size=a.q, replace=False))
        elif name == "random-1m":
            bought += list(rng.choice(left.intersection(cheap), size=a.q, replace=False))
        else:
            req = DesignRequest(post, obs, [], space, seed, a.q, step=len(bought),
                                target_N=TARGET_N, target_D=TARGET_D, law="additive",
                                options={"pool": pool_path})
            for p in propose("decision", req):
                h = np.array([p.h[d] for d in domains])
                hit = left[(np.abs(pool.loc[left, "N"] - p.N) <= 1e-6 * p.N).to_numpy()
                           & (np.abs(pool.loc[left, hcols].to_numpy(float) - h).max(1) <= 1e-6)]
                if len(hit):
                    bought.append(hit[0])
                    left = left.drop(hit[0])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="pile_cc")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--q", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--map-starts", type=int, default=16)
    ap.add_argument("--strategies", nargs="+", default=["decision", "random", "random-1m"])
    ap.add_argument("--data", default=str(REGMIX))
    ap.add_argument("--out", default="benchmarks/results/regmix_replay")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    df = load_regmix(a.data)
    hcols = [c for c in df.columns if c.startswith("h_")]
    domains = [c[2:] for c in hcols]
    keep = ["run_id", "scale", "N", "D", *hcols, f"loss_{a.target}"]
    pool = df[df["scale"] != "1B"][keep].reset_index(drop=True)
    test = df[df["scale"] == "1B"][keep].reset_index(drop=True)
    tmp = tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False)
    pool.drop(columns="scale").to_csv(tmp.name, index=False)

    # reference points: RegMix's own choice (all 512 training 1M runs) and the 64's median
    train = df[df["run_id"].str.contains("-1m-train-")][keep]
    ref = fit(runs_from_frame(train.drop(columns="scale"), targets=[a.target]),
              law="additive", method="map", seed=0)
    j = pick_among(ref, test, hcols, a.target)
    y = test[f"loss_{a.target}"]
    refs = {"regmix_512_1m": {"flops": float((6 * train["N"] * train["D"]).sum()),
                              "pick_loss": float(y.iloc[j]), "regret": float(y.iloc[j] - y.min())},
            "best_of_64": float(y.min()), "median_of_64_regret": float(y.median() - y.min())}
    print(json.dumps(refs), flush=True)

    rows = []
    for seed in a.seeds:
        for s in a.strategies:
            rows += run_strategy(s, pool, test, hcols, domains, a.target, a, seed, tmp.name)
            pd.DataFrame(rows).to_csv(out / "curves.csv", index=False)
    (out / "reference.json").write_text(json.dumps(refs, indent=1))
    cur = pd.DataFrame(rows)
    cur["picked_best"] = cur["regret"] <= 0
    summ = cur.groupby(["strategy", "round"]).agg(
        runs=("runs", "mean"), flops=("flops", "mean"), regret=("regret", "mean"),
        picked_best=("picked_best", "mean"), runs_60m=("runs_60m", "mean")).reset_index()
    summ.to_csv(out / "summary.csv", index=False)
    print(summ.to_string(index=False))


if __name__ == "__main__":
    main()
