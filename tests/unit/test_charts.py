"""``--chart FILE.png|html`` on the plan commands: the files are made, non-empty and of the
asked format; a bad suffix or an unwritable path is one clear error line."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tokenmill.cli import charts
from tokenmill.cli.main import app
from tokenmill.errors import InvalidRequest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LLAMA_ON_TWO_H100 = (
    "--gpu",
    "h100",
    "--gpus",
    "2",
    "--model",
    "llama-3.3-70b",
    "--precision",
    "fp8",
)
COMMANDS = {
    "perf": ("plan", "perf", *LLAMA_ON_TWO_H100),
    "cost": ("plan", "cost", *LLAMA_ON_TWO_H100, "--price", "0.40"),
    "scenario": ("plan", "scenario", "--years", "3"),
}


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stderr


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("suffix", [".png", ".html"])
def test_each_chart_is_written_in_its_format(tmp_path: Path, command: str, suffix: str) -> None:
    path = tmp_path / f"chart{suffix}"
    code, stderr = invoke(*COMMANDS[command], "--chart", str(path))
    assert code == 0, stderr
    content = path.read_bytes()
    if suffix == ".png":
        assert content.startswith(PNG_MAGIC)
        assert len(content) > 10_000  # axes, labels and at least one series drawn
    else:
        text = content.decode()
        assert text.startswith("<!doctype html>")
        assert "<svg" in text
        assert "<polyline" in text or "<rect" in text


def test_the_cost_by_gpu_chart_has_a_bar_per_priced_gpu_cheapest_first(tmp_path: Path) -> None:
    path = tmp_path / "by-gpu.html"
    code, stderr = invoke(*COMMANDS["cost"], "--chart-by-gpu", str(path))
    assert code == 0, stderr
    text = path.read_text()
    bars = [chunk.split("</title>")[0] for chunk in text.split("<rect")[1:]]
    values = [float(bar.rsplit(": ", 1)[1]) for bar in bars]
    assert len(values) >= 6  # the catalog's priced GPUs that hold a 70B model
    assert values == sorted(values)


def test_the_chain_chart_names_every_paid_link(tmp_path: Path) -> None:
    path = tmp_path / "chain.html"
    code, _ = invoke(*COMMANDS["cost"], "--chart", str(path))
    assert code == 0
    text = path.read_text()
    for who in ("GPU maker", "energy", "operator&#x27;s margin"):
        assert who in text


@pytest.mark.parametrize("name", ["chart.svg", "chart"])
def test_a_suffix_other_than_png_or_html_is_refused(tmp_path: Path, name: str) -> None:
    code, stderr = invoke(*COMMANDS["perf"], "--chart", str(tmp_path / name))
    assert code == 1
    assert stderr.startswith("error: ") and ".png or .html" in stderr
    assert not (tmp_path / name).exists()


def test_an_unwritable_path_is_one_line(tmp_path: Path) -> None:
    code, stderr = invoke(*COMMANDS["perf"], "--chart", str(tmp_path / "no" / "such" / "c.html"))
    assert code == 1
    assert stderr.startswith("error: cannot write")
    assert "Traceback" not in stderr


def test_an_empty_chart_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="nothing to chart"):
        charts.write(charts.Chart("t", "x", "y", bars=[]), Path("/tmp/never-written.html"))
