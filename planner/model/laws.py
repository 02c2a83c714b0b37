"""Data-mixture scaling laws as pure JAX functions, with parameter specs and a registry.

Conventions (shared with ``trainers.synthetic``, which re-implements them in numpy):
    n = N / SCALE_N,  d = D / SCALE_D,  logn = log n,  logd = log d,  h on the k-simplex.

    additive:   L = E + 1 / sum_i C_i h_i^g_i + A / n^a + B / d^b                  (5 + 2k)
    joint:      L = E + 1 / sum_i C_i h_i^g_i + A_h / n^a + B_h / d^b               (5 + 4k)
                A_h = (sum_i CA_i h_i)^gA,  B_h = (sum_i CB_i h_i)^gB
    chinchilla: L = E + A / n^a + B / d^b                                           (5, h-free)

Every parameter is positive. A law's point function takes natural-scale parameters (a dict of
arrays) and one design (scalar logn, logd; h of shape (k,)); ``Law.predict`` vmaps it over
designs and ``Law.predict_draws`` over posterior draws too. h_i = 0 contributes exactly 0 to the
mixture sum (h^g is evaluated as exp(g log h) only where h > 0), so faces of the simplex are legal.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp

from planner.core.errors import InputError

SCALE_N = 1e8


SCALE_D = 1e9


@dataclass(frozen=True)
class ParamSpec:
    """One positive parameter. ``per_domain`` parameters have shape (k,), others are scalars.

    The prior is LogNormal(log(loc), scale) on the natural value: weakly informative, centred on
    values typical of LLM losses in nats at n = d = 1 (100M parameters, 1B tokens)."""

    name: str
    per_domain: bool
    loc: float
    scale: float
    doc: str


@dataclass(frozen=True)
class Law:
    name: str
    params: tuple[ParamSpec, ...]
    point: Callable  # point(params: dict, logn, logd, h) -> loss (scalar)
    uses_mixture: bool = True
    # the size axes ("N", "D") along which the law lets the mixture effect change: its
    # parameters for that change are identified only by data at two or more levels of the axis
    mixture_axes: tuple[str, ...] = ()

    def n_params(self, k: int) -> int:
        return sum(k if p.per_domain else 1 for p in self.params)

    def shapes(self, k: int) -> dict[str, tuple[int, ...]]:
        return {p.name: ((k,) if p.per_domain else ()) for p in self.params}

    def predict(self, params: dict, logn, logd, H):
        """Loss for designs: logn, logd of shape (m,), H of shape (m, k) -> (m,)."""
        return jax.vmap(self.point, in_axes=(None, 0, 0, 0))(params, logn, logd, H)

    def predict_draws(self, params: dict, logn, logd, H):
        """params with a leading draw axis (S, ...) -> losses of shape (S, m)."""
        return jax.vmap(self.predict, in_axes=(0, None, None, None))(params, logn, logd, H)


def _mixture_term(C, g, h):
    """1 / sum_i C_i h_i^g_i computed in log space; zero weights contribute exactly 0."""
    pos = h > 0
    logh = jnp.log(jnp.where(pos, h, 1.0))
    terms = jnp.where(pos, jnp.log(C) + g * logh, -jnp.inf)
    return jnp.exp(-jax.nn.logsumexp(terms))


def _additive(p, logn, logd, h):
    return (p["E"] + _mixture_term(p["C"], p["g"], h)
            + p["A"] * jnp.exp(-p["a"] * logn) + p["B"] * jnp.exp(-p["b"] * logd))


def _joint(p, logn, logd, h):
    A_h = jnp.dot(p["CA"], h) ** p["gA"]
    B_h = jnp.dot(p["CB"], h) ** p["gB"]
    return (p["E"] + _mixture_term(p["C"], p["g"], h)
            + A_h * jnp.exp(-p["a"] * logn) + B_h * jnp.exp(-p["b"] * logd))


def _chinchilla(p, logn, logd, h):
    del h
    return p["E"] + p["A"] * jnp.exp(-p["a"] * logn) + p["B"] * jnp.exp(-p["b"] * logd)


_E = ParamSpec("E", False, 1.5, 0.6, "irreducible loss (nats)")


_C = ParamSpec("C", True, 3.0, 1.5, "mixture strength per domain: 1/sum C_i h_i^g_i")


_g = ParamSpec("g", True, 0.5, 0.6, "mixture exponent per domain (<1: diminishing returns)")


_A = ParamSpec("A", False, 0.5, 1.2, "model-size coefficient at n = 1")


_a = ParamSpec("a", False, 0.3, 0.5, "model-size exponent")


_B = ParamSpec("B", False, 0.5, 1.2, "data coefficient at d = 1")


_b = ParamSpec("b", False, 0.3, 0.5, "data exponent")


_CA = ParamSpec("CA", True, 0.5, 1.2, "per-domain model-size coefficient, A_h = (CA.h)^gA")


_gA = ParamSpec("gA", False, 1.0, 0.3, "model-size mixture exponent")


_CB = ParamSpec("CB", True, 0.5, 1.2, "per-domain data coefficient, B_h = (CB.h)^gB")


_gB = ParamSpec("gB", False, 1.0, 0.3, "data mixture exponent")


LAWS: dict[str, Law] = {
    "additive": Law("additive", (_E, _C, _g, _A, _a, _B, _b), _additive),
    "joint": Law("joint", (_E, _C, _g, _CA, _gA, _a, _CB, _gB, _b), _joint,
                 mixture_axes=("N", "D")),
    "chinchilla": Law("chinchilla", (_E, _A, _a, _B, _b), _chinchilla, uses_mixture=False),
}


def get_law(name: str) -> Law:
    try:
        return LAWS[name]
    except KeyError:
        raise InputError(f"unknown law {name!r}; choose one of {', '.join(LAWS)}") from None


def scale_inputs(N, D):
    """Raw N, D (any array-like) -> (logn, logd) in the laws' units."""
    return jnp.log(jnp.asarray(N, dtype=jnp.float64) / SCALE_N), jnp.log(
        jnp.asarray(D, dtype=jnp.float64) / SCALE_D)


def nested_joint_params(additive_params: dict) -> dict:
    """The joint-law parameters that reproduce an additive law exactly
    (gA = gB = 1, CA_i = A, CB_i = B). Works on one parameter set (scalars, C of shape (k,))
    and on draws (a leading axis: A of shape (S,), C of shape (S, k)); on the simplex
    A_h = (sum_i A h_i)^1 = A, so the predictions agree to rounding."""
    p = additive_params
    k = jnp.shape(p["C"])[-1]
    A, B = jnp.asarray(p["A"]), jnp.asarray(p["B"])
    return {"E": p["E"], "C": p["C"], "g": p["g"], "a": p["a"], "b": p["b"],
            "CA": jnp.broadcast_to(A[..., None], A.shape + (k,)), "gA": jnp.ones_like(A),
            "CB": jnp.broadcast_to(B[..., None], B.shape + (k,)), "gB": jnp.ones_like(B)}


# ---------------------------------------------------------------------------------- law: auto
# ``law: auto`` fits every mixture family below and combines them by held-out predictive
# performance (``planner.infer.auto``). The combination is represented inside SUPER_FAMILY: each
# family registers an exact embedding of its parameters into the super-family's, so a combined
# posterior is an ordinary posterior of that law whose draws come from several families. A law
# added later joins ``auto`` by registering its embedding here (if it is more general than the
# joint law, it becomes the super-family and the others embed into it). Chinchilla has no
# mixture term (it cannot choose a mixture) and no embedding: it is not part of ``auto``.
AUTO = "auto"


SUPER_FAMILY = "joint"


EMBEDDINGS: dict[str, Callable[[dict], dict]] = {
    "additive": nested_joint_params,
    "joint": lambda p: {kk: p[kk] for kk in ("E", "C", "g", "CA", "gA", "a", "CB", "gB", "b")},
}


LAW_CHOICES = (*LAWS, AUTO)  # what a config or the CLI may name


def auto_families() -> tuple[str, ...]:
    """The families ``law: auto`` fits and combines, in registry order."""
    return tuple(name for name in LAWS if name in EMBEDDINGS)


def embed(law_name: str, params: dict) -> dict:
    """``law_name``'s parameters (one set or draws) as SUPER_FAMILY parameters with identical
    predictions."""
    get_law(law_name)
    if law_name not in EMBEDDINGS:
        raise InputError(f"the {law_name} law has no embedding into the {SUPER_FAMILY} law")
    return EMBEDDINGS[law_name](params)


def n_params(law_name: str, k: int) -> int:
    """Parameters of one target's law; for ``auto`` the smallest family's (a fit is possible as
    soon as one family can be fitted; the others join when the data allow them)."""
    if law_name == AUTO:
        return min(LAWS[f].n_params(k) for f in auto_families())
    return get_law(law_name).n_params(k)
