"""Model discrepancy: an extra log-scale error whose size grows with the distance of a design
from the observed runs in (log N, log D). Calibration lives in ``calibrate``; prediction uses
``log_sd``. With no discrepancy fitted, the extra error is zero."""
from __future__ import annotations

import numpy as np


def distance(tp, logn, logd) -> np.ndarray:
    """Euclidean distance in (log N, log D) from each design to the nearest observed run."""
    logn = np.atleast_1d(np.asarray(logn, float))
    logd = np.atleast_1d(np.asarray(logd, float))
    if tp.obs_logn is None or len(tp.obs_logn) == 0:
        return np.zeros_like(logn)
    pts = np.unique(np.stack([np.asarray(tp.obs_logn), np.asarray(tp.obs_logd)], 1), axis=0)
    dn = logn[:, None] - pts[None, :, 0]
    dd = logd[:, None] - pts[None, :, 1]
    return np.sqrt(dn ** 2 + dd ** 2).min(axis=1)


def log_sd(tp, logn, logd):
    """Standard deviation of the discrepancy on log-loss at each design: s0 + s1 * distance."""
    disc = tp.discrepancy
    if not disc:
        return 0.0
    return float(disc["s0"]) + float(disc["s1"]) * distance(tp, logn, logd)
