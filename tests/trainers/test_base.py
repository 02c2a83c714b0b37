"""The trainer contract: loading by dotted path, clear errors, and the package boundary."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from trainers import RunResult, RunSpec, Trainer, TrainerLoadError, load_trainer


class MyTrainer:
    """A user trainer defined in a test module: loss = scale * (1 + weight of domain 'a')."""

    def __init__(self, scale: float, targets: tuple[str, ...] = ("a",)):
        if scale <= 0:
            raise ValueError("scale must be positive")
        self.scale, self.targets = scale, targets

    def __call__(self, spec: RunSpec) -> RunResult:
        loss = self.scale * (1.0 + spec.h.get("a", 0.0))
        return RunResult(spec.run_id, {t: loss for t in self.targets},
                         checkpoints=[(spec.D // 2, {t: loss + 0.5 for t in self.targets})],
                         metadata={"N": spec.N + 1})


def make_trainer(offset: float):
    """A factory (not a class) is a valid trainer path too."""
    return lambda spec: RunResult(spec.run_id, {"a": offset + spec.seed})


NOT_CALLABLE = 42


def returns_non_callable():
    return 3


SPEC = RunSpec(run_id="r1", N=1000, D=5000, h={"a": 0.25, "b": 0.75}, seed=3)


def test_load_class_from_test_module_by_dotted_path():
    trainer = load_trainer("tests.trainers.test_base:MyTrainer", {"scale": 2.0})
    assert isinstance(trainer, Trainer)
    result = trainer(SPEC)
    assert result.losses == {"a": pytest.approx(2.5, abs=1e-12)}  # 2 * (1 + 0.25), exact in binary
    assert result.checkpoints == [(2500, {"a": 3.0})]
    # the result survives the JSON round trip the executor uses
    again = RunResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result


def test_load_factory_and_spec_round_trip():
    trainer = load_trainer("tests.trainers.test_base:make_trainer", {"offset": 1.0})
    assert trainer(SPEC).losses == {"a": 4.0}
    assert RunSpec.from_dict(json.loads(json.dumps(SPEC.to_dict()))) == SPEC


@pytest.mark.parametrize("path, args, fragment", [
    ("tests.trainers.test_base.MyTrainer", {"scale": 1.0}, "must look like"),
    ("tests.no_such_module:MyTrainer", {}, "cannot be imported"),
    ("tests.trainers.test_base:NoSuchTrainer", {}, "has no attribute 'NoSuchTrainer'"),
    ("tests.trainers.test_base:NOT_CALLABLE", {}, "is not callable"),
    ("tests.trainers.test_base:MyTrainer", {"scael": 1.0}, "does not accept args"),
    ("tests.trainers.test_base:MyTrainer", {}, "does not accept args"),            # missing scale
    ("tests.trainers.test_base:MyTrainer", {"scale": -1.0}, "rejected its args"),  # ValueError inside
    ("tests.trainers.test_base:returns_non_callable", {}, "not a callable"),
    ("trainers.synthetic:SyntheticTrainer", {"law": "cubic"}, "unknown law"),
    ("trainers.synthetic:SyntheticTrainer", {"nosie": 0.1}, "does not accept args"),
    ("trainers.replay:ReplayTrainer", {"table": "/nonexistent/runs.csv"}, "does not exist"),
    ("trainers.gpt:GPTTrainer", {"learning_rate": 1e-3}, "rejected its args"),
    ("trainers.gpt:GPTTrainer", {"checkpoints": [0.5, 1.5]}, "rejected its args"),
])
def test_bad_paths_and_args_raise_trainer_load_error(path, args, fragment):
    with pytest.raises(TrainerLoadError, match=fragment):
        load_trainer(path, args)


def test_builtin_trainers_load_by_path():
    synthetic = load_trainer("trainers.synthetic:SyntheticTrainer", {"domains": ["a", "b"]})
    assert set(synthetic(SPEC).losses) == {"a", "b"}
    gpt = load_trainer("trainers.gpt:GPTTrainer", {"seq_len": 64, "checkpoints": [0.5]})
    assert gpt.cfg.seq_len == 64 and gpt.cfg.checkpoints == (0.5,)


def test_trainers_package_imports_nothing_from_planner():
    code = ("import sys, trainers, trainers.synthetic, trainers.replay, trainers.gpt, trainers.data; "
            "bad = sorted(m for m in sys.modules if m == 'planner' or m.startswith('planner.')); "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
