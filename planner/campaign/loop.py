"""The ask/tell planner and the driver loop.

``Planner`` is the campaign's state machine over its ledger, usable without any executor:
``ask(q)`` proposes and records runs (within the budget), ``tell(outcome)`` validates and records
what came back, ``refit()`` fits the posterior on every completed observation, saves a snapshot
under ``posteriors/NNNN`` and writes ``recommendation.json``.

``run_loop(planner, executor)`` drives a campaign::

    top up to batch_size runs in flight (re-dispatching interrupted runs first, then ask)
    -> wait for the first finished run -> record it durably -> refit -> top up ...

until the budget (FLOPs and run count, in-flight runs included) is spent, the expected excess
loss falls below ``stop.expected_excess_loss``, or more than ``max_failure_fraction`` of the
runs fail. Refits run in a background thread by default (``fit.background``) so that new runs
are dispatched while the posterior is updated; the strategy then uses the latest posterior.
Until ``fit.min_runs`` runs have completed (default: one more than the law's parameters), the
``random`` strategy (a space-filling design) proposes runs, recorded as strategy ``initial``; a
campaign whose acquisition uses the posterior then waits for its first fit instead of buying more
of them (``Planner.initial_design_left``). A campaign always ends with a fit on
all completed runs and ``recommendation.json`` in the ``optimum`` format.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from planner.campaign.journal import JournalLog
from planner.campaign.planner import FitOutcome, Planner
from planner.campaign.records import RunRecord
from planner.core.types import RunStatus

log = JournalLog(__name__)


# --------------------------------------------------------------------------------------------
# the driver loop
# --------------------------------------------------------------------------------------------
@dataclass
class LoopResult:
    stop_reason: str  # budget | tolerance | failures | interrupted
    message: str
    completed: int
    failed: int
    stats: dict = field(default_factory=dict)
    # the final fit on all completed runs failed (``recommendation.json``, if any, is then an
    # earlier fit's, or absent): its error
    final_fit_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.stop_reason in ("budget", "tolerance")


class _FitWorker:
    """At most one background fit at a time."""

    def __init__(self, planner: Planner):
        self.planner = planner
        self.thread: threading.Thread | None = None
        self.result: FitOutcome | None = None

    @property
    def busy(self) -> bool:
        return self.thread is not None

    def start(self) -> None:
        args = self.planner.prepare_fit()

        def work():
            self.result = self.planner.compute_fit(*args)

        self.result = None
        self.thread = threading.Thread(target=work, name="planner-fit", daemon=True)
        self.thread.start()

    def poll(self, block: bool = False) -> FitOutcome | None:
        if self.thread is None:
            return None
        if block:
            self.thread.join()
        if self.thread.is_alive():
            return None
        self.thread = None
        return self.result


def loop_stats(planner: Planner, executor=None) -> dict:
    s = planner.ledger.spent()
    c = planner.ledger.counts()
    b = planner.cfg.budget
    return {"completed": c["completed"], "failed": c["failed"], "proposed": c["proposed"],
            "running": c["running"],
            "in_flight": len(executor.in_flight()) if executor is not None else c["running"],
            "flops_completed": s["flops_completed"], "flops_committed": s["flops_committed"],
            "flops_budget": b.flops, "max_runs": b.max_runs, "runs_committed": s["runs_committed"],
            "expected_excess_loss": planner.expected_excess_loss(),
            "snapshots": planner.ledger.next_snapshot_id() - 1,
            "last_fit_error": planner.last_fit_error,
            "warnings": list((planner.recommendation or {}).get("warnings") or [])}


def release_in_flight(executor, ledger, in_flight: dict[str, int], why: str) -> None:
    """Cancel the runs in flight ({run_id: attempt}) and release their attempts in the ledger,
    so that a rerun re-dispatches them; a cancel that fails (the worker is gone) is ignored."""
    for rid, att in list(in_flight.items()):
        try:
            executor.cancel(rid)
        except Exception:  # noqa: BLE001 - the attempt is released either way
            pass
        ledger.release_attempt(rid, att, why)


def run_loop(planner: Planner, executor, progress=None, poll_s: float = 0.5) -> LoopResult:
    """Drive the campaign to its end (see the module docstring). The caller owns the executor
    and the ledger. Ctrl-C (KeyboardInterrupt) releases the in-flight runs so that a rerun
    re-dispatches them."""
    cfg = planner.cfg
    ledger = planner.ledger
    fitw = _FitWorker(planner)
    in_flight: dict[str, int] = {}  # run_id -> attempt
    stop_reason: str | None = None
    message = ""

    def show():
        if progress is not None:
            progress.update(loop_stats(planner, executor))

    def integrate(fo: FitOutcome | None):
        if fo is not None:
            planner.apply_fit(fo)
            show()

    def maybe_fit():
        if fitw.busy or not planner.can_fit() or not planner.needs_fit():
            return
        if cfg.fit.background:
            fitw.start()
        else:
            planner.refit()
            show()

    def dispatch(run: RunRecord):
        attempt = run.attempts + 1
        # in_flight first: an interrupt during mark_dispatched or submit still releases the run
        in_flight[run.run_id] = attempt
        ledger.mark_dispatched(run.run_id, attempt)
        executor.submit(run.spec(), attempt)

    requeued = ledger.requeue_interrupted()
    if requeued:
        log.info("resuming: re-dispatching %d interrupted run(s): %s", len(requeued), ", ".join(requeued))
    if planner.posterior is None:
        maybe_fit()
    show()
    try:
        while True:
            integrate(fitw.poll())
            if stop_reason is None:
                msg = planner.failure_stop()
                if msg:
                    stop_reason, message = "failures", msg
                    log.error("%s", msg)
                    for rid, att in list(in_flight.items()):
                        executor.cancel(rid)
                        ledger.release_attempt(rid, att, "campaign stopped (failures)")
                        in_flight.pop(rid)
                elif planner.tolerance_reached():
                    stop_reason = "tolerance"
                    message = (f"expected excess loss {planner.expected_excess_loss():.3g} is below "
                               f"stop.expected_excess_loss {cfg.stop.expected_excess_loss:g}")
                    log.info("stopping: %s", message)
            if stop_reason is None:
                # top up: queued runs (retries, resumed) first, then new proposals
                queued = [r for r in ledger.runs(RunStatus.PROPOSED)
                          if r.source == "planner" and r.run_id not in in_flight]
                for r in queued:
                    if len(in_flight) >= cfg.batch_size:
                        break
                    dispatch(r)
                free = cfg.batch_size - len(in_flight)
                cap = planner.initial_design_left(fitw.busy)  # waits for the first fit
                if cap is not None:
                    free = min(free, cap)
                if free > 0:
                    for spec in planner.ask(free):
                        dispatch(ledger.run(spec.run_id))
                if not in_flight and planner.budget_exhausted():
                    stop_reason = "budget"
                show()
            if not in_flight:
                if fitw.busy:
                    integrate(fitw.poll(block=True))
                    continue
                if stop_reason is None:
                    # nothing could be proposed though budget remains (strategy found nothing)
                    stop_reason = "budget"
                    message = "no affordable run left to propose"
                break
            outcomes = executor.wait(timeout=poll_s)
            for o in outcomes:
                att = in_flight.get(o.run_id)
                if att != o.attempt:
                    continue  # a stale attempt (cancelled or superseded)
                in_flight.pop(o.run_id)
                status = planner.tell(o)
                log.info("run %s attempt %d: %s", o.run_id, o.attempt, status)
            if outcomes:
                maybe_fit()
                show()
        integrate(fitw.poll(block=True))
    except KeyboardInterrupt:
        release_in_flight(executor, ledger, in_flight, "planner interrupted")
        ledger.event("interrupted")
        s = ledger.spent()
        return LoopResult("interrupted", "interrupted; rerun the same command to resume",
                          s["runs_completed"], s["runs_failed"], loop_stats(planner))
    fit_error = planner.finalize()
    if stop_reason == "budget" and not message:
        flops_left, runs_left = planner.budget_left()
        message = "budget spent" + (f" ({cfg.budget.max_runs} runs)" if runs_left is not None
                                    and runs_left <= 0 else
                                    f" ({ledger.spent()['flops_committed']:.3g} FLOPs)")
    ledger.event("stopped", None, reason=stop_reason, message=message,
                 **({"final_fit_error": fit_error} if fit_error else {}))
    show()
    s = ledger.spent()
    return LoopResult(stop_reason or "budget", message, s["runs_completed"], s["runs_failed"],
                      loop_stats(planner), final_fit_error=fit_error)
