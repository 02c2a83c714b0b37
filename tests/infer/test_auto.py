"""law auto: the embedding into the joint law, the stacking weights, the held-out split, the
combined posterior (a weighted mixture of the families' draws) and its persistence."""
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from planner.decide.optimum import optimum_draws, recommend
from planner.infer.auto import (
    MIN_HELDOUT_RUNS,
    combine,
    fit_auto,
    heldout_log_density,
    is_auto,
    stacking_split,
    stacking_weights,
    warm_start_auto,
)
from planner.model.laws import (
    AUTO,
    LAWS,
    SUPER_FAMILY,
    auto_families,
    embed,
    get_law,
    n_params,
)
from planner.model.posterior import Posterior, TargetPosterior
from planner.model.runs import runs_from_frame
from tests.support.sim import (
    DOMAINS3,
    TRUE_ADDITIVE,
    TRUE_JOINT,
    grid_design,
    simulate,
)

# strong mixture-dependent scaling: the additive law cannot follow the change of the best
# mixture with N and D (CA and CB differ 4-10x between domains, gA, gB far from 1)
STRONG_JOINT = {"E": 1.6, "C": [2.0, 4.0, 1.5], "g": [0.5, 0.5, 0.5],
                "CA": [2.5, 0.25, 0.6], "gA": 1.4, "a": 0.3,
                "CB": [0.2, 1.8, 0.5], "gB": 0.7, "b": 0.3}


# ------------------------------------------------------------------------------ the embedding
def _random_additive_draws(rng, S, k=3):
    return {"E": rng.uniform(1, 2, S), "C": rng.uniform(0.5, 5, (S, k)),
            "g": rng.uniform(0.2, 1.5, (S, k)), "A": rng.uniform(0.1, 2, S),
            "a": rng.uniform(0.1, 0.6, S), "B": rng.uniform(0.1, 2, S), "b": rng.uniform(0.1, 0.6, S)}


def test_every_family_embeds_exactly_in_the_super_family():
    """Random parameters (draws with a leading axis) and random designs, faces included: the
    embedded joint parameters predict what the family predicts, to rounding (1e-12 relative,
    float64; A_h = (sum_i A h_i)^1 = A on the simplex up to the rounding of sum h_i)."""
    rng = np.random.default_rng(3)
    S, m, k = 7, 40, 3
    H = rng.dirichlet(np.ones(k), m)
    H[:5, 0] = 0.0
    H[:5] /= H[:5].sum(1, keepdims=True)
    logn, logd = rng.normal(0, 3, m), rng.normal(0, 3, m)
    joint = get_law(SUPER_FAMILY)
    pa = {kk: jnp.asarray(v) for kk, v in _random_additive_draws(rng, S).items()}
    pj = {"E": pa["E"], "C": pa["C"], "g": pa["g"], "CA": jnp.asarray(rng.uniform(.1, 2, (S, k))),
          "gA": jnp.asarray(rng.uniform(.5, 1.5, S)), "a": pa["a"],
          "CB": jnp.asarray(rng.uniform(.1, 2, (S, k))), "gB": jnp.asarray(rng.uniform(.5, 1.5, S)),
          "b": pa["b"]}
    for fam, p in (("additive", pa), ("joint", pj)):
        own = get_law(fam).predict_draws(p, logn, logd, jnp.asarray(H))
        emb = joint.predict_draws(embed(fam, p), logn, logd, jnp.asarray(H))
        np.testing.assert_allclose(np.asarray(emb), np.asarray(own), rtol=1e-12)
    # one parameter set (no draw axis) too
    one = {kk: v[0] for kk, v in pa.items()}
    np.testing.assert_allclose(np.asarray(joint.predict(embed("additive", one), logn, logd, H)),
                               np.asarray(get_law("additive").predict(one, logn, logd, H)),
                               rtol=1e-12)


def test_auto_families_and_parameter_counts():
    assert auto_families() == ("additive", "joint")  # chinchilla has no mixture term
    assert n_params(AUTO, 4) == LAWS["additive"].n_params(4) == 13
    assert n_params("joint", 4) == 21
    with pytest.raises(Exception, match="no embedding"):
        embed("chinchilla", {})


# ------------------------------------------------------------------------------ stacking
def test_stacking_weights_analytic_cases():
    # one family dominates every run: all weight on it
    lpd = np.log(np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.05]]))
    np.testing.assert_allclose(stacking_weights(lpd), [1, 0], atol=1e-6)
    # two runs, each explained by one family only (p = 1 vs 0 in log space: -50): the
    # maximiser of log(w) + log(1 - w) is w = 1/2
    lpd = np.array([[0.0, -50.0], [-50.0, 0.0]])
    np.testing.assert_allclose(stacking_weights(lpd), [0.5, 0.5], atol=1e-6)
    # three runs favour family 0, one family 1, all else equal: maximise 3 log w + log(1 - w)
    # -> w = 3/4
    lpd = np.array([[0.0, -50.0]] * 3 + [[-50.0, 0.0]])
    np.testing.assert_allclose(stacking_weights(lpd), [0.75, 0.25], atol=1e-6)
    # identical predictive densities: the objective is flat, the uniform start is kept
    np.testing.assert_allclose(stacking_weights(np.zeros((4, 3))), [1 / 3] * 3, atol=1e-12)
    # no held-out runs: uniform
    np.testing.assert_allclose(stacking_weights(np.zeros((0, 2))), [0.5, 0.5])


def test_stacking_weights_maximise_the_objective():
    rng = np.random.default_rng(0)
    lpd = rng.normal(0, 2, (12, 3))
    w = stacking_weights(lpd)

    def obj(v):
        return np.sum(np.log(np.exp(lpd) @ v))

    for _ in range(200):  # no point of the simplex does better
        v = rng.dirichlet(np.ones(3))
        assert obj(v) <= obj(w) + 1e-9


def _posterior(law, draws, domains=DOMAINS3, target="web", obs=None):
    tp = TargetPosterior(target, {kk: np.asarray(v, float) for kk, v in draws.items()},
                         {"method": "laplace", "n_obs": 10, "n_runs": 10, "seconds": 1.0},
                         obs_logn=None if obs is None else obs[0],
                         obs_logd=None if obs is None else obs[1])
    return Posterior(law, list(domains), [target], {target: tp}, {"method": "laplace", "seed": 0})


def test_heldout_log_density_matches_a_direct_student_t_computation():
    """Three held-out runs, one of them with two rows (a checkpoint): the run's density is the
    draw-average of the product of its rows' Student-t(4) densities on log-loss (tau = 0)."""
    rng = np.random.default_rng(1)
    S = 50
    draws = {kk: np.asarray(v) * np.exp(0.02 * rng.standard_normal((S,) + np.shape(v)))
             for kk, v in TRUE_ADDITIVE.items()}
    draws["sigma"] = 0.01 * np.exp(0.2 * rng.standard_normal(S))
    post = _posterior("additive", draws)
    df = pd.DataFrame({"N": [1e8, 1e8, 2e8, 3e8], "D": [1e9, 2e9, 1e9, 1e9],
                       "h_code": [.2, .2, .5, .1], "h_web": [.5, .5, .3, .1],
                       "h_books": [.3, .3, .2, .8], "loss_web": [3.0, 2.9, 2.8, 3.1],
                       "run_id": ["a", "a", "b", "c"]})
    table = runs_from_frame(df)
    lp, runs = heldout_log_density(post, "web", table)
    assert runs == ["a", "b", "c"]
    mu = np.log(post.loss_draws("web", table.N, table.D, table.H))
    dens = stats.t.pdf((np.log(df["loss_web"].to_numpy())[None] - mu) / draws["sigma"][:, None],
                       4) / draws["sigma"][:, None]
    expect = [np.log(np.mean(dens[:, 0] * dens[:, 1])), np.log(np.mean(dens[:, 2])),
              np.log(np.mean(dens[:, 3]))]
    np.testing.assert_allclose(lp, expect, rtol=1e-10)


# ------------------------------------------------------------------------------ the split
def _table(N, D, H, law="additive", params=TRUE_ADDITIVE, seed=1):
    return runs_from_frame(simulate(law, params, N, D, H, 0.005, seed=seed))


def test_split_holds_out_whole_top_levels_until_enough_runs():
    N, D, H = grid_design(4, [1e7, 3e7, 1e8, 3e8], [1e9], seed=0)   # 4 runs per N level
    table = _table(N, D, H)
    mask, info = stacking_split(table, inner_rows_needed=5)
    assert mask.sum() == 4 and np.all(table.N[mask] == 3e8)          # 4 >= MIN_HELDOUT_RUNS
    # one run per N level (continuous sizes, as in a campaign): several levels go
    rng = np.random.default_rng(0)
    N2 = np.exp(rng.uniform(np.log(1e7), np.log(1e9), 30))
    H2 = rng.dirichlet(np.ones(3), 30)
    t2 = _table(N2, np.full(30, 1e9), H2)
    mask, info = stacking_split(t2, inner_rows_needed=21)
    assert mask.sum() == max(MIN_HELDOUT_RUNS, 5) and info["n_heldout_runs"] == 5  # 15 % of 30
    assert t2.N[mask].min() > t2.N[~mask].max()
    # too few rows below the largest level to fit the largest family: nothing held out
    mask, info = stacking_split(t2, inner_rows_needed=29)
    assert mask is None and "need more than 29" in info["rule"]
    # one (N, D) scale
    t3 = _table(np.full(6, 1e8), np.full(6, 1e9), H2[:6])
    assert stacking_split(t3, 2)[0] is None


# ------------------------------------------------------------------------------ combination
def _family_draws(rng, S, truth, spread):
    return {kk: np.asarray(v, float) * np.exp(spread * rng.standard_normal((S,) + np.shape(v)))
            for kk, v in truth.items()}


def test_combined_h_star_is_the_weighted_mixture_of_the_families():
    """Two single-family posteriors whose optima differ; the combination with weights 0.3 /
    0.7 has exactly round(0.3 S) additive and round(0.7 S) joint draws, each draw's optimum is
    the optimum of the draw it came from (the embedding is exact), and its h* mean is the
    weighted mean of the families' (to the subsampling: systematic thinning of 200 draws to
    60 / 140 leaves an error far below the 0.05 tolerance; the families' means differ by more)."""
    rng = np.random.default_rng(5)
    S = 200
    da = _family_draws(rng, S, TRUE_ADDITIVE, 0.05)
    dj = _family_draws(rng, S, STRONG_JOINT, 0.05)
    for d in (da, dj):
        d["sigma"] = np.full(S, 0.005)
    pa, pj = _posterior("additive", da), _posterior("joint", dj)
    post = combine({"additive": pa, "joint": pj}, {"web": {"additive": 0.3, "joint": 0.7}},
                   seed=1)
    assert post.law == SUPER_FAMILY and is_auto(post) and post["web"].n_draws == S
    src = np.isclose(post["web"].draws["gA"], 1.0) & np.all(
        np.isclose(post["web"].draws["CA"], post["web"].draws["CA"][:, :1]), axis=1)
    assert src.sum() == 60  # additive draws (gA = 1, CA constant) vs joint draws
    # any prefix is a mixture too (the acquisition uses the first 256 draws)
    assert 0.1 < src[:100].mean() < 0.5
    N, D = 7e9, 1.5e11
    oa, oj, oc = (optimum_draws(p, N, D) for p in (pa, pj, post))
    assert np.abs(oa["h_star"].mean(0) - oj["h_star"].mean(0)).max() > 0.1
    np.testing.assert_allclose(oc["h_star"].mean(0),
                               0.3 * oa["h_star"].mean(0) + 0.7 * oj["h_star"].mean(0), atol=0.05)
    # draw by draw: find each combined draw's source by its E (continuous, distinct)
    for fam, od, d in (("additive", oa, da), ("joint", oj, dj)):
        sel = src if fam == "additive" else ~src
        idx = [int(np.flatnonzero(d["E"] == e)[0]) for e in post["web"].draws["E"][sel]]
        # the optimiser (mirror descent, normalised steps) ends within about 1e-4 of the flat
        # optimum in h, and the joint code path rounds differently, so h agrees to 2e-4 while
        # the optimal loss (flat there) agrees to 1e-9 relative
        np.testing.assert_allclose(oc["h_star"][sel], od["h_star"][idx], atol=2e-4)
        np.testing.assert_allclose(oc["loss_at_star"][sel], od["loss_at_star"][idx], rtol=1e-9)
    # weight 1 on one family: the combination is that family
    only = combine({"additive": pa, "joint": pj}, {"web": {"additive": 1.0, "joint": 0.0}})
    np.testing.assert_allclose(np.sort(optimum_draws(only, N, D)["h_star"][:, 0]),
                               np.sort(oa["h_star"][:, 0]), atol=2e-4)


def test_combined_posterior_survives_save_and_load(tmp_path):
    rng = np.random.default_rng(2)
    da, dj = _family_draws(rng, 40, TRUE_ADDITIVE, 0.03), _family_draws(rng, 40, TRUE_JOINT, 0.03)
    da["sigma"] = dj["sigma"] = np.full(40, 0.005)
    dj["tau"] = np.full(40, 0.002)   # one family with a run effect: the other gets tau = 0
    post = combine({"additive": _posterior("additive", da), "joint": _posterior("joint", dj)},
                   {"web": {"additive": 0.25, "joint": 0.75}}, meta={"stacking": {"web": {
                       "kind": "stacking", "note": "x"}}})
    assert post["web"].n_draws == 100  # at least MIN_COMBINED_DRAWS, families repeated
    assert np.count_nonzero(post["web"].draws["tau"] == 0) == 25
    post.save(tmp_path / "p")
    back = Posterior.load(tmp_path / "p")
    assert is_auto(back) and back.meta["law_weights"] == {"web": {"additive": 0.25, "joint": 0.75}}
    assert back.meta["stacking"]["web"]["kind"] == "stacking"
    np.testing.assert_allclose(back["web"].draws["CA"], post["web"].draws["CA"])
    rec = recommend(back, 7e9, 1.5e11)
    assert abs(sum(rec["recommended"].values()) - 1) < 1e-9


# ------------------------------------------------------------------------------ fit_auto
def test_fit_auto_with_one_family_fittable_and_equal_weight_fallback():
    """18 rows, k = 3: the additive law (11 parameters) can be fitted, the joint (17) can too
    but not without the held-out largest scale -> equal weights, and said so; 14 rows: only
    the additive -> weight 1. MAP fits keep this fast."""
    N, D, H = grid_design(6, [1e7, 1e8, 1e9], [1e9], seed=2)
    D = D * np.where(np.arange(len(D)) % 2, 1.0, 2.0)  # two D levels: the joint law is identified
    table = _table(N, D, H)
    post = fit_auto(table, method="map", map_starts=4)
    ev = post.meta["stacking"]["web"]
    assert post.meta["law_weights"]["web"] == {"additive": 0.5, "joint": 0.5}
    assert ev["kind"] == "equal" and "nothing could be held out" in ev["note"]
    assert post["web"].n_draws >= 100   # two MAP points, repeated to represent the weights
    small = table.select(np.arange(len(table.frame)) < 14)
    post = fit_auto(small, method="map", map_starts=4)
    assert post.meta["law_weights"]["web"] == {"additive": 1.0, "joint": 0.0}
    assert post.meta["stacking"]["web"]["kind"] == "single"
    assert "more than 17 observations" in post.meta["family_notes"]["joint"]
    assert set(post.meta["law_medians"]) == {"additive"}
    warm = warm_start_auto(post, DOMAINS3, 8)
    assert warm["warm_map_starts"] == 8 and set(warm["map_init_by_law"]) == {"additive"}
    with pytest.raises(Exception, match="more rows than parameters"):
        fit_auto(table.select(np.arange(len(table.frame)) < 8), method="map")


def test_fits_below_the_held_out_scale_are_laplace_with_few_draws():
    from planner.infer.auto import INNER_DRAWS, _inner_kwargs

    # planner fit's defaults (NUTS, 2 x 500): Laplace, 2 x 100 = INNER_DRAWS draws
    kw = _inner_kwargs("nuts", {"num_samples": 500, "num_chains": 2, "num_warmup": 500})
    assert kw["method"] == "laplace" and kw["num_samples"] * 2 == INNER_DRAWS == 200
    # a campaign's Laplace refits (2 x 300) keep Laplace with 200 draws; fewer stay as asked
    assert _inner_kwargs("laplace", {"num_samples": 300, "num_chains": 2})["num_samples"] == 100
    assert _inner_kwargs("laplace", {"num_samples": 50, "num_chains": 2})["num_samples"] == 50
    assert _inner_kwargs("map", {})["method"] == "map"


def test_a_family_the_design_cannot_identify_is_not_fitted():
    """Every row at D = 1e9 (as in RegMix): the joint law's data-size mixture terms (CB, gB,
    b) would rest on their priors alone, so law auto fits the additive law only, and says why."""
    N, D, H = grid_design(8, [1e7, 1e8, 1e9], [1e9], seed=4)
    post = fit_auto(_table(N, D, H), method="map", map_starts=4)
    assert post.meta["law_weights"]["web"] == {"additive": 1.0, "joint": 0.0}
    note = post.meta["family_notes"]["joint"]
    assert note.startswith("not fitted") and "with D" in note and "with N" not in note
    assert post.meta["stacking"]["web"]["kind"] == "single"


@pytest.mark.slow
def test_stacking_recovers_the_family_that_generated_the_data():
    """Simulated campaigns' data: 8 mixtures x 4 N levels x 2 D levels, 0.5 % noise, Laplace
    fits. The held-out largest N level (16 runs) decides.

    Joint truth with strong mixture-dependent scaling: the additive law mispredicts the held-out
    level by several noise widths on most runs, so stacking puts essentially all weight on the
    joint law (>= 0.9; measured 1.000, summed held-out log scores 63.1 vs 11.2). Additive
    truth: the joint law nests it and predicts almost as well, so the weights need not be 1 / 0;
    the additive law, as sharp and right, must get a substantial share (>= 0.3; measured 1.000,
    log scores 64.1 vs 63.2: the joint law's wider predictive loses a little density on the
    held-out runs, and stacking's optimum sits at a vertex whenever one family is better on
    average)."""
    N, D, H = grid_design(8, [1e7, 3e7, 1e8, 3e8], [1e9, 3e9], seed=0)
    jt = fit_auto(_table(N, D, H, "joint", STRONG_JOINT), method="laplace", num_samples=200,
                  num_chains=1)
    wj = jt.meta["law_weights"]["web"]
    assert wj["joint"] >= 0.9, jt.meta["stacking"]
    ev = jt.meta["stacking"]["web"]
    assert ev["kind"] == "stacking" and ev["n_heldout_runs"] == 16
    assert ev["elpd"]["joint"] > ev["elpd"]["additive"] + 10
    ad = fit_auto(_table(N, D, H), method="laplace", num_samples=200, num_chains=1)
    assert ad.meta["law_weights"]["web"]["additive"] >= 0.3, ad.meta["stacking"]


def test_inner_fits_warm_start_only_from_fits_that_never_saw_the_held_out_runs():
    """A campaign's next refit starts its fits below the held-out scale from the previous ones
    when none of the runs held out now was among their rows; otherwise they start cold (a
    start at a fit that saw a held-out run would leak it into the weights)."""
    N, D, H = grid_design(6, [1e7, 3e7, 1e8, 3e8], [1e9], seed=4)
    D = D * np.where(np.arange(len(D)) % 2, 1.0, 2.0)  # two D levels: the joint law is identified
    table = _table(N, D, H)
    post = fit_auto(table, method="map", map_starts=4)
    assert post.meta["stacking"]["web"]["split"]["inner_warm_start"] is False
    assert post.meta["stacking"]["web"]["split"]["inner_method"] == "map"   # nuts -> laplace
    warm = warm_start_auto(post, DOMAINS3, 4)
    assert set(warm["inner_warm"]["init"]) == {"additive", "joint"}
    again = fit_auto(table, method="map", map_starts=4, **warm)
    assert again.meta["stacking"]["web"]["split"]["inner_warm_start"] is True
    held = table.run_keys()[table.N == 3e8][0]
    warm["inner_warm"]["runs"].append(held)   # as if the previous inner fit had seen it
    cold = fit_auto(table, method="map", map_starts=4, **warm)
    assert cold.meta["stacking"]["web"]["split"]["inner_warm_start"] is False
