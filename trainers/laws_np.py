"""The scaling laws in NumPy, for the synthetic trainer (the planner has its own JAX versions).

Convention shared with the planner (DESIGN.md section 1), with n = N / 1e8, d = D / 1e9 and h the
weights over the domains in a fixed order:

    additive:    L = E + 1 / sum_i C_i h_i^g_i + A / n^a + B / d^b
    joint:       L = E + 1 / sum_i C_i h_i^g_i + A_h / n^a + B_h / d^b,
                 A_h = (sum_i CA_i h_i)^gA,  B_h = (sum_i CB_i h_i)^gB
    chinchilla:  L = E + A / n^a + B / d^b

h_i^g_i is 0 where h_i = 0 (not NaN), so a mixture may leave domains out.

``default_truth`` draws a plausible ground truth from a seed (documented there), and
``optimal_mixture`` finds the true optimum of a weighted sum of targets on the simplex, so
benchmarks can score a recommendation by its true excess loss.
"""
from __future__ import annotations

from typing import Any

import numpy as np

N_SCALE = 1e8
D_SCALE = 1e9

PARAM_NAMES: dict[str, tuple[str, ...]] = {
    "additive": ("E", "C", "g", "A", "a", "B", "b"),
    "joint": ("E", "C", "g", "CA", "gA", "a", "CB", "gB", "b"),
    "chinchilla": ("E", "A", "a", "B", "b"),
}
VECTOR_PARAMS = frozenset({"C", "g", "CA", "CB"})  # one value per domain


def check_params(law: str, params: dict[str, Any], domains: list[str]) -> dict[str, Any]:
    """Validated copy: scalars as floats, per-domain params as arrays in ``domains`` order.

    A per-domain parameter may be a list (in domain order) or a dict {domain: value}.
    """
    if law not in PARAM_NAMES:
        raise ValueError(f"unknown law {law!r}; choose one of {sorted(PARAM_NAMES)}")
    names = PARAM_NAMES[law]
    missing = [n for n in names if n not in params]
    extra = [n for n in params if n not in names]
    if missing or extra:
        raise ValueError(f"{law} law needs parameters {list(names)}; missing {missing}, unknown {extra}")
    out: dict[str, Any] = {}
    for n in names:
        v = params[n]
        if n in VECTOR_PARAMS:
            if isinstance(v, dict):
                if set(v) != set(domains):
                    raise ValueError(f"parameter {n} has domains {sorted(v)}, expected {sorted(domains)}")
                v = [v[d] for d in domains]
            arr = np.asarray(v, dtype=float)
            if arr.shape != (len(domains),):
                raise ValueError(f"parameter {n} needs {len(domains)} values (one per domain), got {arr.shape}")
            out[n] = arr
        else:
            out[n] = float(v)
    return out


def _mixture_term(H: np.ndarray, C: np.ndarray, g: np.ndarray) -> np.ndarray:
    powered = np.where(H > 0, np.power(np.where(H > 0, H, 1.0), g), 0.0)  # 0^g := 0, no NaN
    return 1.0 / np.sum(C * powered, axis=-1)


def law_loss(law: str, p: dict[str, Any], N, D, H) -> np.ndarray:
    """Loss for arrays N (params), D (tokens) and H [..., k]; broadcasts N, D and H[..., 0]."""
    n = np.asarray(N, dtype=float) / N_SCALE
    d = np.asarray(D, dtype=float) / D_SCALE
    if law == "chinchilla":
        return p["E"] + p["A"] / n ** p["a"] + p["B"] / d ** p["b"]
    H = np.asarray(H, dtype=float)
    mix = _mixture_term(H, p["C"], p["g"])
    if law == "additive":
        return p["E"] + mix + p["A"] / n ** p["a"] + p["B"] / d ** p["b"]
    if law == "joint":
        A_h = np.sum(p["CA"] * H, axis=-1) ** p["gA"]
        B_h = np.sum(p["CB"] * H, axis=-1) ** p["gB"]
        return p["E"] + mix + A_h / n ** p["a"] + B_h / d ** p["b"]
    raise ValueError(f"unknown law {law!r}")


def default_truth(law: str, domains: list[str], seed: int) -> dict[str, dict[str, Any]]:
    """A plausible ground truth: one target per domain, named after it, drawn from ``seed``.

    For target j (all uniform draws, independent):
      E ~ U(1.5, 2.0)                       irreducible loss
      g_i ~ U(0.2, 0.9)                     concave returns to each domain (unique optimum)
      C_j ~ U(3, 6) for the target's own domain, C_i ~ U(0.5, 2) for the others
                                            (own data helps most; 1/sum C h^g ~ 0.15-0.6)
      A, B ~ U(0.3, 0.8); a ~ U(0.25, 0.4), b ~ U(0.2, 0.35)   (Chinchilla-like exponents)
      joint: CA_i ~ U(0.3, 0.8), CB_i ~ U(0.3, 0.8), gA, gB ~ U(0.8, 1.2)
    At n = d = 1 and uniform h the loss is about 2.5-3.5. The chinchilla law keeps E, A, a, B, b.
    """
    rng = np.random.default_rng(seed)
    k = len(domains)
    truth = {}
    for j, target in enumerate(domains):
        C = rng.uniform(0.5, 2.0, k)
        C[j] = rng.uniform(3.0, 6.0)
        p: dict[str, Any] = {"E": rng.uniform(1.5, 2.0), "C": C, "g": rng.uniform(0.2, 0.9, k),
                             "A": rng.uniform(0.3, 0.8), "a": rng.uniform(0.25, 0.4),
                             "B": rng.uniform(0.3, 0.8), "b": rng.uniform(0.2, 0.35)}
        if law == "joint":
            p.update(CA=rng.uniform(0.3, 0.8, k), CB=rng.uniform(0.3, 0.8, k),
                     gA=rng.uniform(0.8, 1.2), gB=rng.uniform(0.8, 1.2))
            del p["A"], p["B"]
        elif law == "chinchilla":
            del p["C"], p["g"]
        truth[target] = check_params(law, p, domains)
    return truth


def optimal_mixture(loss_fn, k: int, steps: int = 3000, lr: float = 0.5,
                    eps: float = 1e-6) -> tuple[np.ndarray, float]:
    """Minimise loss_fn(H [m, k]) -> [m] on the simplex by exponentiated-gradient descent.

    Gradients are finite differences in h (the laws are smooth inside the simplex); each step
    moves the log-weights against the gradient projected on the simplex, normalised by its largest
    entry, with a step that decays geometrically from ``lr`` (total travel lr / (1 - 0.998), final
    step ~ lr / 400), so the end point is accurate to about 1e-3 in h and, the loss being flat at
    an interior optimum, far better in loss. The centre and a point near every vertex start a run
    and the best end point wins, which guards against the faces and local optima that g_i > 1 can
    create. Returns (h*, loss(h*)).
    """
    starts = np.vstack([np.full(k, 1.0 / k), 0.9 * np.eye(k) + 0.1 / k])
    logits = np.log(starts)
    step = lr
    for _ in range(steps):
        h = np.exp(logits - logits.max(axis=1, keepdims=True))
        h /= h.sum(axis=1, keepdims=True)
        grads = np.empty_like(h)
        for i in range(k):
            up, dn = h.copy(), h.copy()
            up[:, i] += eps
            dn[:, i] = np.maximum(dn[:, i] - eps, 0.0)
            grads[:, i] = (loss_fn(up) - loss_fn(dn)) / (up[:, i] - dn[:, i])
        grads -= (grads * h).sum(axis=1, keepdims=True)  # tangent to the simplex
        scale = np.abs(grads).max(axis=1, keepdims=True) + 1e-12
        logits = np.maximum(logits - step * grads / scale, -40.0)
        step *= 0.998
    h = np.exp(logits - logits.max(axis=1, keepdims=True))
    h /= h.sum(axis=1, keepdims=True)
    vals = loss_fn(h)
    best = int(np.argmin(vals))
    return h[best], float(vals[best])
