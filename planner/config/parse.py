"""Parsing and validating a campaign config (YAML or a dict) into ``CampaignConfig``: one
``InputError`` line naming the key for every problem."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

from planner.config.schema import (
    EXECUTOR_KINDS,
    NAME_RE,
    AcquisitionConfig,
    Axis,
    BudgetConfig,
    CampaignConfig,
    ExecutorConfig,
    FitConfig,
    SpaceConfig,
    StopConfig,
    TargetBudget,
    TrainerConfig,
    weight_caps,
)
from planner.core.errors import InputError
from planner.core.types import flops
from planner.decide.pool import load_pool
from planner.decide.strategies import initial_options
from planner.infer.options import FIT_METHODS
from planner.model.laws import LAW_CHOICES


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
    if not isinstance(v, str) or not NAME_RE.match(v):
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

    law = _choice(d.get("law", CampaignConfig.law), "law", LAW_CHOICES)

    sp = _mapping(d["space"], "space")
    _check_keys(sp, ("N", "D", "min_weight"), "space")
    for k in ("N", "D"):
        if k not in sp:
            raise InputError(f"config: missing required key 'space.{k}'")
    min_weight = _number(sp.get("min_weight", SpaceConfig.min_weight), "space.min_weight", nonneg=True)
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
    cheapest = flops(space.N.lo, space.D.lo)
    if budget.flops is not None and budget.flops < cheapest:
        raise _fail("budget.flops", f"({budget.flops:.3g}) is smaller than the cheapest run in "
                                    f"the space (6*N*D = {cheapest:.3g})")

    batch_size = _integer(d.get("batch_size", CampaignConfig.batch_size), "batch_size", minimum=1)

    acq = d.get("acquisition", AcquisitionConfig.name)
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
        kind=_choice(ex.get("kind", ExecutorConfig.kind), "executor.kind", EXECUTOR_KINDS),
        address=address or None,
        num_gpus_per_run=_number(ex.get("num_gpus_per_run", ExecutorConfig.num_gpus_per_run), "executor.num_gpus_per_run", nonneg=True),
        num_cpus_per_run=_number(ex.get("num_cpus_per_run", ExecutorConfig.num_cpus_per_run), "executor.num_cpus_per_run", nonneg=True),
        max_retries=_integer(ex.get("max_retries", ExecutorConfig.max_retries), "executor.max_retries", minimum=0),
        timeout_s=timeout,
        threads=_integer(ex.get("threads", ExecutorConfig.threads), "executor.threads", minimum=0),
        runtime_env=runtime_env)

    f = _mapping(d.get("fit"), "fit")
    _check_keys(f, tuple(FitConfig.__dataclass_fields__), "fit")
    background = f.get("background", FitConfig.background)
    if not isinstance(background, bool):
        raise _fail("fit.background", f"must be true or false, got {background!r}")
    fit = FitConfig(method=_choice(f.get("method", FitConfig.method), "fit.method", FIT_METHODS),
                    num_warmup=_integer(f.get("num_warmup", FitConfig.num_warmup), "fit.num_warmup", minimum=0),
                    num_samples=_integer(f.get("num_samples", FitConfig.num_samples), "fit.num_samples", minimum=1),
                    num_chains=_integer(f.get("num_chains", FitConfig.num_chains), "fit.num_chains", minimum=1),
                    min_runs=_integer(f.get("min_runs"), "fit.min_runs", minimum=1, allow_none=True),
                    background=background,
                    discrepancy_every=_integer(f.get("discrepancy_every", FitConfig.discrepancy_every),
                                               "fit.discrepancy_every", minimum=0))

    mff = _number(d.get("max_failure_fraction", CampaignConfig.max_failure_fraction), "max_failure_fraction", nonneg=True)
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

    seed = _integer(d.get("seed", CampaignConfig.seed), "seed", minimum=0)

    domain_tokens, max_epochs = _data_limits(d, domains, target_budget, min_weight)

    cfg = CampaignConfig(domains=domains, targets=targets, target_budget=target_budget,
                         space=space, budget=budget, trainer=trainer, law=law,
                         batch_size=batch_size, acquisition=acquisition, executor=executor,
                         fit=fit, max_failure_fraction=mff, prior_runs=prior, stop=stop, seed=seed,
                         domain_tokens=domain_tokens, max_epochs=max_epochs)
    need = cfg.fewest_runs()  # a stored config (check_files False) is read as it was accepted
    if check_files and budget.max_runs is not None and budget.max_runs < need and prior is None:
        raise _fail("budget.max_runs", f"({budget.max_runs}) is too few runs to fit the {law} law "
                                       f"over {len(domains)} domains: at least {need} (domains + "
                                       f"1), and together with their checkpoints more "
                                       f"observations than the law's {cfg.law_num_params()} "
                                       f"parameters")
    return cfg


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
