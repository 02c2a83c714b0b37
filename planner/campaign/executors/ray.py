"""The Ray executor: one remote task per run attempt on the embedded Ray (``ray.init()``) or a
cluster (``executor.address`` or ``RAY_ADDRESS``), with retries, timeouts and dead-worker detection."""
from __future__ import annotations

import json
import os
import time
from typing import Any

from planner.campaign.executors.base import Outcome, outcome_from_dict, worker_entry
from planner.core.errors import InputError
from planner.core.signals import keep_sigterm_handler
from trainers.base import RunSpec


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


_StartTracker.__module__ = "__planner_worker__"  # shipped by value, like worker_entry


class RayExecutor:
    """One Ray task per run. Joins ``address`` (or ``RAY_ADDRESS``) if given, else starts an
    embedded Ray on this machine; uses an already initialised Ray as is."""

    def __init__(self, trainer_path: str, trainer_args: dict | None = None, *,
                 address: str | None = None, num_cpus_per_run: float = 1,
                 num_gpus_per_run: float = 0, max_retries: int = 2,
                 timeout_s: float | None = None, runtime_env: dict | None = None,
                 init_kwargs: dict | None = None, campaign_dir: str | None = None):
        import ray

        self._ray = ray
        self.path = trainer_path
        self.args_json = json.dumps(dict(trainer_args or {}), sort_keys=True)
        self.timeout_s = timeout_s
        self.campaign_dir = campaign_dir  # given to trainers (trainers.base.run_context)
        self.owns_ray = False
        if not ray.is_initialized():
            kw = dict(init_kwargs or {})
            kw.setdefault("include_dashboard", False)
            kw.setdefault("log_to_driver", False)
            if runtime_env:
                kw["runtime_env"] = dict(runtime_env)
            addr = address or os.environ.get("RAY_ADDRESS") or None
            try:
                with keep_sigterm_handler():  # ray.init replaces the planner's handler
                    ray.init(address=addr, **kw)
            except (ConnectionError, ValueError, RuntimeError) as e:

                where = addr or "an embedded Ray"
                raise InputError(f"cannot start or join Ray ({where}): "
                                 f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
            self.owns_ray = True
        opts: dict[str, Any] = {"num_cpus": num_cpus_per_run, "max_retries": int(max_retries),
                                "retry_exceptions": False}
        if num_gpus_per_run:
            opts["num_gpus"] = num_gpus_per_run
        # max_calls=0: keep worker processes (and their cached trainer) between runs, GPU too
        self._fn = ray.remote(max_calls=0, **opts)(worker_entry)
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
        ref = self._fn.remote(spec.to_dict(), self.path, self.args_json, self._tracker, attempt,
                              campaign_dir=self.campaign_dir)
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
            return outcome_from_dict(run_id, attempt, d)
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
