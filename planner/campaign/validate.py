"""``planner validate``: train chosen mixtures at the target (or a given (N, D)) with the
campaign's own trainer on its executor, record them as validation runs and compare them with
the posterior's prediction (``planner.campaign.validation``).

Durable and resumable like ``planner run``: the runs are recorded (source ``validation``) before
any is dispatched, each result is committed before the next is awaited, and rerunning the same
command dispatches only the runs not yet completed (run ids are fixed by mixture, (N, D) and
seed); one that failed for good gets a fresh set of retries. The campaign lock is held throughout, so a second planner is refused. Validation runs
are not charged to the budget and are kept out of every fit unless ``use_in_fit`` (they then
enter the next fit: rerun ``planner run`` to refit).
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from planner.calibrate.diagnose import cached_holdout
from planner.calibrate.trust import trust
from planner.campaign.executors import make_executor
from planner.campaign.journal import JOURNAL, JournalLog, attach_journal
from planner.campaign.ledger import Ledger
from planner.campaign.loop import release_in_flight
from planner.campaign.planner import RECOMMENDATION, Planner, load_posterior
from planner.campaign.records import VALIDATION_SOURCE
from planner.campaign.snapshots import usable_snapshot
from planner.campaign.store import open_existing
from planner.campaign.validation import (
    DEFAULT_MIXTURES,
    named_mixtures,
    parse_mixture,
    validation_block,
    validation_info,
    validation_run_id,
)
from planner.core.errors import InputError
from planner.core.types import RunStatus
from trainers.base import RunSpec

log = JournalLog(__name__)


def _plan(ledger: Ledger, cfg, mixtures, custom, N, D, seeds, use_in_fit) -> list[tuple[RunSpec, dict]]:
    rec = None
    snap = ledger.latest_snapshot()
    rp = Path(ledger.dir) / RECOMMENDATION
    if rp.exists():
        try:
            rec = json.loads(rp.read_text())
        except (OSError, ValueError):
            rec = None
    if rec is None and snap is not None:
        rec = snap["recommendation"]
    mix = named_mixtures(list(mixtures), [parse_mixture(m, list(cfg.domains)) for m in custom],
                         list(cfg.domains), dict(cfg.targets), rec, ledger.results())
    out = []
    for name, h in mix.items():
        for s in seeds:
            rid = validation_run_id(name, N, D, h, s)
            out.append((RunSpec(run_id=rid, N=int(round(N)), D=int(round(D)), h=dict(h),
                                seed=int(s)), validation_info(name, use_in_fit)))
    return out


SCALED = "scaled"  # validate's default timeout: the campaign's, scaled by compute


def validation_timeout(cfg, N: float, D: float, timeout_s=SCALED) -> float | None:
    """The time limit of one validation run. ``executor.timeout_s`` is sized for the campaign's
    runs; a run at the target costs more, so by default it gets that limit times
    6ND / (6 N_max D_max) of the space's largest run (never less than the limit itself).
    ``timeout_s``: a number of seconds, or None for no limit, instead."""
    if timeout_s != SCALED:
        if timeout_s is not None and not (math.isfinite(float(timeout_s)) and float(timeout_s) > 0):
            raise InputError(f"--timeout-s must be a number of seconds > 0 or 'none', "
                             f"got {timeout_s!r}")
        return None if timeout_s is None else float(timeout_s)
    base = cfg.executor.timeout_s
    if base is None:
        return None
    return float(base) * max(1.0, (N * D) / (cfg.space.N.hi * cfg.space.D.hi))


def validate(campaign_dir: str | Path, mixtures=DEFAULT_MIXTURES, custom=(), N: float | None = None,
             D: float | None = None, seeds=(0,), use_in_fit: bool = False, executor=None,
             progress=None, timeout_s=SCALED) -> dict:
    """Train ``mixtures`` (built-in names) and ``custom`` (``NAME=dom:w,...`` strings) at the
    campaign's target budget (or ``N``/``D``) for each of ``seeds``; see the module docstring.
    ``timeout_s``: each run's time limit (``validation_timeout``; by default the campaign's,
    scaled by compute). ``executor``: one to use instead of the campaign's (not shut down
    here); ``progress``: a
    callable given one line per finished run. Returns {"run_ids", "trained", "failed",
    "validation", "trust"} (validation: the block written to ``recommendation.json`` and shown
    by ``planner status``; trust: ``planner.calibrate.trust.trust`` with it). Bad input raises
    InputError before anything is recorded."""
    seeds = [int(s) for s in seeds]
    if not seeds or (not list(mixtures) and not list(custom)):
        raise InputError("validate: no mixture or no seed given")
    for x, nm in ((N, "--N"), (D, "--D")):
        if x is not None and not (math.isfinite(float(x)) and float(x) > 0):
            raise InputError(f"{nm} must be a finite number > 0, got {x!r}")
    cfg, ledger = open_existing(campaign_dir)  # locked: a running planner refuses us here
    handler = attach_journal(campaign_dir)
    try:
        N = float(N if N is not None else cfg.target_budget.N)
        D = float(D if D is not None else cfg.target_budget.D)
        limit = validation_timeout(cfg, N, D, timeout_s)
        log.info("validate: N %.3g, D %.3g, mixtures %s, seeds %s, time limit per run %s", N, D,
                 ",".join([*mixtures, *custom]), ",".join(map(str, seeds)),
                 "none" if limit is None else f"{limit:g} s")
        plan = _plan(ledger, cfg, mixtures, custom, N, D, seeds, use_in_fit)
        new = [(s, i) for s, i in plan if ledger.run(s.run_id) is None]
        for spec, _ in plan:
            old = ledger.run(spec.run_id)
            if old is not None and old.source != VALIDATION_SOURCE:
                raise InputError(f"run id {spec.run_id!r} is taken by a {old.source} run")
            if old is not None and bool(old.info.get("use_in_fit")) != bool(use_in_fit):
                raise InputError(f"validation run {spec.run_id} was recorded "
                                 f"{'with' if old.info.get('use_in_fit') else 'without'} "
                                 f"--use-in-fit; rerun it the same way")
        if new:
            ledger.add_runs([s for s, _ in new], source=VALIDATION_SOURCE,
                            strategy=VALIDATION_SOURCE, infos=[i for _, i in new])
        ledger.requeue_interrupted()
        ledger.retry_failed([s.run_id for s, _ in plan], "planner validate rerun")
        planner = Planner(cfg, ledger)
        if planner.posterior is None and ledger.snapshots():
            _use_usable_snapshot(planner)
        ids = [s.run_id for s, _ in plan]
        todo = [ledger.run(i) for i in ids if ledger.run(i).status == RunStatus.PROPOSED]
        run_cfg = dataclasses.replace(cfg, executor=dataclasses.replace(cfg.executor,
                                                                        timeout_s=limit))
        trained = _execute(planner, run_cfg, todo, executor, campaign_dir,
                           progress) if todo else []
        planner.write_recommendation()
        failed = [i for i in ids if ledger.run(i).status == RunStatus.FAILED]
        snap = (planner.recommendation or {}).get("snapshot")
        block = validation_block(ledger, dict(cfg.targets), planner.posterior, snap, seed=cfg.seed)
        tr = trust(planner.posterior, cached_holdout(ledger.dir, snap), block)
        log.info("validate: %d run(s) trained now, %d failed, trust %s", len(trained),
                 len(failed), tr["level"])
        return {"run_ids": ids, "trained": trained, "failed": failed, "validation": block,
                "trust": tr}
    finally:
        ledger.close()
        JOURNAL.removeHandler(handler)
        handler.close()


def _use_usable_snapshot(planner: Planner) -> None:
    """The latest snapshot does not load: predict with the newest one that does and its
    recommendation, as ``planner status`` shows them (none loads: measured values only)."""
    try:
        good = usable_snapshot(planner.ledger.snapshots(), load_posterior)
    except InputError as e:
        log.warning("%s; validation runs are shown without predictions", e)
        return
    planner.posterior, planner.recommendation = good.posterior, good.snapshot["recommendation"]


def _execute(planner: Planner, cfg, todo, executor, campaign_dir, progress) -> list[str]:
    """Dispatch ``todo`` (proposed validation runs) batch_size at a time on ``cfg``'s executor
    until each is completed or failed for good; every outcome is recorded before the next is
    awaited."""
    ledger = planner.ledger
    own = executor is None
    ex = make_executor(cfg, campaign_dir=campaign_dir) if own else executor
    queue = list(todo)
    in_flight: dict[str, int] = {}
    done: list[str] = []
    try:
        while queue or in_flight:
            while queue and len(in_flight) < max(1, cfg.batch_size):
                run = ledger.run(queue.pop(0).run_id)
                if run.status != RunStatus.PROPOSED:
                    continue
                in_flight[run.run_id] = run.attempts + 1
                ledger.mark_dispatched(run.run_id, run.attempts + 1)
                ex.submit(run.spec(), run.attempts + 1)
            for o in ex.wait(timeout=0.5):
                if in_flight.get(o.run_id) != o.attempt:
                    continue
                in_flight.pop(o.run_id)
                status = planner.tell(o)
                log.info("validation run %s attempt %d: %s", o.run_id, o.attempt, status)
                if status == "retry":
                    queue.append(ledger.run(o.run_id))
                elif status == "completed":
                    done.append(o.run_id)
                if progress is not None:
                    progress(f"{o.run_id}: {status}")
    except KeyboardInterrupt:
        release_in_flight(ex, ledger, in_flight, "planner interrupted")
        raise
    finally:
        if own:
            ex.shutdown()
    return done

