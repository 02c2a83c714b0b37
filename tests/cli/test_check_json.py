"""`planner check` prints strict JSON: a metric that is undefined (NaN) is null, not a bare NaN."""
from __future__ import annotations

import json

import planner.cli.fitting as fitting
from planner.cli import main as planner_main


def _strict(text: str):
    def refuse(c):
        raise ValueError(f"not JSON: {c}")
    return json.loads(text, parse_constant=refuse)


def test_check_prints_null_for_nan(monkeypatch, capsys, tmp_path):
    report = {"targets": {"web": {"with_discrepancy": {"coverage_90": float("nan"),
                                                       "mre": 0.012}}}}
    monkeypatch.setattr(fitting, "check_file", lambda *a, **k: report)
    assert planner_main(["check", str(tmp_path / "runs.csv"), "--method", "map"]) == 0
    out = _strict(capsys.readouterr().out)
    assert out["targets"]["web"]["with_discrepancy"] == {"coverage_90": None, "mre": 0.012}
