"""Campaign configuration: typed, validated, resolved.

A campaign is described by one YAML file (DESIGN.md section 3). ``load_config(path)`` reads it,
fills defaults, checks every value and returns a frozen ``CampaignConfig``; any problem raises
``InputError`` with one line that names the offending key (``budget.flops must be > 0, got -1``).
Unknown keys are rejected (a typo must not silently become a default).

The *resolved* config (all defaults filled, paths absolute) is what a campaign stores in its
directory and ledger; ``config_to_dict`` / ``config_from_dict`` round-trip it exactly, and
``config_fingerprint`` hashes the part of it that defines the campaign's science (everything but
``executor``, which may change between resumes: a campaign can move to another cluster).

Example (every key; only ``domains``, ``targets``, ``target_budget``, ``space``, ``budget`` and
``trainer`` are required)::

    domains: [web, code, books]
    targets: {web: 1.0}              # target losses and their weights in the objective
    target_budget: {N: 7.0e9, D: 1.5e11}
    law: auto                        # or additive, joint: auto fits both and weighs them
                                     #   by how well each predicts the held-out largest scale
    space:
      N: [1.0e6, 5.0e7]              # [lo, hi] range (log-uniform), or a list of values,
      D: [1.0e7, 1.0e9]              # or {range: [lo, hi]} / {values: [...]} to be explicit
      min_weight: 0.0                # each h_i >= min_weight (0 allows faces and vertices)
    budget: {flops: 1.0e18, max_runs: 100}   # either may be null, not both
    batch_size: 4                    # runs kept in flight
    acquisition: decision            # or random, grid; or {name: decision, <options>}
    trainer: {path: "trainers.synthetic:SyntheticTrainer", args: {}}
    executor: {kind: ray, address: null, num_gpus_per_run: 0, num_cpus_per_run: 1,
               max_retries: 2, timeout_s: null}
    fit: {method: nuts, num_warmup: 500, num_samples: 500, num_chains: 2, min_runs: null,
          background: true, discrepancy_every: 3}
    max_failure_fraction: 0.5
    prior_runs: null                 # runs-table file counted as observations from the start
    domain_tokens: null              # {domain: unique tokens available}; caps the optimum:
    max_epochs: null                 #   h_i * target_budget.D <= max_epochs * domain_tokens[i]
    stop: {expected_excess_loss: null}
    seed: 0
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from planner.core.types import Target
from planner.infer.options import FitOptions
from planner.model.laws import AUTO, n_params

EXECUTOR_KINDS = ("ray", "inprocess")


NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


# --------------------------------------------------------------------------------------------
# typed config
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Axis:
    """One size axis (N or D) of the search space: a log-uniform range or a list of values."""

    lo: float
    hi: float
    values: tuple[float, ...] | None = None  # set: only these values are allowed

    def to_yaml(self) -> Any:
        if self.values is not None:
            return {"values": [float(v) for v in self.values]}
        return [float(self.lo), float(self.hi)]


@dataclass(frozen=True)
class SpaceConfig:
    N: Axis
    D: Axis
    min_weight: float = 0.0  # lower bound on every h_i; 0 allows runs on faces of the simplex


@dataclass(frozen=True)
class BudgetConfig:
    flops: float | None = None  # total 6*N*D of runs bought (completed + in flight)
    max_runs: int | None = None  # number of runs bought (completed + in flight)


@dataclass(frozen=True)
class TargetBudget:
    N: float
    D: float


@dataclass(frozen=True)
class AcquisitionConfig:
    """Which strategy proposes runs (planner.decide.registry) and its keyword options."""

    name: str = "decision"
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_yaml(self) -> Any:
        return self.name if not self.options else {"name": self.name, **dict(self.options)}


@dataclass(frozen=True)
class TrainerConfig:
    path: str
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExecutorConfig:
    kind: str = "ray"  # ray (default; embedded or a cluster) or inprocess (debugging)
    address: str | None = None  # Ray cluster to join; None: RAY_ADDRESS, else embedded ray.init()
    num_gpus_per_run: float = 0  # GPUs reserved per run (Ray resources)
    num_cpus_per_run: float = 1  # CPUs reserved per run
    max_retries: int = 2  # retries per run after a failure (exception, NaN, timeout, dead worker)
    timeout_s: float | None = None  # a run longer than this (from its start) is killed and retried
    threads: int = 0  # inprocess only: 0 runs trainers synchronously in the planner's thread
    runtime_env: Mapping[str, Any] | None = None  # passed to ray.init (e.g. working_dir, pip)


@dataclass(frozen=True)
class FitConfig:
    method: str = FitOptions.method  # one of FIT_METHODS (planner.infer.options)
    num_warmup: int = FitOptions.num_warmup
    num_samples: int = FitOptions.num_samples
    num_chains: int = FitOptions.num_chains
    # completed runs needed before the first fit; None: one more than the law's parameters
    # (checkpoints of a run are not independent, so runs, not rows, are counted)
    min_runs: int | None = None
    background: bool = True  # refit in a thread so new runs are dispatched without waiting
    # learn the model discrepancy (one extra fit, without the largest scale) on the first fit,
    # whenever the largest scale changes, at least every this many refits and on the final fit
    # of a command; refits in between reuse the last one learned. 0: campaigns never learn it
    discrepancy_every: int = 3


@dataclass(frozen=True)
class StopConfig:
    expected_excess_loss: float | None = None  # stop buying runs once below this tolerance


@dataclass(frozen=True)
class CampaignConfig:
    domains: tuple[str, ...]
    targets: Mapping[str, float]
    target_budget: TargetBudget
    space: SpaceConfig
    budget: BudgetConfig
    trainer: TrainerConfig
    # the law family: additive, joint, or auto (every mixture family, combined by stacking on
    # the held-out largest scale: planner.infer.auto); auto when the user does not know which holds
    law: str = AUTO
    batch_size: int = 4
    acquisition: AcquisitionConfig = field(default_factory=AcquisitionConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    max_failure_fraction: float = 0.5
    prior_runs: str | None = None
    stop: StopConfig = field(default_factory=StopConfig)
    seed: int = 0
    # data limits: unique tokens per domain (domains not listed are unlimited) and how many
    # passes over them the target run may make (default 1 when domain_tokens is set)
    domain_tokens: Mapping[str, float] | None = None
    max_epochs: float | None = None

    # derived helpers -------------------------------------------------------------------------
    @property
    def target_names(self) -> list[str]:
        return list(self.targets)

    def law_num_params(self) -> int:
        """Parameters of one target's law (DESIGN.md section 1); for ``auto`` the smallest
        family's, so the first fit comes as soon as one family can be fitted."""
        return n_params(self.law, len(self.domains))

    def fewest_runs(self) -> int:
        """The fewest runs with which a campaign can learn its mixture law: one more than the
        number of domains (k + 1). Checkpoints add observations in D only, so mixtures are
        learned from runs alone; the first k runs of a design are the pure domains when
        ``space.min_weight`` is 0, and there h_i^g_i is 0 or 1 whatever g_i, so the exponents
        that place the optimum are seen only from the (k + 1)-th run on. Whether the runs also
        give more observations than the law's parameters (which every fit needs) depends on
        the trainer's checkpoints."""
        return len(self.domains) + 1

    def min_runs_to_fit(self) -> int:
        return self.fit.min_runs if self.fit.min_runs is not None else self.law_num_params() + 1

    def weight_caps(self) -> dict[str, float] | None:
        """Upper bound on each domain's weight in the target run from the data limits:
        min(1, max_epochs * domain_tokens[d] / target_budget.D); None without ``domain_tokens``."""
        return weight_caps(self.domains, self.target_budget.D, self.domain_tokens, self.max_epochs)

    def decision_target(self) -> Target:
        """The target run, the objective's weights and the data caps (``core.types.Target``)."""
        return Target(self.target_budget.N, self.target_budget.D, dict(self.targets),
                      self.weight_upper())

    def weight_upper(self) -> tuple[float, ...] | None:
        """``weight_caps`` as a tuple in ``domains`` order (the ``hi`` of planner.decide.optimum)."""
        caps = self.weight_caps()
        return None if caps is None else tuple(caps[d] for d in self.domains)


def weight_caps(domains, D: float, domain_tokens: Mapping[str, float] | None,
                max_epochs: float | None = None) -> dict[str, float] | None:
    """Per-domain weight caps h_i <= max_epochs * tokens_i / D (at most 1) for a run of D
    tokens; domains without a token count are uncapped (1). None when ``domain_tokens`` is None."""
    if not domain_tokens:
        return None
    ep = 1.0 if max_epochs is None else float(max_epochs)
    return {d: (min(1.0, ep * float(domain_tokens[d]) / float(D)) if d in domain_tokens else 1.0)
            for d in domains}
