"""Simulated campaigns: decision acquisition vs random vs the paper's grid.

A ground truth (``--law``, k domains, random parameters from ``--seed``) answers runs with
0.5 % multiplicative noise. Truths: ``additive`` and ``joint`` (the two fitted families), and
two outside both families: ``drift`` (the joint law whose mixture exponents drift with model
size, g_i(N) = g_i + kappa_i log(N / 1e8), kappa_i ~ U(-0.03, 0.03) per e-fold, clipped to
[0.1, 1]) and ``interaction`` (the additive law plus a mixture-dependent N x D term,
(U . h) / (n^a d^b)^(1/2), U_i ~ U(0.1, 0.6)). ``--fit-law`` is the law the planner fits
(default: the truth's own law; ``joint`` for the truths outside both families); with
``--discrepancy`` (default) every refit also learns the model discrepancy by holding out the
largest scale (``calibrate.calibrate``, one more fit of the same method), so the posterior, its
h* bounds, its expected excess loss and the acquisition carry it.

Each strategy starts from its initial design (the same number of runs: the paper's grid from its
cheapest size; random from a Sobol design over the whole size range; decision from a Sobol
design over the cheapest tenth of each log size axis, as in the planner), then buys batches of
``--q`` runs; after each batch the law is refitted and the Bayes-choice mixture at the target
budget is scored by its TRUE excess loss over the true optimum, relative to the optimal loss.
Reports, per strategy, that curve against compute, the compute after which the true excess
stays below 0.1 % of the optimal loss, and honesty over all refits: the share where the true
excess exceeds 3x the posterior's own expected excess loss, and the share where the true h*
lies outside the posterior's 90 % bounds (any domain, with 1e-3 slack for the optimiser).

    .venv/bin/python benchmarks/acquisition_sim.py --k 3 --law joint --fit-law additive \
        --seeds 0 1 --rounds 4 --method laplace --out benchmarks/results/acq_k3_joint_additive
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from planner.core.jaxsetup import configure_jax

configure_jax()  # float64 and the compilation cache, before JAX starts
from planner.calibrate.heldout import calibrate
from planner.core.errors import FitError
from planner.decide.optimum import mirror_descent, recommend
from planner.decide.registry import propose
from planner.decide.space import Space
from planner.decide.strategies import (
    INIT_SCALE_FRACTION,
    DesignRequest,
    initial_options,
)
from planner.infer.dispatch import fit
from planner.model.laws import get_law, scale_inputs
from planner.model.runs import runs_from_frame

TARGET_N, TARGET_D = 7e9, 1.5e11
NOISE = 0.005


TRUTHS = ("additive", "joint", "drift", "interaction")


def random_truth(law: str, k: int, seed: int) -> dict:
    rng = np.random.default_rng(1000 + seed)
    p = {"E": 1.7, "C": rng.uniform(1.0, 5.0, k), "g": rng.uniform(0.25, 0.75, k),
         "A": 0.45, "a": 0.32, "B": 0.55, "b": 0.28}
    if law in ("joint", "drift"):
        p = {"E": 1.7, "C": p["C"], "g": p["g"], "CA": rng.uniform(0.2, 0.8, k), "gA": 1.1,
             "a": 0.32, "CB": rng.uniform(0.3, 0.8, k), "gB": 0.9, "b": 0.28}
    # drawn after the in-family parameters, so a drift truth shares its joint truth's numbers
    if law == "drift":
        p["kappa"] = rng.uniform(-0.03, 0.03, k)
    if law == "interaction":
        p["U"] = rng.uniform(0.1, 0.6, k)
    return {kk: jnp.asarray(v, dtype=jnp.float64) for kk, v in p.items()}


def truth_point(law: str):
    """point(params, logn, logd, h) of a ground truth (the fitted laws, or one outside both)."""
    if law == "drift":
        joint = get_law("joint").point

        def drift(p, logn, logd, h):
            g = jnp.clip(p["g"] + p["kappa"] * logn, 0.1, 1.0)
            return joint({kk: v for kk, v in p.items() if kk != "kappa"} | {"g": g},
                         logn, logd, h)
        return drift
    if law == "interaction":
        additive = get_law("additive").point

        def interaction(p, logn, logd, h):
            base = additive({kk: v for kk, v in p.items() if kk != "U"}, logn, logd, h)
            return base + jnp.dot(p["U"], h) * jnp.exp(-0.5 * (p["a"] * logn + p["b"] * logd))
        return interaction
    return get_law(law).point


def true_loss(law, truth, N, D, H):
    logn, logd = scale_inputs(np.asarray(N, float), np.asarray(D, float))
    point = jax.vmap(truth_point(law), in_axes=(None, 0, 0, 0))
    return np.asarray(point(truth, logn, logd, jnp.asarray(H)))


SLACK = 1e-3   # h* bounds: the optimiser's precision (mirror descent, face snapping at 1e-4)


def run_campaign(strategy, law, truth, k, seed, rounds, q, n_init, fit_kw, init_options_=None,
                 fit_law=None, discrepancy=True):
    fit_law = fit_law or law
    domains = [f"d{i}" for i in range(k)]
    space = Space(tuple(domains), 1e6, 1e8, 1e8, 3e9)
    rng = np.random.default_rng(seed)
    logn_t, logd_t = scale_inputs(TARGET_N, TARGET_D)
    point = truth_point(law)
    h_opt = np.asarray(mirror_descent(lambda h: point(truth, logn_t, logd_t, h))(jnp.full(k, 1 / k)))
    L_opt = float(point(truth, logn_t, logd_t, jnp.asarray(h_opt)))
    rows, observed, post, step, flops = [], [], None, 0, 0.0
    bought: list = []

    def buy(props):
        nonlocal flops
        for p in props:
            H = np.array([[p.h[d] for d in domains]])
            y = true_loss(law, truth, [p.N], [p.D], H)[0] * np.exp(NOISE * rng.standard_normal())
            observed.append({"N": p.N, "D": p.D, **{f"h_{d}": p.h[d] for d in domains},
                             "loss_t": y, "run_id": f"r{len(observed)}"})
            flops += p.flops
        bought[:] = list(props)

    # random-cheap (an ablation): random runs from decision's cheap corner of each log size axis
    # all campaign long, i.e. decision's initial design without the acquisition
    cheap = {"scale_fraction": INIT_SCALE_FRACTION}
    init_strategy = "grid" if strategy == "grid" else "random"
    init_opts = cheap if strategy == "random-cheap" else initial_options(strategy, init_options_)
    req = DesignRequest(None, None, [], space, seed, n_init, step=0, target_N=TARGET_N,
                        target_D=TARGET_D, law=fit_law, options=init_opts)
    buy(propose(init_strategy, req))
    step = n_init
    fkw = {kk: v for kk, v in fit_kw.items() if kk != "method"}
    for r in range(rounds + 1):
        df = pd.DataFrame(observed)
        t0 = time.perf_counter()
        try:  # fit and recommend fail together, as in the planner's fitter
            table = runs_from_frame(df)
            new = fit(table, law=fit_law, seed=seed + r, method=fit_kw["method"], **fkw)
            if discrepancy:
                new = calibrate(new, table, method=fit_kw["method"], seed=seed + r, **fkw)
            rec_new = recommend(new, TARGET_N, TARGET_D)
            post, rec, fit_failed = new, rec_new, False
        except FitError as e:  # as the planner does: keep going with the last good fit
            if post is None:
                raise
            print(f"fit failed ({e}); keeping the previous fit", flush=True)
            fit_failed = True
        h_rec = np.array([rec["recommended"][d] for d in domains])
        L_rec = float(point(truth, logn_t, logd_t, jnp.asarray(h_rec)))
        lo = np.array([rec["lo"][d] for d in domains])
        hi = np.array([rec["hi"][d] for d in domains])
        out = (h_opt < lo - SLACK) | (h_opt > hi + SLACK)
        disc = (post["t"].discrepancy or {}) if discrepancy else {}
        fld = disc.get("mixture_field") or {}
        ratios = [p.info.get("field_ratio") for p in bought if p.info.get("field_ratio")]
        rows.append({"strategy": strategy, "seed": seed, "round": r, "runs": len(observed),
                     "flops": flops, "excess_rel": (L_rec - L_opt) / L_opt,
                     "eel_rel": rec["expected_excess_loss"] / L_opt,
                     "hstar_outside": bool(out.any()), "hstar_outside_frac": float(out.mean()),
                     "hstar_width_mean": float(np.mean(hi - lo)),
                     "disc_s1": disc.get("s1"), "field_ell": fld.get("length_scale"),
                     "field_s1": fld.get("s1"), "field_share": fld.get("share"),
                     "batch_flops": float(sum(p.flops for p in bought)),
                     "batch_max_N": float(max(p.N for p in bought)),
                     "batch_min_field_ratio": min(ratios) if ratios else None,
                     "fit_s": time.perf_counter() - t0, "fit_failed": fit_failed})
        print(json.dumps(rows[-1]), flush=True)
        if r == rounds:
            break
        req = DesignRequest(post, df, [], space, seed, q, step=step, target_N=TARGET_N,
                            target_D=TARGET_D, law=fit_law,
                            options=cheap if strategy == "random-cheap" else {})
        t1 = time.perf_counter()
        buy(propose("random" if strategy == "random-cheap" else strategy, req))
        rows[-1]["propose_s"] = time.perf_counter() - t1
        step += q
    return rows


def compute_to_reach(df: pd.DataFrame, tol: float) -> float:
    """First compute after which the true excess stays below ``tol`` (inf if never)."""
    df = df.sort_values("flops")
    ok = (df["excess_rel"] <= tol).to_numpy()
    for i in range(len(ok)):
        if ok[i:].all():
            return float(df["flops"].iloc[i])
    return float("inf")


def honesty(df: pd.DataFrame) -> dict:
    """Over every refit: the share where the true excess exceeds 3x (10x) the posterior's own
    expected excess loss, where the true h* lies outside its 90 % bounds, and where the
    calibration attached a mixture field."""
    return {"refits": len(df),
            "excess_over_3x_eel": float((df["excess_rel"] > 3 * df["eel_rel"]).mean()),
            "excess_over_10x_eel": float((df["excess_rel"] > 10 * df["eel_rel"]).mean()),
            "hstar_outside_90": float(df["hstar_outside"].mean()),
            "with_field": float(df["field_ell"].notna().mean()) if "field_ell" in df else 0.0}


def summarise(df: pd.DataFrame, tol: float = 1e-3) -> pd.DataFrame:
    out = []
    for s, g in df.groupby("strategy"):
        need = [compute_to_reach(gg, tol) for _, gg in g.groupby("seed")]
        final = g.sort_values("round").groupby("seed").tail(1)
        out.append({"strategy": s, "median_flops_to_0.1pct": float(np.median(need)),
                    "reached": f"{int(np.isfinite(need).sum())}/{len(need)}",
                    "final_excess_rel_mean": float(final["excess_rel"].mean()),
                    "final_flops_mean": float(final["flops"].mean()), **honesty(g)})
    return pd.DataFrame(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--law", default="additive", choices=TRUTHS, help="the ground truth")
    ap.add_argument("--fit-law", default=None, choices=["additive", "joint"],
                    help="the law the planner fits (default: the truth's; joint outside both)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--q", type=int, default=4)
    ap.add_argument("--strategies", nargs="+", default=["decision", "random", "grid"],
                    help="also: random-cheap (random runs in the cheap corner only; ablation)")
    ap.add_argument("--method", default="nuts", help="refit method: nuts or laplace")
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--samples", type=int, default=150)
    ap.add_argument("--no-discrepancy", action="store_true",
                    help="refits without the model discrepancy (the law's uncertainty only)")
    ap.add_argument("--out", default="benchmarks/results/acq")
    ap.add_argument("--init-scale-fraction", type=float, default=None,
                    help="decision's acquisition.init_scale_fraction (default: the planner's)")
    a = ap.parse_args()
    fit_law = a.fit_law or (a.law if a.law in ("additive", "joint") else "joint")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    fit_kw = {"method": a.method, "num_warmup": a.warmup, "num_samples": a.samples,
              "num_chains": 2}
    n_init = get_law(fit_law).n_params(a.k) + 2  # more runs than parameters before the first fit
    rows = []
    for seed in a.seeds:
        truth = random_truth(a.law, a.k, seed)
        for s in a.strategies:
            init = ({"init_scale_fraction": a.init_scale_fraction}
                    if a.init_scale_fraction and s == "decision" else None)
            rows += run_campaign(s, a.law, truth, a.k, seed, a.rounds, a.q, n_init, fit_kw, init,
                                 fit_law=fit_law, discrepancy=not a.no_discrepancy)
            pd.DataFrame(rows).to_csv(out / "curves.csv", index=False)
    df = pd.DataFrame(rows)
    sm = summarise(df)
    sm.to_csv(out / "summary.csv", index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(sm.to_string(index=False))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        for (s, seed), g in df.groupby(["strategy", "seed"]):
            ax.plot(g["flops"], np.maximum(g["excess_rel"], 1e-6), marker="o", ms=3,
                    label=f"{s} (seed {seed})")
        ax.axhline(1e-3, color="k", ls="--", lw=0.8)
        ax.set(xscale="log", yscale="log", xlabel="compute spent (FLOPs)",
               ylabel="true excess loss / optimal loss",
               title=f"k={a.k}, truth {a.law}, fitted {fit_law}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "curves.png", dpi=120)
    except Exception as e:  # noqa: BLE001  (plots are a convenience)
        print("plot failed:", e)


if __name__ == "__main__":
    main()
