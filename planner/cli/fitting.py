"""Fitting subcommands of ``planner``: fit, predict, optimum, check, regmix (parsing only)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from planner.api import check_file, fit_runs, optimum_file, predict_file
from planner.core.errors import InputError
from planner.core.io import finite_json
from planner.infer.options import FIT_METHODS, FitOptions
from planner.model.discrepancy import field_summary
from planner.model.laws import AUTO, LAW_CHOICES
from planner.model.regmix import load_regmix


def _parse_weights(text: str | None) -> dict[str, float] | None:
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
    import math

    if not (math.isfinite(value) and value > 0):
        raise InputError(f"{name} must be a positive number, got {value}")
    return value


def _on_terminal() -> bool:
    """Draw fit progress (target, phase, chains, ETA) on stderr only when it is a terminal."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def cmd_fit(args) -> int:
    targets = [t.strip() for t in args.targets.split(",")] if args.targets else None
    post = fit_runs(args.runs, law=args.law, targets=targets, method=args.method, out=args.out,
                    seed=args.seed, num_warmup=args.warmup, num_samples=args.samples,
                    num_chains=args.chains, discrepancy=not args.no_discrepancy,
                    progress=_on_terminal())
    for t in post.targets:
        d = post[t].diagnostics
        msg = f"{t}: {d.get('method')} fit on {d.get('n_obs')} observations in {d.get('seconds', 0):.1f} s"
        if "r_hat_max" in d:
            msg += (f"; max r_hat {d['r_hat_max']:.3f}, min ESS {d.get('ess_bulk_min', 0):.0f}, "
                    f"{d.get('divergences', 0)} divergences")
        if d.get("law_weights"):  # law auto
            msg += "; law weights " + ", ".join(f"{f} {w:.3f}" for f, w in d["law_weights"].items())
        disc = post[t].discrepancy
        if disc:
            msg += f"; discrepancy {disc['kind']}, s1 {disc['s1']:.3g}"
            fld = disc.get("mixture_field")
            if fld:
                msg += f", smooth over mixtures ({field_summary(fld)}): h* includes it"
        print(msg)
    print(f"posterior saved to {args.out}")
    return 0


def cmd_predict(args) -> int:
    out = predict_file(args.posterior, args.design, args.out, seed=args.seed)
    print(f"wrote {len(out)} predictions to {args.out}")
    return 0


def cmd_optimum(args) -> int:
    rec = optimum_file(args.posterior, _positive("--N", args.N), _positive("--D", args.D),
                       _parse_weights(args.target_weights), args.out, seed=args.seed)
    print(json.dumps({k: rec[k] for k in ("mean", "lo", "hi", "loss", "expected_excess_loss",
                                          "law_weights") if k in rec}, indent=1))
    return 0


def cmd_check(args) -> int:
    report = check_file(args.runs, law=args.law, targets=args.targets, method=args.method,
                        seed=args.seed, num_warmup=args.warmup, num_samples=args.samples,
                        progress=_on_terminal())
    print(json.dumps(finite_json(report), indent=1, allow_nan=False))  # NaN -> null
    return 0


def cmd_regmix(args) -> int:
    df = load_regmix(args.directory)
    if args.scales:
        df = df[df["scale"].isin(args.scales.split(","))]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
    print(f"wrote {len(df)} runs to {args.out}")
    return 0


def _law_option(p):
    # not argparse choices: an unknown law is bad input (exit 2 with one line), as elsewhere
    p.add_argument("--law", default=AUTO,
                   help=f"{', '.join(LAW_CHOICES)} (default {AUTO}: every mixture law, weighted "
                        "by how well each predicts the held-out largest scale)")


def _fit_options(p):
    p.add_argument("--method", default=FitOptions.method, choices=FIT_METHODS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup", type=int, default=FitOptions.num_warmup,
                   help="NUTS warm-up iterations per chain")
    p.add_argument("--samples", type=int, default=FitOptions.num_samples,
                   help="draws kept per chain")
    p.add_argument("--chains", type=int, default=FitOptions.num_chains)


def register(sub) -> None:
    p = sub.add_parser("fit", help="fit a law to a runs table; save the posterior")
    p.add_argument("runs")
    _law_option(p)
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
    _law_option(p)
    p.add_argument("--targets", default=None)
    _fit_options(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("regmix", help="convert ../shared/data/regmix into a runs table")
    p.add_argument("directory")
    p.add_argument("--out", required=True)
    p.add_argument("--scales", default=None, help="e.g. 1m,60m")
    p.set_defaults(func=cmd_regmix)
