"""NUTS keeps sampling while its draws fall short of the convergence goals (max r_hat, min bulk
ESS), and keeps ``num_samples`` draws per chain by thinning more."""
import dataclasses

import numpy as np
import pytest

from planner.infer.map import fit_map
from planner.infer.nuts import _short_of_goals, fit_nuts, nuts_diagnostics
from planner.infer.options import NUTS_SETTINGS
from planner.model.laws import get_law
from planner.model.numpyro_model import pad_observations
from planner.model.runs import runs_from_frame
from tests.support.sim import TRUE_ADDITIVE, grid_design, simulate

LAW = get_law("additive")


def _draws(shift, n=500, seed=0):
    """Independent normal draws for every site of the additive law (k = 3), two chains; the
    second chain shifted by ``shift`` sd."""
    rng = np.random.default_rng(seed)
    out = {}
    for p in LAW.params:
        shape = (2, n) + ((3,) if p.per_domain else ())
        x = rng.standard_normal(shape)
        x[1] += shift
        out[p.name] = x
    out["sigma"] = rng.standard_normal((2, n))
    return out


def test_independent_draws_meet_the_goals():
    # 2 x 500 independent draws: bulk ESS about 1,000 (its sd is about 5 %), r_hat 1 +- 0.003
    assert _short_of_goals(_draws(0.0), LAW, NUTS_SETTINGS) == ("", True)


def test_chains_that_disagree_fall_short_on_r_hat():
    # a 0.3 sd offset between two chains: r_hat about 1.02, far beyond its noise at 1,000 draws
    short, reachable = _short_of_goals(_draws(0.3), LAW, NUTS_SETTINGS)
    assert short.startswith("r_hat") and "> 1.01" in short and reachable
    # chains 1 sd apart (r_hat about 1.2) have not mixed: more rounds would only cost time
    short, reachable = _short_of_goals(_draws(1.0), LAW, NUTS_SETTINGS)
    assert short.startswith("r_hat") and not reachable


def test_correlated_draws_fall_short_on_ess():
    # AR(1) chains with coefficient rho: ESS about 1,000 (1 - rho) / (1 + rho); 0.5 -> 333,
    # reachable in 4 rounds (1,333); 0.95 -> 26, not (103)
    for rho, reachable in ((0.5, True), (0.95, False)):
        d = _draws(0.0, seed=2)
        x = d["E"]
        for t in range(1, x.shape[1]):
            x[:, t] = rho * x[:, t - 1] + np.sqrt(1 - rho ** 2) * x[:, t]
        short, ok = _short_of_goals(d, LAW, NUTS_SETTINGS)
        assert "ESS" in short and ok == reachable


@pytest.mark.slow
def test_sampling_continues_until_the_goals_or_the_round_limit():
    N, D, H = grid_design(5, [1e7, 3e7, 1e8], [1e9, 3e9], seed=2)
    table = runs_from_frame(simulate("additive", TRUE_ADDITIVE, N, D, H, 0.005, seed=3))
    data = pad_observations(table.observations("web"))
    m = fit_map(LAW, data, seed=0, starts=4)
    # an r_hat goal no chain can meet, counted reachable: every round runs, and the kept
    # draws are thinned by 3
    never = dataclasses.replace(NUTS_SETTINGS, r_hat_goal=0.5, reachable_r_hat=1e9,
                                ess_goal=1.0, min_kept_to_extend=100, max_sampling_rounds=3)
    run = fit_nuts(LAW, data, 0, m, num_warmup=100, num_samples=50, num_chains=2,
                   settings=never)
    assert run.thin == 3 * NUTS_SETTINGS.thin
    assert run.samples["E"].shape == (2, 50)
    assert run.diverging.shape == (2, 3 * 50 * NUTS_SETTINGS.thin)
    assert {"sampling", "sampling_2", "sampling_3"} <= set(run.seconds)
    assert nuts_diagnostics(run, LAW)["thin"] == 12
    # fewer draws asked for than the goals need: one round whatever the diagnostics say
    few = dataclasses.replace(never, min_kept_to_extend=101)
    run = fit_nuts(LAW, data, 0, m, num_warmup=100, num_samples=50, num_chains=2, settings=few)
    assert run.thin == NUTS_SETTINGS.thin and "sampling_2" not in run.seconds
    # short of the goals but out of reach: one round
    futile = dataclasses.replace(never, reachable_r_hat=0.9)
    run = fit_nuts(LAW, data, 0, m, num_warmup=100, num_samples=50, num_chains=2,
                   settings=futile)
    assert run.thin == NUTS_SETTINGS.thin and "sampling_2" not in run.seconds
