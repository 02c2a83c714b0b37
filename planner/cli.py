"""The ``planner`` command line: parses arguments and calls documented Python functions.

Exit codes: 0 success; 2 bad input (one ``error: ...`` line on stderr); 1 a failed fit.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _parse_weights(text: str | None) -> dict[str, float] | None:
    from planner.errors import InputError

    if not text:
        return None
    out = {}
    for part in text.split(","):
        if "=" not in part:
            raise InputError(f"--target-weights expects t1=0.5,t2=0.5, got {part!r}")
        k, v = part.split("=", 1)
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise InputError(f"--target-weights: {v!r} is not a number") from None
    return out


def _positive(name: str, value: float) -> float:
    from planner.errors import InputError
    import math

    if not (math.isfinite(value) and value > 0):
        raise InputError(f"{name} must be a positive number, got {value}")
    return value


def cmd_fit(args) -> int:
    from planner.api import fit_runs

    targets = [t.strip() for t in args.targets.split(",")] if args.targets else None
    post = fit_runs(args.runs, law=args.law, targets=targets, method=args.method, out=args.out,
                    seed=args.seed, num_warmup=args.warmup, num_samples=args.samples,
                    num_chains=args.chains, discrepancy=not args.no_discrepancy)
    for t in post.targets:
        d = post[t].diagnostics
        msg = f"{t}: {d.get('method')} fit on {d.get('n_obs')} observations in {d.get('seconds', 0):.1f} s"
        if "r_hat_max" in d:
            msg += (f"; max r_hat {d['r_hat_max']:.3f}, min ESS {d.get('ess_bulk_min', 0):.0f}, "
                    f"{d.get('divergences', 0)} divergences")
        disc = post[t].discrepancy
        if disc:
            msg += f"; discrepancy {disc['kind']}, s1 {disc['s1']:.3g}"
            fld = disc.get("mixture_field")
            if fld:
                msg += (f", smooth over mixtures (length scale {fld['length_scale']:g}, "
                        f"share {fld['share']:.2f}): h* includes it")
        print(msg)
    print(f"posterior saved to {args.out}")
    return 0


def cmd_predict(args) -> int:
    from planner.api import predict_file

    out = predict_file(args.posterior, args.design, args.out, seed=args.seed)
    print(f"wrote {len(out)} predictions to {args.out}")
    return 0


def cmd_optimum(args) -> int:
    from planner.api import optimum_file

    rec = optimum_file(args.posterior, _positive("--N", args.N), _positive("--D", args.D),
                       _parse_weights(args.target_weights), args.out, seed=args.seed)
    print(json.dumps({k: rec[k] for k in ("mean", "lo", "hi", "loss", "expected_excess_loss")},
                     indent=1))
    return 0


def cmd_check(args) -> int:
    from planner.api import check_file

    report = check_file(args.runs, law=args.law, targets=args.targets, method=args.method,
                        seed=args.seed, num_warmup=args.warmup, num_samples=args.samples)
    print(json.dumps(report, indent=1))
    return 0


def cmd_regmix(args) -> int:
    from planner.regmix import load_regmix

    df = load_regmix(args.directory)
    if args.scales:
        df = df[df["scale"].isin(args.scales.split(","))]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
    print(f"wrote {len(df)} runs to {args.out}")
    return 0


def _fit_options(p):
    p.add_argument("--method", default="nuts", choices=["nuts", "map", "laplace"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup", type=int, default=500, help="NUTS warm-up draws per chain")
    p.add_argument("--samples", type=int, default=500, help="NUTS draws per chain")
    p.add_argument("--chains", type=int, default=2)


class _Parser(argparse.ArgumentParser):
    """Usage errors are bad input too: one line on stderr, exit code 2."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="planner", description=__doc__)
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fit", help="fit a law to a runs table; save the posterior")
    p.add_argument("runs")
    p.add_argument("--law", default="additive")
    p.add_argument("--targets", default=None, help="comma-separated targets (default: all)")
    p.add_argument("--out", required=True)
    p.add_argument("--no-discrepancy", action="store_true",
                   help="skip the held-out-scale model-discrepancy term (one fewer fit)")
    _fit_options(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("predict", help="predict losses with 90 %% intervals for a design table")
    p.add_argument("posterior")
    p.add_argument("design")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("optimum", help="posterior over the optimal mixture at (N, D)")
    p.add_argument("posterior")
    p.add_argument("--N", type=float, required=True)
    p.add_argument("--D", type=float, required=True)
    p.add_argument("--target-weights", default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_optimum)

    p = sub.add_parser("check", help="calibration: fit all but the largest scale, predict it")
    p.add_argument("runs")
    p.add_argument("--law", default="additive")
    p.add_argument("--targets", default=None)
    _fit_options(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("regmix", help="convert ../shared/data/regmix into a runs table")
    p.add_argument("directory")
    p.add_argument("--out", required=True)
    p.add_argument("--scales", default=None, help="e.g. 1m,60m")
    p.set_defaults(func=cmd_regmix)

    try:
        from planner import cli_campaign
    except ImportError:
        cli_campaign = None
    if cli_campaign is not None and hasattr(cli_campaign, "register"):
        cli_campaign.register(sub)
    try:
        from planner import cli_report
    except ImportError:
        cli_report = None
    if cli_report is not None and hasattr(cli_report, "register"):
        cli_report.register(sub)
    return ap




def main(argv: list[str] | None = None) -> int:
    from planner.errors import FitError, InputError

    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    ap = build_parser()
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("jax", "arviz", "absl", "ray"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    from trainers.base import TrainerLoadError

    try:
        return int(args.func(args) or 0)
    except (InputError, TrainerLoadError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except FitError as e:
        print(f"fit failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
