"""What a fit says while it runs: one log line per phase, a live status line (target, phase,
chains, ETA) only where asked, and ``planner fit`` drawing it only on a terminal."""
import io
import logging

import pytest

from planner.infer.dispatch import fit
from planner.infer.progress import Reporter
from planner.model.runs import runs_from_frame
from tests.support.sim import TRUE_ADDITIVE, grid_design, simulate


class _Tty(io.StringIO):
    def isatty(self):
        return True


def _table():
    N, D, H = grid_design(5, [1e7, 3e7, 1e8], [1e9, 3e9], seed=2)
    return simulate("additive", TRUE_ADDITIVE, N, D, H, 0.005, seed=3)


def test_reporter_draws_phases_with_eta_and_logs_one_line_each(caplog):
    stream = io.StringIO()
    rep = Reporter(stream, min_interval_s=0.0)
    with caplog.at_level(logging.INFO, logger="planner.inference"):
        with rep.phase("web", "sampling", 100, chains="chains 1-2") as ph:
            for done in (10, 20, 30):
                ph.update(done, "12 leapfrog steps per draw")
            ph.summary = "2 x 100 draws"
        with rep.phase("web", "mode search") as ph:
            pass
    out = stream.getvalue()
    assert "[web] sampling, chains 1-2: 30/100 iterations" in out
    assert "ETA" in out and "12 leapfrog steps per draw" in out  # rate known from 2 updates on
    assert "[web] sampling done" in out and out.endswith("\n")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("web: sampling done in") and "(2 x 100 draws)" in lines[0]
    assert lines[1].startswith("web: mode search done in")


def test_reporter_without_a_stream_only_logs(caplog):
    with caplog.at_level(logging.INFO, logger="planner.inference"), \
            pytest.raises(RuntimeError), Reporter().phase("web", "warm-up", 10) as ph:
        ph.update(5)
        raise RuntimeError("boom")
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == ["web: warm-up stopped"]


def test_fit_reports_its_phases(caplog):
    stream = io.StringIO()
    with caplog.at_level(logging.INFO, logger="planner.inference"):
        fit(runs_from_frame(_table()), law="additive", method="map", map_starts=4,
            progress=Reporter(stream, min_interval_s=0.0))
    assert "[web] Huber fit, 4 starts" in stream.getvalue()
    assert any(r.getMessage().startswith("web: Huber fit done") for r in caplog.records)


@pytest.mark.slow
def test_nuts_fit_reports_mode_search_warm_up_and_sampling(caplog):
    stream = io.StringIO()
    with caplog.at_level(logging.INFO, logger="planner.inference"):
        post = fit(runs_from_frame(_table()), law="additive", method="nuts", map_starts=4,
                   num_warmup=100, num_samples=100, progress=Reporter(stream, min_interval_s=0.0))
    phases = [r.getMessage().split(" done")[0] for r in caplog.records if " done in " in
              r.getMessage()]
    # further sampling rounds run while the draws fall short of the convergence goals
    assert phases[:4] == ["web: Huber fit", "web: mode search", "web: warm-up", "web: sampling"]
    assert all(p.startswith("web: sampling round ") for p in phases[4:])
    out = stream.getvalue()
    assert "[web] warm-up, chains 1-2:" in out and "[web] sampling, chains 1-2:" in out
    assert "ETA" in out
    d = post["web"].diagnostics
    rounds = {f"sampling_{r}" for r in range(2, 2 + len(phases) - 4)}
    assert set(d["phase_seconds"]) == {"mode_search", "warm-up", "sampling"} | rounds
    assert d["thin"] == 4 * (1 + len(rounds)) and d["num_samples"] == 100
    assert {"r_hat_max", "ess_bulk_min", "divergence_rate"} <= set(d)


def test_cli_draws_progress_only_on_a_terminal(tmp_path, monkeypatch, capsys):
    from planner.cli import main

    p = tmp_path / "runs.csv"
    _table().to_csv(p, index=False)
    args = ["fit", str(p), "--method", "map", "--no-discrepancy", "--out", str(tmp_path / "o")]
    assert main(args) == 0
    assert "[web]" not in capsys.readouterr().err  # not a terminal: quiet
    tty = _Tty()
    monkeypatch.setattr("sys.stderr", tty)
    assert main(args) == 0
    assert "[web] Huber fit" in tty.getvalue()
