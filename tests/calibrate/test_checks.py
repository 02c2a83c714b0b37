"""Held-out check metrics on hand-computed cases."""
import numpy as np

from planner.calibrate.checks import feasibility, sharpness


def test_sharpness_against_hand_computed_widths():
    # |log errors| 0.01, 0.02, ..., 0.20 (20 rows). A 90 % interval that covers 19 of 20
    # (95 %) needs half-width >= the 0.95-quantile of |e|: numpy's linear quantile of
    # 0.01..0.20 at 0.95 is 0.01 + 0.95 * 19 * 0.01 = 0.1905; relative width e^w - e^-w.
    e = np.arange(1, 21) * 0.01 * np.where(np.arange(20) % 2, 1, -1)
    w = 0.01 + 0.95 * 19 * 0.01
    narrow = np.exp(w) - np.exp(-w)
    out = sharpness(e, coverage_90=0.95, width_90_rel=2 * narrow)
    assert abs(out["narrowest_centred_width_90"] - narrow) < 1e-12
    assert abs(out["width_ratio_90"] - 2.0) < 1e-12
    # coverage above the band is judged at 95 %, below it at 85 % (0.01 + 0.85 * 0.19)
    assert sharpness(e, 1.0, 1.0) == sharpness(e, 0.95, 1.0)
    w85 = 0.01 + 0.85 * 19 * 0.01
    assert abs(sharpness(e, 0.5, 1.0)["narrowest_centred_width_90"]
               - (np.exp(w85) - np.exp(-w85))) < 1e-12


def test_feasibility_flags_a_shared_bias():
    # every error the same size: no centred interval has 50 % and 90 % coverage in their bands
    assert feasibility(np.full(30, 0.05))["centred_bands_reachable"] is False
    # Gaussian errors: q97 / q40 of |e| is about 2.17 / 0.52 = 4.1 > 1.8, so reachable
    e = np.random.default_rng(0).normal(0, 0.03, 2000)
    assert feasibility(e)["centred_bands_reachable"] is True
