"""CommandTrainer: template rendering, result files (JSON and CSV, good and bad), exit codes with
the stderr tail, timeouts that kill the process group, resuming a retried run, the run context
the planner's workers set; and campaigns on the real local Ray driving examples/tiny_train.py,
including a command that fails, one that hangs, one that writes a malformed result and one that
is preempted and resumes."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from planner.campaign.campaign import campaign_status, export_runs, run_campaign
from planner.campaign.executors import InProcessExecutor
from planner.campaign.executors.base import execute_run, outcome_from_dict
from planner.campaign.ledger import Ledger
from tests.support.fakefit import stub_fitter  # a saved posterior: status reads its snapshot
from trainers.base import _RUN_CONTEXT, RunContext, RunResult, RunSpec, run_context
from trainers.command import (
    CommandFailed,
    CommandTimeout,
    CommandTrainer,
    ResultFileError,
    read_result_file,
)

REPO = Path(__file__).resolve().parents[2]
SCRIPT = str(REPO / "examples" / "tiny_train.py")
SPEC = RunSpec("r00001", 2_000_000, 300_000_000, {"a": 0.5, "b": 0.3, "c": 0.2}, 7)
TINY = [sys.executable, SCRIPT, "--run-id", "{run_id}", "--N", "{N}", "--D", "{D}", "--seed",
        "{seed}", "--weights", "{weights_json}", "--out-dir", "{out_dir}", "--result",
        "{result_file}"]


def in_attempt(attempt: int, campaign_dir: str | None = None):
    """Set the run context as the planner's worker does; returns the reset token."""
    return _RUN_CONTEXT.set(RunContext(attempt, campaign_dir))


def py(code: str) -> list[str]:
    """A command running Python ``code`` (braces escaped: the command is a template)."""
    return [sys.executable, "-c", code.replace("{", "{{").replace("}", "}}")]


def gone(pid: int, within: float = 10.0) -> bool:
    """True once ``pid`` has exited (a zombie counts as exited)."""
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


# --------------------------------------------------------------------------------------------
# templates
# --------------------------------------------------------------------------------------------
def test_template_renders_each_argument(tmp_path):
    t = CommandTrainer(["echo", "{run_id}", "{N}", "{D:.2e}", "{seed}", "{h_a:.3f}", "--mix",
                        "{weights_json}", "{out_dir}/x", "{attempt}", "{{literal}}"],
                       out_root=str(tmp_path), env={"MIX": "{h_b}", "RID": "{run_id}"})
    vals = t.fields(SPEC, 2, t.out_dir(SPEC.run_id))
    argv = [t.render(a, vals) for a in t.argv]
    out = tmp_path / "r00001"
    assert argv == ["echo", "r00001", "2000000", "3.00e+08", "7", "0.500", "--mix",
                    json.dumps(SPEC.h), f"{out}/x", "2", "{literal}"]
    assert json.loads(argv[7]) == SPEC.h  # the JSON stays one argument, spaces and all
    assert vals["result_file"] == str(out / "result.json") and vals["python"] == sys.executable
    # a string is split before rendering, so values never split into several arguments
    s = CommandTrainer("train --mix {weights_json} --out '{out_dir}'", out_root=str(tmp_path))
    assert [s.render(a, vals) for a in s.argv] == ["train", "--mix", json.dumps(SPEC.h), "--out",
                                                  str(out)]
    # a relative result file is relative to out_dir
    r = CommandTrainer("x", result_file="metrics.csv", out_root=str(tmp_path))
    assert r.fields(SPEC, 1, out)["result_file"] == str(out / "metrics.csv")


@pytest.mark.parametrize("kwargs, match", [
    ({"command": "train --n {n_params}"}, r"unknown field\(s\) \{n_params\}"),
    ({"command": "x", "env": {"A": "{nope}"}}, r"env\[A\] template"),
    ({"command": "x", "result_file": "{result_file}.json"}, "result_file"),
    ({"command": "train {oops"}, "malformed"),
    ({"command": "train {h_a[0]}"}, r"unknown field\(s\) \{h_a\[0\]\}"),
    ({"command": "train {run_id.upper}"}, r"unknown field\(s\) \{run_id.upper\}"),
    ({"command": ""}, "empty"),
    ({"command": 3}, "string or a list"),
    ({"command": "x", "result_format": "xml"}, "json or csv"),
    ({"command": "x", "timeout_s": 0}, "timeout_s"),
])
def test_bad_templates_and_args_are_rejected_when_built(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CommandTrainer(**kwargs)


def test_unknown_domain_and_missing_directory(tmp_path):
    t = CommandTrainer("x {h_web}", out_root=str(tmp_path))
    with pytest.raises(ValueError, match=r"\{h_web\} names no domain of this run \(domains: a, b, c\)"):
        t(SPEC)
    with pytest.raises(ValueError, match="pass out_root"):
        CommandTrainer("x")(SPEC)  # outside a campaign, without out_root


def test_shell_is_opt_in_and_quotes_values(tmp_path):
    t = CommandTrainer("printf '%s\\n' {weights_json} {h_a:.2f} > {out_dir}/mix.txt && "
                       "echo '{{\"losses\": {{\"a\": 2.5}}}}' > {result_file}",
                       out_root=str(tmp_path), shell=True)
    res = t(SPEC)
    assert res.losses == {"a": 2.5}
    mix, h_a = (tmp_path / "r00001" / "mix.txt").read_text().splitlines()
    assert json.loads(mix) == SPEC.h and h_a == "0.50"
    # without shell: true the same characters are plain arguments
    t = CommandTrainer(py("import sys; print(sys.argv[1:])") + ["a && b", "{out_dir}"],
                       out_root=str(tmp_path))
    with pytest.raises(ResultFileError):
        t(SPEC)
    assert "'a && b'" in (tmp_path / "r00001" / "attempt-1.stdout").read_text()


# --------------------------------------------------------------------------------------------
# result files
# --------------------------------------------------------------------------------------------
def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_result_files_good(tmp_path):
    p = write(tmp_path, "r.json", json.dumps({
        "run_id": "r1", "losses": {"a": 2.5, "b": 3},
        "checkpoints": [[100, {"a": 3.1}], [200.0, {"a": 2.8, "b": 3.3}]],
        "metadata": {"N": 1234}}))
    r = read_result_file(p, "r1")
    assert isinstance(r, RunResult) and r.run_id == "r1" and r.losses == {"a": 2.5, "b": 3.0}
    assert r.checkpoints == [(100, {"a": 3.1}), (200, {"a": 2.8, "b": 3.3})]
    assert r.metadata == {"N": 1234}
    assert read_result_file(write(tmp_path, "m.json", '{"losses": {"a": 1}}'), "x").checkpoints == []
    # CSV: last row final; extra columns ignored; empty cell = not measured; a repeated token
    # count (after a resume) keeps the later row
    c = write(tmp_path, "r.csv", "step,tokens,loss_a,loss_b\n1,100,3.2,3.9\n2,200,3.0,\n"
                                 "2,200,2.9,\n3,300,2.7,3.4\n\n")
    r = read_result_file(c, "r1")
    assert r.losses == {"a": 2.7, "b": 3.4}
    assert r.checkpoints == [(100, {"a": 3.2, "b": 3.9}), (200, {"a": 2.9})]
    assert r.metadata == {"final_tokens": 300}
    d = write(tmp_path, "d.txt", "D,loss_a\n5e8,2.0\n")
    assert read_result_file(d, "r1", fmt="csv").losses == {"a": 2.0}


@pytest.mark.parametrize("name, text, match", [
    ("r.json", '{"losses": {"a": 2.5},', "not valid JSON"),
    ("r.json", "[1, 2]", "must be a JSON object"),
    ("r.json", '{"loss": {"a": 2.5}}', "unknown key.*'loss'"),
    ("r.json", '{"metadata": {}}', "has no 'losses'"),
    ("r.json", '{"losses": {}}', "non-empty object"),
    ("r.json", '{"losses": {"a": NaN}}', r"losses\['a'\]: loss must be finite and > 0"),
    ("r.json", '{"losses": {"a": -1.0}}', "finite and > 0"),
    ("r.json", '{"losses": {"a": "2.5"}}', "must be a number"),
    ("r.json", '{"losses": {"a": true}}', "must be a number"),
    ("r.json", '{"losses": {"a": 2}, "checkpoints": [[0, {"a": 3}]]}', r"checkpoints\[0\]: tokens"),
    ("r.json", '{"losses": {"a": 2}, "checkpoints": [{"a": 3}]}', r"checkpoints\[0\] must be"),
    ("r.json", '{"losses": {"a": 2}, "checkpoints": {"1": 2}}', "must be a list"),
    ("r.json", '{"losses": {"a": 2}, "metadata": [1]}', "'metadata' must be an object"),
    ("r.json", '{"losses": {"a": 2}, "run_id": "r9"}', "is for run 'r9', expected 'r1'"),
    ("r.csv", "", "is empty"),
    ("r.csv", "step,loss_a\n1,2.0\n", "one 'tokens'"),
    ("r.csv", "tokens,D,loss_a\n1,1,2.0\n", "one 'tokens'"),
    ("r.csv", "tokens,acc\n1,0.5\n", "loss_<target> columns"),
    ("r.csv", "tokens,loss_a\n", "no rows"),
    ("r.csv", "tokens,loss_a\n100,abc\n", "line 2, column loss_a: loss must be a number"),
    ("r.csv", "tokens,loss_a\n100,2.0\n200,inf\n", "line 3, column loss_a: loss must be finite"),
    ("r.csv", "tokens,loss_a\n100,2.0,7\n", "line 2 has 3 fields"),
    ("r.csv", "tokens,loss_a\n-5,2.0\n", "tokens must be finite and > 0"),
    ("r.csv", "tokens,loss_a\n200,2.0\n100,2.5\n", "last row .* must be the final"),
    ("r.csv", "tokens,loss_a\n100,2.0\n200,\n", "has no losses"),
])
def test_result_files_bad_name_the_file_and_problem(tmp_path, name, text, match):
    p = write(tmp_path, name, text)
    with pytest.raises(ResultFileError, match=match) as e:
        read_result_file(p, "r1")
    assert str(p) in str(e.value)


def test_missing_result_file(tmp_path):
    with pytest.raises(ResultFileError, match=f"result file {tmp_path}/none.json does not exist"):
        read_result_file(tmp_path / "none.json", "r1")
    t = CommandTrainer(py("pass"), out_root=str(tmp_path))
    with pytest.raises(ResultFileError, match=r"result\.json was not written \(the command exited 0"):
        t(SPEC)


# --------------------------------------------------------------------------------------------
# running: exit codes, logs, timeouts, resume
# --------------------------------------------------------------------------------------------
def test_example_script_json_and_csv(tmp_path):
    res = CommandTrainer(TINY, out_root=str(tmp_path))(SPEC)
    assert set(res.losses) == {"a", "b", "c"} and all(v > 1.7 for v in res.losses.values())
    assert [t for t, _ in res.checkpoints] == [75_000_000, 150_000_000, 225_000_000]
    assert res.metadata["resumed_from_step"] == 0
    assert res.metadata["command"]["out_dir"] == str(tmp_path / "r00001")
    assert "step 4/4" in (tmp_path / "r00001" / "attempt-1.stdout").read_text()
    csv_t = CommandTrainer(TINY, out_root=str(tmp_path / "csv"), result_file="{out_dir}/m.csv")
    res2 = csv_t(SPEC)
    assert res2.losses == pytest.approx(res.losses, rel=1e-12)
    assert res2.checkpoints[0][1] == pytest.approx(res.checkpoints[0][1], rel=1e-12)


def test_nonzero_exit_raises_with_stderr_tail(tmp_path):
    code = ("import sys\nfor i in range(100): print('noise', i, file=sys.stderr)\n"
            "print('RuntimeError: CUDA out of memory', file=sys.stderr)\nsys.exit(3)")
    t = CommandTrainer(py(code), out_root=str(tmp_path), stderr_tail_lines=5)
    with pytest.raises(CommandFailed) as e:
        t(SPEC)
    msg = str(e.value)
    first = msg.splitlines()[0]
    assert first == "command exited with code 3: RuntimeError: CUDA out of memory"
    err = tmp_path / "r00001" / "attempt-1.stderr"
    assert str(err) in msg and "noise 99" in msg and "noise 95" not in msg
    assert "noise 0" in err.read_text()  # the full stderr is kept in the campaign directory
    # death by a signal, and a program that does not exist
    t = CommandTrainer(py("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"),
                       out_root=str(tmp_path))
    with pytest.raises(CommandFailed, match="was killed by SIGKILL"):
        t(SPEC)
    t = CommandTrainer(["/nonexistent/train"], out_root=str(tmp_path))
    with pytest.raises(CommandFailed, match="code 127: cannot start command '/nonexistent/train'"):
        t(SPEC)


def test_timeout_raises_a_timeout_error(tmp_path):
    t = CommandTrainer(["sleep", "300"], out_root=str(tmp_path), timeout_s=1, kill_grace_s=2)
    t0 = time.time()
    with pytest.raises(CommandTimeout, match=r"ran past timeout_s 1 and was killed \(run r00001, "
                                             r"attempt 1\): \(stderr is empty\)") as e:
        t(SPEC)
    assert isinstance(e.value, TimeoutError)
    assert time.time() - t0 < 30


@pytest.mark.slow
def test_timeout_kills_the_process_group(tmp_path):
    # the command leaves a grandchild (sleep) running in its process group; timeout_s leaves
    # time for the shell to start on a loaded machine
    t = CommandTrainer(["sh", "-c", "sleep 300 & echo $! > {out_dir}/pid; echo started >&2; wait"],
                       out_root=str(tmp_path), timeout_s=4, kill_grace_s=2)
    with pytest.raises(CommandTimeout, match=r"ran past timeout_s 4 and was killed .*: started"):
        t(SPEC)
    assert gone(int((tmp_path / "r00001" / "pid").read_text()))


def test_leftover_processes_are_killed_when_the_command_exits(tmp_path):
    script = "sleep 300 & echo $! > {out_dir}/pid; echo '{{\"losses\": {{\"a\": 2}}}}' > {result_file}"
    t = CommandTrainer(["sh", "-c", script],
                       out_root=str(tmp_path))
    assert t(SPEC).losses == {"a": 2.0}
    assert gone(int((tmp_path / "r00001" / "pid").read_text()))


def test_command_dies_with_the_worker(tmp_path):
    """A worker killed from outside (the executor's timeout: ray.cancel(force=True)) takes its
    command's process group with it, so nothing keeps writing to the run's directory."""
    prog = (f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
            "from trainers.command import CommandTrainer\nfrom trainers.base import RunSpec\n"
            f"CommandTrainer(['sh', '-c', 'echo $$ > {{out_dir}}/pid; sleep 300'], out_root={str(tmp_path)!r})"
            "(RunSpec('r1', 1, 1, {'a': 1.0}, 0))\n")
    worker = subprocess.Popen([sys.executable, "-c", prog])
    pidfile = tmp_path / "r1" / "pid"
    deadline = time.time() + 60
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.time() < deadline:
        time.sleep(0.1)
    pid = int(pidfile.read_text())
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert gone(pid, within=20)


def test_retry_keeps_out_dir_resumes_and_logs_per_attempt(tmp_path):
    t = CommandTrainer(TINY + ["--preempt", "r00001:1"], out_root=str(tmp_path))
    out = tmp_path / "r00001"
    with pytest.raises(CommandFailed, match="code 143: tiny_train: run r00001 preempted after step 2"):
        t(SPEC)
    (out / "result.json").write_text('{"losses": {"a": 9.9}}')  # a stale result is never read
    token = in_attempt(2)
    try:
        res = t(SPEC)
    finally:
        _RUN_CONTEXT.reset(token)
    assert res.metadata["resumed_from_step"] == 2 and res.metadata["command"]["attempt"] == 2
    assert res.losses != {"a": 9.9}
    assert "resuming run r00001 from step 2" in (out / "attempt-2.stdout").read_text()
    assert "preempted" in (out / "attempt-1.stderr").read_text()
    # a fresh run with the same spec gives the same losses as the interrupted-and-resumed one
    fresh = CommandTrainer(TINY, out_root=str(tmp_path / "fresh"))(SPEC)
    assert fresh.losses == pytest.approx(res.losses, rel=1e-12)


def test_same_attempt_again_appends_to_its_logs(tmp_path):
    """Ray reruns a task whose worker died with the same attempt number: the logs are appended
    to after a marker, and the error quotes only the latest run's stderr."""
    t = CommandTrainer(py("import sys, os; print('pid=' + str(os.getpid()), file=sys.stderr); sys.exit(2)"),
                       out_root=str(tmp_path))
    msgs = []
    for _ in range(2):
        with pytest.raises(CommandFailed) as e:
            t(SPEC)
        msgs.append(str(e.value))
    err = (tmp_path / "r00001" / "attempt-1.stderr").read_text()
    assert err.count("pid=") == 2 and "---- attempt 1 started again (worker restarted) ----" in err
    first = msgs[0].splitlines()[0].rsplit(": ", 1)[1]  # "pid=<first process>"
    assert first.startswith("pid=") and first not in msgs[1]


def test_env_cwd_and_planner_variables(tmp_path):
    code = ("import json, os; json.dump({'losses': {'a': 2.0}, 'metadata': {'cwd': os.getcwd(), "
            "'env': {k: v for k, v in os.environ.items() if k.startswith(('PLANNER_', 'MY_'))"
            " and not k.startswith('PLANNER_JAX')}}}, "
            "open(os.environ['PLANNER_RESULT_FILE'], 'w'))")
    token = in_attempt(3, str(tmp_path / "camp"))
    try:
        res = CommandTrainer(py(code), env={"MY_MIX": "{h_a}", "MY_N": 5}, cwd="{out_dir}")(SPEC)
    finally:
        _RUN_CONTEXT.reset(token)
    out = str(tmp_path / "camp" / "runs" / "r00001")
    assert res.metadata["cwd"] == out
    assert res.metadata["env"] == {"MY_MIX": "0.5", "MY_N": "5", "PLANNER_RUN_ID": "r00001",
                                   "PLANNER_ATTEMPT": "3", "PLANNER_OUT_DIR": out,
                                   "PLANNER_RESULT_FILE": f"{out}/result.json"}
    with pytest.raises(FileNotFoundError, match="working directory /nonexistent/dir"):
        CommandTrainer("x", cwd="/nonexistent/dir", out_root=str(tmp_path))(SPEC)


# --------------------------------------------------------------------------------------------
# the planner's side: the run context and timeouts raised by a trainer
# --------------------------------------------------------------------------------------------
class ContextTrainer:
    """Reports the run context it sees; raises TimeoutError for run ids starting with 't'."""

    def __call__(self, spec: RunSpec) -> RunResult:
        if spec.run_id.startswith("t"):
            raise TimeoutError("took too long")
        ctx = run_context()
        return RunResult(spec.run_id, {"a": 2.0},
                         metadata={"attempt": ctx.attempt, "campaign_dir": ctx.campaign_dir})


def test_workers_set_the_run_context_and_report_timeouts():
    path = "tests.trainers.test_command:ContextTrainer"
    d = execute_run(SPEC.to_dict(), path, "{}", attempt=3, campaign_dir="/c")
    assert d["result"]["metadata"] == {"attempt": 3, "campaign_dir": "/c"}
    assert run_context() == RunContext()  # reset after the call
    t = RunSpec("t1", 1, 1, {"a": 1.0}, 0)
    o = outcome_from_dict("t1", 1, execute_run(t.to_dict(), path, "{}"))
    assert o.reason == "timeout" and o.error.startswith("TimeoutError: took too long")
    for threads in (0, 2):
        ex = InProcessExecutor(path, {}, threads=threads, campaign_dir="/camp")
        ex.submit(SPEC, 2)
        outs, deadline = [], time.time() + 60
        while not outs and time.time() < deadline:
            outs = ex.wait(timeout=10)
        ex.shutdown()
        assert outs[0].result.metadata == {"attempt": 2, "campaign_dir": "/camp"}


# --------------------------------------------------------------------------------------------
# campaigns on the real local Ray
# --------------------------------------------------------------------------------------------
def example_config(**over) -> dict:
    c = yaml.safe_load((REPO / "configs" / "command_example.yaml").read_text())
    c["trainer"]["args"]["cwd"] = str(REPO)  # the template names examples/tiny_train.py
    for k, v in over.items():
        c[k] = {**c[k], **v} if isinstance(v, dict) and isinstance(c.get(k), dict) else v
    return c


@pytest.mark.slow
def test_example_config_campaign_on_ray(ray_session, tmp_path):
    out = tmp_path / "camp"
    c = example_config(budget={"max_runs": 6}, fit={"method": "map", "min_runs": 100,
                                                    "background": False})
    res = run_campaign(c, out)
    assert res.stop_reason == "budget" and res.completed == 6 and res.failed == 0
    df = export_runs(out)
    assert df["run_id"].nunique() == 6 and len(df) == 6 * 4  # 3 checkpoints + final per run
    assert (df["loss_a"] > 1.7).all()
    for rid in df["run_id"].unique():
        d = out / "runs" / rid
        assert (d / "result.json").exists() and (d / "ckpt.json").exists()
        assert "step 4/4" in (d / "attempt-1.stdout").read_text()
    assert json.loads((out / "recommendation.json").read_text())["mean"].keys() == {"a", "b", "c"}


@pytest.mark.slow
def test_failing_hanging_malformed_and_preempted_commands_on_ray(ray_session, tmp_path):
    out = tmp_path / "camp"
    c = example_config(budget={"max_runs": 5}, max_failure_fraction=0.9,
                       executor={"max_retries": 2, "timeout_s": 300})
    args = c["trainer"]["args"]
    args["command"] += (" --fail r00001:1 --fail-code 7 --hang r00002:1 --malformed r00003:1"
                        " --malformed r00003:2 --preempt r00004:1")
    # generous for a loaded 2-core machine: the hang costs timeout_s + kill_grace_s
    args.update(timeout_s=15, kill_grace_s=3)
    res = run_campaign(c, out, fitter=stub_fitter)
    assert res.stop_reason == "budget" and res.completed == 5
    with Ledger.open(out, readonly=True) as lg:
        att = {r.run_id: lg.attempts(r.run_id) for r in lg.runs()}
        results = {r["run_id"]: r for r in lg.results()}
    st = {rid: [(a["status"], a["reason"]) for a in a_] for rid, a_ in att.items()}
    runs = out / "runs"
    # a non-zero exit: the exit code and the stderr tail are the recorded error
    assert st["r00001"] == [("failed", "exception"), ("completed", None)]
    err = att["r00001"][0]["error"]
    assert err.startswith("CommandFailed: command exited with code 7: tiny_train: simulated "
                          "failure in run r00001 (CUDA out of memory)")
    assert str(runs / "r00001" / "attempt-1.stderr") in err
    # a hang: the command is killed at the trainer's timeout_s, recorded as a timeout
    assert st["r00002"] == [("failed", "timeout"), ("completed", None)]
    assert "ran past timeout_s 15 and was killed" in att["r00002"][0]["error"]
    assert "hangs" in (runs / "r00002" / "attempt-1.stdout").read_text()
    # a malformed result file: the error names the file and the problem
    assert st["r00003"] == [("failed", "exception")] * 2 + [("completed", None)]
    for a in att["r00003"][:2]:
        assert f"ResultFileError: result file {runs / 'r00003' / 'result.json'} (json): not valid JSON" \
            in a["error"]
    # a preempted job resumes from its checkpoint on the retry, in the same directory
    assert st["r00004"] == [("failed", "exception"), ("completed", None)]
    assert "exited with code 143" in att["r00004"][0]["error"]
    assert results["r00004"]["metadata"]["resumed_from_step"] == 2
    assert results["r00004"]["metadata"]["command"]["out_dir"] == str(runs / "r00004")
    assert st["r00005"] == [("completed", None)]
    for rid, a_ in att.items():
        for a in a_:
            assert (runs / rid / f"attempt-{a['attempt']}.stderr").exists()
    s = campaign_status(out)
    assert s["failed_attempts"] == 5 and s["counts"]["completed"] == 5
