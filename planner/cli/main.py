"""The ``planner`` command line: parses arguments and calls documented Python functions.

Exit codes: 0 success; 2 bad input (one ``error: ...`` line on stderr); 1 a failed fit.
"""
from __future__ import annotations

import argparse
import logging
import sys
import warnings

import planner.cli.campaign as campaign
import planner.cli.fitting as fitting
import planner.cli.report as report
from planner.core.errors import FitError, InputError
from planner.core.jaxsetup import configure_jax
from planner.core.signals import EXIT_CODE, Terminated, handle_sigterm, sigterm_received
from trainers.base import TrainerLoadError


class _Parser(argparse.ArgumentParser):
    """Usage errors are bad input too: one line on stderr, exit code 2."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="planner", description=__doc__)
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="command", required=True)

    for module in (fitting, campaign, report):
        module.register(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    configure_jax()
    handle_sigterm()
    warnings.filterwarnings("ignore", category=FutureWarning)
    ap = build_parser()
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("jax", "arviz", "absl", "ray"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    try:
        rc = int(args.func(args) or 0)
        if sigterm_received():  # the command stopped cleanly on SIGTERM (e.g. the loop)
            return EXIT_CODE
        return rc
    except (InputError, TrainerLoadError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except FitError as e:
        print(f"fit failed: {e}", file=sys.stderr)
        return 1
    except Terminated:
        print("terminated", file=sys.stderr)
        return EXIT_CODE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
