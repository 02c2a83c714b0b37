"""``planner report CAMPAIGN_DIR``: argument parsing only (the work is planner.report).

    planner report CAMPAIGN_DIR [--out PATH] [--no-holdout] [--holdout-method nuts|map|laplace]
                   [--seed S]

Writes ``CAMPAIGN_DIR/report.html`` (self-contained: figures embedded) and prints its path.
Exit codes: 0 written (sections that could not be drawn, and damaged posterior snapshots
skipped for an older one, are listed on stderr and said on the page); 2 bad input (no campaign
there, a bad option, no posterior snapshot that loads).
"""
from __future__ import annotations

import sys

from planner.infer.options import FIT_METHODS
from planner.report.build import build_report


def _report(args) -> int:
    res = build_report(args.campaign_dir, out=args.out, holdout=not args.no_holdout,
                       holdout_method=args.holdout_method, seed=args.seed,
                       notify=lambda msg: print(msg, file=sys.stderr, flush=True))
    for w in res.damage:
        print(f"warning: {w}", file=sys.stderr)
    for sid, why in res.errors.items():
        print(f"warning: report section {sid!r} could not be produced: {why}", file=sys.stderr)
    print(f"report written to {res.path} ({len(res.sections) - len(res.errors)} of "
          f"{len(res.sections)} sections, {res.seconds:.0f} s)")
    return 0


def register(subparsers) -> None:
    """Add ``report`` to an argparse subparsers object (called by planner.cli)."""
    p = subparsers.add_parser(
        "report", help="write CAMPAIGN_DIR/report.html (recommendation, h* posterior, checks)",
        description="Write a self-contained HTML report of a campaign: the recommended mixture "
                    "and its predicted loss, the posterior over h*, predicted vs observed, a "
                    "held-out check, loss vs compute, expected excess loss over the campaign, "
                    "the runs bought, sampler diagnostics and the runs table.")
    p.add_argument("campaign_dir", metavar="CAMPAIGN_DIR")
    p.add_argument("--out", default=None, metavar="PATH",
                   help="where to write the HTML (default: CAMPAIGN_DIR/report.html)")
    p.add_argument("--no-holdout", action="store_true",
                   help="skip the held-out check (it refits the law without the largest scale)")
    p.add_argument("--holdout-method", default=None, choices=FIT_METHODS,
                   help="fit method for the held-out check (default: the campaign's fit.method)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_report)
