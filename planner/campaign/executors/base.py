"""Executors run trainers: ``RayExecutor`` (default; embedded or a cluster) and
``InProcessExecutor`` (debugging, tests, thread-level simulation).

The protocol is small: ``submit(spec, attempt)`` starts a run, ``wait(timeout)`` returns the
``Outcome`` of every run that has finished (at least one, unless the timeout passes first),
``cancel(run_id)`` stops one, ``shutdown()`` stops all. An outcome is either a ``RunResult``
or a failure with a ``reason`` (``exception``, ``timeout``, ``worker_died``, ``cancelled``) and
the error text; validating the result (NaN losses, missing targets) is the loop's job.

Ray details: each run is one task (``num_cpus_per_run``/``num_gpus_per_run`` reserved) that
builds the trainer once per worker process (cached by path and args; workers are kept between
tasks, also for GPU tasks) and calls it. Ray retries a task whose worker process dies up to
``max_retries`` times; exceptions from the trainer are returned as failures (never retried by
Ray) so the planner records every failed attempt. A timeout counts from the moment the task
starts executing (a small tracker actor records start times) and is enforced with
``ray.cancel(force=True)``, which kills the worker.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

from planner.core.errors import InputError
from trainers.base import (
    RunResult,
    RunSpec,
    TrainerLoadError,
    load_trainer,
    resolve_trainer_factory,
)


@dataclass
class Outcome:
    """How one attempt of one run ended."""

    run_id: str
    attempt: int
    result: RunResult | None = None
    reason: str | None = None  # None on success; else exception|timeout|worker_died|cancelled
    error: str | None = None  # one-line error, then the traceback if any
    started_at: float | None = None
    ended_at: float | None = None
    worker: str | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None and self.reason is None


class Executor(Protocol):
    def submit(self, spec: RunSpec, attempt: int) -> None: ...
    def wait(self, timeout: float | None = None) -> list[Outcome]: ...
    def in_flight(self) -> list[str]: ...
    def cancel(self, run_id: str) -> None: ...
    def shutdown(self) -> None: ...


# --------------------------------------------------------------------------------------------
# the worker side (shared by both executors)
# --------------------------------------------------------------------------------------------
def worker_entry(spec_dict: dict, path: str, args_json: str, tracker=None, attempt: int = 1,
                  trainer=None, campaign_dir: str | None = None) -> dict:
    """Run one spec; never raises for trainer errors. Returns a plain dict:
    {"ok": bool, "result": RunResult.to_dict() | None, "error": str | None, "load_error": bool,
     "started_at", "ended_at", "worker"}.

    Self-contained (imports inside, no module globals) so that Ray pickles it by value: a worker
    imports only ``trainers.base`` and the trainer, never the planner (nor JAX). The trainer is
    built once per worker process, cached by (path, args) on the ``trainers.base`` module.
    During the call ``trainers.base.run_context()`` gives the trainer ``attempt`` and
    ``campaign_dir``. A trainer that raises ``TimeoutError`` is reported as a timeout.
    """
    import json
    import os
    import socket
    import threading
    import time
    import traceback

    import trainers.base as tb

    started = time.time()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    if tracker is not None:
        try:
            tracker.started.remote(spec_dict["run_id"], attempt)
        except Exception:  # the timeout then counts from the submission
            pass
    out = {"ok": False, "result": None, "error": None, "load_error": False, "timeout": False}
    ctx_var = getattr(tb, "_RUN_CONTEXT", None)  # absent in an older trainers.base on a worker
    token = None if ctx_var is None else ctx_var.set(tb.RunContext(int(attempt), campaign_dir))
    try:
        if trainer is None:
            lock = tb.__dict__.setdefault("_planner_trainer_lock", threading.Lock())
            with lock:
                cache = tb.__dict__.setdefault("_planner_trainer_cache", {})
                if (path, args_json) not in cache:
                    cache[(path, args_json)] = tb.load_trainer(path, json.loads(args_json))
                trainer = cache[(path, args_json)]
        res = trainer(tb.RunSpec.from_dict(spec_dict))
        if isinstance(res, dict):
            res = tb.RunResult.from_dict(res)
        if not isinstance(res, tb.RunResult):
            raise TypeError(f"trainer returned {type(res).__name__}, not a RunResult")
        out.update(ok=True, result=res.to_dict())
    except tb.TrainerLoadError as e:
        out.update(error=f"TrainerLoadError: {e}", load_error=True)
    except Exception as e:  # noqa: BLE001 - a trainer reports failure by raising
        head = f"{type(e).__name__}: {e}".splitlines()[0] if str(e) else type(e).__name__
        out.update(error=head[:500] + "\n" + "".join(traceback.format_exception(e))[-4000:],
                   timeout=isinstance(e, TimeoutError))
    finally:
        if token is not None:
            ctx_var.reset(token)
    out.update(started_at=started, ended_at=time.time(), worker=worker)
    return out


# a name that is not an importable module: cloudpickle then ships the function by value
worker_entry.__module__ = "__planner_worker__"


def execute_run(spec_dict: dict, path: str, args_json: str, trainer=None, tracker=None,
                attempt: int = 1, campaign_dir: str | None = None) -> dict:
    """Run one spec in this process (see ``worker_entry``)."""
    return worker_entry(spec_dict, path, args_json, tracker=tracker, attempt=attempt,
                         trainer=trainer, campaign_dir=campaign_dir)


def outcome_from_dict(run_id: str, attempt: int, d: dict) -> Outcome:
    if d.get("ok"):
        res = RunResult.from_dict(d["result"])
        return Outcome(run_id, attempt, result=res, started_at=d.get("started_at"),
                       ended_at=d.get("ended_at"), worker=d.get("worker"))
    reason = "trainer_load" if d.get("load_error") else "timeout" if d.get("timeout") else "exception"
    return Outcome(run_id, attempt, reason=reason,
                   error=d.get("error"), started_at=d.get("started_at"),
                   ended_at=d.get("ended_at"), worker=d.get("worker"))


def check_trainer(path: str, args: dict | None = None) -> None:
    """Build the trainer once in this process (the planner's), as every worker will, and drop
    it: a path that does not import, args the factory does not accept, or a constructor that
    raises fail here, before a campaign creates or records anything, as one InputError line.
    A trainer's constructor must therefore work on the planner's machine; work that needs the
    worker's GPUs or files belongs in its first call. The module must also be importable on
    every worker."""
    try:
        check_trainer_importable(path)
        load_trainer(path, dict(args or {}))
    except TrainerLoadError as e:
        raise InputError(str(e).splitlines()[0] if str(e) else f"trainer {path!r} cannot be "
                         f"built") from None
    except Exception as e:  # noqa: BLE001 - any constructor error is the config's to fix
        first = str(e).splitlines()[0] if str(e) else ""
        raise InputError(f"trainer {path!r} cannot be built with trainer.args: "
                         f"{type(e).__name__}: {first}"[:1000]) from None


def ensure_cwd_on_path() -> None:
    """Trainer modules in the current directory import as with ``python -m`` (the ``planner``
    console script does not put the current directory on sys.path; Ray workers have it)."""
    import sys

    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def check_trainer_importable(path: str) -> None:
    ensure_cwd_on_path()
    resolve_trainer_factory(path)
