"""The Python examples in the README and docs/ run as written, against the real package.

Each ```python block runs in a fresh namespace, in a folder holding ``runs.csv`` (a simulated
3-domain table with target ``web``) and with ``design_df`` (two designs) defined; a block that
defines ``MyTrainer`` is then called once through the real trainer contract."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.support.sim import DOMAINS3, TRUE_ADDITIVE, grid_design, simulate
from trainers.base import RunResult, RunSpec

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [(p.name, i, m.group(1)) for p in DOCS
          for i, m in enumerate(re.finditer(r"```python\n(.*?)```", p.read_text(), re.S))]


def test_the_docs_have_python_examples():
    assert any(name == "README.md" for name, _, _ in BLOCKS)


@pytest.mark.slow
@pytest.mark.parametrize("name,i,code", BLOCKS, ids=[f"{n}-{i}" for n, i, _ in BLOCKS])
def test_example_runs(name, i, code, tmp_path, monkeypatch):
    N, D, H = grid_design(8, [1e7, 3e7, 1e8], [1e9, 3e9], seed=0)
    simulate("additive", TRUE_ADDITIVE, N, D, H, 0.005, seed=1).to_csv(tmp_path / "runs.csv",
                                                                        index=False)
    monkeypatch.chdir(tmp_path)
    design = pd.DataFrame({"N": [3e8, 1e9], "D": [1e10, 2e10]})
    for j, d in enumerate(DOMAINS3):
        design[f"h_{d}"] = [1 / 3, [0.2, 0.5, 0.3][j]]
    ns = {"design_df": design,
          "train": lambda spec: ({"web": 2.9}, [], spec.N)}  # stands in for a user's training
    exec(compile(code, f"{name}[{i}]", "exec"), ns)
    if "MyTrainer" in ns:
        res = ns["MyTrainer"](data_root=str(tmp_path))(
            RunSpec("r0", 10_000_000, 1_000_000_000, {"web": 1.0}, 0))
        assert isinstance(res, RunResult) and np.isfinite(res.losses["web"])
    if "od" in ns:
        assert ns["od"]["h_star"].shape[1] == len(DOMAINS3)
