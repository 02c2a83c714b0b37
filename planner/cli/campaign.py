"""Campaign subcommands of ``planner`` (argument parsing only; the work is in planner.campaign).

    planner run CONFIG --out CAMPAIGN_DIR      # rerunning the same command resumes
    planner status CAMPAIGN_DIR
    planner suggest CAMPAIGN_DIR -n Q --out RUNS.json [--config CONFIG]
    planner tell CAMPAIGN_DIR RESULTS.csv [--config CONFIG]
    planner runs CAMPAIGN_DIR [--out RUNS.csv]    # without --out: CSV on stdout
    planner validate CAMPAIGN_DIR [--N n --D d] [--mixtures ...] [--mixture NAME=dom:w,...]

``register(subparsers)`` adds them to the main parser (planner.cli). Each handler returns the
exit code: 0 success; 1 a campaign stopped by failures or whose final fit failed (or that
could not fit at all: no recommendation); 130 interrupted; bad input raises
InputError, which the main program prints as one line with exit code 2.
``python -m planner.cli.campaign ...`` runs these subcommands on their own.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from planner.campaign.campaign import (
    campaign_status,
    export_runs,
    run_campaign,
    suggest,
    tell,
)
from planner.campaign.planner import RECOMMENDATION
from planner.campaign.validate import SCALED, validate
from planner.campaign.validation import DEFAULT_MIXTURES
from planner.core.errors import InputError
from planner.report.progress import Progress, print_status, validation_lines


def _run(args) -> int:
    res = run_campaign(args.config, args.out, progress=Progress())
    try:
        print_status(campaign_status(args.out))
    except Exception as e:  # noqa: BLE001 - the campaign itself is done; say why no table
        print(f"(status unavailable: {e})", file=sys.stderr)
    if res.stop_reason == "failures":
        print(f"error: {res.message}", file=sys.stderr)
        return 1
    if res.stop_reason == "interrupted":
        print(f"interrupted: rerun `planner run {args.config} --out {args.out}` to resume",
              file=sys.stderr)
        return 130
    rec = Path(args.out) / RECOMMENDATION
    if res.final_fit_error:
        kept = (f"{rec} is from an earlier fit" if rec.exists()
                else "no recommendation was written")
        print(f"error: the final fit failed ({res.final_fit_error}); {kept}; rerun the same "
              f"command to retry the fit", file=sys.stderr)
        return 1
    if not rec.exists():
        print(f"error: {res.message or 'done'}, but no fit was possible, so no "
              f"recommendation was written", file=sys.stderr)
        return 1
    print(f"done: {res.message}; recommendation in {rec}" if res.message else "done",
          file=sys.stderr)
    return 0


def _status(args) -> int:
    import json


    st = campaign_status(args.campaign_dir)
    for w in st["damage"]:
        print(f"warning: {w}", file=sys.stderr)
    if args.json:
        print(json.dumps(st, indent=2, default=str))
    else:
        print_status(st)
    return 0


def _suggest(args) -> int:
    specs = suggest(args.campaign_dir, args.n, out=args.out, config=args.config)
    print(f"{len(specs)} run(s) written to {args.out}: {', '.join(s.run_id for s in specs)}",
          file=sys.stderr)
    return 0


def _tell(args) -> int:
    r = tell(args.campaign_dir, args.results, config=args.config, refit=not args.no_fit,
             validation=args.validation)
    print(f"told: {r['completed']} suggested run(s) completed, {r['added']} new run(s) added, "
          f"{r['duplicates']} already recorded", file=sys.stderr)
    if r.get("fit_error"):
        print(f"error: the results are recorded but the refit failed ({r['fit_error']}); "
              f"{RECOMMENDATION} is not up to date", file=sys.stderr)
        return 1
    return 0


def _validate(args) -> int:
    seeds = _int_list(args.seeds, "--seeds")
    names = [m.strip() for m in args.mixtures.split(",") if m.strip()]
    try:
        r = validate(args.campaign_dir, mixtures=names, custom=args.mixture, N=args.N, D=args.D,
                     seeds=seeds, use_in_fit=args.use_in_fit, timeout_s=args.timeout_s,
                     progress=lambda line: print(line, file=sys.stderr))
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: finished runs are recorded
        print("interrupted: rerun the same `planner validate` command to continue",
              file=sys.stderr)
        return 130
    for line in validation_lines(r["validation"]):
        print(line)
    tr = r["trust"]
    print(f"trust: {tr['level']}" + "".join(f"\n  {x}" for x in tr["reasons"]))
    if r["failed"]:
        print(f"error: {len(r['failed'])} validation run(s) failed: {', '.join(r['failed'])}",
              file=sys.stderr)
        return 1
    print(f"validated: {len(r['trained'])} run(s) trained now, {len(r['run_ids'])} in all; "
          f"shown by `planner status` and in {RECOMMENDATION}", file=sys.stderr)
    return 0


def _timeout(text: str) -> float | str | None:
    word = text.strip().lower()
    if word == "none":
        return None
    if word == SCALED:
        return SCALED
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds or 'none': {text!r}") from None
    if not (math.isfinite(x) and x > 0):
        raise argparse.ArgumentTypeError(f"must be > 0 seconds: {text!r}")
    return x


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{flag} must be comma-separated integers, got {text!r}") from None


def _runs(args) -> int:
    df = export_runs(args.campaign_dir, args.out)
    if args.out is None:  # the table itself is the output
        df.to_csv(sys.stdout, index=False)
        return 0
    print(f"{len(df)} observation(s) of {df['run_id'].nunique() if len(df) else 0} run(s) "
          f"written to {args.out}", file=sys.stderr)
    return 0


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s!r}")
    return v


def register(subparsers) -> None:
    """Add run, status, suggest, tell, validate and runs to an argparse subparsers object."""
    p = subparsers.add_parser("run", help="run or resume a campaign (Ray or in-process)",
                              description="Run the campaign described by CONFIG in CAMPAIGN_DIR; "
                                          "rerunning the same command resumes it.")
    p.add_argument("config", metavar="CONFIG", help="campaign config (YAML)")
    p.add_argument("--out", required=True, metavar="CAMPAIGN_DIR", help="campaign directory")
    p.set_defaults(func=_run)

    p = subparsers.add_parser("status", help="runs by status, compute, current recommendation")
    p.add_argument("campaign_dir", metavar="CAMPAIGN_DIR")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(func=_status)

    p = subparsers.add_parser("suggest", help="ask: the next runs to train, without executing them")
    p.add_argument("campaign_dir", metavar="CAMPAIGN_DIR")
    p.add_argument("-n", type=_positive_int, required=True, metavar="Q", help="number of runs")
    p.add_argument("--out", required=True, metavar="RUNS.json", help="where to write the runs")
    p.add_argument("--config", default=None, metavar="CONFIG",
                   help="create CAMPAIGN_DIR from this config if it does not exist yet")
    p.set_defaults(func=_suggest)

    p = subparsers.add_parser("tell", help="tell: record results (runs-table schema)")
    p.add_argument("campaign_dir", metavar="CAMPAIGN_DIR")
    p.add_argument("results", metavar="RESULTS.csv", help="results in the runs-table schema")
    p.add_argument("--config", default=None, metavar="CONFIG",
                   help="create CAMPAIGN_DIR from this config if it does not exist yet")
    p.add_argument("--no-fit", action="store_true", help="do not refit after recording")
    p.add_argument("--validation", action="store_true",
                   help="record them as validation runs (kept out of the fit, not charged to "
                        "the budget, shown beside their prediction)")
    p.set_defaults(func=_tell)

    p = subparsers.add_parser("validate", help="train mixtures at the target and compare them "
                                               "with the prediction (validation runs)")
    p.add_argument("campaign_dir", metavar="CAMPAIGN_DIR")
    p.add_argument("--N", type=float, default=None, help="parameters (default: target_budget.N)")
    p.add_argument("--D", type=float, default=None, help="tokens (default: target_budget.D)")
    p.add_argument("--mixtures", default=",".join(DEFAULT_MIXTURES),
                   help="built-in mixtures, comma-separated (default: %(default)s; '' for none)")
    p.add_argument("--mixture", action="append", default=[], metavar="NAME=dom:w,...",
                   help="a custom mixture (weights sum to one); repeatable")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    p.add_argument("--use-in-fit", action="store_true",
                   help="let these runs enter the campaign's next fit")
    p.add_argument("--timeout-s", type=_timeout, default=SCALED, metavar="SECONDS",
                   help="time limit per run, or 'none' (default: executor.timeout_s x the "
                        "run's compute over the space's largest run's)")
    p.set_defaults(func=_validate)

    p = subparsers.add_parser("runs", help="export every observation (runs-table schema)")
    p.add_argument("campaign_dir", metavar="CAMPAIGN_DIR")
    p.add_argument("--out", default=None, metavar="RUNS.csv",
                   help="CSV, or Parquet for a .parquet name (default: CSV on stdout)")
    p.set_defaults(func=_runs)
