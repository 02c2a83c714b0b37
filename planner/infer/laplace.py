"""The ``laplace`` fit: Gaussians at posterior modes, with the noise scale integrated out.

A single Gaussian at the joint mode of (law parameters, log sigma) is badly overconfident when
the runs are few for the law's parameters: the mode sits where the law nearly interpolates the
runs and sigma collapses. Seen on 35 runs of a k = 7 joint law (33 parameters): sigma 1.1e-4
at the joint mode against 0.005 true, every parameter's spread about 1 %, and a posterior
expected excess loss 250 times below the true excess of its own choice. As INLA does for its
hyperparameters, log sigma is therefore integrated on a grid instead: at each grid value s the
conditional mode r(s) of the other coordinates and the Hessian H(s) there give a Gaussian, and

    log p(s | y) ~ -U(r(s), s) - 1/2 log det H(s)         (U: the potential, -log density)

where the determinant charges sigma for the degrees of freedom the fit spends. The grid is
centred on the maximum of that marginal (a bounded 1-D search) and spaced by its curvature.
Draws come from the mixture of the cells' Gaussians (log sigma uniform within its cell) and are
importance-resampled against the exact posterior. With few runs the posterior is far from
Gaussian and the importance weights collapse, so every draw is then moved by random-walk
Metropolis steps (exact-posterior invariant) until the cloud stops growing. The diagnostics
report the sigma of the joint mode and of the marginal, the grid's size, how the draws were
made and the moves' count and acceptance.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize
from scipy.stats import chi2

from planner.core.errors import FitError
from planner.infer.convergence import diagnostic_sites, independent_draw_diagnostics
from planner.infer.mode import (
    MOVE_CHUNK,
    Mode,
    minimize_potential,
    newton,
    posterior_mode,
    site_offsets,
)
from planner.infer.progress import Reporter
from planner.model.laws import Law
from planner.model.numpyro_model import ModelData, mixture_model

log = logging.getLogger("planner.inference")


SIGMA_DROP = 9.0       # the grid ends where log p(s | y) is this far below its maximum


MAX_CELLS = 41         # grid points at most (the step widens to fit the range into them)


SEARCH_SPAN = 6.0      # the marginal's maximum is searched within s0 - 2 .. s0 + SEARCH_SPAN


COND_MAXITER = 1000    # L-BFGS iterations per conditional mode where Newton cannot start


MOVE_STEPS = 1000      # random-walk Metropolis steps per draw at most (see _rejuvenate)


MOVE_SETTLED = 0.02    # the cloud has settled when its mean log sd grew less in 2 chunks


@dataclass
class Cell:
    """The Gaussian of the other coordinates at one value of s = log sigma."""

    s: float
    r: np.ndarray           # conditional mode of the other coordinates
    value: float            # potential there
    w: np.ndarray           # eigenvalues of the conditional Hessian (magnitudes, floored)
    V: np.ndarray           # its eigenvectors
    log_marginal: float     # -value - 1/2 log det
    wq: np.ndarray | None = None  # the proposal's curvatures along V (secants; see _secants)


class SigmaMarginal:
    """Conditional modes along s = log sigma (coordinate ``j`` of the flat vector), cached and
    warm-started from the nearest s already solved."""

    def __init__(self, mode: Mode, j: int):
        self.mode, self.j = mode, j
        self.cells: dict[float, Cell | None] = {}

    def at(self, s: float) -> Cell | None:
        s = float(s)
        if s in self.cells:
            return self.cells[s]
        done = [c for c in self.cells.values() if c is not None]
        r0 = (min(done, key=lambda c: abs(c.s - s)).r if done
              else np.delete(self.mode.x, self.j))
        j, mode = self.j, self.mode

        def vg(r):
            v, g = mode.value_and_grad(jnp.asarray(np.insert(r, j, s)))
            return float(v), np.delete(np.asarray(g), j)

        def hess(r):
            return np.delete(np.delete(mode.hessian_at(np.insert(r, j, s)), j, 0), j, 1)

        r, v, H = newton(vg, hess, r0)
        if H is None:  # Newton could not move (a non-finite start): L-BFGS, then its Hessian
            r, v, _ = minimize_potential(vg, r0, COND_MAXITER)
            H = hess(r) if np.isfinite(v) else None
        cell = None
        if H is not None and np.isfinite(v):
            w, V = np.linalg.eigh(0.5 * (H + H.T))
            if np.all(np.isfinite(w)) and np.abs(w).max() > 0:
                # an indefinite conditional Hessian (a ridge): its curvature's magnitude, floored
                w = np.maximum(np.abs(w), 1e-6 * np.abs(w).max())
                cell = Cell(s, r, float(v), w, V, float(-v - 0.5 * np.sum(np.log(w))))
                cell.wq = self._secants(cell)
        self.cells[s] = cell
        return cell

    def _secants(self, c: Cell) -> np.ndarray:
        """Curvatures for the cell's proposal Gaussian along the Hessian's eigenvectors, from
        the potential one standard deviation out on both sides (the larger secant, twice, the
        second at the corrected scale). With few runs the potential rises much faster than its
        Hessian says along weakly identified directions (a Gaussian with the Hessian put
        proposals ~290 nats above the mode where ~16 was due), and importance weights
        collapse; secants match the Gaussian to the posterior at the scale the draws use.
        Widening is capped at 4x the variance, so a flat secant cannot send draws far out."""
        wq = c.w.copy()
        for _ in range(2):
            d = c.V / np.sqrt(wq)                            # columns: one sd along each v_i
            pts = np.concatenate([c.r[None, :] + d.T, c.r[None, :] - d.T])
            U = self.mode.potential_batch(np.insert(pts, self.j, c.s, axis=1))
            rise = np.maximum(U[:len(wq)], U[len(wq):]) - c.value   # 0.5 for a quadratic
            ok = np.isfinite(rise) & (rise > 0)
            wq = np.where(ok, wq * np.maximum(2 * rise, 0.25), wq * 4.0)
            wq = np.maximum(wq, 0.25 * c.w)
        return wq

    def log_marginal(self, s: float) -> float:
        c = self.at(s)
        return c.log_marginal if c is not None else -np.inf

    def top(self) -> Cell:
        """The cell at the maximum of log p(s | y) (a bounded 1-D search from the joint mode's
        s; FitError if no cell there is finite)."""
        s0 = float(self.mode.x[self.j])
        res = optimize.minimize_scalar(lambda s: -self.log_marginal(s),
                                       bounds=(s0 - 2.0, s0 + SEARCH_SPAN), method="bounded",
                                       options={"xatol": 0.01})
        c = self.at(float(res.x))
        if c is None:
            raise FitError("no finite conditional posterior mode along log sigma")
        return c

    def grid(self) -> tuple[list[Cell], float]:
        """Cells on an even grid of s covering the marginal down to SIGMA_DROP below its
        maximum, and the grid step."""
        s_max = self.top().s
        top = self.log_marginal(s_max)
        # the marginal's curvature at its maximum gives its spread, hence the step
        h = 0.05
        curv = (2 * top - self.log_marginal(s_max + h) - self.log_marginal(s_max - h)) / h ** 2
        sd = 1.0 / np.sqrt(curv) if curv > 0 else 1.0
        step = float(np.clip(sd / 2, 0.005, 0.5))
        while True:  # outward from the maximum until both ends are SIGMA_DROP below it; if
            # MAX_CELLS runs out first (a skewed or wide marginal), double the step
            cells = [self.at(s_max)]
            for direction in (1, -1):
                i = 1
                while len(cells) < MAX_CELLS:
                    c = self.at(s_max + direction * i * step)
                    if c is None:
                        break
                    cells.append(c)
                    if c.log_marginal < top - SIGMA_DROP:
                        break
                    i += 1
            full = all(c.log_marginal < top - SIGMA_DROP for c in (
                max(cells, key=lambda c: c.s), min(cells, key=lambda c: c.s)))
            if full or len(cells) < MAX_CELLS or step >= 0.5:
                break
            step *= 2  # too many cells at this step: cover the range more coarsely
        cells.sort(key=lambda c: c.s)
        return cells, step


def fit_laplace(law: Law, data: ModelData, seed: int, init: dict,
                num_samples: int, reporter: Reporter | None = None,
                target: str = "") -> tuple[dict, dict]:
    """(draws of every sample/deterministic site, diagnostics). ``init``: constrained starting
    values for the mode search (the Huber fit's). Raises FitError when no finite mode, no
    finite Hessian or no plausible draw is found. Phases (mode search, noise-scale grid,
    Metropolis moves) are reported to ``reporter``."""
    from numpyro.infer.util import constrain_fn

    reporter = reporter or Reporter()
    key = jax.random.PRNGKey(seed)
    k_init, k_draw, k_move = jax.random.split(key, 3)
    with reporter.phase(target, "mode search") as ph:
        mode = posterior_mode(law, data, init, k_init, 3000)
        ph.summary = f"potential {mode.value:.2f}, converged {mode.converged}"
    if not np.isfinite(mode.value):
        raise FitError(f"{law.name}: no finite posterior mode found")
    if not np.all(np.isfinite(mode.hessian())):
        raise FitError(f"{law.name}: the Hessian at the posterior mode is not finite; "
                       "use method='nuts'")
    min_eig = float(np.linalg.eigvalsh(0.5 * (mode.hessian() + mode.hessian().T)).min())
    j = int(site_offsets(mode.unravel(jnp.asarray(mode.x)))["sigma"][0])
    marginal = SigmaMarginal(mode, j)
    with reporter.phase(target, "noise-scale grid") as ph:
        cells, step = marginal.grid()
        lm = np.array([c.log_marginal for c in cells])
        pc = np.exp(lm - lm.max())
        pc /= pc.sum()
        try:
            prop, idx, ess, scheme = _draw(marginal, cells, step, pc, k_draw, num_samples)
        except FitError as e:
            raise FitError(f"{law.name}: {e}") from None
        ph.summary = f"{len(cells)} cells, importance ESS {ess:.0f}"
    with reporter.phase(target, "Metropolis moves", MOVE_STEPS, unit="steps at most",
                        chains=f"{num_samples} draws") as ph:
        flat, accept, steps = _rejuvenate(mode, prop[idx], k_move, on_chunk=ph.update)
        ph.summary = f"{steps} steps per draw, acceptance {accept:.2f}"
    scheme += f"; {steps} Metropolis moves per draw (acceptance {accept:.2f})"
    args, kwargs, unravel = mode.args, mode.kwargs, mode.unravel

    def constrained(f):
        return constrain_fn(mixture_model, args, kwargs, unravel(f), return_deterministic=True)

    draws = {k: np.asarray(v) for k, v in jax.vmap(constrained)(jnp.asarray(flat)).items()}
    # a tail draw can overflow a derived parameter (C = exp(log K - g log h_ref) with a large g)
    # where the density itself is finite: drop such draws while they are rare (< 10 %)
    ok = np.ones(len(flat), bool)
    for v in draws.values():
        ok &= np.isfinite(v.reshape(len(flat), -1)).all(axis=1)
    n_dropped = int((~ok).sum())
    if n_dropped > 0.1 * len(flat):
        bad = sorted(k for k, v in draws.items() if not np.isfinite(v).all())
        raise FitError(f"{law.name}: {n_dropped} of {len(flat)} Laplace draws have non-finite "
                       f"{', '.join(bad)}; use method='nuts'")
    if n_dropped:
        draws = {k: v[ok] for k, v in draws.items()}
        scheme += f"; {n_dropped} draws with an overflowing parameter dropped"
    if ess < 0.25 * num_samples:
        log.info("%s: Laplace importance weights have ESS %.0f of %d proposals: the posterior "
                 "is far from Gaussian (draws: %s); prefer method='nuts'", law.name, ess,
                 len(prop), scheme)
    diag = {"method": "laplace", "mode_converged": mode.converged, "importance_ess": ess,
            "draw_scheme": scheme, "min_hessian_eigenvalue": min_eig,
            "num_samples": num_samples,
            "sigma_joint_mode": float(np.exp(mode.x[j])),
            "sigma_marginal_mode": float(np.exp(cells[int(np.argmax(lm))].s)),
            "sigma_grid_cells": len(cells), "sigma_grid_step": step}
    diag.update(independent_draw_diagnostics(draws, diagnostic_sites(law, draws), seed))
    return draws, diag


def _draw(marginal: SigmaMarginal, cells: list[Cell], step: float, pc: np.ndarray, key,
          num_samples: int):
    """Proposals from the cells' mixture, and the indices of ``num_samples`` draws among them:
    (proposals, indices, importance ESS, scheme).

    Sampling-importance-resampling weights each proposal by the true posterior density over the
    proposal's, so directions a Hessian sees as flat (weakly identified parameters) cannot
    produce absurd draws. With few runs the posterior is far from Gaussian (curved ridges: at
    full scale the proposals sat ~290 nats above their mode where a Gaussian puts them ~16), so
    the Gaussians are shrunk (1, 1/2, 1/4, 1/10, 1/20) until the weights' ESS reaches a quarter
    of ``num_samples``; if none does, the shrink keeping the most proposals whose density a
    Gaussian of this dimension would reach 99.9 % of the time is used (truncated Gaussian)."""
    mode, j = marginal.mode, marginal.j
    n_prop = 16 * num_samples
    k_cell, k_jit, k_eps, k_res = jax.random.split(key, 4)
    which = np.asarray(jax.random.choice(k_cell, len(cells), (n_prop,), p=jnp.asarray(pc)))
    jitter = np.asarray(jax.random.uniform(k_jit, (n_prop,), minval=-step / 2, maxval=step / 2))
    eps = np.asarray(jax.random.normal(k_eps, (n_prop, len(mode.x) - 1)))
    # proposal density (up to a constant): cell probability x the cell's Gaussian, whose
    # normalisation differs between cells by 1/2 log det H (the shrink's is common to all)
    half_logdet = np.array([0.5 * np.sum(np.log(c.wq)) for c in cells])
    logq = np.log(pc[which]) + half_logdet[which] - 0.5 * np.sum(eps ** 2, axis=1)
    ref = np.array([c.value for c in cells])[which]
    bound = 0.5 * chi2.ppf(0.999, len(mode.x))
    best = None  # (kept, proposals, kept indices, ess, shrink) of the best truncation
    for shrink in (1.0, 0.5, 0.25, 0.1, 0.05):
        prop = np.empty((n_prop, len(mode.x)))
        for g, c in enumerate(cells):
            rows = np.flatnonzero(which == g)
            if len(rows):
                r = c.r[None, :] + shrink * (eps[rows] @ (c.V / np.sqrt(c.wq)).T)
                prop[rows] = np.insert(r, j, c.s + jitter[rows], axis=1)
        U = mode.potential_batch(prop)
        logw = np.where(np.isfinite(U), -U - logq, -np.inf)
        if not np.isfinite(logw).any():
            continue
        wts = np.exp(logw - logw.max())
        wts /= wts.sum()
        ess = float(1.0 / np.sum(wts ** 2))
        note = "" if shrink == 1.0 else f", Gaussians scaled by {shrink}"
        if ess >= 0.25 * num_samples:
            idx = np.asarray(jax.random.choice(k_res, n_prop, (num_samples,), p=jnp.asarray(wts)))
            return prop, idx, ess, "importance-resampled" + note
        keep = np.flatnonzero(np.isfinite(U) & (U - ref <= bound))
        if len(keep) and (best is None or len(keep) > best[0]):
            best = (len(keep), prop, keep, ess, note)
    if best is None:
        raise FitError("no Laplace draw has a plausible posterior density")
    n_keep, prop, keep, ess, note = best
    idx = keep[:num_samples] if n_keep >= num_samples else \
        keep[np.asarray(jax.random.choice(k_res, n_keep, (num_samples,)))]
    return prop, idx, ess, f"truncated Gaussian ({n_keep} of {n_prop} proposals kept{note})"


def _rejuvenate(mode: Mode, X: np.ndarray, key, steps: int = MOVE_STEPS, on_chunk=None):
    """Random-walk Metropolis moves of every draw: (moved draws, acceptance rate of the final
    phase, steps taken).

    Each move leaves the exact posterior invariant, so the draws can only get closer to it:
    resampled draws are duplicated (an ESS of 30 gives ~30 distinct points), and a truncated or
    shrunk Gaussian is narrower than a curved posterior; the moves spread both along the
    posterior's own shape. Adaptive phase: the proposal is the draws' covariance, re-estimated
    every MOVE_CHUNK steps, its scale tuned towards 25 % acceptance. It ends once the cloud has
    stopped growing (the mean over coordinates of the change in log sd over the last 2 chunks
    below MOVE_SETTLED: its noise with 300 draws is ~1 %) or at ``steps`` - 2 chunks; then 2
    chunks with everything fixed. A well-started cloud settles in ~4 chunks; the cloud of a
    20-parameter fit with few runs kept growing for ~1000 steps. Compiled, a chunk per call."""
    X = np.array(X, float)
    d = X.shape[1]
    U = mode.potential_batch(X)
    U = np.where(np.isfinite(U), U, np.inf)
    log_scale = float(np.log(2.38 / np.sqrt(d)))
    max_chunks = max(4, -(-steps // MOVE_CHUNK))
    keys = jax.random.split(key, max_chunks)
    log_sd = [np.log(X.std(axis=0) + 1e-300)]
    c = 0
    while c < max_chunks - 2:
        w, V = np.linalg.eigh(np.cov(X.T) + 1e-12 * np.eye(d))
        L = V * np.sqrt(np.maximum(w, 1e-12 * max(w.max(), 1e-300)))
        X, U, log_scale, _ = mode.moves(X, U, L, log_scale, keys[c], True)
        c += 1
        if on_chunk is not None:
            on_chunk(c * MOVE_CHUNK)
        log_sd.append(np.log(X.std(axis=0) + 1e-300))
        if c >= 4 and float(np.mean(log_sd[-1] - log_sd[-3])) < MOVE_SETTLED:
            break
    rates = []
    for k in keys[c:c + 2]:
        X, U, log_scale, rate = mode.moves(X, U, L, log_scale, k, False)
        rates.append(rate)
    return X, float(np.mean(rates)), (c + 2) * MOVE_CHUNK
