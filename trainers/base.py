"""The trainer contract: what the planner sends a trainer and what it expects back.

A trainer is any callable ``trainer(spec: RunSpec) -> RunResult``. The campaign config names a
class or factory as ``"package.module:attr"`` plus keyword args; ``load_trainer`` calls it once
per worker with those args and the returned object is the trainer. A trainer reports failure by
raising.

``run_context()`` tells a trainer, during a call, which attempt of the run it executes and the
campaign directory (set by the planner's worker around each call; trainers that do not need it
ignore it).
"""
from __future__ import annotations

import contextvars
import importlib
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class RunSpec:
    """One training run to execute.

    run_id: unique key; a retried run keeps its id, so its result is written once.
    N: model parameters (non-embedding), > 0.
    D: training tokens, > 0.
    h: domain -> weight, non-negative, summing to 1.
    seed: seeds everything random in the run (init, data order).
    """

    run_id: str
    N: int
    D: int
    h: dict[str, float]
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "N": int(self.N), "D": int(self.D),
                "h": {k: float(v) for k, v in self.h.items()}, "seed": int(self.seed)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunSpec":
        return cls(run_id=str(d["run_id"]), N=int(d["N"]), D=int(d["D"]),
                   h={str(k): float(v) for k, v in d["h"].items()}, seed=int(d["seed"]))


@dataclass
class RunResult:
    """What a finished run reports.

    losses: target name -> final validation loss (at D tokens).
    checkpoints: optional [(tokens_seen, {target: loss}), ...] at intermediate D (constant-LR
        runs make these valid observations; they share the run's noise).
    metadata: JSON-able extras. ``metadata["N"]``, if present, is the model's true parameter
        count, and the planner fits on it instead of the requested N.
    """

    run_id: str
    losses: dict[str, float]
    checkpoints: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id,
                "losses": {k: float(v) for k, v in self.losses.items()},
                "checkpoints": [[int(t), {k: float(v) for k, v in l.items()}]
                                for t, l in self.checkpoints],
                "metadata": self.metadata}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunResult":
        return cls(run_id=str(d["run_id"]), losses={k: float(v) for k, v in d["losses"].items()},
                   checkpoints=[(int(t), {k: float(v) for k, v in l.items()})
                                for t, l in d.get("checkpoints", [])],
                   metadata=dict(d.get("metadata", {})))

    def non_finite(self) -> list[str]:
        """Names of losses (final or checkpoint) that are NaN or infinite."""
        bad = [k for k, v in self.losses.items() if not math.isfinite(float(v))]
        for t, l in self.checkpoints:
            bad += [f"{k}@{t}" for k, v in l.items() if not math.isfinite(float(v))]
        return bad


@dataclass(frozen=True)
class RunContext:
    """Where a call runs: ``attempt`` (1 for a run's first attempt, +1 per retry; a run keeps
    its ``run_id`` across attempts) and ``campaign_dir`` (absolute path of the campaign
    directory, or None when the trainer is called outside a campaign run)."""

    attempt: int = 1
    campaign_dir: str | None = None


_RUN_CONTEXT: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "planner_run_context", default=None)


def run_context() -> RunContext:
    """The ``RunContext`` of the current call (per thread; ``RunContext()`` outside a run)."""
    return _RUN_CONTEXT.get() or RunContext()


@runtime_checkable
class Trainer(Protocol):
    def __call__(self, spec: RunSpec) -> RunResult: ...


class TrainerLoadError(ValueError):
    """The configured trainer path or its arguments are unusable."""


def resolve_trainer_factory(path: str) -> Any:
    """Import ``"package.module:attr"`` and return the attribute (not yet called).

    Raises TrainerLoadError with a one-line reason for a malformed path or a missing module or
    attribute."""
    if not isinstance(path, str) or path.count(":") != 1 or not all(path.split(":")):
        raise TrainerLoadError(f"trainer path {path!r} must look like 'package.module:attr'")
    mod_name, attr = path.split(":")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as e:
        raise TrainerLoadError(f"trainer module {mod_name!r} cannot be imported: {e}") from e
    try:
        return getattr(module, attr)
    except AttributeError:
        raise TrainerLoadError(f"trainer module {mod_name!r} has no attribute {attr!r}") from None


def load_trainer(path: str, args: dict[str, Any] | None = None) -> Trainer:
    """Resolve ``"package.module:attr"`` and call it with ``args`` to build the trainer.

    Raises TrainerLoadError with a one-line reason for a malformed path, a missing module or
    attribute, bad keyword arguments, or a result that is not callable.
    """
    args = dict(args or {})
    factory = resolve_trainer_factory(path)
    if not callable(factory):
        raise TrainerLoadError(f"trainer {path!r} is not callable")
    try:
        inspect.signature(factory).bind(**args)
    except TypeError as e:
        raise TrainerLoadError(f"trainer {path!r} does not accept args {sorted(args)}: {e}") from None
    except ValueError:
        pass  # no signature available (builtins); let the call decide
    try:
        trainer = factory(**args)
    except (TypeError, ValueError) as e:
        raise TrainerLoadError(f"trainer {path!r} rejected its args: {e}") from e
    if not callable(trainer):
        raise TrainerLoadError(f"trainer {path!r} built a {type(trainer).__name__}, not a callable")
    return trainer
