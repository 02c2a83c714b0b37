"""JAX configuration shared by every entry point (must run before JAX initialises a backend)."""
from __future__ import annotations

import os
from pathlib import Path

_DONE = False


def default_cache_dir() -> Path:
    return Path(os.environ.get("PLANNER_JAX_CACHE", Path.home() / ".cache" / "mixture-planner" / "jax"))


def configure_jax(host_devices: int | None = None) -> None:
    """Float64, host devices for chains, persistent compilation cache. Idempotent."""
    global _DONE
    if _DONE:
        return
    # BLAS threads: the planner's linear algebra is tiny (L-BFGS-B on tens of parameters, small
    # Hessians). Threaded OpenBLAS spins on every such call, and with JAX, Ray or a second
    # process on the machine one fit took 130 s instead of 10 s in L-BFGS-B alone (2 cores).
    # Read when a BLAS library loads (scipy's loads lazily, after this); a user's setting wins.
    # MKL is left alone: torch's CPU kernels use it and want their threads.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if "XLA_FLAGS" not in os.environ or "host_platform_device_count" not in os.environ["XLA_FLAGS"]:
        n = host_devices or min(4, os.cpu_count() or 1)
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={n}").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu") if not os.environ.get("CUDA_VISIBLE_DEVICES") else None
    import jax

    jax.config.update("jax_enable_x64", True)
    cache = default_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    except Exception:  # a read-only home must not stop the planner
        pass
    _DONE = True
