"""Golden files of ``tokenmill plan ... --json``: the scripts' contract, byte for byte.

A change to the model or the catalogs that moves a figure fails here on purpose; refresh
the files after checking the change is meant:

    TOKENMILL_UPDATE_GOLDEN=1 pytest tests/unit/test_golden.py
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from tokenmill.cli.main import app

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
LLAMA = ("--gpu", "h100-sxm", "--gpus", "2", "--model", "llama-3.3-70b", "--precision", "fp8")
CASES = {
    "plan_perf_contract": (
        "plan", "perf", *LLAMA, "--input", "1000", "--output", "1000", "--concurrency", "64",
    ),
    "plan_perf_max_dep": (
        "plan", "perf", "--gpu", "h200", "--gpus", "8", "--model", "deepseek-r1",
        "--precision", "fp8", "--parallel", "dep", "--input", "1024", "--output", "8192",
    ),
    "plan_cost_owned_pool": ("plan", "cost", *LLAMA, "--pool-gpus", "8", "--price", "0.40"),
    "plan_price_rented": ("plan", "price", *LLAMA, "--basis", "rented", "--margin", "0.5"),
    "plan_capacity": (
        "plan", "capacity", "--model", "llama-3.3-70b", "--rps", "20", "--gpu", "h100-sxm",
        "--gpu", "h200",
    ),
    "plan_scenario": ("plan", "scenario", "--years", "3", "--gpu", "h100-sxm", "--gpu", "b200"),
    "plan_site": ("plan", "site", "--mw", "50", "--energy", "0.04"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_json_matches_its_golden_file(name: str) -> None:
    result = CliRunner().invoke(app, [*CASES[name], "--json"])
    assert result.exit_code == 0, result.stderr
    shown = orjson.loads(result.stdout)
    path = GOLDEN / f"{name}.json"
    if os.environ.get("TOKENMILL_UPDATE_GOLDEN") == "1":
        path.write_bytes(orjson.dumps(shown, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    assert shown == orjson.loads(path.read_bytes()), f"refresh with the command in {__doc__}"
