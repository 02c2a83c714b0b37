"""Campaign config: defaults, validation messages naming the key, round trip, fingerprint."""
from __future__ import annotations

from pathlib import Path

import pytest

from planner.config.parse import config_from_dict, load_config
from planner.config.store import (
    config_diff,
    config_fingerprint,
    config_to_dict,
    config_to_yaml,
)
from planner.core.errors import InputError

ROOT = Path(__file__).resolve().parents[2]


def base(**over):
    d = {"domains": ["a", "b", "c"], "targets": {"a": 1.0},
         "target_budget": {"N": 7.0e9, "D": 1.5e11},
         "space": {"N": [1.0e6, 5.0e7], "D": [1.0e7, 1.0e9]},
         "budget": {"flops": 1.0e18, "max_runs": 100},
         "trainer": {"path": "tests.support.trainers:TinySynthetic", "args": {"domains": ["a", "b", "c"]}}}
    d.update(over)
    return d


def test_defaults_and_round_trip():
    cfg = config_from_dict(base())
    assert cfg.law == "auto" and cfg.batch_size == 4 and cfg.acquisition.name == "decision"
    assert cfg.executor.kind == "ray" and cfg.executor.max_retries == 2
    assert cfg.fit.method == "nuts" and cfg.stop.expected_excess_loss is None
    assert cfg.min_runs_to_fit() == 5 + 2 * 3 + 1
    again = config_from_dict(config_to_dict(cfg))
    assert again == cfg
    assert config_fingerprint(again) == config_fingerprint(cfg)
    # the executor section may change between resumes without changing the fingerprint
    moved = config_from_dict({**config_to_dict(cfg), "executor": {"kind": "inprocess"}})
    assert config_fingerprint(moved) == config_fingerprint(cfg)
    other = config_from_dict(base(seed=3))
    assert config_fingerprint(other) != config_fingerprint(cfg)
    assert config_diff(config_to_dict(cfg), config_to_dict(other)) == ["seed"]


def test_forms_of_values():
    cfg = config_from_dict(base(space={"N": [1e6, 2e6, 4e6], "D": {"range": ["1e7", "1e9"]},
                                       "min_weight": 0.05},
                                targets=["a", "b"], acquisition={"name": "random", "faces": 0.1}))
    assert cfg.space.N.values == (1e6, 2e6, 4e6)
    assert cfg.space.D.values is None and cfg.space.D.lo == 1e7
    assert cfg.targets == {"a": 1.0, "b": 1.0}
    assert cfg.acquisition.name == "random" and cfg.acquisition.options == {"faces": 0.1}
    assert config_from_dict(config_to_dict(cfg)) == cfg


@pytest.mark.parametrize("over,needle", [
    ({"colour": 1}, "unknown key 'colour'"),
    ({"executor": {"kind": "ray", "gpus": 1}}, "unknown key executor.'gpus'"),
    ({"law": "cubic"}, "law must be one of additive, joint"),
    ({"budget": {"flops": -1}}, "budget.flops must be > 0"),
    ({"budget": {}}, "budget must set flops or max_runs"),
    ({"budget": {"flops": 10.0}}, "smaller than the cheapest run"),
    ({"space": {"N": [5e7, 1e6], "D": [1e7, 1e9]}}, "space.N range must have lo <= hi"),
    ({"space": {"N": [1e6, 5e7], "D": [1e7, 1e9], "min_weight": 0.4}}, "space.min_weight must be < 1/3"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"domains": ["a", "a"]}, "domains contains 'a' twice"),
    ({"trainer": {"path": "nocolon"}}, "trainer.path must look like 'package.module:attr'"),
    ({"executor": {"kind": "slurm"}}, "executor.kind must be one of ray, inprocess"),
    ({"max_failure_fraction": 2}, "max_failure_fraction must be in [0, 1]"),
    ({"stop": {"expected_excess_loss": 0}}, "stop.expected_excess_loss must be > 0"),
    ({"fit": {"method": "nuts", "num_samples": 0}}, "fit.num_samples must be >= 1"),
    ({"prior_runs": "/nonexistent/runs.csv"}, "prior_runs file not found"),
    # 3 domains: 4 runs at least; the message names the law's parameter count (auto: additive)
    ({"budget": {"max_runs": 3}}, "budget.max_runs (3) is too few runs to fit the auto law over "
                                  "3 domains: at least 4 (domains + 1), and together with their "
                                  "checkpoints more observations than the law's 11 parameters"),
])
def test_errors_name_the_key(over, needle):
    with pytest.raises(InputError) as e:
        config_from_dict(base(**over))
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_required():
    d = base()
    del d["trainer"]
    with pytest.raises(InputError, match="missing required key 'trainer'"):
        config_from_dict(d)


def test_load_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(config_to_yaml(config_from_dict(base(prior_runs=None))))
    assert load_config(p) == config_from_dict(base())
    (tmp_path / "prior.csv").write_text("N,D,h_a,h_b,h_c,loss_a\n1e6,1e8,0.2,0.3,0.5,3.0\n")
    p.write_text(config_to_yaml(config_from_dict(base())).replace("prior_runs: null", "prior_runs: prior.csv"))
    assert load_config(p).prior_runs == str((tmp_path / "prior.csv").resolve())
    p.write_text("domains: [a, b\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("name", ["synthetic_small.yaml", "ray_cluster.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(ROOT / "configs" / name)
    assert cfg.domains
