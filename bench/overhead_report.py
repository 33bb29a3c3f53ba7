"""Markdown tables and the aims check of the gateway overhead benchmark (pure functions)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

UNITS = {
    "rps": "requests/s (answers with HTTP 2xx per second over the measured window)",
    "latency_ms": "ms, request sent -> last byte received (p50/p90/p99/max/mean)",
    "ttft_ms": "ms, request sent -> first chunk with non-empty content",
    "ttfb_ms": "ms, request sent -> first body byte",
    "itl_ms": "ms, gap between consecutive content events of one stream",
    "rss_mib": "MiB (VmRSS of the gateway process, /proc/PID/status); rss_peak_mib = VmHWM",
    "duration_s": "s",
    "added_ms": "ms, gateway minus direct at the same percentile",
    "own_ratio": "fraction of py-spy samples whose innermost frame is the function",
}
LAYOUT = (
    "tokenmill serve pinned to core 0 (taskset -c 0), alone; fake upstreams "
    "(shared/bench/fake_upstream.py) and load clients (shared/bench/load.py, "
    "bench/stream_client.py) pinned to core 1; loopback; closed loop, keep-alive; "
    "separate upstream instances for direct and gateway runs"
)
# The surfaces' rows of a run, chat first (the others are compared with it); Responses
# appears twice: stored (the API's default) and with ``store: false``.
SURFACE_ROWS = ("chat", "messages", "responses", "responses_unstored")
RSS_MIB_MAX = 200.0
RSS_GROWTH_MIB_MAX = 5.0  # "no growth": run 2 may end at most this much above run 1


def _f(value: Any, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _p(res: dict[str, Any], field: str, pct: str) -> float | None:
    block = res.get(field) or {}
    value: float | None = block.get(pct)
    return value


def _added(row: dict[str, Any], pct: str) -> float | None:
    gateway, direct = _p(row["gateway"], "latency_ms", pct), _p(row["direct"], "latency_ms", pct)
    return None if gateway is None or direct is None else round(gateway - direct, 3)


def overhead_table(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        "| case | req/s direct | req/s gateway | p50 ms direct | p50 ms gateway "
        "| p99 ms direct | p99 ms gateway | added p50 ms | added p99 ms "
        "| TTFT p50 ms direct | TTFT p50 ms gateway | errors direct / gateway |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        d, g = row["direct"], row["gateway"]
        out.append(
            "| {} | {:.0f} | {:.0f} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |".format(
                row["case"],
                d["rps"],
                g["rps"],
                _f(_p(d, "latency_ms", "p50")),
                _f(_p(g, "latency_ms", "p50")),
                _f(_p(d, "latency_ms", "p99")),
                _f(_p(g, "latency_ms", "p99")),
                _f(_added(row, "p50")),
                _f(_added(row, "p99")),
                _f(_p(d, "ttft_ms", "p50")),
                _f(_p(g, "ttft_ms", "p50")),
                d["errors"],
                g["errors"],
            )
        )
    return out


def billing_table(rows: list[dict[str, Any]]) -> list[str]:
    """Billing on (a priced model) beside metering only (a free one), same run, same upstream."""
    out = [
        "| case | req/s metering only | req/s billing on | billing / metering "
        "| p50 ms metering only | p50 ms billing on | errors billing on |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        m, b = row["gateway"], row.get("gateway_billed")
        if b is None:
            continue
        out.append(
            "| {} | {:.0f} | {:.0f} | {:.2f} | {} | {} | {} |".format(
                row["case"],
                m["rps"],
                b["rps"],
                b["rps"] / m["rps"] if m["rps"] else 0.0,
                _f(_p(m, "latency_ms", "p50")),
                _f(_p(b, "latency_ms", "p50")),
                b["errors"],
            )
        )
    return out


def fleet_table(rows: list[dict[str, Any]]) -> list[str]:
    """Routing (two deployments) and rate limits (a limited key) on, beside billing on."""
    out = [
        "| case | req/s billing on | req/s + routing and limits | ratio "
        "| p50 ms billing on | p50 ms + routing and limits | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        b, f = row.get("gateway_billed"), row.get("gateway_fleet")
        if b is None or f is None:
            continue
        out.append(
            "| {} | {:.0f} | {:.0f} | {:.2f} | {} | {} | {} |".format(
                row["case"],
                b["rps"],
                f["rps"],
                f["rps"] / b["rps"] if b["rps"] else 0.0,
                _f(_p(b, "latency_ms", "p50")),
                _f(_p(f, "latency_ms", "p50")),
                f["errors"],
            )
        )
    return out


def mean_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Two or more runs of one cell as one: req/s and latency percentiles averaged, errors
    and answers summed."""
    first = runs[0]
    mean = {**first}
    mean["rps"] = round(sum(r["rps"] for r in runs) / len(runs), 1)
    for field in ("latency_ms", "ttft_ms"):
        blocks = [r.get(field) for r in runs]
        if all(blocks):
            mean[field] = {
                k: round(sum(b[k] for b in blocks) / len(blocks), 3)  # type: ignore[index]
                for k in first[field]
            }
    for field in ("errors", "requests_ok", "done_seen", "usage_seen"):
        mean[field] = sum(r.get(field, 0) for r in runs)
    for field in ("gateway_cpu_s", "upstream_requests"):
        if all(field in r for r in runs):
            mean[field] = round(sum(r[field] for r in runs), 3)
    if mean.get("upstream_requests"):
        mean["cpu_us_per_request"] = round(
            mean["gateway_cpu_s"] / mean["upstream_requests"] * 1e6, 1
        )
    if all("cpu_us_per_chunk" in r for r in runs):
        mean["cpu_us_per_chunk"] = round(sum(r["cpu_us_per_chunk"] for r in runs) / len(runs), 2)
    mean["runs"] = len(runs)
    return mean


def surfaces_table(rows: list[dict[str, Any]]) -> list[str]:
    """Every surface row beside chat: one billed model, the same upstream, one run."""
    names = [name for name in SURFACE_ROWS if any(name in row for row in rows)]
    others = [name for name in names if name != "chat"]
    out = [
        "| case | "
        + " | ".join(f"req/s {name}" for name in names)
        + " | "
        + " | ".join(f"{name} / chat" for name in others)
        + " | "
        + " | ".join(f"p50 ms {name}" for name in names)
        + " | errors |",
        "|---|" + "---:|" * (2 * len(names) + len(others) + 1),
    ]
    for row in rows:
        cells = [row.get(name) or {} for name in names]
        chat = row["chat"]["rps"]
        ratios = [(row.get(name) or {}).get("rps") for name in others]
        out.append(
            f"| {row['case']} | "
            + " | ".join(_f(cell.get("rps"), 0) for cell in cells)
            + " | "
            + " | ".join(_f(rps / chat if rps and chat else None) for rps in ratios)
            + " | "
            + " | ".join(_f(_p(cell, "latency_ms", "p50")) for cell in cells)
            + f" | {sum(cell.get('errors', 0) for cell in cells)} |"
        )
    return out


def peers_table(results: dict[str, Any]) -> list[str]:
    """tokenmill (billing on) beside each peer that ran, per cell: req/s, the ratio, added
    p50 latency and CPU per request."""
    found = results.get("peers") or {}
    ran = {name: peer["cells"] for name, peer in found.items() if "cells" in peer}
    out = [
        f"Not measured: {name}: {peer['skipped']}"
        for name, peer in found.items()
        if "skipped" in peer
    ]
    if not ran:
        return out
    header = "| case | tokenmill billed req/s |"
    rule = "|---|---:|"
    for name in ran:
        header += (
            f" {name} req/s | tokenmill/{name} | {name} added p50 ms | {name} CPU us/request |"
        )
        rule += "---:|---:|---:|---:|"
    out = [*out, "", header, rule] if out else [header, rule]
    matrix = {row["case"]: row for row in results.get("matrix", [])}
    cases = list(matrix) or list(next(iter(ran.values())))  # peers alone: their own cells
    for case in cases:
        row = matrix.get(case, {})
        billed = row.get("gateway_billed") or {}
        line = f"| {case} | {_f(billed.get('rps'), 0)} |"
        for cells in ran.values():
            cell = cells.get(case) or {}
            rps = cell.get("rps")
            ratio = billed["rps"] / rps if rps and billed.get("rps") else None
            added = None
            if cell and row.get("direct"):
                added = _p(cell, "latency_ms", "p50")
                direct = _p(row["direct"], "latency_ms", "p50")
                added = None if added is None or direct is None else added - direct
            line += (
                f" {_f(rps, 0)} | {_f(ratio, 1)} | {_f(added, 2)} |"
                f" {_f(cell.get('cpu_us_per_request'), 1)} |"
            )
        out.append(line)
    return out


def gateway_cells(
    results: dict[str, Any],
) -> Iterator[tuple[str, str, dict[str, Any], dict[str, Any] | None]]:
    """(case, side, figures, the same cell direct to the upstream or None) for every cell a
    run measured through the gateway: the matrix, the realistic row, the surfaces."""
    for row in results.get("matrix", []):
        for side in ("gateway", "gateway_billed", "gateway_fleet"):
            if row.get(side):
                yield row["case"], side, row[side], row.get("direct")
    realistic = results.get("realistic")
    if realistic and realistic.get("gateway"):
        yield realistic["case"], "gateway", realistic["gateway"], realistic.get("direct")
    for row in results.get("surfaces", []):
        for surface in SURFACE_ROWS:
            if row.get(surface):
                yield row["case"], f"billed, {surface}", row[surface], None


def cpu_table(results: dict[str, Any]) -> list[str]:
    """The gateway's CPU time per request its upstream served and per relayed chunk: what
    one request and one token cost the gateway's core, whatever the machine's noise."""
    out = [
        "| case | side | req/s | gateway CPU s | requests | CPU us/request | CPU us/chunk |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for case, side, r, _ in gateway_cells(results):
        if "cpu_us_per_request" not in r:
            continue
        out.append(
            f"| {case} | {side} | {r['rps']:.0f} | {r['gateway_cpu_s']:.2f} "
            f"| {r['upstream_requests']} | {_f(r['cpu_us_per_request'], 1)} "
            f"| {_f(r.get('cpu_us_per_chunk'), 2) if 'cpu_us_per_chunk' in r else ''} |"
        )
    return out if len(out) > 2 else []


def realistic_table(row: dict[str, Any]) -> list[str]:
    out = [
        "| realistic stream (c=256, 256 tokens, 100 ms to first token, 20 ms/token) "
        "| req/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | ITL max ms "
        "| latency p50 ms | errors | [DONE] / usage seen |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for side in ("direct", "gateway"):
        r = row[side]
        out.append(
            f"| {side} | {r['rps']:.1f} | {_f(_p(r, 'ttft_ms', 'p50'))} "
            f"| {_f(_p(r, 'ttft_ms', 'p99'))} | {_f(_p(r, 'itl_ms', 'p50'))} "
            f"| {_f(_p(r, 'itl_ms', 'p99'))} | {_f(_p(r, 'itl_ms', 'max'))} "
            f"| {_f(_p(r, 'latency_ms', 'p50'))} | {r['errors']} "
            f"| {r['done_seen']} / {r['usage_seen']} of {r['ok_by_kind']['stream']} |"
        )
    return out


def long_tables(results: dict[str, Any]) -> list[str]:
    out = ["| gateway memory | RSS MiB | peak RSS MiB |", "|---|---:|---:|"]
    out += [
        f"| {m['when']} | {m['rss_mib']:.1f} | {m['rss_peak_mib']:.1f} |"
        for m in results.get("memory", [])
    ]
    long = results.get("long_runs")
    if long:
        out += [
            "",
            f"Long runs: mix {long['mix']} (cut = client closes the socket after the "
            f"first token), c={long['concurrency']}, {long['requests_asked']:,} requests "
            f"asked per run, time limit {long['seconds_max']:.0f} s per run.",
            "",
            "| long run | requests ok | non-stream / stream / cut | stopped by | s "
            "| req/s | errors |",
            "|---|---:|---|---|---:|---:|---:|",
        ]
        for i, r in enumerate(long["runs"], 1):
            k = r["ok_by_kind"]
            out.append(
                f"| {i} | {r['requests_ok']:,} | {k.get('nonstream', 0):,} / "
                f"{k.get('stream', 0):,} / {k.get('cut', 0):,} | {r['stopped_by']} "
                f"| {r['duration_s']:.0f} | {r['rps']:.0f} | {r['errors']} |"
            )
    return out


def metering_lines(m: dict[str, Any]) -> list[str]:
    usage = m["gateway_usage"]
    return [
        f"Metering: {usage['records_count']:,} usage records in the gateway's SQLite "
        f"(by status {usage['records_by_status']}) vs "
        f"{m['upstream_requests_via_gateway_total']:,} chat requests served by the "
        f"gateway's upstreams ({m['upstream_requests_via_gateway']}): "
        + ("EXACT" if m["exact"] else "MISMATCH")
        + f". Completion tokens: upstream generated "
        f"{m['upstream_completion_tokens_via_gateway']:,}, gateway metered "
        f"{usage['completion_tokens']:,} (cut streams are metered for what was relayed)."
    ]


def profile_table(profile: dict[str, Any]) -> list[str]:
    if "top_own" not in profile:
        return [f"Profile: {profile}"]
    out = [
        f"py-spy, non-stream c=16, {profile['samples_count']} samples "
        f"(load during the profile: {profile['load_during_profile'].get('rps')} req/s):",
        "",
        "| # | function (file) | own samples | own % |",
        "|---:|---|---:|---:|",
    ]
    for i, f in enumerate(profile["top_own"], 1):
        out.append(f"| {i} | `{f['function']}` | {f['own_samples']} | {100 * f['own_ratio']:.1f} |")
    out += [
        "",
        "| # | tokenmill function, with what it calls | samples | % |",
        "|---:|---|---:|---:|",
    ]
    for i, f in enumerate(profile.get("top_inclusive_tokenmill", [])[:10], 1):
        out.append(f"| {i} | `{f['function']}` | {f['samples']} | {100 * f['ratio']:.1f} |")
    return out


def aims(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The aims from the issue, each with the measured figure and met or not."""
    cases = {row["case"]: row for row in results.get("matrix", [])}
    found: list[dict[str, Any]] = []

    def aim(name: str, figure: Any, met: bool | None) -> None:
        found.append({"aim": name, "measured": figure, "met": met})

    for mode, floor in (("nonstream", 3000), ("stream", 1500)):
        row = cases.get(f"{mode} c=64")
        rps = row["gateway"]["rps"] if row else None
        aim(
            f">= {floor} {mode} req/s at c=64 on one core, metering on",
            rps,
            None if rps is None else rps >= floor,
        )
    for mode in ("nonstream", "stream"):
        row = cases.get(f"{mode} c=64")
        billed = row.get("gateway_billed") if row else None
        ratio = round(billed["rps"] / row["gateway"]["rps"], 3) if row and billed else None
        aim(
            f"billing on within 15% of metering only ({mode} req/s at c=64)",
            ratio,
            None if ratio is None else ratio >= 0.85,
        )
    for mode in ("nonstream", "stream"):
        row = cases.get(f"{mode} c=1")
        added = _added(row, "p50") if row else None
        aim(
            f"p50 added latency < 0.5 ms at c=1 ({mode})",
            added,
            None if added is None else added < 0.5,
        )
    for row in results.get("surfaces", []):
        if row["concurrency"] != 64:
            continue
        for surface in SURFACE_ROWS[1:]:
            if surface not in row:
                continue
            chat = row["chat"]["rps"]
            ratio = round(row[surface]["rps"] / chat, 3) if chat else None
            aim(
                f"{surface} within 10% of chat ({row['mode']} req/s at c=64)",
                ratio,
                None if ratio is None else ratio >= 0.9,
            )
    portkey = (results.get("peers") or {}).get("portkey", {}).get("cells", {})
    for mode, times in (("nonstream", 7), ("stream", 5)):
        row, cell = cases.get(f"{mode} c=64"), portkey.get(f"{mode} c=64")
        billed = row.get("gateway_billed") if row else None
        ratio = round(billed["rps"] / cell["rps"], 2) if billed and cell and cell["rps"] else None
        aim(
            f">= {times}x Portkey, billing on ({mode} req/s at c=64, same run)",
            ratio,
            None if ratio is None else ratio >= times,
        )
    rss = [m["rss_mib"] for m in results.get("memory", [])]
    aim(
        f"RSS < {RSS_MIB_MAX:.0f} MB",
        max(rss) if rss else None,
        None if not rss else max(rss) < RSS_MIB_MAX,
    )
    after = [m["rss_mib"] for m in results.get("memory", []) if m["when"].startswith("after")]
    growth = round(after[-1] - after[0], 1) if len(after) >= 2 else None
    aim(
        f"no RSS growth (run 2 ends <= {RSS_GROWTH_MIB_MAX:.0f} MiB above run 1)",
        growth,
        None if growth is None else growth <= RSS_GROWTH_MIB_MAX,
    )
    metering = results.get("metering")
    aim(
        "metering exact (usage records == upstream requests)",
        metering and metering["gateway_usage"]["records_count"],
        metering and metering["exact"],
    )
    return found


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    out = [
        f"## tokenmill gateway overhead ({results['started_at'][:10]}, commit "
        f"{m['git_commit']}{' + uncommitted src changes' if m['git_src_dirty'] else ''}, "
        f"{m['nproc']} x {m['cpu_model']})",
        "",
        results["layout"],
        "",
    ]
    rows = list(results.get("matrix", []))
    if "realistic" in results:
        rows.append(results["realistic"])
    if rows:
        out += [*overhead_table(rows), ""]
        if any("gateway_billed" in row for row in rows):
            out += [*billing_table(rows), ""]
        if any("gateway_fleet" in row for row in rows):
            out += [*fleet_table(rows), ""]
    if "realistic" in results:
        out += [*realistic_table(results["realistic"]), ""]
    if results.get("surfaces"):
        out += [*surfaces_table(results["surfaces"]), ""]
    if peer_lines := peers_table(results):
        out += [*peer_lines, ""]
    if cpu := cpu_table(results):
        out += [*cpu, ""]
    out += [*long_tables(results), ""]
    if "metering" in results:
        out += [*metering_lines(results["metering"]), ""]
    if "profile" in results:
        out += [*profile_table(results["profile"]), ""]
    out += ["| aim | measured | met |", "|---|---:|---|"]
    out += [
        f"| {a['aim']} | {a['measured']} | "
        f"{'yes' if a['met'] else 'n/a' if a['met'] is None else 'NO'} |"
        for a in results["aims"]
    ]
    return "\n".join(out)
