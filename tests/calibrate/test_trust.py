"""The trust rule (``planner.calibrate.trust``): low when the law alone misses the held-out
largest scale (the same evidence as that warning of ``fit_warnings``), when a held-out check's
90 % intervals hold far less than 90 %, or when a validation run falls outside its interval;
ok otherwise. Posteriors: ``fake_fit`` with real ``fit_slope`` discrepancies."""
from __future__ import annotations

from planner.calibrate.diagnose import fit_warnings
from planner.calibrate.trust import trust, with_reasons
from tests.calibrate.test_diagnose import learned, table
from tests.support.fakefit import fake_fit


def posterior(bad_share: float):
    post = fake_fit(table(), targets=["a"], divergences=0)
    post["a"].diagnostics = {**post["a"].diagnostics, "r_hat_max": 1.0, "ess_bulk_min": 400.0}
    post["a"].discrepancy = learned(bad_share)
    return post


def block(measured: float) -> dict:
    cell = {"measured": measured, "mean": 2.0, "lo": 1.9, "hi": 2.1,
            "inside": 1.9 <= measured <= 2.1}
    return {"snapshot": 3, "mixtures": [{"name": "uniform", "N": 1e9, "D": 2e10, "h": {},
                                         "run_ids": ["v"], "objective": cell,
                                         "losses": {"a": cell}}]}


def test_ok_when_nothing_says_otherwise():
    good = posterior(0.0)
    assert fit_warnings(good) == []
    ok = {"level": "ok", "reasons": []}
    assert trust(good) == ok and trust(None) == ok
    assert trust(good, {"targets": {"a": {"with_discrepancy": {"coverage_90": 0.85}}}},
                 block(2.05)) == ok


def test_low_when_the_law_misses_the_held_out_scale():
    bad = posterior(5 / 6)  # the law's intervals held 1 of 6 held-out losses
    assert any("the law alone misses the held-out largest scale" in w for w in fit_warnings(bad))
    t = trust(bad)
    assert t["level"] == "low" and len(t["reasons"]) == 1
    assert t["reasons"][0].startswith("a: the law's 90 % intervals held only 17 % of 6")


def test_low_on_a_held_out_check_or_a_validation_run_outside():
    check = {"targets": {"a": {"with_discrepancy": {"coverage_90": 0.25}}}}
    t = trust(posterior(0.0), check)
    assert t["level"] == "low" and "25 %" in t["reasons"][0]
    t = trust(posterior(0.0), None, block(2.6))
    assert t["level"] == "low"
    assert t["reasons"] == ["validation run uniform at N=1e+09, D=2e+10: measured objective 2.6 "
                            "is outside the predicted 90 % interval [1.9, 2.1]."]
    assert with_reasons({"level": "ok", "reasons": []}, t["reasons"]) == t


def _ranked(**runs) -> dict:
    """A validation block at one (N, D): {name: [objective per run]}; every interval holds."""
    cell = {"measured": 2.0, "mean": 2.0, "lo": 1.0, "hi": 3.0, "inside": True}
    return {"snapshot": 3, "mixtures": [
        {"name": n.replace("_", "-"), "N": 1e6, "D": 3e6, "h": {}, "run_ids": list(map(str, x)),
         "objective_by_run": list(x), "objective": {**cell, "measured": sum(x) / len(x)}}
        for n, x in runs.items()]}


def test_low_when_another_mixture_beats_the_recommendation_beyond_seed_noise():
    # the quickstart's validation (two seeds each): recommended 4.635, 4.677; uniform 4.501,
    # 4.517; best-seen 4.542, 4.513. Pooled seed sd sqrt((8.57e-4 + 1.22e-4 + 4.33e-4) / 3) =
    # 0.0217; uniform is 0.147 better, 6.8 standard errors (0.0217 sqrt(1/2 + 1/2))
    t = trust(None, None, _ranked(recommended=[4.6351, 4.6765], uniform=[4.5009, 4.5165],
                                  best_seen=[4.5422, 4.5128]))
    assert t["level"] == "low" and len(t["reasons"]) == 1
    assert t["reasons"][0].startswith("validation at N=1e+06, D=3e+06: uniform measured an "
                                      "objective of 4.509, below the recommendation's 4.656 "
                                      "by 0.147 (7 standard errors")
    # within seed noise (0.01 apart with a spread of 0.02): no reason
    assert trust(None, None, _ranked(recommended=[4.52, 4.54], uniform=[4.50, 4.52])) == \
        {"level": "ok", "reasons": []}
    # one run each: no spread to judge the ranking by, so none is judged
    assert trust(None, None, _ranked(recommended=[4.9], uniform=[4.5]))["level"] == "ok"
    # the recommendation best: ok
    assert trust(None, None, _ranked(recommended=[4.40, 4.42], uniform=[4.50, 4.52]))["level"] \
        == "ok"


def test_a_failed_prediction_keeps_the_measured_values(tmp_path):
    from planner.campaign.validation import validation_block

    class Broken:
        targets, domains = ["a"], ["a", "b"]

        def predictive_draws(self, *a, **k):
            raise FloatingPointError("overflow")

    class FakeLedger:  # one completed validation run
        def runs(self, status=None):
            from types import SimpleNamespace
            return [SimpleNamespace(run_id="v1", source="validation",
                                    info={"validation": {"mixture": "uniform"}})]

        def results(self):
            return [{"run_id": "v1", "N": 1e8, "D": 1e9, "h": {"a": 0.5, "b": 0.5},
                     "losses": {"a": 2.0}, "in_fit": False}]

    (m,) = validation_block(FakeLedger(), {"a": 1.0}, Broken(), 4)["mixtures"]
    assert m["objective"] == {"measured": 2.0} and m["prediction_error"].startswith("Floating")
    assert trust(None, None, {"mixtures": [m]})["level"] == "ok"
