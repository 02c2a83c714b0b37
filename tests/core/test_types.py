"""Run statuses, the FLOP formula and run identity (planner.core.types)."""
from __future__ import annotations

import numpy as np

from planner.core.types import RunStatus, flops, run_identity


def test_flops_is_six_n_d():
    assert flops(1e6, 1e8) == 6e14  # hand-computed: 6 x 1e6 x 1e8
    np.testing.assert_allclose(flops(np.array([1.0, 2.0]), np.array([3.0, 4.0])), [18.0, 48.0])


def test_run_status_values_are_the_stored_strings():
    assert [s.value for s in RunStatus] == ["proposed", "running", "completed", "failed"]
    assert RunStatus.COMPLETED == "completed" and str(RunStatus.FAILED) == "failed"


def test_run_identity_ignores_d_and_float_noise():
    a = run_identity(3e7, {"web": 0.2, "code": 0.8})
    assert a == run_identity(3.0000000001e7, [0.2, 0.8000000000001]) == "30000000|0.2|0.8"
    assert a != run_identity(3e7, [0.3, 0.7])
