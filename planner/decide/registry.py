"""Strategies by name (the config key ``acquisition``).

A strategy is a plain function ``strategy(request: DesignRequest) -> list[Proposal]`` returning
at most ``request.q`` proposals. The built-in ones (``random``, ``grid``, ``decision``) are listed
here; ``register_strategy`` adds a user's own (usable as a decorator)::

    @register_strategy("my_strategy")
    def my_strategy(req: DesignRequest) -> list[Proposal]: ...
"""
from __future__ import annotations

from typing import Callable

from planner.core.errors import InputError
from planner.decide.acquisition import decision_strategy
from planner.decide.grid import grid_strategy
from planner.decide.space import Proposal
from planner.decide.strategies import DesignRequest, random_strategy

Strategy = Callable[[DesignRequest], "list[Proposal]"]

_STRATEGIES: dict[str, Strategy] = {"random": random_strategy, "grid": grid_strategy,
                                    "decision": decision_strategy}


def register_strategy(name: str, fn: Strategy | None = None):
    """Register ``fn`` under ``name`` (usable as a decorator). Re-registering replaces it."""
    def deco(f: Strategy) -> Strategy:
        _STRATEGIES[name] = f
        return f

    return deco(fn) if fn is not None else deco


def available_strategies() -> list[str]:
    return sorted(_STRATEGIES)


def get_strategy(name: str) -> Strategy:
    """The strategy registered as ``name``; InputError listing the known ones otherwise."""
    if name not in _STRATEGIES:
        raise InputError(f"acquisition {name!r} is not available (known: "
                         f"{', '.join(sorted(_STRATEGIES))})")
    return _STRATEGIES[name]


def propose(name: str, request: DesignRequest) -> list[Proposal]:
    """Run strategy ``name`` and check what it returns (at most q, inside the space and budget)."""
    props = list(get_strategy(name)(request))[: request.q]
    out = []
    for p in props:
        if not isinstance(p, Proposal):
            raise TypeError(f"strategy {name!r} returned {type(p).__name__}, not a Proposal")
        if request.max_flops is not None and p.flops > request.max_flops * (1 + 1e-9):
            continue
        out.append(p if p.strategy else Proposal(p.N, p.D, p.h, name, p.info))
    return out
