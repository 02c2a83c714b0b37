"""mixture-planner: Bayesian active learning of pretraining data mixtures.

Importing the package configures JAX before it starts: float64, a host device count for
parallel chains (only if the user has not set XLA_FLAGS), and the persistent compilation cache,
so that NumPyro's padded, fixed-shape models compile once per machine.
"""
from planner._jaxsetup import configure_jax

configure_jax()

__version__ = "0.1.0"
