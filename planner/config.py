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
    law: additive                    # or joint
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
    fit: {method: nuts, num_warmup: 500, num_samples: 500, num_chains: 2, min_runs: null}
    max_failure_fraction: 0.5
    prior_runs: null                 # runs-table file counted as observations from the start
    domain_tokens: null              # {domain: unique tokens available}; caps the optimum:
    max_epochs: null                 #   h_i * target_budget.D <= max_epochs * domain_tokens[i]
    stop: {expected_excess_loss: null}
    seed: 0
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from planner.errors import InputError

LAWS = ("additive", "joint")
FIT_METHODS = ("nuts", "map", "laplace")
EXECUTOR_KINDS = ("ray", "inprocess")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


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
    """Which strategy proposes runs (planner.design registry) and its keyword options."""

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
    method: str = "nuts"  # nuts (full posterior), laplace (Gaussian at the mode), map (point)
    num_warmup: int = 500
    num_samples: int = 500
    num_chains: int = 2
    # completed runs needed before the first fit; None: one more than the law's parameters
    # (checkpoints of a run are not independent, so runs, not rows, are counted)
    min_runs: int | None = None
    background: bool = True  # refit in a thread so new runs are dispatched without waiting


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
    law: str = "additive"
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
        """Parameters of one target's law (DESIGN.md section 1)."""
        k = len(self.domains)
        from planner.laws import get_law
        return get_law(self.law).n_params(k)

    def min_runs_to_fit(self) -> int:
        return self.fit.min_runs if self.fit.min_runs is not None else self.law_num_params() + 1

    def weight_caps(self) -> dict[str, float] | None:
        """Upper bound on each domain's weight in the target run from the data limits:
        min(1, max_epochs * domain_tokens[d] / target_budget.D); None without ``domain_tokens``."""
        return weight_caps(self.domains, self.target_budget.D, self.domain_tokens, self.max_epochs)

    def weight_upper(self) -> tuple[float, ...] | None:
        """``weight_caps`` as a tuple in ``domains`` order (the ``hi`` of planner.optimum)."""
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


# --------------------------------------------------------------------------------------------
# validation helpers (each raises InputError naming the key)
# --------------------------------------------------------------------------------------------
def _fail(key: str, msg: str) -> InputError:
    return InputError(f"config: {key} {msg}")


def _mapping(v: Any, key: str) -> dict:
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise _fail(key, f"must be a mapping, got {type(v).__name__} {v!r}")
    for k in v:
        if not isinstance(k, str):
            raise _fail(key, f"keys must be strings, got {k!r}")
    return dict(v)


def _check_keys(d: Mapping, allowed: tuple[str, ...], key: str) -> None:
    unknown = [k for k in d if k not in allowed]
    if unknown:
        where = f"{key}." if key else ""
        raise InputError(f"config: unknown key {where}{unknown[0]!r} "
                         f"(allowed{' in ' + key if key else ''}: {', '.join(allowed)})")


def _number(v: Any, key: str, *, positive: bool = False, nonneg: bool = False,
            allow_none: bool = False) -> float | None:
    if v is None and allow_none:
        return None
    if isinstance(v, str):  # YAML reads 1e9 (no dot) as a string
        try:
            v = float(v)
        except ValueError:
            raise _fail(key, f"must be a number, got {v!r}") from None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _fail(key, f"must be a number, got {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise _fail(key, f"must be finite, got {v}")
    if positive and v <= 0:
        raise _fail(key, f"must be > 0, got {v:g}")
    if nonneg and v < 0:
        raise _fail(key, f"must be >= 0, got {v:g}")
    return v


def _integer(v: Any, key: str, *, minimum: int | None = None, allow_none: bool = False) -> int | None:
    if v is None and allow_none:
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise _fail(key, f"must be an integer, got {v!r}")
    if minimum is not None and v < minimum:
        raise _fail(key, f"must be >= {minimum}, got {v}")
    return v


def _choice(v: Any, key: str, choices: tuple[str, ...]) -> str:
    if v not in choices:
        raise _fail(key, f"must be one of {', '.join(choices)}, got {v!r}")
    return v


def _name(v: Any, key: str) -> str:
    if not isinstance(v, str) or not _NAME_RE.match(v):
        raise _fail(key, f"must be a name of letters, digits, '_', '-' or '.', got {v!r}")
    return v


def _axis(v: Any, key: str) -> Axis:
    """[lo, hi] range; a list of 1 or >= 3 values; a scalar; {range: [..]}; {values: [..]}."""
    if isinstance(v, Mapping):
        d = _mapping(v, key)
        _check_keys(d, ("range", "values"), key)
        if len(d) != 1:
            raise _fail(key, "must have exactly one of 'range' or 'values'")
        if "range" in d:
            r = d["range"]
            if not isinstance(r, (list, tuple)) or len(r) != 2:
                raise _fail(f"{key}.range", f"must be [lo, hi], got {r!r}")
            return _axis_range(r, f"{key}.range")
        vals = d["values"]
        if not isinstance(vals, (list, tuple)) or not vals:
            raise _fail(f"{key}.values", f"must be a non-empty list, got {vals!r}")
        return _axis_values(vals, f"{key}.values")
    if isinstance(v, (list, tuple)):
        if len(v) == 0:
            raise _fail(key, "must not be empty")
        if len(v) == 2:
            return _axis_range(v, key)
        return _axis_values(v, key)
    return _axis_values([v], key)


def _axis_range(r, key: str) -> Axis:
    lo = _number(r[0], f"{key}[0]", positive=True)
    hi = _number(r[1], f"{key}[1]", positive=True)
    if hi < lo:
        raise _fail(key, f"range must have lo <= hi, got [{lo:g}, {hi:g}]")
    if hi < 1:
        raise _fail(key, f"range must include a value >= 1, got [{lo:g}, {hi:g}]")
    return Axis(lo=lo, hi=hi, values=(lo,) if lo == hi else None)


def _axis_values(vals, key: str) -> Axis:
    xs = sorted({_number(x, f"{key}[{i}]", positive=True) for i, x in enumerate(vals)})
    if xs[-1] < 1:
        raise _fail(key, f"values must be >= 1, got {xs}")
    return Axis(lo=xs[0], hi=xs[-1], values=tuple(xs))


# --------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------
_TOP_KEYS = ("domains", "targets", "target_budget", "law", "space", "budget", "batch_size",
             "acquisition", "trainer", "executor", "fit", "max_failure_fraction", "prior_runs",
             "stop", "seed", "domain_tokens", "max_epochs")
_REQUIRED = ("domains", "targets", "target_budget", "space", "budget", "trainer")


def config_from_dict(raw: Mapping[str, Any], base_dir: str | Path | None = None,
                     check_files: bool = True) -> CampaignConfig:
    """Validate a config mapping (as read from YAML) and return the resolved, typed config.

    ``base_dir`` resolves a relative ``prior_runs`` path (the config file's directory);
    ``check_files=False`` skips checking that it exists (re-reading a stored config).
    """
    d = _mapping(raw, "(top level)")
    _check_keys(d, _TOP_KEYS, "")
    for k in _REQUIRED:
        if k not in d or d[k] is None:
            raise InputError(f"config: missing required key {k!r}")

    # domains
    doms = d["domains"]
    if not isinstance(doms, (list, tuple)) or len(doms) < 2:
        raise _fail("domains", f"must be a list of at least 2 domain names, got {doms!r}")
    domains = tuple(_name(x, f"domains[{i}]") for i, x in enumerate(doms))
    if len(set(domains)) != len(domains):
        dup = next(x for x in domains if domains.count(x) > 1)
        raise _fail("domains", f"contains {dup!r} twice")

    # targets: {name: weight} or [names] (equal weights)
    t = d["targets"]
    if isinstance(t, str):
        t = [t]
    if isinstance(t, (list, tuple)):
        if not t:
            raise _fail("targets", "must name at least one target")
        t = {x: 1.0 for x in t}
    t = _mapping(t, "targets")
    if not t:
        raise _fail("targets", "must name at least one target")
    targets = {}
    for name, w in t.items():
        _name(name, f"targets key {name!r}")
        targets[name] = _number(w, f"targets.{name}", positive=True)

    tb = _mapping(d["target_budget"], "target_budget")
    _check_keys(tb, ("N", "D"), "target_budget")
    for k in ("N", "D"):
        if k not in tb:
            raise InputError(f"config: missing required key 'target_budget.{k}'")
    target_budget = TargetBudget(N=_number(tb["N"], "target_budget.N", positive=True),
                                 D=_number(tb["D"], "target_budget.D", positive=True))

    law = _choice(d.get("law", "additive"), "law", LAWS)

    sp = _mapping(d["space"], "space")
    _check_keys(sp, ("N", "D", "min_weight"), "space")
    for k in ("N", "D"):
        if k not in sp:
            raise InputError(f"config: missing required key 'space.{k}'")
    min_weight = _number(sp.get("min_weight", 0.0), "space.min_weight", nonneg=True)
    if min_weight * len(domains) >= 1.0:
        raise _fail("space.min_weight", f"must be < 1/{len(domains)} (number of domains), "
                                        f"got {min_weight:g}")
    space = SpaceConfig(N=_axis(sp["N"], "space.N"), D=_axis(sp["D"], "space.D"),
                        min_weight=min_weight)

    b = _mapping(d["budget"], "budget")
    _check_keys(b, ("flops", "max_runs"), "budget")
    budget = BudgetConfig(flops=_number(b.get("flops"), "budget.flops", positive=True, allow_none=True),
                          max_runs=_integer(b.get("max_runs"), "budget.max_runs", minimum=1,
                                            allow_none=True))
    if budget.flops is None and budget.max_runs is None:
        raise _fail("budget", "must set flops or max_runs (or both)")
    cheapest = 6.0 * space.N.lo * space.D.lo
    if budget.flops is not None and budget.flops < cheapest:
        raise _fail("budget.flops", f"({budget.flops:.3g}) is smaller than the cheapest run in "
                                    f"the space (6*N*D = {cheapest:.3g})")

    batch_size = _integer(d.get("batch_size", 4), "batch_size", minimum=1)

    acq = d.get("acquisition", "decision")
    if isinstance(acq, str):
        acquisition = AcquisitionConfig(name=_name(acq, "acquisition"))
    else:
        a = _mapping(acq, "acquisition")
        if "name" not in a:
            raise InputError("config: missing required key 'acquisition.name'")
        name = _name(a.pop("name"), "acquisition.name")
        if a.get("pool") is not None:
            a["pool"] = _check_pool(a["pool"], domains, batch_size, base_dir, check_files)
        if "init_scale_fraction" in a:
            from planner.design import initial_options
            initial_options(name, a)  # one clear line when it is not in (0, 1]
        acquisition = AcquisitionConfig(name=name, options=a)

    tr = _mapping(d["trainer"], "trainer")
    _check_keys(tr, ("path", "args"), "trainer")
    if "path" not in tr:
        raise InputError("config: missing required key 'trainer.path'")
    tpath = tr["path"]
    if not isinstance(tpath, str) or tpath.count(":") != 1 or not all(tpath.split(":")):
        raise _fail("trainer.path", f"must look like 'package.module:attr', got {tpath!r}")
    targs = _mapping(tr.get("args"), "trainer.args")
    _check_jsonable(targs, "trainer.args")
    trainer = TrainerConfig(path=tpath, args=targs)

    ex = _mapping(d.get("executor"), "executor")
    _check_keys(ex, tuple(ExecutorConfig.__dataclass_fields__), "executor")
    address = ex.get("address")
    if address is not None and not isinstance(address, str):
        raise _fail("executor.address", f"must be a string like 'ray://host:10001' or "
                                        f"'host:6379', got {address!r}")
    runtime_env = ex.get("runtime_env")
    if runtime_env is not None:
        runtime_env = _mapping(runtime_env, "executor.runtime_env")
        _check_jsonable(runtime_env, "executor.runtime_env")
    timeout = _number(ex.get("timeout_s"), "executor.timeout_s", positive=True, allow_none=True)
    executor = ExecutorConfig(
        kind=_choice(ex.get("kind", "ray"), "executor.kind", EXECUTOR_KINDS),
        address=address or None,
        num_gpus_per_run=_number(ex.get("num_gpus_per_run", 0), "executor.num_gpus_per_run", nonneg=True),
        num_cpus_per_run=_number(ex.get("num_cpus_per_run", 1), "executor.num_cpus_per_run", nonneg=True),
        max_retries=_integer(ex.get("max_retries", 2), "executor.max_retries", minimum=0),
        timeout_s=timeout,
        threads=_integer(ex.get("threads", 0), "executor.threads", minimum=0),
        runtime_env=runtime_env)

    f = _mapping(d.get("fit"), "fit")
    _check_keys(f, tuple(FitConfig.__dataclass_fields__), "fit")
    background = f.get("background", True)
    if not isinstance(background, bool):
        raise _fail("fit.background", f"must be true or false, got {background!r}")
    fit = FitConfig(method=_choice(f.get("method", "nuts"), "fit.method", FIT_METHODS),
                    num_warmup=_integer(f.get("num_warmup", 500), "fit.num_warmup", minimum=0),
                    num_samples=_integer(f.get("num_samples", 500), "fit.num_samples", minimum=1),
                    num_chains=_integer(f.get("num_chains", 2), "fit.num_chains", minimum=1),
                    min_runs=_integer(f.get("min_runs"), "fit.min_runs", minimum=1, allow_none=True),
                    background=background)

    mff = _number(d.get("max_failure_fraction", 0.5), "max_failure_fraction", nonneg=True)
    if mff > 1:
        raise _fail("max_failure_fraction", f"must be in [0, 1], got {mff:g}")

    prior = d.get("prior_runs")
    if prior is not None:
        prior = str(_table_path(prior, "prior_runs", base_dir, check_files))

    s = _mapping(d.get("stop"), "stop")
    _check_keys(s, ("expected_excess_loss",), "stop")
    stop = StopConfig(expected_excess_loss=_number(s.get("expected_excess_loss"),
                                                   "stop.expected_excess_loss", positive=True,
                                                   allow_none=True))

    seed = _integer(d.get("seed", 0), "seed", minimum=0)

    domain_tokens, max_epochs = _data_limits(d, domains, target_budget, min_weight)

    return CampaignConfig(domains=domains, targets=targets, target_budget=target_budget,
                          space=space, budget=budget, trainer=trainer, law=law,
                          batch_size=batch_size, acquisition=acquisition, executor=executor,
                          fit=fit, max_failure_fraction=mff, prior_runs=prior, stop=stop, seed=seed,
                          domain_tokens=domain_tokens, max_epochs=max_epochs)


def _data_limits(d: Mapping, domains: tuple[str, ...], target_budget: TargetBudget,
                 min_weight: float) -> tuple[dict[str, float] | None, float | None]:
    """Validate ``domain_tokens`` / ``max_epochs``; the caps they imply must leave a mixture."""
    raw = d.get("domain_tokens")
    ep = _number(d.get("max_epochs"), "max_epochs", positive=True, allow_none=True)
    if raw is None:
        if ep is not None:
            raise _fail("max_epochs", "needs domain_tokens (the unique tokens of each domain)")
        return None, None
    dt = _mapping(raw, "domain_tokens")
    if not dt:
        return None, None
    tokens = {}
    for name, v in dt.items():
        if name not in domains:
            raise _fail("domain_tokens", f"names {name!r}, which is not one of the domains "
                                         f"({', '.join(domains)})")
        tokens[name] = _number(v, f"domain_tokens.{name}", positive=True)
    tokens = {x: tokens[x] for x in domains if x in tokens}  # domains order
    ep = 1.0 if ep is None else ep
    caps = weight_caps(domains, target_budget.D, tokens, ep)
    total = sum(caps.values())
    if total < 1.0 - 1e-9:
        raise _fail("domain_tokens", f"x max_epochs ({ep:g}) allows only {total:.3g} of "
                                     f"target_budget.D ({target_budget.D:.3g} tokens): no mixture "
                                     f"fits; add tokens, raise max_epochs or lower target_budget.D")
    low = [x for x in domains if caps[x] < min_weight]
    if low:
        raise _fail("domain_tokens", f"caps {low[0]!r} at weight {caps[low[0]]:.3g}, below "
                                     f"space.min_weight {min_weight:g}")
    return tokens, ep


def _table_path(value: Any, key: str, base_dir, check_files: bool) -> Path:
    """A runs-table path from the config: relative to the config file, must exist."""
    if not isinstance(value, (str, Path)) or not str(value):
        raise _fail(key, f"must be a path to a runs table, got {value!r}")
    p = Path(value).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    p = p.resolve()
    if check_files and not p.is_file():
        raise _fail(key, f"file not found: {p}")
    return p


def _check_pool(pool: Any, domains, batch_size: int, base_dir, check_files: bool) -> str:
    """acquisition.pool: a runs table whose designs are the only candidates (replay)."""
    p = _table_path(pool, "acquisition.pool", base_dir, check_files)
    if check_files:
        from planner.acquisition import load_pool

        n = len(load_pool(p, list(domains)))
        if batch_size > n:
            raise _fail("batch_size", f"({batch_size}) is larger than the candidate set "
                                      f"(acquisition.pool has {n} distinct designs)")
    return str(p)


def _check_jsonable(v: Any, key: str) -> None:
    try:
        json.dumps(v, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise _fail(key, f"must be plain data (numbers, strings, lists, mappings): {e}") from None


def load_config(path: str | Path) -> CampaignConfig:
    """Read and validate a YAML (or JSON) campaign config. Raises InputError on any problem."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(f"config file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise InputError(f"config file {p} is not valid YAML{where}: "
                         f"{getattr(e, 'problem', None) or e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"config file {p} cannot be read: {e}") from None
    if not isinstance(raw, Mapping):
        raise InputError(f"config file {p} must contain a mapping of keys, got {type(raw).__name__}")
    return config_from_dict(raw, base_dir=p.resolve().parent)


def coerce_config(config: "CampaignConfig | Mapping | str | Path") -> CampaignConfig:
    """Accept a CampaignConfig, a mapping, or a path to a YAML file."""
    if isinstance(config, CampaignConfig):
        return config
    if isinstance(config, Mapping):
        return config_from_dict(config)
    return load_config(config)


# --------------------------------------------------------------------------------------------
# serialisation
# --------------------------------------------------------------------------------------------
def config_to_dict(cfg: CampaignConfig) -> dict[str, Any]:
    """The resolved config as plain data (re-validates to an equal CampaignConfig)."""
    d = asdict(cfg)
    d["domains"] = list(cfg.domains)
    d["targets"] = dict(cfg.targets)
    d["space"] = {"N": cfg.space.N.to_yaml(), "D": cfg.space.D.to_yaml(),
                  "min_weight": cfg.space.min_weight}
    d["acquisition"] = cfg.acquisition.to_yaml()
    d["trainer"] = {"path": cfg.trainer.path, "args": dict(cfg.trainer.args)}
    ex = asdict(cfg.executor)
    ex["runtime_env"] = dict(cfg.executor.runtime_env) if cfg.executor.runtime_env else None
    d["executor"] = ex
    return json.loads(json.dumps(d))  # plain types only (tuples -> lists, mappingproxy -> dict)


def config_to_yaml(cfg: CampaignConfig) -> str:
    import yaml

    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


# keys that may change when a campaign resumes (how it runs, not what it computes)
OPERATIONAL_KEYS = ("executor",)


# keys added after campaigns existed: left out of the fingerprint while unset, so that a
# campaign started before they existed still resumes
_OPTIONAL_KEYS = ("domain_tokens", "max_epochs")


def config_fingerprint(cfg: CampaignConfig) -> str:
    """Hash of the resolved config without the operational keys (see OPERATIONAL_KEYS)."""
    d = {k: v for k, v in config_to_dict(cfg).items() if k not in OPERATIONAL_KEYS
         and not (k in _OPTIONAL_KEYS and v is None)}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def config_diff(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        key = f"{prefix}{k}"
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += config_diff(va, vb, key + ".")
        elif va != vb:
            out.append(key)
    return out
