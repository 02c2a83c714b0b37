"""A stand-in for ``planner.infer.dispatch.fit`` for tests of what happens around a fit (campaign
bookkeeping, import, caps, the report): a real ``Posterior`` whose draws scatter around the
synthetic trainer's true parameters, shrinking as runs accumulate, with two "chains" in an
ArviZ InferenceData and sampler diagnostics computed by ArviZ. A real MAP fit costs minutes on
a loaded 2-core machine; this costs milliseconds and keeps every downstream path real
(recommend, decision acquisition, snapshots on disk, prediction, the report)."""
from __future__ import annotations

import numpy as np

from trainers.synthetic import SyntheticTrainer

CHAINS, PER_CHAIN = 2, 40


def true_params(domains) -> dict:
    return SyntheticTrainer(domains=list(domains)).true_params


def fake_fit(table, law: str = "additive", targets=None, method: str = "nuts", seed: int = 0,
             divergences: int = 2, **_ignored):
    import arviz as az

    from planner.model.laws import scale_inputs
    from planner.model.posterior import Posterior, TargetPosterior

    domains = list(table.domains)
    targets = list(targets or table.targets)
    truth = true_params(domains)
    k, S = len(domains), CHAINS * PER_CHAIN
    n_runs = table.frame["run_id"].nunique() if "run_id" in table.frame else len(table.frame)
    spread = 0.5 / np.sqrt(max(n_runs, 1))
    rng = np.random.default_rng(seed)
    logn, logd = (np.asarray(v) for v in scale_inputs(table.N, table.D))
    per = {}
    for t in targets:
        p = truth[t]
        z = lambda *shape: rng.standard_normal((S,) + shape)  # noqa: E731
        draws = {"E": float(p["E"]) * np.exp(0.01 * spread * z()),
                 "C": np.asarray(p["C"], float) * np.exp(spread * z(k)),
                 "g": np.asarray(p["g"], float) * np.exp(0.2 * spread * z(k)),
                 "A": float(p["A"]) * np.exp(0.1 * spread * z()),
                 "a": float(p["a"]) * np.exp(0.05 * spread * z()),
                 "B": float(p["B"]) * np.exp(0.1 * spread * z()),
                 "b": float(p["b"]) * np.exp(0.05 * spread * z()),
                 "sigma": 0.005 * np.exp(0.1 * z())}
        if law == "joint":  # the same additive truth, as the joint law that contains it
            from planner.model.laws import nested_joint_params
            sigma = draws.pop("sigma")
            draws = {kk: np.asarray(v) for kk, v in nested_joint_params(draws).items()}
            draws["sigma"] = sigma
        chains = {kk: v.reshape((CHAINS, PER_CHAIN) + v.shape[1:]) for kk, v in draws.items()}
        div = np.zeros((CHAINS, PER_CHAIN), bool)
        div.flat[:divergences] = True
        idata = az.from_dict(posterior=chains, sample_stats={"diverging": div},
                             coords={"domain": domains},
                             dims={kk: ["domain"] for kk, v in draws.items() if np.ndim(v) == 2})
        diag = {"method": "nuts", "r_hat_max": float(az.rhat(idata).to_array().max()),
                "ess_bulk_min": float(az.ess(idata).to_array().min()),
                "divergences": int(divergences), "divergence_rate": divergences / S,
                "n_obs": int(len(table.frame)), "n_runs": int(n_runs), "seconds": 0.01}
        per[t] = TargetPosterior(t, draws, diag, idata, obs_logn=logn, obs_logd=logd)
    return Posterior(law=law, domains=domains, targets=targets, per_target=per,
                     meta={"method": "nuts", "seed": seed})


# modules that call ``fit`` (imported by name): a test replaces it in each of them
FIT_CONSUMERS = ("planner.infer.dispatch", "planner.calibrate.heldout", "planner.calibrate.checks",
                 "planner.campaign.planner")


def patch_fit(monkeypatch, fn) -> None:
    """Make every fitting path of the planner call ``fn`` instead of the real ``fit``."""
    import importlib

    for mod in FIT_CONSUMERS:
        monkeypatch.setattr(importlib.import_module(mod), "fit", fn)


def stub_fitter(obs, cfg, seed):
    """A campaign fitter (``run_campaign(..., fitter=...)``) for tests of the loop's
    bookkeeping: a ``fake_fit`` posterior (so its snapshot is a real one on disk, without
    divergences) and a fixed recommendation of the uniform mixture with expected excess loss
    0.01."""
    from planner.model.runs import runs_from_frame

    table = runs_from_frame(obs, domains=list(cfg.domains), targets=list(cfg.targets))
    post = fake_fit(table, targets=list(cfg.targets), seed=seed, divergences=0)
    h = {d: 1.0 / len(cfg.domains) for d in cfg.domains}
    return post, {"mean": h, "lo": h, "hi": h, "loss": {"mean": 2.0, "lo": 1.9, "hi": 2.1},
                  "expected_excess_loss": 0.01}
