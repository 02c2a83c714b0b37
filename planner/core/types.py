"""Small shared types and formulas: run statuses, the FLOP cost of a run, run identity."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Mapping, Sequence


class RunStatus(str, enum.Enum):
    """A run's status in the ledger (stored as its string value)."""

    PROPOSED = "proposed"    # bought, waiting for a worker (also: a failed attempt to retry)
    RUNNING = "running"      # dispatched to a worker
    COMPLETED = "completed"  # a result is recorded
    FAILED = "failed"        # every attempt failed

    def __str__(self) -> str:
        return self.value


FLOPS_PER_PARAM_TOKEN = 6.0  # training cost C = 6 N D (forward + backward, dense transformer)


def flops(N, D):
    """Training compute of a run of N parameters on D tokens: 6 N D (scalars or arrays)."""
    return FLOPS_PER_PARAM_TOKEN * N * D


def run_identity(N: float, h: Sequence[float] | Mapping[str, float]) -> str:
    """The identity of a run without a run id: its size N and mixture h (its checkpoints differ
    only in D). Values are formatted to 9 significant digits, so equal runs compare equal."""
    vals = list(h.values()) if isinstance(h, Mapping) else list(h)
    return "|".join([f"{float(N):.9g}"] + [f"{float(v):.9g}" for v in vals])


@dataclass(frozen=True)
class Target:
    """The decision a campaign serves: the target run's size and the objective's weights.

    N, D: the target run; weights: {target loss: weight} (the objective is their weighted sum);
    hi: upper bound per domain weight in domain order (data caps), or None."""

    N: float
    D: float
    weights: Mapping[str, float]
    hi: tuple[float, ...] | None = None

    def optimum_kwargs(self) -> dict:
        """Keyword arguments of ``decide.optimum.recommend`` / ``optimum_draws``."""
        return {"N": self.N, "D": self.D, "target_weights": dict(self.weights), "hi": self.hi}
