"""Convert the RegMix proxy-run files (../shared/data/regmix) into the runs-table schema.

RegMix (Liu et al. 2025) trained 512 + 256 "1M" runs and 256 "60M" runs on 1B tokens and 64
"1B" runs on 25B tokens, each on a mixture of 17 Pile subsets, and measured 13 per-domain
validation losses. We use the authors' nominal sizes as N (1e6, 6e7, 1e9): the real counts are
not published per run, and only ratios between scales matter to the fitted exponents.
Weights are rounded to 3 decimals in the files (row sums 0.996-1.003), so each row is
renormalised to sum to 1; that is the only change.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from planner.core.errors import InputError

SCALES = {  # file suffix -> (nominal N, tokens D)
    "1m": (1e6, 1e9),
    "60m": (6e7, 1e9),
    "1B": (1e9, 25e9),
}


FILES = [("train", "1m"), ("test", "1m"), ("test", "60m"), ("test", "1B")]


def _short_domain(col: str) -> str:
    return col.removeprefix("train_the_pile_")


def _short_target(col: str) -> str:
    return col.removeprefix("metric/the_pile_").removesuffix("_val_loss")


def load_regmix(directory) -> pd.DataFrame:
    """All RegMix runs as one runs table with an extra ``scale`` column ("1m", "60m", "1B")."""
    d = Path(directory)
    frames = []
    for split, scale in FILES:
        mix_p, loss_p = d / f"{split}_mixture_{scale}.csv", d / f"{split}_pile_loss_{scale}.csv"
        for p in (mix_p, loss_p):
            if not p.exists():
                raise InputError(f"RegMix file not found: {p}")
        mix = pd.read_csv(mix_p).set_index("index")
        loss = pd.read_csv(loss_p).set_index("index")
        mix = mix.div(mix.sum(axis=1), axis=0)
        mix.columns = [f"h_{_short_domain(c)}" for c in mix.columns]
        loss.columns = [f"loss_{_short_target(c)}" for c in loss.columns]
        df = mix.join(loss, how="inner")
        N, D = SCALES[scale]
        df.insert(0, "D", D)
        df.insert(0, "N", N)
        df.insert(0, "scale", scale)
        df.insert(0, "run_id", [f"regmix-{scale}-{split}-{i}" for i in df.index])
        frames.append(df.reset_index(drop=True))
    return pd.concat(frames, ignore_index=True)
