"""SyntheticTrainer: exact law values, the noise model, checkpoints and the true optimum."""
from __future__ import annotations

import math

import numpy as np
import pytest

from trainers.base import RunSpec
from trainers.synthetic import SyntheticTrainer

ADDITIVE = {"E": 1.5, "C": [2.0, 3.0], "g": [0.5, 0.8], "A": 0.4, "a": 0.3, "B": 0.6, "b": 0.25}
JOINT = {"E": 1.5, "C": [2.0, 3.0], "g": [0.5, 0.8], "CA": [0.5, 0.7], "gA": 1.1, "a": 0.3,
         "CB": [0.6, 0.4], "gB": 0.9, "b": 0.25}
CHINCHILLA = {"E": 1.5, "A": 0.4, "a": 0.3, "B": 0.6, "b": 0.25}
# n = N / 1e8 = 2 and d = D / 1e9 = 4 exercise the scaling convention.
N, D, H = 2e8, 4e9, {"x": 0.25, "y": 0.75}


def spec(h=H, n=N, d=D, seed=0, run_id="r"):
    return RunSpec(run_id=run_id, N=int(n), D=int(d), h=dict(h), seed=seed)


@pytest.mark.parametrize("law, params, expected", [
    ("additive", ADDITIVE,
     1.5 + 1.0 / (2.0 * 0.25 ** 0.5 + 3.0 * 0.75 ** 0.8) + 0.4 / 2 ** 0.3 + 0.6 / 4 ** 0.25),
    ("joint", JOINT,
     1.5 + 1.0 / (2.0 * 0.25 ** 0.5 + 3.0 * 0.75 ** 0.8)
     + (0.5 * 0.25 + 0.7 * 0.75) ** 1.1 / 2 ** 0.3 + (0.6 * 0.25 + 0.4 * 0.75) ** 0.9 / 4 ** 0.25),
    ("chinchilla", CHINCHILLA, 1.5 + 0.4 / 2 ** 0.3 + 0.6 / 4 ** 0.25),
])
def test_noise_free_loss_equals_hand_computed_law(law, params, expected):
    t = SyntheticTrainer(law=law, domains=["x", "y"], params={"tgt": params}, noise=0.0,
                         checkpoint_noise=0.0)
    result = t(spec())
    # Same formula, different evaluation order: agreement to a few ulps of a number near 2.5.
    assert result.losses["tgt"] == pytest.approx(expected, rel=1e-13)
    assert result.metadata["true_losses"]["tgt"] == pytest.approx(expected, rel=1e-13)


def test_zero_weight_gives_zero_power_not_nan():
    t = SyntheticTrainer(domains=["x", "y"], params={"tgt": ADDITIVE}, noise=0.0, checkpoint_noise=0.0)
    loss = t(spec(h={"x": 1.0, "y": 0.0})).losses["tgt"]
    assert loss == pytest.approx(1.5 + 1.0 / 2.0 + 0.4 / 2 ** 0.3 + 0.6 / 4 ** 0.25, rel=1e-13)
    # vectorised true_loss over a grid that includes both vertices
    H = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    vals = t.true_loss(np.full(3, N), np.full(3, D), H, target="tgt")
    assert np.all(np.isfinite(vals)) and vals[1] == pytest.approx(
        1.5 + 1.0 / 3.0 + 0.4 / 2 ** 0.3 + 0.6 / 4 ** 0.25, rel=1e-13)


def test_noise_is_lognormal_with_shared_run_component():
    noise, ck = 0.005, 0.001
    t = SyntheticTrainer(domains=["x", "y"], params={"tgt": ADDITIVE}, noise=noise,
                         checkpoint_noise=ck, checkpoints=[0.5])
    true_final = t.true_loss(N, D, H, target="tgt")
    true_half = t.true_loss(N, D // 2, H, target="tgt")
    n = 400
    final, half = np.empty(n), np.empty(n)
    for s in range(n):
        r = t(spec(seed=s))
        final[s] = math.log(r.losses["tgt"] / true_final)
        half[s] = math.log(r.checkpoints[0][1]["tgt"] / true_half)
    total = math.hypot(noise, ck)
    # mean of 400 draws of sd 0.0051 has sd 2.5e-4; 1.1e-3 is over 4 sd.
    assert abs(final.mean()) < 1.1e-3
    # a sample sd from 400 normal draws has relative sd 1/sqrt(800) = 3.5 %; 12 % is over 3 sd.
    assert final.std(ddof=1) == pytest.approx(total, rel=0.12)
    # checkpoints share the run term: their difference only carries the two checkpoint terms.
    assert (final - half).std(ddof=1) == pytest.approx(math.sqrt(2) * ck, rel=0.15)
    # and the run term makes them strongly correlated (theory: 0.005^2 / 0.0051^2 = 0.96)
    assert np.corrcoef(final, half)[0, 1] > 0.9


def test_checkpoint_equals_shorter_run_with_same_seed_and_repeatable():
    t = SyntheticTrainer(domains=["x", "y"], params={"tgt": ADDITIVE}, checkpoints=[0.25, 0.5])
    long_run = t(spec(d=4e9, seed=7))
    short_run = t(spec(d=2e9, seed=7))
    assert [c[0] for c in long_run.checkpoints] == [1_000_000_000, 2_000_000_000]
    assert long_run.checkpoints[1][1] == short_run.losses          # exact: same noise draws
    assert t(spec(d=4e9, seed=7)).losses == long_run.losses         # repeatable
    assert t(spec(d=4e9, seed=8)).losses != long_run.losses         # a new seed is new noise


def test_default_truth_is_plausible_and_deterministic():
    domains = ["code", "web", "books", "math"]
    t = SyntheticTrainer(domains=domains, truth_seed=3, noise=0.0, checkpoint_noise=0.0)
    assert t.targets == domains
    p = t.true_params
    for target, q in p.items():
        assert 1.5 <= q["E"] <= 2.0 and np.all((q["g"] > 0.2) & (q["g"] < 0.9))
        uniform = t.true_loss(1e8, 1e9, {d: 0.25 for d in domains}, target=target)
        assert 2.0 < uniform < 4.0
        # a target's own domain helps it most: its vertex beats every other vertex
        own = t.true_loss(1e8, 1e9, {target: 1.0}, target=target)
        others = [t.true_loss(1e8, 1e9, {d: 1.0}, target=target) for d in domains if d != target]
        assert own < min(others)
    again = SyntheticTrainer(domains=domains, truth_seed=3).true_params
    assert all(np.array_equal(p[t_]["C"], again[t_]["C"]) for t_ in domains)


def test_domains_from_first_spec_and_unknown_domain_error():
    t = SyntheticTrainer(law="joint")
    r = t(spec(h={"b": 0.5, "a": 0.5}))
    assert t.domains == ["a", "b"] and set(r.losses) == {"a", "b"}
    with pytest.raises(ValueError, match="unknown domains"):
        t(spec(h={"a": 0.5, "zzz": 0.5}))
    with pytest.raises(ValueError, match="sum to 1"):
        t(spec(h={"a": 0.5, "b": 0.6}))


def test_true_optimum_beats_a_dense_simplex_grid():
    t = SyntheticTrainer(domains=["a", "b", "c"], truth_seed=1)
    h_star, val = t.true_optimum(1e7, 1e8)
    grid = np.array([(i, j, 60 - i - j) for i in range(61) for j in range(61 - i)]) / 60.0
    objective = np.mean([t.true_loss(1e7, 1e8, grid, target=x) for x in t.targets], axis=0)
    # the optimum is at least as good as every grid point (grid spacing 1/60), up to rounding
    assert val <= objective.min() + 1e-12
    assert sum(h_star.values()) == pytest.approx(1.0, abs=1e-12)
    # and close to the best grid point: the loss is flat at the optimum, so within one spacing
    best = grid[np.argmin(objective)]
    assert np.abs(np.array([h_star[d] for d in "abc"]) - best).max() <= 1.0 / 60
