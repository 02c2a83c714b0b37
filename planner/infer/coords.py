"""The coordinates NUTS moves in: a smooth bijection onto the model's unconstrained sites that
makes what the data identify a coordinate of its own.

Why. In the model's sites (log S, logit phi, log A, log a, log b) the posterior of a real table
is a banana, not an ellipse, and no mass matrix can whiten a banana. Over a narrow range of
model sizes (5 sizes from 3e8 to 1.2e9) or at two sizes only (RegMix: 1M and 60M) the data pin
the h-free loss F(n, d) = E + A n^-a + B d^-b at the sizes they have, and so how much it drops
between the smallest and the largest, but hardly the exponent a that shapes the curve between
and beyond them. Along a the others move on a curve: a smaller a means a larger A and a
smaller E (seen on the simulated table: log A vs log a correlation -0.99, log S vs log a 0.93;
NUTS at tree depth 10 reached a bulk ESS of 35 in 2,000 draws). With D varying, the data term
does the same with B and b.

The sampler's coordinates for that block are therefore, with n_lo, n_hi the 5th and 95th
percentiles of the observed n (d_lo, d_hi likewise):

    w_T  = log F(n_hi, d_hi)                       the level at the largest scale
    w_sn = log A (n_lo^-a - n_hi^-a)              the size drop (only if the data vary N)
    w_a  = log a
    w_sd = log B (d_lo^-b - d_hi^-b)              the data drop (only if the data vary D)
    w_b  = log b

and the inverse map is A = e^w_sn / (n_lo^-a - n_hi^-a), B likewise, E = e^w_T - A n_hi^-a -
B d_hi^-b. Where an axis does not vary (RegMix trains every run on 1B tokens) its drop is not
identified and the model's own coordinates are kept for it (log A; logit phi = log E / B d_ref^-b,
with S = E + B d_ref^-b = e^w_T - A n_hi^-a): there the prior, Gaussian in them, decides.
Points where E would not be positive are outside the support (potential +inf); the density falls
to 0 smoothly well before them (log-normal priors on S and E in the model's coordinates), so the
sampler does not meet the wall in practice.

The mixture terms get the same treatment. Domain i contributes C_i h_i^g_i = K_i e^(g_i x_i),
x_i = log(h_i / h_ref,i); the model samples (log K_i, log g_i), K_i at the geometric mean of the
domain's weights. The data pin the term where they see it best, which is at larger weights than
that mean: along g_i the model's log K_i moves on a curve (seen on the simulated table: log K vs
log g correlation -0.7 to -0.8, a bulk ESS of 76 in 2,000 draws for the worst g_i). The sampler
therefore uses the level at a pivot x*_i instead,

    w_Ki = log K_i + x*_i g_i,      x*_i = -Cov(log K_i, g_i) / Var(g_i)  at the mode

(the Hessian's inverse there), which makes w_Ki and log g_i locally uncorrelated; on the
simulated table x* was 2-3 and the conditional sd of w_Ki became constant along log g_i. This
shear has a unit Jacobian.

The potential in these coordinates is U(z(w)) - log |det dz/dw|; the Jacobian's log determinant
is computed by automatic differentiation of the 5-dimensional h-free block (the shear adds 0).
Every other site (sigma, tau, and the other sites of laws without scalar E, A, a, B, b) keeps its
model coordinate. The data-dependent numbers (reference sizes, pivots) are arguments of the
compiled sampler (``refs``), not part of its structure, so refits reuse the compiled code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from planner.model.laws import Law
from planner.model.numpyro_model import ModelData, reparametrised

SLOPE_SPREAD = math.log(2.0)  # an axis "varies" when its values span at least a factor of 2

BLOCK = ("log_S", "logit_phi", "log_A", "log_a", "log_b")


@dataclass(frozen=True)
class Coords:
    """Where the transformed sites sit in the flat vector (NumPyro's sorted-site order): the
    h-free block (``idx``, None when the law has none or neither axis varies) and which slopes
    are coordinates, and the per-domain log K and log g sites (``k_idx``, ``g_idx``, None when
    the law has no mixture term)."""

    idx: tuple[int, ...] | None
    size_slope: bool
    data_slope: bool
    k_idx: tuple[int, ...] | None = None
    g_idx: tuple[int, ...] | None = None

    @property
    def block(self) -> bool:
        return self.idx is not None and (self.size_slope or self.data_slope)

    @property
    def identity(self) -> bool:
        return not self.block and self.k_idx is None

    def describe(self) -> str:
        parts = []
        if self.block:
            drops = (["size"] if self.size_slope else []) + (["data"] if self.data_slope else [])
            parts.append("level and " + " and ".join(drops) + " drop of the h-free terms")
        if self.k_idx is not None:
            parts.append("mixture levels at pivots")
        return "; ".join(parts) if parts else "model coordinates"


N_REFS = 5  # refs[:5] = (log n_lo, log n_hi, log d_lo, log d_hi, log d_ref); refs[5:] = pivots


def make_coords(law: Law, data: ModelData, offsets: dict[str, np.ndarray],
                hessian: np.ndarray, x_mode: np.ndarray) -> tuple[Coords, np.ndarray]:
    """The coordinates for ``law`` on ``data`` and their data-dependent numbers ``refs``.
    ``offsets``: ``mode.site_offsets`` of the flat model vector; ``hessian``, ``x_mode``: the
    potential's Hessian at the mode and the mode (model coordinates), for the pivots."""
    names = {p.name for p in law.params if not p.per_domain}
    r = _ref_points(data)
    idx, size, dat = None, False, False
    if reparametrised(law) and {"A", "a"} <= names:
        idx = tuple(int(offsets[n][0]) for n in BLOCK)
        size, dat = bool(r[1] - r[0] >= SLOPE_SPREAD), bool(r[3] - r[2] >= SLOPE_SPREAD)
    k_idx = g_idx = None
    pivots = np.zeros(0)
    if "log_K" in offsets and "log_g" in offsets:
        k_idx = tuple(int(i) for i in offsets["log_K"])
        g_idx = tuple(int(i) for i in offsets["log_g"])
        pivots = _pivots(hessian, x_mode, np.asarray(k_idx), np.asarray(g_idx))
    return Coords(idx, size, dat, k_idx, g_idx), np.concatenate([r, pivots])


MAX_PIVOT = 10.0  # |x*| at most 10 e-folds of weight from the reference (a sanity bound)


def _pivots(hessian, x, k_idx, g_idx) -> np.ndarray:
    """x*_i = -Cov(log K_i, g_i) / Var(g_i) from the inverse Hessian at the mode (delta
    method: Cov(log K, g) = g Cov(log K, log g), Var(g) = g^2 Var(log g)); 0 where the Hessian
    is not usable."""
    if not np.all(np.isfinite(hessian)):
        return np.zeros(len(k_idx))
    w, V = np.linalg.eigh(0.5 * (hessian + hessian.T))
    if w.max() <= 0:
        return np.zeros(len(k_idx))
    cov = (V / np.clip(np.abs(w), w.max() * 1e-10, None)) @ V.T
    g = np.exp(x[g_idx])
    piv = -cov[k_idx, g_idx] / (g * cov[g_idx, g_idx])
    return np.clip(np.where(np.isfinite(piv), piv, 0.0), -MAX_PIVOT, MAX_PIVOT)


def _ref_points(data: ModelData) -> np.ndarray:
    """(log n_lo, log n_hi, log d_lo, log d_hi, log d_ref): the 5th and 95th percentiles of the
    observed log n and log d, and the model's reference log d (where S is defined)."""
    ln, ld = np.asarray(data.logn)[data.mask], np.asarray(data.logd)[data.mask]
    if not len(ln):
        return np.zeros(N_REFS)
    q = lambda x: np.percentile(x, [5, 95])
    return np.concatenate([q(ln), q(ld), [data.logd_ref]])


def _log_drop(lo, hi, e):
    """log(x_lo^-e - x_hi^-e) for log x_lo = lo < hi = log x_hi and e > 0, without cancellation."""
    return -e * lo + jnp.log(-jnp.expm1(-e * (hi - lo)))


def _block_to_model(c: Coords, v, refs):
    """Sampler block (w_T, w_sn | log A, log a, w_sd | logit phi, log b) -> model block in
    BLOCK order. ``refs`` = (log n_lo, log n_hi, log d_lo, log d_hi, log d_ref)."""
    nlo, nhi, dlo, dhi, dref = refs[0], refs[1], refs[2], refs[3], refs[4]
    w_level, w_size, la, w_data, lb = v[0], v[1], v[2], v[3], v[4]
    a, b = jnp.exp(la), jnp.exp(lb)
    lA = w_size - _log_drop(nlo, nhi, a) if c.size_slope else w_size
    rest = jnp.exp(w_level) - jnp.exp(lA - a * nhi)          # E + B d_hi^-b
    if c.data_slope:
        lB = w_data - _log_drop(dlo, dhi, b)
        E = rest - jnp.exp(lB - b * dhi)
        lE = jnp.log(jnp.where(E > 0, E, jnp.nan))
        lBr = lB - b * dref                                   # log B d_ref^-b
        lS = jnp.logaddexp(lE, lBr)
        lphi = lE - lBr
    else:  # d = d_ref everywhere: rest = S
        lS = jnp.log(jnp.where(rest > 0, rest, jnp.nan))
        lphi = w_data
    return jnp.stack([lS, lphi, lA, la, lb])


def _block_from_model(c: Coords, u, refs):
    nlo, nhi, dlo, dhi, dref = refs[0], refs[1], refs[2], refs[3], refs[4]
    lS, lphi, lA, la, lb = u[0], u[1], u[2], u[3], u[4]
    a, b = jnp.exp(la), jnp.exp(lb)
    lE = lS + jax.nn.log_sigmoid(lphi)
    lB = lS + jax.nn.log_sigmoid(-lphi) + b * dref            # B = (1 - phi) S d_ref^b
    if c.data_slope:
        level = jnp.logaddexp(jnp.logaddexp(lE, lA - a * nhi), lB - b * dhi)
        w_data = lB + _log_drop(dlo, dhi, b)
    else:
        level = jnp.logaddexp(lS, lA - a * nhi)
        w_data = lphi
    w_size = lA + _log_drop(nlo, nhi, a) if c.size_slope else lA
    return jnp.stack([level, w_size, la, w_data, lb])


# the block is stored in the flat vector at idx in BLOCK order; the sampler's block uses the
# same positions (w_T at log_S's place, w_sn at log_A's, w_sd at logit_phi's)
_ORDER = (0, 2, 3, 1, 4)  # sampler order (level, size, a, data, b) as positions in BLOCK


def to_model(c: Coords, w, refs):
    """Flat sampler vector(s) -> flat model vector(s) (last axis)."""
    z = w
    if c.block:
        idx = jnp.asarray(c.idx)
        v = w[..., idx[jnp.asarray(_ORDER)]]
        u = jnp.vectorize(lambda x: _block_to_model(c, x, refs), signature="(5)->(5)")(v)
        z = z.at[..., idx].set(u)
    if c.k_idx is not None:
        ki, gi = jnp.asarray(c.k_idx), jnp.asarray(c.g_idx)
        z = z.at[..., ki].set(w[..., ki] - refs[N_REFS:] * jnp.exp(w[..., gi]))
    return z


def from_model(c: Coords, z, refs):
    """Flat model vector(s) -> flat sampler vector(s) (last axis)."""
    w = z
    if c.block:
        idx = jnp.asarray(c.idx)
        v = jnp.vectorize(lambda x: _block_from_model(c, x, refs), signature="(5)->(5)")(
            z[..., idx])
        w = w.at[..., idx[jnp.asarray(_ORDER)]].set(v)
    if c.k_idx is not None:
        ki, gi = jnp.asarray(c.k_idx), jnp.asarray(c.g_idx)
        w = w.at[..., ki].set(z[..., ki] + refs[N_REFS:] * jnp.exp(z[..., gi]))
    return w


def log_det_jacobian(c: Coords, w, refs):
    """log |det dz/dw| at one flat sampler vector (the shear of the mixture levels adds 0)."""
    if not c.block:
        return jnp.zeros((), w.dtype)
    idx = jnp.asarray(c.idx)
    v = w[idx[jnp.asarray(_ORDER)]]
    J = jax.jacfwd(lambda x: _block_to_model(c, x, refs))(v)
    return jnp.linalg.slogdet(J)[1]
