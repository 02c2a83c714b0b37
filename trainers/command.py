"""Run an existing training command (torchrun, a cluster launcher, a framework's CLI) per run.

Config::

    trainer:
      path: "trainers.command:CommandTrainer"
      args:
        command: "{python} train.py --n {N} --tokens {D} --mix {weights_json} --out {out_dir}"
        result_file: "{out_dir}/result.json"     # default (relative: to out_dir); .csv: CSV
        env: {OMP_NUM_THREADS: "4"}              # added to the worker's environment
        cwd: null                                # working directory (default: the worker's)
        timeout_s: 3600                          # kill the command's process group and fail

Other args: ``out_root`` (see Directories), ``result_format`` (json|csv; default: by the name),
``inherit_env`` (true), ``shell`` (false), ``kill_grace_s`` (10), ``stderr_tail_lines`` (20).

**Template fields** (``str.format`` syntax, format specs allowed: ``{h_web:.4f}``; ``{{``/``}}``
are literal braces) in ``command``, ``result_file``, ``env`` values and ``cwd``: ``{run_id}``,
``{N}``, ``{D}``, ``{seed}`` (ints), ``{h_<domain>}`` (that domain's weight), ``{weights_json}``
(``{"domain": weight, ...}``), ``{out_dir}``, ``{result_file}``, ``{attempt}`` (1, 2, ...) and
``{python}`` (the worker's Python). Unknown fields are rejected when the trainer is built.

**The command** is an argv template: a string is split with ``shlex.split`` *before* rendering,
so each field lands in one argument whatever it contains (spaces, quotes, JSON); a list is
used as is. No shell runs unless ``shell: true`` is given explicitly: then the rendered string
(field values ``shlex.quote``d) runs under ``/bin/sh -c``, for pipes, ``&&`` or redirections.
The shell is opt-in because a shell re-parses every value and a typo can then run something else.

**Directories.** Each run has one output directory, ``out_dir = <root>/<run_id>``, where
``<root>`` is ``out_root`` if given, else ``CAMPAIGN_DIR/runs`` (the planner passes the campaign
directory; see ``trainers.base.run_context``). A retried run keeps its run id and therefore its
``out_dir``: a command that saves checkpoints there resumes from them instead of starting over.
Each attempt's output goes to ``out_dir/attempt-<n>.stdout`` and ``attempt-<n>.stderr`` (a
worker restarted by Ray appends to the same attempt's files after a marker line). The command
also gets ``PLANNER_RUN_ID``, ``PLANNER_ATTEMPT``, ``PLANNER_OUT_DIR`` and
``PLANNER_RESULT_FILE`` in its environment. On a multi-node cluster ``<root>`` must be on a
filesystem every node sees. A result file left by an earlier attempt is deleted before each
attempt starts, so only a result written by this attempt is read.

**Result file** (write it atomically: to a temporary name, then rename). JSON::

    {"losses": {"web": 2.91, "code": 1.84},                     # final losses, at D tokens
     "checkpoints": [[250000, {"web": 3.10}], [500000, {...}]],  # optional (tokens, losses)
     "metadata": {"N": 12345678},                               # optional; N: true param count
     "run_id": "r00001"}                                        # optional; checked if present

CSV: a header with ``tokens`` (or ``D``) and one or more ``loss_<target>`` columns (others are
ignored); one row per evaluation, in order; the **last row is the final result** and must have
the largest token count; earlier rows are checkpoints (a later row for the same token count
replaces an earlier one, as after a resume; an empty cell means not measured).

**Validation**: every loss is a finite number > 0, tokens > 0, no unknown JSON keys, at least
one final loss. Which targets must be present is the planner's business (it checks every
result against the campaign's targets). A problem raises ``ResultFileError`` naming the file.

**Failures** (every one raises, so the planner records the attempt and retries the run):
non-zero exit (or death by a signal) -> ``CommandFailed`` with the exit code, the last stderr
line and the stderr tail; past ``timeout_s`` -> SIGTERM to the command's process group, SIGKILL
after ``kill_grace_s``, ``CommandTimeout`` (a ``TimeoutError``: recorded as reason ``timeout``);
exit 0 without a valid result file -> ``ResultFileError``. The command runs in its own process
group under a small supervisor that kills that group if the worker dies (e.g. when the
executor's own ``timeout_s`` kills it), and whatever the command leaves running in its group
when it exits is killed too, so no stray process keeps writing to ``out_dir``. Keep this
``timeout_s`` below ``executor.timeout_s`` so the error carries the stderr tail.
"""
from __future__ import annotations

import csv
import json
import math
import os
import shlex
import signal
import string
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from trainers.base import RunResult, RunSpec, run_context

FIELDS = ("run_id", "N", "D", "seed", "weights_json", "out_dir", "result_file", "attempt", "python")
JSON_KEYS = {"losses", "checkpoints", "metadata", "run_id"}

# Runs the command in the supervisor's process group (a new session made by the trainer);
# if the trainer's process dies, the supervisor is reparented and kills the whole group.
_SUPERVISOR = r"""
import os, signal, subprocess, sys, time
parent = os.getppid()
try:
    p = subprocess.Popen(sys.argv[1:])
except OSError as e:
    sys.stderr.write(f"cannot start command {sys.argv[1]!r}: {e}\n")
    sys.exit(127)
for s in (signal.SIGTERM, signal.SIGINT):
    signal.signal(s, lambda *a: None)  # the group's signal reaches the command; wait for it
while p.poll() is None:
    if os.getppid() != parent:
        os.killpg(0, signal.SIGKILL)
    time.sleep(0.2)
if p.returncode < 0:  # die by the command's signal, so the trainer sees it
    try:
        signal.signal(-p.returncode, signal.SIG_DFL)
    except (OSError, ValueError):
        pass
    os.kill(os.getpid(), -p.returncode)
    sys.exit(128 - p.returncode)
sys.exit(p.returncode)
"""


class CommandFailed(RuntimeError):
    """The command exited with a non-zero code or was killed by a signal."""


class CommandTimeout(TimeoutError):
    """The command ran past ``timeout_s`` and was killed."""


class ResultFileError(ValueError):
    """The result file is missing or malformed (the message names the file)."""


class _Quoting(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        return shlex.quote(super().format_field(value, format_spec))


_PLAIN, _QUOTING = string.Formatter(), _Quoting()


def _fields(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}


def _positive(value: Any, where: str, what: str, text: bool = False) -> float:
    """``value`` as a finite number > 0 (a string only when ``text``: CSV cells)."""
    v = float("nan")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v = float(value)
    elif text and isinstance(value, str):
        try:
            v = float(value)
        except ValueError:
            raise ValueError(f"{where}: {what} must be a number, got {value!r}") from None
    else:
        raise ValueError(f"{where}: {what} must be a number, got {value!r}")
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{where}: {what} must be finite and > 0, got {value!r}")
    return v


def _losses(d: Any, where: str) -> dict[str, float]:
    if not isinstance(d, dict) or not d:
        raise ValueError(f"{where} must be a non-empty object {{target: loss}}, got {d!r}")
    return {str(k): _positive(v, f"{where}[{k!r}]", "loss") for k, v in d.items()}


def _parse_json(text: str) -> tuple[dict, list, dict, str | None]:
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise TypeError(f"must be a JSON object with 'losses', got {type(d).__name__}")
    unknown = sorted(set(d) - JSON_KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(map(repr, unknown))} "
                         f"(allowed: {', '.join(sorted(JSON_KEYS))})")
    if "losses" not in d:
        raise ValueError("has no 'losses'")
    losses = _losses(d["losses"], "losses")
    cks = d.get("checkpoints") or []
    if not isinstance(cks, list):
        raise TypeError("'checkpoints' must be a list of [tokens, {target: loss}]")
    checkpoints = []
    for i, c in enumerate(cks):
        if not isinstance(c, (list, tuple)) or len(c) != 2:
            raise ValueError(f"checkpoints[{i}] must be [tokens, {{target: loss}}], got {c!r}")
        t = round(_positive(c[0], f"checkpoints[{i}]", "tokens"))
        checkpoints.append((t, _losses(c[1], f"checkpoints[{i}]")))
    meta = d.get("metadata") or {}
    if not isinstance(meta, dict):
        raise TypeError(f"'metadata' must be an object, got {meta!r}")
    return losses, checkpoints, meta, (None if d.get("run_id") is None else str(d["run_id"]))


def _parse_csv(text: str) -> tuple[dict, list, dict, None]:
    rows = list(csv.reader(text.splitlines()))
    if not rows or not any(h.strip() for h in rows[0]):
        raise ValueError("is empty (expected a header with tokens and loss_<target> columns)")
    header = [h.strip() for h in rows[0]]
    tok = [c for c in ("tokens", "D") if c in header]
    loss_cols = [(i, h[5:]) for i, h in enumerate(header) if h.startswith("loss_") and h[5:]]
    if len(tok) != 1 or not loss_cols:
        raise ValueError(f"needs one 'tokens' (or 'D') column and loss_<target> columns; "
                         f"header is {','.join(header)}")
    ti = header.index(tok[0])
    by_tokens: dict[int, dict[str, float]] = {}
    last = None
    for line, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise ValueError(f"line {line} has {len(row)} fields, the header has {len(header)}")
        t = round(_positive(row[ti].strip(), f"line {line}, column {tok[0]}", "tokens", True))
        losses = {name: _positive(row[i].strip(), f"line {line}, column loss_{name}", "loss", True)
                  for i, name in loss_cols if row[i].strip()}
        by_tokens[t] = losses
        last = t
    if last is None:
        raise ValueError("has a header but no rows")
    if last != max(by_tokens):
        raise ValueError(f"the last row (tokens {last}) must be the final result, but an earlier "
                         f"row has more tokens ({max(by_tokens)})")
    if not by_tokens[last]:
        raise ValueError(f"the last row (tokens {last}) has no losses")
    cks = [(t, ls) for t, ls in sorted(by_tokens.items()) if t != last and ls]
    return by_tokens[last], cks, {"final_tokens": last}, None


def read_result_file(path: str | Path, run_id: str, fmt: str | None = None) -> RunResult:
    """Read and validate a result file (format by ``fmt`` or by the name: .csv, else JSON).
    Raises ResultFileError naming the file and the problem."""
    path = Path(path)
    fmt = fmt or ("csv" if path.suffix.lower() == ".csv" else "json")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ResultFileError(f"result file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ResultFileError(f"result file {path} cannot be read: {e}") from None
    try:
        losses, cks, meta, rid = (_parse_csv if fmt == "csv" else _parse_json)(text)
    except (ValueError, TypeError) as e:
        raise ResultFileError(f"result file {path} ({fmt}): {e}") from None
    if rid is not None and rid != run_id:
        raise ResultFileError(f"result file {path} is for run {rid!r}, expected {run_id!r}")
    return RunResult(run_id, losses=losses, checkpoints=cks, metadata=dict(meta))


class CommandTrainer:
    """A trainer that runs a command per run (see the module docstring for every rule)."""

    def __init__(self, command: str | list[str], *, result_file: str = "{out_dir}/result.json",
                 result_format: str | None = None, env: dict[str, Any] | None = None,
                 inherit_env: bool = True, cwd: str | None = None,
                 timeout_s: float | None = None, out_root: str | None = None,
                 shell: bool = False, kill_grace_s: float = 10.0, stderr_tail_lines: int = 20):
        if isinstance(command, str):
            argv = [command] if shell else shlex.split(command)
        elif isinstance(command, (list, tuple)) and all(isinstance(a, str) for a in command):
            argv = [" ".join(command)] if shell else list(command)
        else:
            raise ValueError(f"command must be a string or a list of strings, got {command!r}")
        if not argv or not argv[0].strip():
            raise ValueError("command is empty")
        if result_format not in (None, "json", "csv"):
            raise ValueError(f"result_format must be json or csv, got {result_format!r}")
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.argv, self.shell = argv, bool(shell)
        self.result_file, self.result_format = str(result_file), result_format
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        self.inherit_env, self.cwd = bool(inherit_env), cwd
        self.timeout_s, self.out_root = timeout_s, out_root
        self.kill_grace_s, self.tail_lines = float(kill_grace_s), int(stderr_tail_lines)
        for where, tmpl in [("command", a) for a in argv] + [("result_file", self.result_file)] + \
                [(f"env[{k}]", v) for k, v in self.env.items()] + [("cwd", cwd or "")]:
            try:
                bad = sorted(f for f in _fields(tmpl) if f not in FIELDS and not
                             (f.startswith("h_") and not any(c in f for c in ".[")))
            except ValueError as e:
                raise ValueError(f"{where} template {tmpl!r} is malformed: {e}") from None
            if bad or (where == "result_file" and "result_file" in _fields(tmpl)):
                raise ValueError(f"{where} template {tmpl!r} has unknown field(s) "
                                 f"{', '.join('{' + b + '}' for b in bad) or '{result_file}'}; "
                                 f"known: {', '.join(FIELDS)}, h_<domain>")

    # -- rendering --------------------------------------------------------------------------
    def out_dir(self, run_id: str) -> Path:
        root = self.out_root
        if root is None:
            cd = run_context().campaign_dir
            if cd is None:
                raise ValueError("CommandTrainer has no directory for run outputs: pass out_root "
                                 "or run it in a campaign (which supplies the campaign directory)")
            root = os.path.join(cd, "runs")
        return Path(os.path.abspath(root)) / run_id

    def fields(self, spec: RunSpec, attempt: int, out_dir: Path) -> dict[str, Any]:
        vals: dict[str, Any] = {"run_id": spec.run_id, "N": int(spec.N), "D": int(spec.D),
                                "seed": int(spec.seed), "attempt": int(attempt),
                                "weights_json": json.dumps(spec.h), "out_dir": str(out_dir),
                                "python": sys.executable}
        vals.update({f"h_{k}": float(v) for k, v in spec.h.items()})
        vals["result_file"] = os.path.join(out_dir, self.render(self.result_file, vals))
        return vals

    @staticmethod
    def render(template: str, vals: dict[str, Any], quote: bool = False) -> str:
        try:
            return (_QUOTING if quote else _PLAIN).vformat(template, (), vals)
        except KeyError as e:
            doms = ", ".join(k[2:] for k in vals if k.startswith("h_"))
            raise ValueError(f"template {template!r}: field {{{e.args[0]}}} names no domain of "
                             f"this run (domains: {doms})") from None

    # -- running ------------------------------------------------------------------------------
    def __call__(self, spec: RunSpec) -> RunResult:
        attempt = run_context().attempt
        out_dir = self.out_dir(spec.run_id)
        out_dir.mkdir(parents=True, exist_ok=True)
        vals = self.fields(spec, attempt, out_dir)
        if self.shell:
            argv = ["/bin/sh", "-c", self.render(self.argv[0], vals, quote=True)]
        else:
            argv = [self.render(a, vals) for a in self.argv]
        env = dict(os.environ) if self.inherit_env else {}
        env.update({k: self.render(v, vals) for k, v in self.env.items()})
        env.update(PLANNER_RUN_ID=spec.run_id, PLANNER_ATTEMPT=str(attempt),
                   PLANNER_OUT_DIR=str(out_dir), PLANNER_RESULT_FILE=vals["result_file"])
        cwd = self.render(self.cwd, vals) if self.cwd else None
        if cwd and not os.path.isdir(cwd):
            raise FileNotFoundError(f"working directory {cwd} does not exist (run {spec.run_id})")
        result = Path(vals["result_file"])
        result.unlink(missing_ok=True)  # never read a result an earlier attempt left
        logs = [out_dir / f"attempt-{attempt}.stdout", out_dir / f"attempt-{attempt}.stderr"]
        t0 = time.time()
        with open(logs[0], "ab") as fo, open(logs[1], "ab") as fe:
            err_start = os.fstat(fe.fileno()).st_size
            if err_start or os.fstat(fo.fileno()).st_size:
                for f in (fo, fe):
                    f.write(f"\n---- attempt {attempt} started again (worker restarted) ----\n".encode())
                    f.flush()
                err_start = os.fstat(fe.fileno()).st_size
            proc = subprocess.Popen([sys.executable, "-c", _SUPERVISOR, *argv], stdin=subprocess.DEVNULL,
                                    stdout=fo, stderr=fe, env=env, cwd=cwd, start_new_session=True)
            try:
                rc = proc.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                self._stop(proc)
                last, tail = self._tail(logs[1], err_start)
                raise CommandTimeout(f"command ran past timeout_s {self.timeout_s:g} and was killed "
                                     f"(run {spec.run_id}, attempt {attempt}): {last}\n"
                                     f"stderr tail ({logs[1]}):\n{tail}") from None
            finally:
                if proc.returncode is None:  # interrupted (Ctrl-C, cancelled): take the group down
                    self._stop(proc)
            self._kill_group(proc.pid)  # whatever the command left running in its group
        if rc != 0:
            last, tail = self._tail(logs[1], err_start)
            how = f"exited with code {rc}"
            if rc < 0:
                try:
                    how = f"was killed by {signal.Signals(-rc).name}"
                except ValueError:
                    how = f"was killed by signal {-rc}"
            raise CommandFailed(f"command {how}: {last}\n(run {spec.run_id}, attempt {attempt}; "
                                f"stderr tail from {logs[1]}):\n{tail}")
        if not result.exists():
            raise ResultFileError(f"result file {result} was not written (the command exited 0; "
                                  f"run {spec.run_id}, attempt {attempt}; output in {out_dir})")
        res = read_result_file(result, spec.run_id, self.result_format)
        res.metadata.setdefault("command", {"attempt": attempt, "out_dir": str(out_dir),
                                            "result_file": str(result),
                                            "seconds": round(time.time() - t0, 3)})
        return res

    def _tail(self, path: Path, start: int) -> tuple[str, str]:
        """(last non-empty stderr line, last ``stderr_tail_lines`` lines) since ``start``."""
        with open(path, "rb") as f:
            f.seek(max(start, os.fstat(f.fileno()).st_size - 8000))
            lines = f.read().decode(errors="replace").splitlines()
        lines = [ln for ln in lines if ln.strip()][-self.tail_lines:]
        return (lines[-1].strip()[:300] if lines else "(stderr is empty)"), "\n".join(lines)

    @staticmethod
    def _kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _stop(self, proc: subprocess.Popen) -> None:
        """SIGTERM the process group, SIGKILL it after ``kill_grace_s``; reap the supervisor."""
        self._kill_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=self.kill_grace_s)
        except subprocess.TimeoutExpired:
            pass
        self._kill_group(proc.pid)
        proc.wait()
