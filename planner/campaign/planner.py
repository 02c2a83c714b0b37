"""The ask/tell planner over one campaign's ledger: ``ask`` proposes and records runs within the
budget, ``tell`` records what came back, ``refit`` fits the posterior on every completed
observation, saves a snapshot under ``posteriors/NNNN`` and writes ``recommendation.json``.

Every refit's posterior carries the model discrepancy, like ``planner fit``'s (the distance
term and the mixture field over h), so the snapshot, ``recommendation.json``, ``planner status``,
the acquisition and the report all use the same model (``campaign_discrepancy``). Learning it
costs one more fit (without the largest scale), so it is learned on the first fit, whenever the
largest scale changes, every ``fit.discrepancy_every`` refits and on the final fit of a command
(``Planner.finalize``); refits in between reuse the last one learned. The snapshot stores it, so
a resumed campaign keeps it. ``recommendation.json`` also lists the posterior's ``warnings``
(``planner.calibrate.diagnose.fit_warnings``)."""
from __future__ import annotations

import dataclasses
import inspect
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from planner.calibrate.diagnose import (
    cached_holdout,
    fit_warnings,
    holdout_warnings,
    merge_warnings,
)
from planner.calibrate.heldout import (
    attach_discrepancy,
    calibrate,
    largest_scale_split,
    split_key,
)
from planner.campaign.executors.base import Outcome
from planner.campaign.journal import JournalLog
from planner.campaign.ledger import Ledger
from planner.calibrate.trust import trust
from planner.campaign.records import INITIAL_STRATEGY, RunRecord, in_fit
from planner.campaign.validation import validation_block
from planner.config.schema import CampaignConfig
from planner.core.errors import InputError
from planner.core.io import plain_json, write_json_atomic
from planner.core.types import RunStatus
from planner.decide.optimum import recommend
from planner.decide.registry import propose
from planner.decide.space import Proposal, Space
from planner.decide.strategies import (
    POSTERIOR_FREE_STRATEGIES,
    DesignRequest,
    initial_options,
)
from planner.infer.auto import fit_auto, law_summary, warm_start_auto
from planner.infer.dispatch import fit
from planner.model.laws import AUTO
from planner.model.posterior import Posterior
from planner.model.runs import runs_from_frame
from trainers.base import RunResult, RunSpec

log = JournalLog(__name__)


RECOMMENDATION = "recommendation.json"


POSTERIORS = "posteriors"


MIN_ENDED_FOR_FAILURE_STOP = 3


# --------------------------------------------------------------------------------------------
# fitting
# --------------------------------------------------------------------------------------------
Fitter = Callable[[Any, CampaignConfig, int], "tuple[Any, dict]"]


WARM_MAP_STARTS = 8


def warm_start(previous, cfg: CampaignConfig) -> dict:
    """fit() arguments that start a refit from the previous fit of the campaign: its
    per-parameter medians as an extra Huber start, and a quarter of the random starts (the
    previous optimum is usually the basin; the random starts still guard against a new one)."""
    if previous is None or getattr(previous, "law", None) != cfg.law or \
            list(getattr(previous, "domains", [])) != list(cfg.domains):
        return {}
    init = {t: {k: np.median(np.asarray(v, float), axis=0) for k, v in previous[t].draws.items()}
            for t in previous.targets if t in cfg.targets}
    return {"map_init": init, "map_starts": WARM_MAP_STARTS} if init else {}


def discrepancy_due(previous, table, every: int, force: bool = False) -> str | None:
    """Why the discrepancy must be learned on this refit, or None to reuse ``previous``'s.

    Due when: ``force`` (the final fit of a command), no usable previous one (the first fit,
    a target without one, a snapshot from before campaigns learned it), the largest scale
    (the held-out split) changed since it was learned, or ``every`` refits have passed."""
    if every <= 0:
        return None
    if force:
        return "final fit"
    meta = (getattr(previous, "meta", None) or {}).get("discrepancy")
    if not meta or not hasattr(previous, "per_target") or \
            any(not getattr(previous.per_target.get(t), "discrepancy", None)
                for t in table.targets):
        return "no discrepancy learned yet"
    if meta.get("error"):
        return "the last re-learning failed"
    if split_key(meta.get("split")) != split_key(largest_scale_split(table)[1]):
        return "the largest scale changed"
    if int(meta.get("refits_since_learned", 0)) + 1 >= every:
        return f"{every} refits since it was learned"
    return None


def campaign_discrepancy(post, table, cfg: CampaignConfig, seed: int, previous=None,
                         force: bool = False):
    """``post`` with the model discrepancy: learned now (``calibrate``, as ``planner fit`` does:
    same method, draws and seed) when ``discrepancy_due``, else ``previous``'s reused
    (``attach_discrepancy``). ``post.meta["discrepancy"]`` records ``refits_since_learned``
    (0: learned on this fit), ``n_obs_learned`` and why it was (re)learned; a re-learning
    that raises keeps ``previous``'s and records the error (``fit_warnings`` reports it).
    With ``fit.discrepancy_every`` 0, ``post`` is returned unchanged (no discrepancy)."""
    every = cfg.fit.discrepancy_every
    if every <= 0:
        return post
    why = discrepancy_due(previous, table, every, force)
    pm = (getattr(previous, "meta", None) or {}).get("discrepancy") or {}
    if why is None:
        age = int(pm.get("refits_since_learned", 0)) + 1
        out = attach_discrepancy(post, previous, note=(
            f"learned {age} refit(s) ago on {pm.get('n_obs_learned', '?')} observations "
            f"(holding out {(pm.get('split') or {}).get('rule', '?')}), reused"))
        out.meta["discrepancy"].update(refits_since_learned=age)
        return out
    try:
        out = calibrate(post, table, method=cfg.fit.method, seed=seed,
                        num_warmup=cfg.fit.num_warmup, num_samples=cfg.fit.num_samples,
                        num_chains=cfg.fit.num_chains)
    except Exception as e:  # noqa: BLE001 - a refit must not die of its calibration
        if not pm:
            raise
        msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
        log.warning("re-learning the discrepancy failed (%s); reusing the last one", msg,
                    exc_info=True)
        out = attach_discrepancy(post, previous)
        age = int(pm.get("refits_since_learned", 0)) + 1
        out.meta["discrepancy"].update(refits_since_learned=age, error=msg)
        for t in out.targets:
            dd = out.per_target[t].diagnostics.get("discrepancy")
            if isinstance(dd, dict):
                dd["error"] = msg
        return out
    out.meta["discrepancy"].update(refits_since_learned=0, n_obs_learned=len(table.frame),
                                   reason=why)
    return out


def default_fitter(observations, cfg: CampaignConfig, seed: int, previous=None,
                   final: bool = False):
    """Fit the configured law on a runs-table DataFrame, attach the model discrepancy
    (``campaign_discrepancy``: learned or reused; always learned when ``final``) and recommend a
    mixture at the target; ``previous`` (the campaign's last posterior) warm-starts the fit
    (``warm_start``) and lends its discrepancy.

    Returns ``(posterior, recommendation)`` (recommendation in the ``optimum`` format)."""

    targets = list(cfg.targets)
    table = runs_from_frame(observations, domains=list(cfg.domains), targets=targets)
    kw = dict(targets=targets, method=cfg.fit.method, seed=seed, num_warmup=cfg.fit.num_warmup,
              num_samples=cfg.fit.num_samples, num_chains=cfg.fit.num_chains)
    if cfg.law == AUTO:  # every family, combined by held-out prediction (planner.infer.auto)
        post = fit_auto(table, **kw, **warm_start_auto(previous, cfg.domains, WARM_MAP_STARTS))
    else:
        post = fit(table, law=cfg.law, **kw, **warm_start(previous, cfg))
    post = campaign_discrepancy(post, table, cfg, seed, previous, force=final)
    rec = recommend(post, seed=seed, **cfg.decision_target().optimum_kwargs())
    return post, {**rec, **law_summary(post)}


def relearn_fitter(observations, cfg: CampaignConfig, seed: int, previous=None,
                   final: bool = True):
    """For a posterior already fitted on exactly these observations whose discrepancy is a
    reused one: learn the discrepancy now (no refit of the law) and recommend again. Uses the
    posterior's own seed, so the result is that fit plus ``calibrate`` with one seed, as
    ``planner fit --seed`` makes it."""
    seed = int((getattr(previous, "meta", None) or {}).get("seed", seed))
    targets = list(cfg.targets)
    table = runs_from_frame(observations, domains=list(cfg.domains), targets=targets)
    post = campaign_discrepancy(previous, table, cfg, seed, previous, force=True)
    rec = recommend(post, seed=seed, **cfg.decision_target().optimum_kwargs())
    return post, {**rec, **law_summary(post)}


def discrepancy_stale(posterior, cfg: CampaignConfig) -> bool:
    """True when ``posterior`` carries a reused discrepancy (or none although campaigns learn
    it): the final fit of a command learns it afresh."""
    if cfg.fit.discrepancy_every <= 0 or not hasattr(posterior, "per_target"):
        return False
    meta = (posterior.meta or {}).get("discrepancy") or {}
    if not meta or any(not posterior[t].discrepancy for t in posterior.targets):
        return True
    return int(meta.get("refits_since_learned", 0)) > 0 or bool(meta.get("error"))


def discrepancy_summary(posterior) -> dict | None:
    """What ``recommendation.json`` says about the discrepancy the recommendation used:
    {"refits_since_learned", "n_obs_learned", "split", "targets": {t: {"kind", "s1",
    "s1_log_sd", "mixture_field"}}}, or None when the posterior has none."""
    if not hasattr(posterior, "per_target"):
        return None
    per = {t: posterior[t].discrepancy for t in posterior.targets}
    if not any(per.values()):
        return None
    meta = (posterior.meta or {}).get("discrepancy") or {}
    return {"refits_since_learned": meta.get("refits_since_learned", 0),
            "n_obs_learned": meta.get("n_obs_learned"), "split": meta.get("split"),
            "targets": {t: None if not d else
                        {"kind": d.get("kind"), "s1": d.get("s1"), "s1_log_sd": d.get("s1_log_sd"),
                         "mixture_field": d.get("mixture_field")} for t, d in per.items()}}


def load_posterior(path: str | Path):
    return Posterior.load(Path(path))


@dataclass
class FitOutcome:
    snap_id: int
    run_ids: list[str]
    n_obs: int
    posterior: Any = None
    recommendation: dict | None = None
    path: str | None = None
    seconds: float = 0.0
    error: str | None = None


# --------------------------------------------------------------------------------------------
# the ask/tell planner
# --------------------------------------------------------------------------------------------
class Planner:
    """Ask/tell over one campaign's ledger (which it must hold open for writing)."""

    def __init__(self, cfg: CampaignConfig, ledger: Ledger, fitter: Fitter | None = None):
        self.cfg = cfg
        self.ledger = ledger
        self.dir = ledger.dir
        self.space = Space.from_config(cfg)
        self.fitter = fitter or default_fitter
        self.posterior = None
        self.posterior_run_ids: frozenset[str] = frozenset()
        self.recommendation: dict | None = None
        self.last_fit_error: str | None = None
        # the failure fraction counts runs ended after the last stop for failures (if any)
        self._failure_window = ledger.last_event_id("stopped", reason="failures")
        self._load_latest_snapshot()

    # -- state --------------------------------------------------------------------------------
    def _load_latest_snapshot(self) -> None:
        snap = self.ledger.latest_snapshot()
        if snap is None:
            return
        self.recommendation = snap["recommendation"]
        self.posterior_run_ids = frozenset(snap["run_ids"])
        try:
            self.posterior = load_posterior(snap["path"])
        except Exception as e:  # noqa: BLE001 - a missing snapshot only costs a refit
            log.warning("posterior snapshot %s cannot be loaded (%s); will refit", snap["path"], e)
            self.posterior = None
            self.posterior_run_ids = frozenset()

    def completed_run_ids(self) -> frozenset[str]:
        """Completed runs that enter the fit (validation runs only when recorded for it)."""
        return self.ledger.fit_run_ids()

    def can_fit(self) -> bool:
        """Enough completed runs (fit.min_runs) and more observations than law parameters."""
        if len(self.completed_run_ids()) < self.cfg.min_runs_to_fit():
            return False
        return self.ledger.n_observations(fit_only=True) > self.cfg.law_num_params()

    def needs_fit(self) -> bool:
        done = self.completed_run_ids()
        return bool(done) and done != self.posterior_run_ids

    def budget_left(self) -> tuple[float | None, int | None]:
        """(FLOPs left, runs left) after everything bought so far (completed, in flight, queued)."""
        s = self.ledger.spent()
        b = self.cfg.budget
        flops = None if b.flops is None else b.flops - s["flops_committed"]
        runs = None if b.max_runs is None else b.max_runs - s["runs_committed"]
        return flops, runs

    def budget_exhausted(self) -> bool:
        flops, runs = self.budget_left()
        return (runs is not None and runs <= 0) or \
            (flops is not None and flops < self.space.cheapest_flops())

    def expected_excess_loss(self) -> float | None:
        if not self.recommendation:
            return None
        v = self.recommendation.get("expected_excess_loss")
        return float(v) if v is not None else None

    def tolerance_reached(self) -> bool:
        tol = self.cfg.stop.expected_excess_loss
        eel = self.expected_excess_loss()
        return bool(tol is not None and eel is not None and self.posterior_run_ids and eel < tol)

    def failure_stop(self) -> str | None:
        """A message if more than max_failure_fraction of the ended runs failed (checked once
        MIN_ENDED_FOR_FAILURE_STOP have ended). After a stop for failures only the runs that end
        after it count: a resumed campaign stops again only if its new runs fail too (the
        earlier failures stay recorded)."""
        since = self._failure_window
        ended = self.ledger.ended_since(since)
        failed, done = ended["failed"], ended["completed"]
        total = failed + done
        if total >= MIN_ENDED_FOR_FAILURE_STOP and failed / total > self.cfg.max_failure_fraction:
            last = [r for r in self.ledger.runs(RunStatus.FAILED) if r.error]
            why = f"; last error: {last[-1].error.splitlines()[0][:300]}" if last else ""
            after = " since the campaign resumed after its last stop for failures" if since else ""
            return (f"campaign stopped: {failed} of {total} runs failed{after} ({failed / total:.0%}), "
                    f"more than max_failure_fraction {self.cfg.max_failure_fraction:g}{why}")
        return None

    def initial_design_left(self, fit_running: bool) -> int | None:
        """How many more runs the loop may buy before the first posterior exists, or None for no
        limit. A campaign whose acquisition uses the posterior buys its initial design (the
        ``fit.min_runs`` completed runs the first fit needs), then waits for that fit instead of
        spending budget on more initial runs: 0 while a fit runs or the runs that complete the
        design are still in flight; one run at a time when the design is complete but no fit is
        possible yet (fewer observations than the law's parameters). No limit once a posterior
        exists, for ``random`` and ``grid``, and after a failed first fit (the campaign then goes
        on buying, as it cannot know when a fit will succeed)."""
        if self.posterior is not None or self.last_fit_error is not None or \
                self.cfg.acquisition.name in POSTERIOR_FREE_STRATEGIES:
            return None
        if fit_running:
            return 0
        pending = sum(1 for r in self.ledger.runs((RunStatus.PROPOSED, RunStatus.RUNNING))
                      if r.source == "planner")
        left = self.cfg.min_runs_to_fit() - len(self.completed_run_ids()) - pending
        if left <= 0:
            return 0 if pending else 1
        return left

    # -- ask ----------------------------------------------------------------------------------
    def ask(self, q: int, source: str = "planner") -> list[RunSpec]:
        """Propose up to ``q`` new runs within the budget, record them as ``proposed`` and
        return them. Uses ``random`` until the first posterior exists, then the configured
        acquisition (with the posterior, the observations and the pending runs)."""
        out: list[RunSpec] = []
        target = self.cfg.decision_target()
        for _ in range(4):  # proposals dropped for budget are asked for again, cheaper
            flops_left, runs_left = self.budget_left()
            want = q - len(out)
            if runs_left is not None:
                want = min(want, runs_left)
            if want <= 0 or (flops_left is not None and flops_left < self.space.cheapest_flops()):
                break
            use_post = self.posterior is not None
            name = self.cfg.acquisition.name if use_post else "random"
            req = DesignRequest(
                posterior=self.posterior if use_post else None,
                observed=self.ledger.observations(list(self.cfg.domains), fit_only=True),
                pending=[r.spec() for r in self.ledger.runs((RunStatus.PROPOSED, RunStatus.RUNNING))
                         if in_fit(r.source, r.info)],
                space=self.space, seed=self.cfg.seed, q=want, step=self.ledger.next_seq() - 1,
                max_flops=flops_left, target_N=target.N, target_D=target.D,
                target_weights=dict(target.weights), law=self.cfg.law, target_hi=target.hi,
                options=dict(self.cfg.acquisition.options) if use_post else
                initial_options(self.cfg.acquisition.name, self.cfg.acquisition.options))
            try:
                props = propose(name, req)
            except InputError:
                raise  # a bad acquisition option: the user must fix the config
            except Exception as e:  # noqa: BLE001 - a long campaign must not die on one ask
                if name == "random":
                    raise
                msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]
                log.warning("acquisition %r failed (%s); proposing with random this time", name, msg,
                            exc_info=True)
                self.ledger.event("acquisition_failed", None, strategy=name, error=msg)
                req.posterior, req.options = None, {}
                props = propose("random", req)
            if not use_post:  # the initial design, whichever strategy drew it
                props = [dataclasses.replace(p, strategy=INITIAL_STRATEGY) for p in props]
            accepted: list[Proposal] = []
            left = flops_left
            for p in props:
                if left is not None and p.flops > left:
                    continue
                accepted.append(p)
                if left is not None:
                    left -= p.flops
            if not accepted:
                break
            out += self._record_proposals(accepted, source)
            if len(out) >= q:
                break
        return out

    def _record_proposals(self, props: list[Proposal], source: str) -> list[RunSpec]:
        seq = self.ledger.next_seq()
        specs, infos = [], []
        skip = 0  # run ids taken by imported or told runs (a runs table may use r00001 too)
        for i, p in enumerate(props):
            s = seq + i
            while self.ledger.run(f"r{s + skip:05d}") is not None:
                skip += 1
            specs.append(RunSpec(run_id=f"r{s + skip:05d}", N=int(p.N), D=int(p.D), h=dict(p.h),
                                 seed=int((self.cfg.seed * 1_000_003 + s) % (2 ** 31))))
            infos.append(_plain(p.info))
        self.ledger.add_runs(specs, source=source, strategy=[p.strategy or None for p in props],
                             infos=infos)
        return specs

    # -- tell ---------------------------------------------------------------------------------
    def validate(self, spec: RunSpec, result: RunResult) -> tuple[str, str] | None:
        """(reason, message) if a result cannot be used; None if it is fine."""
        if result.run_id != spec.run_id:
            return "invalid", f"result is for run {result.run_id!r}, expected {spec.run_id!r}"
        bad = result.non_finite()
        if bad:
            return "non_finite", f"non-finite losses: {', '.join(bad[:8])}"
        missing = [t for t in self.cfg.targets if t not in result.losses]
        if missing:
            return "invalid", (f"result has no loss for target(s) {', '.join(missing)} "
                               f"(reported: {', '.join(result.losses) or 'none'})")
        neg = [k for k, v in result.losses.items() if v <= 0] + \
            [f"{k}@{t}" for t, l in result.checkpoints for k, v in l.items() if v <= 0]
        if neg:
            return "invalid", f"losses must be > 0: {', '.join(neg[:8])}"
        badtok = [t for t, _ in result.checkpoints if t <= 0]
        if badtok:
            return "invalid", f"checkpoint tokens must be > 0, got {badtok[:4]}"
        n = result.metadata.get("N") if isinstance(result.metadata, dict) else None
        if n is not None:
            try:
                ok = math.isfinite(float(n)) and float(n) > 0
            except (TypeError, ValueError):
                ok = False
            if not ok:
                return "invalid", f"metadata['N'] must be a positive number, got {n!r}"
        return None

    def tell(self, outcome: Outcome, run: RunRecord | None = None) -> str:
        """Record one attempt's outcome. Returns ``completed``, ``duplicate``, ``retry`` or
        ``failed``. A failed attempt is retried while attempts <= max_retries."""
        run = run or self.ledger.run(outcome.run_id)
        if run is None:
            log.warning("outcome for unknown run %s ignored", outcome.run_id)
            return "duplicate"
        spec = run.spec()
        reason, error = outcome.reason, outcome.error
        if outcome.ok:
            bad = self.validate(spec, outcome.result)
            if bad is None:
                res = outcome.result
                N = float(res.metadata.get("N", spec.N)) if isinstance(res.metadata, dict) else spec.N
                new = self.ledger.record_result(spec.run_id, res, N=N, D=spec.D, h=spec.h,
                                                attempt=outcome.attempt,
                                                started_at=outcome.started_at,
                                                ended_at=outcome.ended_at, worker=outcome.worker)
                return "completed" if new else "duplicate"
            reason, error = bad
        if run.status == RunStatus.COMPLETED:  # a late failure of an attempt of a finished run
            return "duplicate"
        # interrupted attempts (planner killed or stopped) are not failures: count failures
        final = run.failures + 1 > self.cfg.executor.max_retries
        self.ledger.record_failure(spec.run_id, outcome.attempt, reason or "exception",
                                   error or "unknown error", final=final,
                                   started_at=outcome.started_at, ended_at=outcome.ended_at,
                                   worker=outcome.worker)
        log.warning("run %s attempt %d failed (%s): %s%s", spec.run_id, outcome.attempt, reason,
                    (error or "").splitlines()[0][:300], "" if final else "; will retry")
        return "failed" if final else "retry"

    # -- refit --------------------------------------------------------------------------------
    def prepare_fit(self) -> tuple[int, list[str], Any]:
        obs = self.ledger.observations(list(self.cfg.domains), fit_only=True)
        run_ids = sorted(set(obs["run_id"])) if len(obs) else []
        return self.ledger.next_snapshot_id(), run_ids, obs

    def compute_fit(self, snap_id: int, run_ids: list[str], obs, final: bool = False,
                    fitter: Fitter | None = None) -> FitOutcome:
        """Fit + recommend + save the snapshot directory. Thread-safe (touches no ledger).
        ``final``: the last fit of a command (the discrepancy is learned afresh); ``fitter``:
        instead of the planner's (``relearn_fitter``)."""
        out = FitOutcome(snap_id=snap_id, run_ids=run_ids, n_obs=len(obs))
        t0 = time.time()
        fitter = fitter or self.fitter
        try:
            seed = int(self.cfg.seed * 7919 + snap_id)
            params = inspect.signature(fitter).parameters
            kw = {}
            if "previous" in params:
                kw["previous"] = self.posterior
            if "final" in params:
                kw["final"] = final
            post, rec = fitter(obs, self.cfg, seed, **kw)
            out.posterior = post
            rec = dict(rec)
            rec["warnings"] = merge_warnings(rec.get("warnings"), fit_warnings(post))
            rec["snapshot"] = snap_id
            summ = discrepancy_summary(post)
            if summ is not None:
                rec["discrepancy"] = summ
            out.recommendation = plain_json(rec)
            root = self.dir / POSTERIORS
            root.mkdir(exist_ok=True)
            final_dir = root / f"{snap_id:04d}"
            tmp = root / f".{snap_id:04d}.tmp"
            for p in (tmp, final_dir):  # leftovers of a planner killed mid-save
                if p.exists():
                    shutil.rmtree(p)
            if hasattr(post, "save"):
                post.save(tmp)
            else:
                tmp.mkdir()
            os.replace(tmp, final_dir)
            out.path = str(final_dir)
        except Exception as e:  # noqa: BLE001 - recorded; the campaign goes on with the last fit
            first = str(e).splitlines()[0] if str(e) else ""
            out.error = f"{type(e).__name__}: {first}"[:1000]
            log.warning("fit %d failed: %s", snap_id, out.error, exc_info=True)
        out.seconds = time.time() - t0
        return out

    def apply_fit(self, fo: FitOutcome) -> None:
        """Record a finished fit (main thread): snapshot row, recommendation.json."""
        if fo.error is not None:
            self.last_fit_error = fo.error
            self.ledger.event("fit_failed", None, snapshot=fo.snap_id, error=fo.error,
                              n_runs=len(fo.run_ids))
            return
        self.last_fit_error = None
        spent = self.ledger.spent()["flops_completed"]
        self.ledger.add_snapshot(fo.snap_id, fo.path, fo.run_ids, fo.n_obs, spent,
                                 fo.recommendation, fo.seconds)
        self.posterior = fo.posterior
        self.posterior_run_ids = frozenset(fo.run_ids)
        self.recommendation = fo.recommendation
        self.write_recommendation()

    def refit(self, final: bool = False, fitter: Fitter | None = None) -> FitOutcome:
        """Synchronous fit on every completed observation; records it."""
        fo = self.compute_fit(*self.prepare_fit(), final=final, fitter=fitter)
        self.apply_fit(fo)
        return fo

    def write_recommendation(self) -> bool:
        """Write ``recommendation.json``, its warnings merged with those of the report's
        held-out check when one was computed for the same snapshot, with the ``validation``
        block of the campaign's validation runs (if any) and the ``trust`` level."""
        if self.recommendation is None:
            return False
        rec = self.recommendation
        check = cached_holdout(self.dir, rec.get("snapshot"))
        if check is not None:
            rec = {**rec, "warnings": merge_warnings(rec.get("warnings"), holdout_warnings(check))}
        val = validation_block(self.ledger, dict(self.cfg.targets), self.posterior,
                               rec.get("snapshot"), seed=self.cfg.seed)
        if val is not None:
            rec = {**rec, "validation": val}
        rec = {**rec, "trust": trust(self.posterior, check, val)}
        write_json_atomic(self.dir / RECOMMENDATION, plain_json(rec))
        return True

    def finalize(self) -> str | None:
        """End of a campaign or a command: fit on everything if the last fit is stale, learning
        the discrepancy afresh (or, when only the discrepancy is stale, re-learn it on the
        current fit), and (re)write recommendation.json. Returns the error of that fit when it
        failed (the previous recommendation, if any, is kept), else None."""
        fo = None
        if self.needs_fit():
            fo = self.refit(final=True)
        elif self.fitter is default_fitter and self.posterior is not None \
                and discrepancy_stale(self.posterior, self.cfg):
            fo = self.refit(final=True, fitter=relearn_fitter)
        if fo is not None and fo.error is not None:
            log.warning("final fit failed (%s); keeping the previous recommendation", fo.error)
        self.write_recommendation()
        return None if fo is None else fo.error


def _plain(v: Any) -> Any:
    try:
        return plain_json(v)
    except (TypeError, ValueError):
        return {"repr": repr(v)}
