"""The NumPyro model: priors on a law's parameters, a heavy-tailed likelihood on log-loss, a
sampled noise scale and (when runs contribute several checkpoints) a run-level effect.

Priors (all in log space, weakly informative; see ``laws.ParamSpec``): each positive parameter
theta has log(theta) ~ Normal(log(loc), scale). With n = N/1e8 and d = D/1e9 the locations put a
law's loss at a 100M-parameter, 1B-token run near 1.5 + 0.3 + 0.5 + 0.5 ~ 2.8 nats, and the
scales let each term move by a factor of 3-10 either way; exponents a, b centre on 0.3
(Chinchilla: 0.34, 0.28) with a factor-of-2.7 one-sigma range.

Likelihood, per run r with m_r observations y_r (its checkpoints) and law predictions mu_r:

    log y_r ~ MultivariateStudentT(nu = 4, log mu_r, sigma^2 I + tau^2 1 1^T)
    sigma ~ LogNormal(log 0.01, 1)    (run-to-run noise of ~0.3-1 % of the loss; prior wide)
    tau   ~ HalfNormal(0.01)          (run-level effect shared by a run's checkpoints)

This is exactly the run's Gaussian level tau * u_r (u_r ~ Normal(0, 1)) plus checkpoint noise
sigma * eps, both scaled by one heavy-tail factor per run (1 / sqrt(w_r), w_r ~ Gamma(2, 2)),
with u_r and w_r integrated out: no per-run sites are sampled, so hundreds of runs add no
dimensions (and no funnel between tau and the run levels). nu = 4 keeps the tails heavy enough
that one bad run cannot drag the fit, while still identifying sigma. Its density is closed form
per run (``RunStudentT``). A run with one observation is a univariate Student-t(4) with scale
sqrt(sigma^2 + tau^2); without a run effect (every run one observation) tau is not sampled and
each observation is Student-t(4) with scale sigma. Observations are padded to fixed bucket
sizes and masked, so the model's shapes (and compiled code) only change when the data crosses a
bucket boundary.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import gammaln
from numpyro.distributions import constraints

from planner.model.laws import Law

STUDENT_NU = 4.0


SIGMA_LOC, SIGMA_SCALE = 0.01, 1.0


TAU_SCALE = 0.01


BUCKETS = (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


def bucket(n: int) -> int:
    for b in BUCKETS:
        if n <= b:
            return b
    return int(2 ** math.ceil(math.log2(n)))


@dataclass(frozen=True)
class ModelData:
    """Padded, masked model inputs (numpy, float64). ``n_groups`` = 0 disables the run effect."""

    logn: np.ndarray
    logd: np.ndarray
    H: np.ndarray
    y: np.ndarray
    mask: np.ndarray
    group: np.ndarray
    n_groups: int
    n_obs: int
    logd_ref: float = 0.0
    log_href: np.ndarray | None = None


def pad_observations(obs, run_effect: bool | None = None) -> ModelData:
    """Pad an ``runs.Observations`` to a bucket size. The run effect is on when some run has
    several observations (with one observation per run it is not identified apart from sigma)."""
    m = len(obs)
    size = bucket(m)
    k = obs.H.shape[1]
    if run_effect is None:
        run_effect = obs.n_groups < m
    pad = size - m
    H = np.concatenate([obs.H, np.full((pad, k), 1.0 / k)])
    group = np.concatenate([obs.group, np.zeros(pad, np.int32)])
    return ModelData(
        logn=np.concatenate([obs.logn, np.zeros(pad)]),
        logd=np.concatenate([obs.logd, np.zeros(pad)]),
        H=H,
        y=np.concatenate([obs.y, np.zeros(pad)]),
        mask=np.concatenate([np.ones(m, bool), np.zeros(pad, bool)]),
        group=group,
        n_groups=bucket(obs.n_groups) if run_effect else 0,
        n_obs=m,
        logd_ref=float(np.mean(obs.logd)),
        log_href=reference_log_weights(obs.H),
    )


def reference_log_weights(H: np.ndarray) -> np.ndarray:
    """Per domain, the mean log of its non-zero weights (log(1/k) for an unused domain)."""
    k = H.shape[1]
    out = np.full(k, -math.log(k))
    for i in range(k):
        nz = H[:, i][H[:, i] > 0]
        if len(nz):
            out[i] = float(np.mean(np.log(nz)))
    return out


def reparametrised(law: Law) -> bool:
    """Laws with scalar E and B get the offset reparametrisation (see ``sample_law_params``)."""
    names = {p.name for p in law.params}
    return {"E", "B", "b"} <= names


def law_sites(law: Law) -> tuple[str, ...]:
    """Names of the sampled (unconstrained) sites that carry the law's parameters."""
    names = [f"log_{p.name}" for p in law.params]
    if reparametrised(law):
        names = [n for n in names if n not in ("log_E", "log_B")] + ["log_S", "logit_phi"]
    return tuple("log_K" if n == "log_C" else n for n in names)


def sample_law_params(law: Law, k: int, logd_ref: float = 0.0, log_href=None) -> dict:
    """Sample sites ``log_<name>`` and record the natural values as deterministic sites.

    E and B are not sampled directly: S = E + B d_ref^-b (the h- and N-free part of the loss at
    the observed data size d_ref) is well identified, while its split phi = E / S is identified
    only when D varies (RegMix trains every run on 1B tokens; then the split, and so the D term
    at the target, comes from the priors on phi and b). Sampling (log S, logit phi) turns the
    exact E-B ridge of constant-D data into an axis-aligned direction NUTS can cross.
    Priors: log S ~ Normal(log 2, 0.6) (E + B at the prior locations), logit phi ~ Normal(0, 1.5)
    (E's share of S, 5-95 % range ~ 0.08-0.92).

    C is not sampled directly either: K_i = C_i h_ref,i^g_i, domain i's mixture strength at its
    typical weight in the data (h_ref = geometric mean of its non-zero weights), is what the
    data pin down; log C_i and g_i trade off along the curve log C_i + g_i log h_ref,i = const.
    Prior: log K_i ~ Normal(log(3) + 0.5 log h_ref,i, 1.5), i.e. the C prior at g = 0.5."""
    params = {}
    if reparametrised(law):
        log_s = numpyro.sample("log_S", dist.Normal(math.log(2.0), 0.6))
        logit_phi = numpyro.sample("logit_phi", dist.Normal(0.0, 1.5))
    for spec in law.params:
        if reparametrised(law) and spec.name in ("E", "B"):
            continue
        base = dist.Normal(math.log(spec.loc), spec.scale)
        if spec.name == "C":
            continue
        if spec.per_domain:
            z = numpyro.sample(f"log_{spec.name}", base.expand((k,)).to_event(1))
        else:
            z = numpyro.sample(f"log_{spec.name}", base)
        params[spec.name] = numpyro.deterministic(spec.name, jnp.exp(z))
    if "C" in {p.name for p in law.params}:
        lh = jnp.full((k,), -math.log(k)) if log_href is None else log_href
        spec = next(p for p in law.params if p.name == "C")
        log_k = numpyro.sample("log_K", dist.Normal(math.log(spec.loc) + 0.5 * lh,
                                                    spec.scale).to_event(1))
        params["C"] = numpyro.deterministic("C", jnp.exp(log_k - params["g"] * lh))
    if reparametrised(law):
        S, phi = jnp.exp(log_s), jax.nn.sigmoid(logit_phi)
        params["E"] = numpyro.deterministic("E", phi * S)
        params["B"] = numpyro.deterministic("B", (1 - phi) * S * jnp.exp(params["b"] * logd_ref))
    return params


def reparam_values(law: Law, params: dict, logd_ref: float, log_href=None) -> dict:
    """Unconstrained site values for natural parameters (inverse of ``sample_law_params``)."""
    vals = {f"log_{k}": jnp.log(jnp.asarray(v)) for k, v in params.items()}
    if "log_C" in vals:
        k = jnp.shape(vals["log_C"])[-1]
        lh = jnp.full((k,), -math.log(k)) if log_href is None else jnp.asarray(log_href)
        vals["log_K"] = vals.pop("log_C") + jnp.asarray(params["g"]) * lh
    if reparametrised(law):
        E, B, b = (jnp.asarray(params[n]) for n in ("E", "B", "b"))
        S = E + B * jnp.exp(-b * logd_ref)
        vals["log_S"] = jnp.log(S)
        vals["logit_phi"] = jnp.log(E) - jnp.log(S - E)
        vals.pop("log_E"), vals.pop("log_B")
    return vals


class RunStudentT(dist.Distribution):
    """Padded observations grouped into runs; within run r (rows with ``group == r`` and
    ``mask``; m_r of them) a multivariate Student-t with ``nu`` degrees of freedom, location
    ``loc`` and scale matrix sigma^2 I + tau^2 1 1^T. Event shape: the padded length.

    Its log density per run is closed form (Sherman-Morrison): with c = sigma^2 + m tau^2,

        log det = (m - 1) log sigma^2 + log c
        Q       = sum_j (r_j - rbar)^2 / sigma^2 + m rbar^2 / c      (r = y - loc, rbar its mean)
        log p   = lgamma((nu + m) / 2) - lgamma(nu / 2) - m/2 log(nu pi) - 1/2 log det
                  - (nu + m)/2 log(1 + Q / nu)

    computed by segment sums (Q in its centred form, which has no cancellation when tau >>
    sigma). Padded rows and empty groups contribute nothing. Sampling draws the run level and
    the heavy-tail factor explicitly: loc + (tau u[g] + sigma eps) / sqrt(w[g])."""

    arg_constraints: ClassVar[dict] = {"loc": constraints.real_vector,
                                       "sigma": constraints.positive,
                                       "tau": constraints.nonnegative}
    support = constraints.real_vector
    reparametrized_params: ClassVar[list] = ["loc", "sigma", "tau"]

    def __init__(self, loc, sigma, tau, group, n_groups: int, mask, nu: float = STUDENT_NU,
                 validate_args=None):
        self.loc, self.sigma, self.tau = loc, sigma, tau
        self.group, self.n_groups, self.mask, self.nu = group, int(n_groups), mask, nu
        super().__init__(batch_shape=(), event_shape=jnp.shape(loc)[-1:],
                         validate_args=validate_args)

    def _segment(self, x):
        return jax.ops.segment_sum(x, self.group, num_segments=self.n_groups)

    def log_prob(self, value):
        nu, s2, t2 = self.nu, self.sigma ** 2, self.tau ** 2
        w = self.mask.astype(value.dtype)
        r = jnp.where(self.mask, value - self.loc, 0.0)
        m = self._segment(w)
        rbar = self._segment(r) / jnp.maximum(m, 1.0)
        within = self._segment(w * (r - rbar[self.group]) ** 2)
        c = s2 + m * t2
        q = within / s2 + m * rbar ** 2 / c
        logdet = (m - 1.0) * jnp.log(s2) + jnp.log(c)
        lp = (gammaln(0.5 * (nu + m)) - gammaln(0.5 * nu) - 0.5 * m * jnp.log(nu * jnp.pi)
              - 0.5 * logdet - 0.5 * (nu + m) * jnp.log1p(q / nu))
        return jnp.sum(jnp.where(m > 0, lp, 0.0))

    def sample(self, key, sample_shape=()):
        k_w, k_u, k_e = jax.random.split(key, 3)
        n = self.event_shape[0]
        shape = tuple(sample_shape)
        w = jax.random.gamma(k_w, 0.5 * self.nu, shape + (self.n_groups,)) / (0.5 * self.nu)
        u = jax.random.normal(k_u, shape + (self.n_groups,))
        eps = jax.random.normal(k_e, shape + (n,))
        z = (self.tau * u[..., self.group] + self.sigma * eps) / jnp.sqrt(w[..., self.group])
        return self.loc + z


def mixture_model(law: Law, k: int, logn, logd, H, mask, group, n_groups: int,
                  logd_ref: float = 0.0, log_href=None, y=None):
    """Plain NumPyro model function; ``y=None`` samples from the prior predictive. With
    ``n_groups`` > 0 the run effect is on (``RunStudentT``, the run levels integrated out)."""
    params = sample_law_params(law, k, logd_ref, log_href)
    sigma = numpyro.sample("sigma", dist.LogNormal(math.log(SIGMA_LOC), SIGMA_SCALE))
    mu = jnp.log(law.predict(params, logn, logd, H))
    if n_groups:
        tau = numpyro.sample("tau", dist.HalfNormal(TAU_SCALE))
        numpyro.sample("y", RunStudentT(mu, sigma, tau, group, n_groups, mask), obs=y)
    else:
        with numpyro.handlers.mask(mask=mask):
            numpyro.sample("y", dist.StudentT(STUDENT_NU, mu, sigma), obs=y)


def model_args(law: Law, data: ModelData) -> tuple[tuple, dict]:
    k = data.H.shape[1]
    args = (law, k, jnp.asarray(data.logn), jnp.asarray(data.logd), jnp.asarray(data.H),
            jnp.asarray(data.mask), jnp.asarray(data.group), data.n_groups, data.logd_ref,
            None if data.log_href is None else jnp.asarray(data.log_href))
    return args, {"y": jnp.asarray(data.y)}
