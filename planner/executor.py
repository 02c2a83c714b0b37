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

import json
import os
import queue
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Protocol

from trainers.base import (RunResult, RunSpec, TrainerLoadError, load_trainer,
                           resolve_trainer_factory)


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
def _worker_entry(spec_dict: dict, path: str, args_json: str, tracker=None, attempt: int = 1,
                  trainer=None) -> dict:
    """Run one spec; never raises for trainer errors. Returns a plain dict:
    {"ok": bool, "result": RunResult.to_dict() | None, "error": str | None, "load_error": bool,
     "started_at", "ended_at", "worker"}.

    Self-contained (imports inside, no module globals) so that Ray pickles it by value: a worker
    imports only ``trainers.base`` and the trainer, never the planner (nor JAX). The trainer is
    built once per worker process, cached by (path, args) on the ``trainers.base`` module.
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
    out = {"ok": False, "result": None, "error": None, "load_error": False}
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
        out.update(error=head[:500] + "\n" + "".join(traceback.format_exception(e))[-4000:])
    out.update(started_at=started, ended_at=time.time(), worker=worker)
    return out


# a name that is not an importable module: cloudpickle then ships the function by value
_worker_entry.__module__ = "__planner_worker__"


def execute_run(spec_dict: dict, path: str, args_json: str, trainer=None, tracker=None,
                attempt: int = 1) -> dict:
    """Run one spec in this process (see ``_worker_entry``)."""
    return _worker_entry(spec_dict, path, args_json, tracker=tracker, attempt=attempt,
                         trainer=trainer)


def _outcome_from_dict(run_id: str, attempt: int, d: dict) -> Outcome:
    if d.get("ok"):
        res = RunResult.from_dict(d["result"])
        return Outcome(run_id, attempt, result=res, started_at=d.get("started_at"),
                       ended_at=d.get("ended_at"), worker=d.get("worker"))
    return Outcome(run_id, attempt, reason="trainer_load" if d.get("load_error") else "exception",
                   error=d.get("error"), started_at=d.get("started_at"),
                   ended_at=d.get("ended_at"), worker=d.get("worker"))


# --------------------------------------------------------------------------------------------
# in-process
# --------------------------------------------------------------------------------------------
class InProcessExecutor:
    """Runs trainers in this process. ``threads=0``: synchronously, inside ``wait()`` (use a
    debugger freely); ``threads>0``: a pool of that many threads, each with its own trainer.
    A timeout marks the attempt failed; the thread cannot be killed and its result is dropped."""

    def __init__(self, trainer_path: str, trainer_args: dict | None = None, threads: int = 0,
                 timeout_s: float | None = None):
        self.path = trainer_path
        self.args_json = json.dumps(dict(trainer_args or {}), sort_keys=True)
        self.threads = int(threads)
        self.timeout_s = timeout_s
        self._queue: list[tuple[RunSpec, int]] = []  # synchronous mode
        self._done: "queue.Queue[Outcome]" = queue.Queue()
        self._running: dict[str, tuple[int, float]] = {}  # run_id -> (attempt, started)
        self._abandoned: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._pool = None
        if self.threads > 0:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="trainer")
        # fail fast on a bad trainer path/args (TrainerLoadError -> caller)
        self._sync_trainer = load_trainer(self.path, json.loads(self.args_json))

    def capacity(self) -> int | None:
        return self.threads or None

    def _thread_trainer(self):
        tr = getattr(self._local, "trainer", None)
        if tr is None:
            tr = self._local.trainer = load_trainer(self.path, json.loads(self.args_json))
        return tr

    def submit(self, spec: RunSpec, attempt: int) -> None:
        with self._lock:
            self._running[spec.run_id] = (attempt, time.time())
        if self._pool is None:
            self._queue.append((spec, attempt))
            return

        def job():
            d = execute_run(spec.to_dict(), self.path, self.args_json, trainer=self._thread_trainer())
            o = _outcome_from_dict(spec.run_id, attempt, d)
            with self._lock:
                if (spec.run_id, attempt) in self._abandoned or \
                        self._running.get(spec.run_id, (None,))[0] != attempt:
                    return
                self._done.put(o)
                self._running.pop(spec.run_id, None)

        self._pool.submit(job)

    def in_flight(self) -> list[str]:
        with self._lock:
            return list(self._running)

    def wait(self, timeout: float | None = None) -> list[Outcome]:
        if self._pool is None:
            if not self._queue:
                return []
            spec, attempt = self._queue.pop(0)
            d = execute_run(spec.to_dict(), self.path, self.args_json, trainer=self._sync_trainer)
            with self._lock:
                self._running.pop(spec.run_id, None)
            o = _outcome_from_dict(spec.run_id, attempt, d)
            if self.timeout_s is not None and o.ok and o.ended_at - o.started_at > self.timeout_s:
                o = Outcome(spec.run_id, attempt, reason="timeout",
                            error=f"run took {o.ended_at - o.started_at:.1f} s > timeout_s "
                                  f"{self.timeout_s:g}", started_at=o.started_at,
                            ended_at=o.ended_at, worker=o.worker)
            return [o]
        out: list[Outcome] = []
        deadline = None if timeout is None else time.time() + timeout
        while True:
            out += self._expire()
            if not out:
                step = 0.05 if deadline is None else min(0.05, max(0.0, deadline - time.time()))
                try:
                    out.append(self._done.get(timeout=step))
                except queue.Empty:
                    pass
            while True:
                try:
                    out.append(self._done.get_nowait())
                except queue.Empty:
                    break
            if out or (deadline is not None and time.time() >= deadline):
                return out
            with self._lock:
                if not self._running and self._done.empty():
                    return out

    def _expire(self) -> list[Outcome]:
        if self.timeout_s is None:
            return []
        now = time.time()
        out = []
        with self._lock:
            for rid, (att, t0) in list(self._running.items()):
                if now - t0 > self.timeout_s:
                    self._abandoned.add((rid, att))
                    self._running.pop(rid)
                    out.append(Outcome(rid, att, reason="timeout",
                                       error=f"run exceeded timeout_s {self.timeout_s:g}",
                                       started_at=t0, ended_at=now))
        return out

    def cancel(self, run_id: str) -> None:
        with self._lock:
            if run_id in self._running:
                att, _ = self._running.pop(run_id)
                self._abandoned.add((run_id, att))
        self._queue = [(s, a) for s, a in self._queue if s.run_id != run_id]

    def shutdown(self) -> None:
        for rid in self.in_flight():
            self.cancel(rid)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


# --------------------------------------------------------------------------------------------
# Ray
# --------------------------------------------------------------------------------------------
class _StartTracker:
    """Ray actor: when each attempt started executing (by the actor's clock)."""

    def __init__(self):
        self.t: dict[str, float] = {}

    def started(self, run_id: str, attempt: int) -> None:
        import time

        self.t[f"{run_id}#{attempt}"] = time.time()

    def ages(self) -> dict[str, float]:
        import time

        now = time.time()
        return {k: now - v for k, v in self.t.items()}

    def forget(self, key: str) -> None:
        self.t.pop(key, None)


_StartTracker.__module__ = "__planner_worker__"  # shipped by value, like _worker_entry


class RayExecutor:
    """One Ray task per run. Joins ``address`` (or ``RAY_ADDRESS``) if given, else starts an
    embedded Ray on this machine; uses an already initialised Ray as is."""

    def __init__(self, trainer_path: str, trainer_args: dict | None = None, *,
                 address: str | None = None, num_cpus_per_run: float = 1,
                 num_gpus_per_run: float = 0, max_retries: int = 2,
                 timeout_s: float | None = None, runtime_env: dict | None = None,
                 init_kwargs: dict | None = None):
        import ray

        self._ray = ray
        self.path = trainer_path
        self.args_json = json.dumps(dict(trainer_args or {}), sort_keys=True)
        self.timeout_s = timeout_s
        self.owns_ray = False
        if not ray.is_initialized():
            kw = dict(init_kwargs or {})
            kw.setdefault("include_dashboard", False)
            kw.setdefault("log_to_driver", False)
            if runtime_env:
                kw["runtime_env"] = dict(runtime_env)
            addr = address or os.environ.get("RAY_ADDRESS") or None
            try:
                ray.init(address=addr, **kw)
            except (ConnectionError, ValueError, RuntimeError) as e:
                from planner.errors import InputError

                where = addr or "an embedded Ray"
                raise InputError(f"cannot start or join Ray ({where}): "
                                 f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
            self.owns_ray = True
        opts: dict[str, Any] = {"num_cpus": num_cpus_per_run, "max_retries": int(max_retries),
                                "retry_exceptions": False}
        if num_gpus_per_run:
            opts["num_gpus"] = num_gpus_per_run
        # max_calls=0: keep worker processes (and their cached trainer) between runs, GPU too
        self._fn = ray.remote(max_calls=0, **opts)(_worker_entry)
        self._tracker = None
        if timeout_s is not None:
            self._tracker = ray.remote(num_cpus=0)(_StartTracker).remote()
        self._refs: dict[Any, tuple[str, int, float]] = {}  # ref -> (run_id, attempt, submitted)
        self._by_run: dict[str, Any] = {}
        self._cancelled: dict[Any, Outcome] = {}
        self._last_age_check = 0.0

    def capacity(self) -> int | None:
        return None

    def submit(self, spec: RunSpec, attempt: int) -> None:
        ref = self._fn.remote(spec.to_dict(), self.path, self.args_json, self._tracker, attempt)
        self._refs[ref] = (spec.run_id, attempt, time.time())
        self._by_run[spec.run_id] = ref

    def in_flight(self) -> list[str]:
        return [rid for rid, _, _ in self._refs.values()]

    def _collect(self, ref) -> Outcome:
        run_id, attempt, submitted = self._refs.pop(ref)
        if self._by_run.get(run_id) is ref:
            self._by_run.pop(run_id, None)
        if self._tracker is not None:
            self._tracker.forget.remote(f"{run_id}#{attempt}")
        if ref in self._cancelled:
            pre = self._cancelled.pop(ref)
            return pre
        ray = self._ray
        try:
            d = ray.get(ref)
            return _outcome_from_dict(run_id, attempt, d)
        except ray.exceptions.TaskCancelledError as e:
            return Outcome(run_id, attempt, reason="cancelled", error=str(e).splitlines()[0],
                           ended_at=time.time())
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.OutOfMemoryError, ray.exceptions.ObjectLostError) as e:
            msg = str(e).strip().splitlines()
            return Outcome(run_id, attempt, reason="worker_died",
                           error=f"{type(e).__name__}: {msg[0] if msg else ''}", ended_at=time.time())
        except ray.exceptions.RayError as e:
            msg = str(e).strip().splitlines()
            return Outcome(run_id, attempt, reason="exception",
                           error=f"{type(e).__name__}: {msg[0] if msg else ''}\n{str(e)[-3000:]}",
                           ended_at=time.time())

    def wait(self, timeout: float | None = None) -> list[Outcome]:
        ray = self._ray
        if not self._refs:
            return []
        out = self._expire()
        step = timeout
        if self._tracker is not None:
            step = 0.5 if timeout is None else min(timeout, 0.5)
        deadline = None if timeout is None else time.time() + timeout
        while not out:
            refs = list(self._refs)
            if not refs:
                break
            ready, _ = ray.wait(refs, num_returns=1, timeout=step)
            if ready:
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                out += [self._collect(r) for r in ready]
            out += self._expire()
            if deadline is not None and time.time() >= deadline:
                break
        return out

    def _expire(self) -> list[Outcome]:
        """Force-cancel attempts running longer than timeout_s (from their start)."""
        if self.timeout_s is None or time.time() - self._last_age_check < 0.25:
            return []
        self._last_age_check = time.time()
        ray = self._ray
        try:
            ages = ray.get(self._tracker.ages.remote(), timeout=10)
        except Exception:  # tracker unavailable: count from submission
            ages = None
        out = []
        now = time.time()
        for ref, (run_id, attempt, submitted) in list(self._refs.items()):
            if ref in self._cancelled:
                continue
            age = ages.get(f"{run_id}#{attempt}") if ages is not None else now - submitted
            if age is not None and age > self.timeout_s:
                self._cancelled[ref] = Outcome(run_id, attempt, reason="timeout",
                                               error=f"run exceeded timeout_s {self.timeout_s:g} "
                                                     f"(ran {age:.1f} s); killed",
                                               started_at=now - age, ended_at=now)
                ray.cancel(ref, force=True)
        # cancelled refs resolve quickly; collect them now
        for ref in list(self._cancelled):
            if ref in self._refs:
                out.append(self._collect(ref))
        return out

    def cancel(self, run_id: str) -> None:
        ref = self._by_run.get(run_id)
        if ref is None or ref not in self._refs:
            return
        rid, attempt, _ = self._refs[ref]
        self._cancelled[ref] = Outcome(rid, attempt, reason="cancelled", error="cancelled by planner",
                                       ended_at=time.time())
        try:
            self._ray.cancel(ref, force=True)
        except Exception:
            pass
        self._collect(ref)

    def shutdown(self) -> None:
        for rid in list(self._by_run):
            self.cancel(rid)
        if self._tracker is not None:
            try:
                self._ray.kill(self._tracker)
            except Exception:
                pass
            self._tracker = None
        if self.owns_ray:
            self._ray.shutdown()
            self.owns_ray = False


def make_executor(cfg) -> Executor:
    """The executor a campaign config asks for (TrainerLoadError -> InputError)."""
    from planner.errors import InputError

    ex = cfg.executor
    _ensure_cwd_on_path()
    try:
        if ex.kind == "inprocess":
            return InProcessExecutor(cfg.trainer.path, dict(cfg.trainer.args), threads=ex.threads,
                                     timeout_s=ex.timeout_s)
        # check the trainer path here, where the error is cheap to report (the module must also
        # be importable on every worker)
        _check_trainer_importable(cfg.trainer.path)
        return RayExecutor(cfg.trainer.path, dict(cfg.trainer.args), address=ex.address,
                           num_cpus_per_run=ex.num_cpus_per_run,
                           num_gpus_per_run=ex.num_gpus_per_run, max_retries=ex.max_retries,
                           timeout_s=ex.timeout_s,
                           runtime_env=dict(ex.runtime_env) if ex.runtime_env else None)
    except TrainerLoadError as e:
        raise InputError(str(e)) from None


def check_trainer(path: str, args: dict | None = None) -> None:
    """Raise InputError unless the trainer's module imports, has the attribute, and accepts
    ``args`` (checked against its signature, without building it: building happens once per
    worker, where the GPUs are). The module must also be importable on every worker."""
    import importlib
    import inspect

    from planner.errors import InputError

    try:
        _check_trainer_importable(path)
        mod, attr = path.split(":")
        factory = getattr(importlib.import_module(mod), attr)
        try:
            inspect.signature(factory).bind(**dict(args or {}))
        except TypeError as e:
            raise TrainerLoadError(f"trainer {path!r} does not accept args {sorted(args or {})}: {e}") from None
        except ValueError:
            pass  # no signature available
    except TrainerLoadError as e:
        raise InputError(str(e)) from None


def _ensure_cwd_on_path() -> None:
    """Trainer modules in the current directory import as with ``python -m`` (the ``planner``
    console script does not put the current directory on sys.path; Ray workers have it)."""
    import sys

    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def _check_trainer_importable(path: str) -> None:
    _ensure_cwd_on_path()
    resolve_trainer_factory(path)
