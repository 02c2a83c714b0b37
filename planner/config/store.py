"""A config as plain data: to a dict or YAML (the resolved copy in a campaign directory), its
fingerprint (what a resume must match) and the diff between two configs."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any, Mapping

from planner.config.schema import CampaignConfig, FitConfig


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


# policy keys that may also change when a campaign resumes (raising max_failure_fraction lets
# a campaign stopped for failures go on); they stay in the fingerprint, which a resume that
# changes them records anew
ADJUSTABLE_KEYS = ("max_failure_fraction",)


def resume_blockers(stored: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted keys that differ between a stored and a new config and may not change on resume
    (everything but OPERATIONAL_KEYS and ADJUSTABLE_KEYS)."""
    free = OPERATIONAL_KEYS + ADJUSTABLE_KEYS
    return [k for k in config_diff(stored, new) if k.split(".")[0] not in free]


# keys added after campaigns existed: left out of the fingerprint while unset, so that a
# campaign started before they existed still resumes
_OPTIONAL_KEYS = ("domain_tokens", "max_epochs")


# nested keys added after campaigns existed: left out of the fingerprint while at their default
_OPTIONAL_NESTED = {("fit", "discrepancy_every"): FitConfig.discrepancy_every}


def config_fingerprint(cfg: CampaignConfig) -> str:
    """Hash of the resolved config without the operational keys (see OPERATIONAL_KEYS)."""
    d = {k: v for k, v in config_to_dict(cfg).items() if k not in OPERATIONAL_KEYS
         and not (k in _OPTIONAL_KEYS and v is None)}
    for (sec, key), default in _OPTIONAL_NESTED.items():
        if isinstance(d.get(sec), dict) and d[sec].get(key) == default:
            d[sec] = {k: v for k, v in d[sec].items() if k != key}
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
