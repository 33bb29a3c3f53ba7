"""Print the performance model against the published calibration set as a Markdown table
(the one in docs/economics.md) and the median error.

    .venv/bin/python bench/perf_calibration.py
"""

from __future__ import annotations

from tokenmill.economics import calibration


def main() -> None:
    rows = calibration.compare(calibration.published_cases())
    columns = "model | GPUs | mapping | precision | in/out | published | modeled | error | batch"
    print(f"| {columns} | bound |")
    print("|---|---|---|---|---|---:|---:|---:|---:|---|")
    for row in rows:
        case = row.case
        print(
            f"| {case.model} | {case.gpu} x{case.gpus} | {case.parallel} | {case.precision}"
            f" | {case.input_tokens}/{case.output_tokens}"
            f" | {case.published_tokens_per_s_per_gpu:,.0f}"
            f" | {row.modeled_tokens_per_s_per_gpu:,.0f} | {row.error_ratio:+.0%}"
            f" | {row.batch} | {row.bound} |"
        )
    print(f"\nmedian |error|: {calibration.median_error_ratio(rows):.1%} over {len(rows)} cases")
    print(f"source: {calibration.source()}")


if __name__ == "__main__":
    main()
