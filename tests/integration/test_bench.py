"""``tokenmill bench`` against a live gateway whose sim deployment runs in real time: the
sim reproduces the performance model's figures, and ``--calibrate`` recovers the factors
the "hardware" (the sim) really runs with from what was measured."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import LiveGateway, live_gateway
from tokenmill.cli.main import app
from tokenmill.economics import catalog, perf

OUTPUT = 24
REAL_MEMORY_RATIO = 0.5  # what the sim "hardware" achieves
POOL = {
    "gpu": "h100-sxm",
    "gpu_count": 2,
    "currency": "USD",
    "purchase_per_gpu": "27500",
    "depreciation_years": "5",
    "energy_per_kwh": "0.08",
    "pue": "1.3",
    "node_overhead_ratio": "0.8",
    "utilization_power_ratio": "0.8",
    "hosting_per_month": "0",
    "operations_per_month": "0",
    "utilization_ratio": "0.6",
}
DEPLOYMENT = {
    "engine": "sim",
    "model": "llama-3.1-70b",
    "gpu": "h100-sxm",
    "gpu_count": 2,
    "precision": "fp8",
    "pool": "rack",
}


def config(memory_ratio: float) -> dict[str, Any]:
    return {
        "engines": {"sim": {"kind": "sim", "time_scale": 1.0}},
        "pools": {"rack": POOL},
        "deployments": {"llama70": {**DEPLOYMENT, "efficiency_memory_ratio": memory_ratio}},
        "models": {"llama-70b": {"deployments": ["llama70"], "output_tokens_max": 4096}},
    }


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    home = tmp_path_factory.mktemp("bench")
    url = f"sqlite:///{home / 'tokenmill.db'}"
    with live_gateway(url, config(REAL_MEMORY_RATIO), home) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def measured(live: LiveGateway, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One sweep, calibrated against a configuration that still says e_m = 0.7."""
    folder = tmp_path_factory.mktemp("bench-out")
    believed = folder / "config.yaml"
    believed.write_text(yaml.safe_dump(config(0.7)))
    out = folder / "results.json"
    secret = live.new_key()[0]
    result = CliRunner().invoke(
        app,
        [
            "bench", f"{live.url}/v1", "--model", "llama-70b", "--api-key", secret,
            "--input", "200", "--output", str(OUTPUT), "--concurrency", "1,4,16",
            "--requests", "16", "--out", str(out), "--calibrate", "rack",
            "--config", str(believed), "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, (result.stdout, result.stderr)
    shown: dict[str, Any] = orjson.loads(result.stdout)
    assert orjson.loads(out.read_bytes()) == shown  # saved as printed
    return shown


def real_setup() -> perf.Setup:
    return perf.Setup(
        gpu=catalog.gpu("h100-sxm"),
        gpu_count=2,
        model=catalog.model("llama-3.1-70b"),
        precision="fp8",
        efficiency_memory_ratio=REAL_MEMORY_RATIO,
    )


def test_every_request_is_answered_in_full(measured: dict[str, Any]) -> None:
    for level in measured["levels"]:
        assert level["errors"] == 0, level["first_error"]
        assert level["requests"] == 16
        assert level["output_tokens_mean"] == OUTPUT  # ignore_eos: exactly --output tokens
        assert level["prompt_tokens_mean"] == pytest.approx(200, abs=2)


def test_the_sim_reproduces_the_models_throughput_and_latency(
    measured: dict[str, Any],
) -> None:
    """Each level's output tokens/s and median ITL lie within 30% of the performance
    model's operating point at that concurrency (the sim sleeps the model's step times;
    the gap is HTTP, the gateway and the waves' start and end)."""
    for level in measured["levels"]:
        prompt = round(level["prompt_tokens_mean"])
        point = perf.operating_point(real_setup(), prompt, OUTPUT, level["concurrency"])
        assert level["output_tokens_per_s"] == pytest.approx(point.output_tokens_per_s, rel=0.3)
        assert level["itl_ms"]["p50"] == pytest.approx(point.step_ms, rel=0.3)


def test_throughput_grows_with_concurrency_while_latency_does_too(
    measured: dict[str, Any],
) -> None:
    levels = measured["levels"]
    assert [level["concurrency"] for level in levels] == [1, 4, 16]
    rates = [level["output_tokens_per_s"] for level in levels]
    assert rates[0] < rates[1] < rates[2]
    assert levels[2]["itl_ms"]["p50"] > levels[0]["itl_ms"]["p50"]


def test_calibration_recovers_the_memory_efficiency_the_sim_runs_at(
    measured: dict[str, Any],
) -> None:
    calibration = measured["calibration"]
    assert calibration["deployment"] == "llama70"
    assert calibration["efficiency_memory_ratio"] == pytest.approx(REAL_MEMORY_RATIO, abs=0.1)
    assert calibration["error_after"] < calibration["error_before"]
    fitted = dataclasses.replace(
        real_setup(), efficiency_memory_ratio=calibration["efficiency_memory_ratio"]
    )
    assert perf.fits(fitted)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--concurrency", "0"), "--concurrency"),
        (("--concurrency", "1,x"), "comma-separated"),
        (("--requests", "0"), "--requests"),
        (("--calibrate", "no-such-pool"), "no pool"),
    ],
)
def test_bad_options_are_one_line(live: LiveGateway, args: tuple[str, ...], words: str) -> None:
    result = CliRunner().invoke(
        app, ["bench", f"{live.url}/v1", "--model", "llama-70b", "--requests", "1", *args]
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and words in result.stderr
    assert "Traceback" not in result.stderr


def test_a_wrong_key_is_counted_as_errors_not_a_crash(live: LiveGateway, tmp_path: Path) -> None:
    """Every request refused: the levels still print, and the exit status is 1."""
    result = CliRunner().invoke(
        app,
        ["bench", f"{live.url}/v1", "--model", "llama-70b", "--api-key", "tm-wrong",
         "--concurrency", "2", "--requests", "2", "--json"],
    )  # fmt: skip
    assert result.exit_code == 1, result.stderr
    assert result.stderr.startswith("error: all 2 requests failed")
    assert "Traceback" not in result.stderr
    level = orjson.loads(result.stdout)["levels"][0]
    assert level["errors"] == 2
    assert level["first_error"].startswith("HTTP 401")
