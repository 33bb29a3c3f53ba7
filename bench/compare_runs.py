#!/usr/bin/env python3
"""Two runs of bench/gateway_overhead.py side by side: before and after a change.

  .venv/bin/python bench/compare_runs.py BEFORE.json AFTER.json

For each cell both runs measured: requests/s before and after and their ratio, the same
ratio with each run's gateway figure divided by its direct-to-upstream figure (the machine's
noise partly cancels), and the gateway's CPU per request and per relayed chunk (the figure
noise moves least). Prints markdown.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from overhead_report import gateway_cells as cells


def _ratio(after: float | None, before: float | None) -> str:
    return f"{after / before:.2f}" if after and before else ""


def _num(value: float | None, digits: int = 0) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def table(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    old = {(case, side): (figures, direct) for case, side, figures, direct in cells(before)}
    out = [
        "| case | side | req/s before | req/s after | after/before | vs direct, after/before"
        " | CPU us/request before | after | after/before | CPU us/chunk before | after |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case, side, figures, direct in cells(after):
        if (case, side) not in old:
            continue
        then, then_direct = old[(case, side)]
        normalized = ""
        if direct and then_direct and direct.get("rps") and then_direct.get("rps"):
            normalized = _ratio(figures["rps"] / direct["rps"], then["rps"] / then_direct["rps"])
        cpu_then, cpu_now = then.get("cpu_us_per_request"), figures.get("cpu_us_per_request")
        out.append(
            f"| {case} | {side} | {_num(then['rps'])} | {_num(figures['rps'])}"
            f" | {_ratio(figures['rps'], then['rps'])} | {normalized}"
            f" | {_num(cpu_then, 1)} | {_num(cpu_now, 1)} | {_ratio(cpu_now, cpu_then)}"
            f" | {_num(then.get('cpu_us_per_chunk'), 1)}"
            f" | {_num(figures.get('cpu_us_per_chunk'), 1)} |"
        )
    return out


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    before, after = (json.loads(Path(name).read_text()) for name in sys.argv[1:])
    print("\n".join(table(before, after)))


if __name__ == "__main__":
    main()
