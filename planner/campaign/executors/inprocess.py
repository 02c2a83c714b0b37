"""The in-process executor (debugging, tests): trainers run in the planner's process, synchronously
or on a few threads."""
from __future__ import annotations

import json
import queue
import threading
import time

from planner.campaign.executors.base import Outcome, execute_run, outcome_from_dict
from trainers.base import RunSpec, load_trainer


# --------------------------------------------------------------------------------------------
# in-process
# --------------------------------------------------------------------------------------------
class InProcessExecutor:
    """Runs trainers in this process. ``threads=0``: synchronously, inside ``wait()`` (use a
    debugger freely); ``threads>0``: a pool of that many threads, each with its own trainer.
    A timeout marks the attempt failed; the thread cannot be killed and its result is dropped."""

    def __init__(self, trainer_path: str, trainer_args: dict | None = None, threads: int = 0,
                 timeout_s: float | None = None, campaign_dir: str | None = None):
        self.path = trainer_path
        self.campaign_dir = campaign_dir  # given to trainers (trainers.base.run_context)
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
            d = execute_run(spec.to_dict(), self.path, self.args_json, trainer=self._thread_trainer(),
                            attempt=attempt, campaign_dir=self.campaign_dir)
            o = outcome_from_dict(spec.run_id, attempt, d)
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
            d = execute_run(spec.to_dict(), self.path, self.args_json, trainer=self._sync_trainer,
                            attempt=attempt, campaign_dir=self.campaign_dir)
            with self._lock:
                self._running.pop(spec.run_id, None)
            o = outcome_from_dict(spec.run_id, attempt, d)
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
