"""Posterior draws as data: save/load (ArviZ NetCDF + meta.json) and prediction with intervals.

A ``Posterior`` holds, per target, S draws of the law's natural-scale parameters plus the noise
scale (and the run-effect scale and a model-discrepancy term when fitted). Predictive intervals
combine parameter uncertainty, the model discrepancy at the design's distance from the observed
runs (``discrepancy.py``), and Student-t observation noise.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from planner.core.errors import InputError
from planner.core.io import atomic_target, write_text_atomic
from planner.model.discrepancy import log_sd
from planner.model.laws import get_law, scale_inputs
from planner.model.numpyro_model import STUDENT_NU
from planner.model.runs import design_from_frame

FORMAT = "mixture-planner-posterior/1"


@dataclass
class TargetPosterior:
    target: str
    draws: dict[str, np.ndarray]          # name -> (S, ...) natural scale; includes "sigma"
    diagnostics: dict
    idata: object | None = None           # arviz.InferenceData when sampled
    obs_logn: np.ndarray | None = None    # observed designs (for the discrepancy distance)
    obs_logd: np.ndarray | None = None
    discrepancy: dict | None = None       # see planner.model.discrepancy

    @property
    def n_draws(self) -> int:
        return int(np.shape(self.draws["sigma"])[0])

    def law_params(self, law_name: str) -> dict:
        law = get_law(law_name)
        return {p.name: jnp.asarray(self.draws[p.name]) for p in law.params}


@dataclass
class Posterior:
    law: str
    domains: list[str]
    targets: list[str]
    per_target: dict[str, TargetPosterior]
    meta: dict = field(default_factory=dict)

    def __getitem__(self, target: str) -> TargetPosterior:
        if target not in self.per_target:
            raise InputError(f"unknown target {target!r}; the posterior has {', '.join(self.targets)}")
        return self.per_target[target]

    # ------------------------------------------------------------------ prediction
    def loss_draws(self, target: str, N, D, H) -> np.ndarray:
        """Law value per draw and design, (S, m), without noise or discrepancy."""
        law = get_law(self.law)
        logn, logd = scale_inputs(np.asarray(N, float), np.asarray(D, float))
        return np.asarray(law.predict_draws(self[target].law_params(self.law), logn, logd,
                                            jnp.asarray(np.asarray(H, float))))

    def predictive_draws(self, target: str, N, D, H, seed: int = 0,
                         noise: bool = True, min_samples: int = 400) -> np.ndarray:
        """Draws of an observed loss at each design, (S', m): law x exp(discrepancy + noise).
        With few posterior draws (a MAP fit has one) each draw is repeated so that at least
        ``min_samples`` noise samples make up the interval."""

        tp = self[target]
        mu = np.log(self.loss_draws(target, N, D, H))
        S, m = mu.shape
        logn, logd = (np.asarray(x) for x in scale_inputs(np.asarray(N, float), np.asarray(D, float)))
        sd = np.broadcast_to(np.asarray(log_sd(tp, logn, logd), float), (S, m))
        sigma = np.asarray(tp.draws["sigma"], float)[:S]
        reps = max(1, int(np.ceil(min_samples / S)))
        if reps > 1:
            mu, sd, sigma = (np.repeat(x, reps, axis=0) for x in (mu, sd, sigma))
        k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
        mu = mu + np.asarray(jax.random.normal(k1, mu.shape)) * sd
        if noise:
            t = np.asarray(jax.random.t(k2, STUDENT_NU, mu.shape))
            mu = mu + t * sigma[:, None]
        with np.errstate(over="ignore"):  # overflow is +inf: recommend() handles it
            return np.exp(mu)

    def predict(self, design: pd.DataFrame, targets: list[str] | None = None,
                interval: float = 0.9, seed: int = 0) -> pd.DataFrame:
        """Add pred_<t> (posterior mean of the law), pred_<t>_lo/_hi (``interval`` predictive
        interval: parameters + discrepancy + noise) to a design table (N, D, h_<domain>)."""

        N, D, H = design_from_frame(design, self.domains)
        out = design.copy()
        q = (1 - interval) / 2
        for i, t in enumerate(targets or self.targets):
            out[f"pred_{t}"] = self.loss_draws(t, N, D, H).mean(axis=0)
            pd_ = self.predictive_draws(t, N, D, H, seed=seed + i)
            out[f"pred_{t}_lo"] = np.quantile(pd_, q, axis=0)
            out[f"pred_{t}_hi"] = np.quantile(pd_, 1 - q, axis=0)
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, directory) -> Path:
        import arviz as az

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "law": self.law, "domains": self.domains,
                "targets": self.targets, "meta": self.meta, "per_target": {}}
        for i, t in enumerate(self.targets):
            tp = self.per_target[t]
            fname = f"posterior_{i}.nc"
            idata = tp.idata
            if idata is None:
                post = {kk: np.asarray(v)[None] for kk, v in tp.draws.items()}
                dims = {kk: ["domain"] for kk, v in tp.draws.items() if np.ndim(v) == 2}
                idata = az.from_dict(posterior=post, coords={"domain": self.domains}, dims=dims)
            with atomic_target(d / fname) as tmp:
                idata.to_netcdf(str(tmp))
            meta["per_target"][t] = {
                "file": fname, "diagnostics": _jsonable(tp.diagnostics),
                "obs_logn": None if tp.obs_logn is None else np.asarray(tp.obs_logn).tolist(),
                "obs_logd": None if tp.obs_logd is None else np.asarray(tp.obs_logd).tolist(),
                "discrepancy": _jsonable(tp.discrepancy)}
        write_text_atomic(d / "meta.json", json.dumps(meta, indent=1))
        return d

    @classmethod
    def load(cls, directory) -> "Posterior":
        import arviz as az

        d = Path(directory)
        mp = d / "meta.json"
        if not mp.exists():
            raise InputError(f"not a posterior directory (no meta.json): {d}")
        try:
            meta = json.loads(mp.read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"corrupt posterior metadata {mp}: {e}") from None
        if meta.get("format") != FORMAT:
            raise InputError(f"{mp} is not a mixture-planner posterior (format {meta.get('format')!r})")
        try:
            law, domains, targets = get_law(meta["law"]), meta["domains"], meta["targets"]
            infos = {t: meta["per_target"][t] for t in targets}
        except (KeyError, TypeError) as e:
            raise InputError(f"corrupt posterior metadata {mp}: missing {e}") from None
        per = {}
        for t, info in infos.items():
            f = d / str(info.get("file"))
            if not f.exists():
                raise InputError(f"posterior file missing: {f}")
            try:
                idata = az.from_netcdf(str(f))
                draws = {}
                for name, da in idata.posterior.data_vars.items():
                    v = np.asarray(da.values)
                    draws[name] = v.reshape((-1,) + v.shape[2:])
            except Exception as e:  # noqa: BLE001 - a truncated or foreign file is bad input
                first = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise InputError(f"corrupt posterior file {f}: {first}") from None
            need = [p.name for p in law.params] + ["sigma"]
            bad = [n for n in need if n not in draws or not np.all(np.isfinite(draws[n]))
                   or len(draws[n]) != len(draws["sigma"] if "sigma" in draws else draws[n])]
            if bad:
                raise InputError(f"corrupt posterior file {f}: draws of {', '.join(bad)} are "
                                 "missing, non-finite or of unequal length")
            per[t] = TargetPosterior(
                t, draws, info.get("diagnostics", {}), idata,
                None if info.get("obs_logn") is None else np.asarray(info["obs_logn"]),
                None if info.get("obs_logd") is None else np.asarray(info["obs_logd"]),
                info.get("discrepancy"))
        return cls(meta["law"], domains, targets, per, meta.get("meta", {}))


def _jsonable(x):
    if x is None:
        return None
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x
