"""mixture-planner: Bayesian active learning of pretraining data mixtures.

The public Python API (everything the ``planner`` CLI does)::

    import planner
    table = planner.load_runs("runs.csv")
    post = planner.fit(table, method="nuts")              # law auto (or additive, joint)
    rec = planner.recommend(post, N=7e9, D=1.5e11)       # the ``planner optimum`` JSON
    planner.run_campaign("configs/quickstart.yaml", "campaigns/quickstart")

Importing the package has no side effects. The names below load their modules on first use,
and that first use configures JAX (float64, host devices for parallel chains, the persistent
compilation cache: ``planner.core.jaxsetup``) before JAX starts, as the CLI does. Code that
imports the subpackages directly calls ``planner.configure_jax()`` first.
"""
from __future__ import annotations

import importlib
from typing import Any

from planner.core.jaxsetup import configure_jax

__version__ = "0.1.0"

_API = {
    "InputError": "planner.core.errors", "FitError": "planner.core.errors",
    "LedgerError": "planner.core.errors",
    "load_runs": "planner.model.runs", "runs_from_frame": "planner.model.runs",
    "RunsTable": "planner.model.runs", "load_regmix": "planner.model.regmix",
    "Posterior": "planner.model.posterior", "TargetPosterior": "planner.model.posterior",
    "LAWS": "planner.model.laws", "get_law": "planner.model.laws",
    "fit": "planner.infer.auto", "fit_auto": "planner.infer.auto", "FIT_METHODS": "planner.infer.options",
    "FitOptions": "planner.infer.options",
    "calibrate": "planner.calibrate.heldout",
    "fit_with_discrepancy": "planner.calibrate.heldout",
    "holdout_check": "planner.calibrate.checks",
    "recommend": "planner.decide.optimum", "optimum_draws": "planner.decide.optimum",
    "fit_runs": "planner.api", "load_posterior": "planner.api", "predict_file": "planner.api",
    "optimum_file": "planner.api", "check_file": "planner.api",
    "load_config": "planner.config", "config_from_dict": "planner.config",
    "CampaignConfig": "planner.config",
    "run_campaign": "planner.campaign.campaign", "campaign_status": "planner.campaign.campaign",
    "load_campaign": "planner.campaign.campaign", "suggest": "planner.campaign.campaign",
    "tell": "planner.campaign.campaign", "export_runs": "planner.campaign.campaign",
    "validate": "planner.campaign.validate", "trust": "planner.calibrate.trust",
    "build_report": "planner.report.build",
}
__all__ = sorted([*_API, "configure_jax"])


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'planner' has no attribute {name!r}")
    configure_jax()
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
