"""The candidate space, the `random` strategy and the strategy registry; Planner.ask's budget
accounting (in-flight runs count). No Ray, no fits."""
from __future__ import annotations

import numpy as np
import pytest

from planner.campaign.ledger import Ledger
from planner.campaign.planner import Planner
from planner.config.parse import config_from_dict
from planner.core.errors import InputError
from planner.decide.registry import (
    available_strategies,
    get_strategy,
    propose,
    register_strategy,
)
from planner.decide.space import Proposal, Space, sample_candidates
from planner.decide.strategies import DesignRequest, initial_options

DOMS = ["a", "b", "c"]


def config(**over):
    d = {"domains": DOMS, "targets": {"a": 1.0}, "target_budget": {"N": 1e9, "D": 2e10},
         "space": {"N": [1e6, 5e7], "D": [1e8, 1e9]}, "budget": {"max_runs": 10},
         "acquisition": "random", "trainer": {"path": "tests.support.trainers:TinySynthetic"}}
    d.update(over)
    return config_from_dict(d)


def req(space, q, step=0, max_flops=None, **kw):
    return DesignRequest(posterior=None, observed=None, pending=[], space=space, seed=0, q=q,
                         step=step, max_flops=max_flops, **kw)


def test_random_design_is_in_space_and_space_filling():
    sp = Space.from_config(config())
    props = propose("random", req(sp, 64))
    assert len(props) == 64
    assert all(sp.contains(p.N, p.D, p.h) for p in props)
    # the first k runs are the vertices (pure domains), some others lie on faces
    assert [max(p.h.values()) for p in props[:3]] == [1.0, 1.0, 1.0]
    assert sum(min(p.h.values()) == 0 for p in props[3:]) >= 5
    # log N spreads over the whole range (low discrepancy: every eighth of it is hit)
    u = (np.log([p.N for p in props]) - np.log(1e6)) / (np.log(5e7) - np.log(1e6))
    assert len(set((u * 8).astype(int))) == 8
    # the sequence continues across calls: two calls of 4 equal one call of 8
    a = propose("random", req(sp, 4)) + propose("random", req(sp, 4, step=4))
    b = propose("random", req(sp, 8))
    assert [(p.N, p.D) for p in a] == [(p.N, p.D) for p in b]


def test_decision_starts_in_the_cheap_corner():
    sp = Space.from_config(config())
    opts = initial_options("decision", {})
    assert opts == {"scale_fraction": 0.1} and initial_options("random", {}) == {"scale_fraction": 1.0}
    props = propose("random", req(sp, 32, options=opts))
    # every size within the cheapest tenth of each log axis (rounding to integers: +1)
    f = opts["scale_fraction"]
    assert max(p.N for p in props) <= 1e6 * (5e7 / 1e6) ** f + 1
    assert max(p.D for p in props) <= 1e8 * (1e9 / 1e8) ** f + 1
    # still space-filling inside it: each half of the tenth is hit
    u = (np.log([p.N for p in props]) - np.log(1e6)) / (f * np.log(5e7 / 1e6))
    assert len(set((u * 2).astype(int))) == 2
    with pytest.raises(InputError, match="init_scale_fraction"):
        initial_options("decision", {"init_scale_fraction": 0})


def test_values_min_weight_and_budget():
    cfg = config(space={"N": [1e6, 4e6, 1.6e7], "D": [1e8, 1e9], "min_weight": 0.1})
    sp = Space.from_config(cfg)
    props = propose("random", req(sp, 20, max_flops=6 * 4e6 * 3e8))
    assert {p.N for p in props} <= {1e6, 4e6}
    assert all(min(p.h.values()) >= 0.1 - 1e-12 for p in props)
    assert all(p.flops <= 6 * 4e6 * 3e8 for p in props)
    assert propose("random", req(sp, 3, max_flops=sp.cheapest_flops() / 2)) == []
    cand = sample_candidates(sp, 100, seed=1)
    assert cand.H.shape == (100, 3) and np.allclose(cand.H.sum(1), 1)


def test_registry():
    assert "random" in available_strategies()
    with pytest.raises(InputError, match="acquisition 'nope' is not available"):
        get_strategy("nope")

    @register_strategy("test_const")
    def const(r):
        return [Proposal(N=2_000_000, D=200_000_000, h={"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})] * (r.q + 2)

    out = propose("test_const", req(Space.from_config(config()), 2))
    assert len(out) == 2 and out[0].strategy == "test_const"


def test_ask_counts_in_flight_runs_against_the_budget(tmp_path):
    cfg = config(budget={"max_runs": 5, "flops": 6 * 1e7 * 1e9 * 3})
    from planner.config.store import config_fingerprint, config_to_dict
    lg = Ledger.create(tmp_path, config_to_dict(cfg), config_fingerprint(cfg))
    pl = Planner(cfg, lg)
    first = pl.ask(3)
    for s in first:
        lg.mark_dispatched(s.run_id, 1)  # in flight, not finished
    more = pl.ask(10)
    assert len(first) + len(more) <= 5
    s = lg.spent()
    assert s["flops_committed"] <= cfg.budget.flops and s["runs_committed"] == len(first) + len(more)
    assert pl.budget_exhausted() and pl.ask(1) == []
    ids = [x.run_id for x in first + more]
    assert ids == [f"r{i:05d}" for i in range(1, len(ids) + 1)]
    lg.close()


def test_failing_acquisition_falls_back_to_random(tmp_path):
    from planner.config.store import config_fingerprint, config_to_dict

    @register_strategy("test_broken")
    def broken(r):
        raise RuntimeError("numerical trouble")

    cfg = config(acquisition="test_broken")
    lg = Ledger.create(tmp_path, config_to_dict(cfg), config_fingerprint(cfg))
    pl = Planner(cfg, lg)
    pl.posterior = object()  # as if a fit existed: the configured strategy is asked
    specs = pl.ask(2)
    assert len(specs) == 2 and lg.run(specs[0].run_id).strategy == "random"
    assert lg.events("acquisition_failed")[0]["data"]["error"] == "RuntimeError: numerical trouble"
    lg.close()
