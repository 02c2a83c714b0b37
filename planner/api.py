"""The documented Python functions behind the CLI (usable from notebooks).

    post = fit_runs("runs.csv")                    # law auto -> Posterior (optionally saved)
    pred = predict_file(post_dir, "design.csv", "pred.csv")
    rec  = optimum_file(post_dir, N=7e9, D=1.5e11, out="opt.json")
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from planner.calibrate.checks import holdout_check
from planner.calibrate.diagnose import fit_warnings
from planner.calibrate.heldout import fit_with_discrepancy
from planner.core.errors import InputError
from planner.core.io import read_table, write_json_atomic
from planner.decide import optimum
from planner.infer.auto import fit_law, law_summary
from planner.model.laws import AUTO, LAW_CHOICES
from planner.model.posterior import Posterior
from planner.model.runs import load_runs


def fit_runs(runs, law: str = AUTO, targets=None, method: str = "nuts", out=None,
             seed: int = 0, discrepancy: bool = False, **fit_kwargs) -> Posterior:
    """Load a runs table (path), fit ``law`` per target, save to ``out`` when given.
    law: additive, joint, or auto (every family, combined by stacking on the held-out largest
    scale: ``planner.infer.auto``; its weights are in ``post.meta["law_weights"]``).
    discrepancy: also learn the model discrepancy by holding out the largest scale (one more
    fit, or one more combination for auto; ``calibrate.fit_with_discrepancy``)."""
    if law not in LAW_CHOICES:  # before reading the table: one line, exit 2
        raise InputError(f"unknown law {law!r}; choose one of {', '.join(LAW_CHOICES)}")
    table = load_runs(runs, targets=targets)
    how = fit_with_discrepancy if discrepancy else fit_law
    post = how(table, law=law, targets=targets, method=method, seed=seed, **fit_kwargs)
    if out is not None:
        post.save(out)
    return post


def load_posterior(path) -> Posterior:
    p = Path(path)
    if not p.exists():
        raise InputError(f"posterior directory not found: {p}")
    return Posterior.load(p)


def predict_file(posterior, design, out, seed: int = 0) -> pd.DataFrame:
    post = posterior if isinstance(posterior, Posterior) else load_posterior(posterior)
    df = read_table(design, "design table")
    pred = post.predict(df, seed=seed)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    pred.to_csv(out, index=False)
    return pred


def optimum_file(posterior, N: float, D: float, target_weights=None, out=None,
                 seed: int = 0) -> dict:
    """``planner optimum``: the optimum format plus ``warnings`` (``calibrate.diagnose.
    fit_warnings`` of the posterior, the list a campaign's recommendation.json carries)."""
    post = posterior if isinstance(posterior, Posterior) else load_posterior(posterior)
    rec = optimum.recommend(post, N, D, target_weights=target_weights, seed=seed)
    rec["warnings"] = fit_warnings(post)  # as in a campaign's recommendation.json
    rec.update(law_summary(post))  # law auto: the families' weights
    if out is not None:
        write_json_atomic(out, rec)
    return rec


def check_file(runs, law: str = AUTO, targets=None, method: str = "nuts", seed: int = 0,
               **fit_kwargs) -> dict:
    """Calibration check (fit all but the largest scale, predict it); see ``planner.calibrate``."""

    if law not in LAW_CHOICES:
        raise InputError(f"unknown law {law!r}; choose one of {', '.join(LAW_CHOICES)}")
    tl = [t.strip() for t in targets.split(",")] if isinstance(targets, str) else targets
    table = load_runs(runs, targets=tl)
    return holdout_check(table, law=law, targets=tl, method=method, seed=seed, **fit_kwargs)
