"""Shared test fixtures. Ray starts at most once per test session (session-scoped fixture)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Keep the JAX compilation cache inside the checkout (ignored by git) so CI warms it once.
os.environ.setdefault("PLANNER_JAX_CACHE", str(Path(__file__).resolve().parents[1] / ".jax_cache"))

from planner.core.jaxsetup import configure_jax  # noqa: E402

configure_jax()  # float64 and the compilation cache, before any test touches JAX


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray (embedded default), started once for the whole session."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 _temp_dir=None, ignore_reinit_error=True)
    yield ray
    ray.shutdown()
