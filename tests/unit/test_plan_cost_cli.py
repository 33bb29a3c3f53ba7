"""``tokenmill plan cost`` and ``plan price``: the JSON they print, ``--catalog``, and bad
input as one clear line."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from tokenmill.cli.main import app
from tokenmill.economics import reference
from tokenmill.economics.costing import CostQuery, cost_answer, price_answer
from tokenmill.economics.queries import PerfQuery

REPLICA = ("--gpu", "h100-sxm", "--gpus", "2", "--model", "llama-3.3-70b", "--precision", "fp8")
POOL = (*REPLICA, "--pool-gpus", "8")
COST_KEYS = {
    "gpu",
    "model",
    "gpus_per_replica",
    "pool_gpus",
    "replicas",
    "basis",
    "input",
    "output",
    "concurrency",
    "itl_ms",
    "ttft_ms",
    "output_tokens_per_s",
    "utilization_ratio",
    "cost_usd_per_hour",
    "cost_usd_per_mtok",
    "chain_usd_per_mtok",
    "assumptions",
}
# A user's catalog: a 500 W GPU at 10,000 USD (1.50 USD an hour rented), and a market price.
USER_CATALOG = """\
gpus:
  test-gpu:
    name: Test GPU
    flops_bf16_per_s: 1.0e+15
    flops_fp8_per_s: 2.0e+15
    flops_fp4_per_s: null
    memory_bytes: 80000000000
    bandwidth_bytes_per_s: 2.0e+12
    power_w: 500
    interconnect_bytes_per_s: 100.0e+9
    source: a test
    as_of: "2026-11-25"
    purchase_usd: "10000"
    rent_usd_per_gpu_hour: "1.50"
    prices_source: a test quote
    prices_as_of: "2026-11-25"
market_prices:
  - model: Llama-3.1-8B
    catalog_model: llama-3.1-8b
    provider: Cheap Inc
    input_usd_per_mtok: "0.02"
    output_usd_per_mtok: "0.05"
    date: "2026-12-01"
    source: a test quote
"""


def plan_json(command: str, *args: str) -> Any:
    result = CliRunner().invoke(app, ["plan", command, *args, "--json"])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return orjson.loads(result.stdout)


def refused(command: str, *args: str) -> str:
    """The one line a refused command prints on stderr (exit code 1, no Traceback)."""
    result = CliRunner().invoke(app, ["plan", command, *args])
    assert result.exit_code == 1, (result.stdout, result.stderr, result.exception)
    assert result.stderr.startswith("error: "), (result.stderr, result.exception)
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


def replica(**changes: Any) -> PerfQuery:
    """The replica of REPLICA as a query."""
    return PerfQuery(gpu="h100-sxm", model="llama-3.3-70b", gpus=2, precision="fp8", **changes)


def pool_query(**changes: Any) -> CostQuery:
    """The query of POOL: that replica, a pool of 8."""
    return CostQuery(**{"perf": replica(), "pool_gpus": 8, **changes})


def user_catalog(tmp_path: Path, text: str = USER_CATALOG) -> str:
    path = tmp_path / "mine.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


class TestCostJson:
    def test_the_json_is_the_cost_answer_of_the_same_query(self) -> None:
        shown = plan_json("cost", *POOL)
        assert shown.keys() == COST_KEYS
        assert shown == cost_answer(pool_query(), reference.packaged())

    def test_the_hour_is_the_hand_computed_pool_of_eight(self) -> None:
        """8 x 27,500 USD over 43,800 h; network at 0.1765 of it; 10.08 kW IT at 163.44 USD a
        kW-month; 10.4832 kW at 0.0806 USD/kWh; 400 USD a month of operations (see
        test_costing for each line's arithmetic)."""
        shown = plan_json("cost", *POOL)
        assert shown["cost_usd_per_hour"] == {
            "capital": "5.022831051",
            "network_and_storage": "0.886529681",
            "rent": "0.00",
            "energy": "0.84494592",
            "hosting": "2.256815343",
            "operations": "0.547945206",
            "total": "9.559067201",
        }
        assert (shown["pool_gpus"], shown["replicas"], shown["gpus_per_replica"]) == (8, 4, 2)
        assert shown["basis"] == "owned"

    def test_options_reach_the_query(self) -> None:
        """Rented at 2 USD an hour, 0.9 utilization, a price for the margin line."""
        shown = plan_json(
            "cost", *POOL, "--basis", "rented", "--rent", "2", "--utilization", "0.9",
            "--price", "0.50", "--input", "2000", "--output", "500", "--concurrency", "32",
        )  # fmt: skip
        query = pool_query(
            perf=replica(input_tokens=2000, output_tokens=500, concurrency=32),
            basis="rented",
            rent_usd_per_gpu_hour=Decimal("2"),
            utilization_ratio=Decimal("0.9"),
            price_usd_per_mtok=Decimal("0.50"),
        )
        assert shown == cost_answer(query, reference.packaged())
        assert shown["cost_usd_per_hour"]["rent"] == "16.00"
        assert "operator_margin" in shown["chain_usd_per_mtok"]

    def test_an_itl_target_picks_the_concurrency(self) -> None:
        shown = plan_json("cost", *POOL, "--itl-ms-max", "30")
        assert shown["itl_ms"] <= 30
        assert shown == cost_answer(pool_query(itl_ms_max=30.0), reference.packaged())

    def test_the_tables_name_who_is_paid(self) -> None:
        result = CliRunner().invoke(app, ["plan", "cost", *POOL, "--price", "0.5"])
        assert result.exit_code == 0, result.stderr
        assert "GPU maker" in result.stdout
        assert "operator's margin" in result.stdout
        assert "cloud provider" not in result.stdout  # an owned pool pays no rent


class TestPriceJson:
    def test_the_json_is_the_price_answer_with_the_models_market(self) -> None:
        shown = plan_json("price", *POOL, "--margin", "0.4")
        assert shown == price_answer(pool_query(), Decimal("0.4"), reference.packaged())
        assert shown["margin_ratio"] == "0.4"
        assert [(row["provider"], row["model"]) for row in shown["market"]] == [
            ("DeepInfra", "Llama-3.3-70B"),
            ("DeepInfra", "Llama-3.3-70B FP8 Turbo"),
            ("Together", "Llama-3.3-70B Turbo"),
        ]
        assert shown["market"][2]["output_usd_per_mtok"] == "0.88"

    def test_the_default_margin_is_forty_percent(self) -> None:
        assert plan_json("price", *POOL)["margin_ratio"] == "0.4"

    def test_the_tables_list_the_market(self) -> None:
        result = CliRunner().invoke(app, ["plan", "price", *POOL, "--margin", "0.3"])
        assert result.exit_code == 0, result.stderr
        assert "Together" in result.stdout


class TestCatalogOption:
    def test_a_gpu_of_the_users_file_is_usable_by_gpu(self, tmp_path: Path) -> None:
        """One 500 W GPU at 10,000 USD: capital 10,000e9 / 43,800 = 228,310,502.28 nano;
        network 0.1765 of it, 40,296,803.65; IT 0.9 kW at 163.44 USD = 147.096 USD a month
        / 730 = 201,501,369.86; 0.936 kW at 0.0806 = 0.0754416; 50 USD / 730 = 68,493,150.68;
        each rounded up."""
        mine = user_catalog(tmp_path)
        shown = plan_json("cost", "--gpu", "test-gpu", "--model", "llama-3.1-8b", "--catalog", mine)
        assert shown["gpu"] == "test-gpu"
        hour = shown["cost_usd_per_hour"]
        assert hour["capital"] == "0.228310503"
        assert hour["network_and_storage"] == "0.040296804"
        assert hour["hosting"] == "0.20150137"
        assert hour["energy"] == "0.0754416"
        assert hour["operations"] == "0.068493151"

    def test_the_users_gpu_rents_at_its_own_rate(self, tmp_path: Path) -> None:
        mine = user_catalog(tmp_path)
        shown = plan_json(
            "cost", "--gpu", "test-gpu", "--model", "llama-3.1-8b", "--basis", "rented",
            "--catalog", mine,
        )  # fmt: skip
        assert shown["cost_usd_per_hour"]["rent"] == "1.50"

    def test_a_market_price_of_the_users_file_is_listed(self, tmp_path: Path) -> None:
        mine = user_catalog(tmp_path)
        shown = plan_json("price", "--gpu", "h100", "--model", "llama-3.1-8b", "--catalog", mine)
        assert [row["provider"] for row in shown["market"]] == ["Cheap Inc"]

    def test_without_the_option_the_users_gpu_is_unknown(self) -> None:
        assert "unknown GPU 'test-gpu'" in refused(
            "cost", "--gpu", "test-gpu", "--model", "llama-3.1-8b"
        )

    @pytest.mark.parametrize(
        ("content", "words"),
        [
            (b"just some words\n", "must be a mapping of sections"),
            (b"gpu: {}\n", "unknown section 'gpu'"),
            (USER_CATALOG.replace('"0.02"', "0.02").encode(), "input_usd_per_mtok"),
            (USER_CATALOG.replace("llama-3.1-8b", "llama-9").encode(), "llama-9"),
            pytest.param(
                b"gpus: [unclosed\n  - :\n",
                "not valid YAML",
            ),
            pytest.param(
                b"\x89PNG\r\n\x1a\n\x00\xff\xfe",
                "--catalog",
            ),
        ],
        ids=["words", "unknown-section", "float-price", "unknown-model", "bad-yaml", "binary"],
    )
    def test_a_bad_catalog_file_is_one_clear_line(
        self, tmp_path: Path, content: bytes, words: str
    ) -> None:
        path = tmp_path / "mine.yaml"
        path.write_bytes(content)
        line = refused("cost", *REPLICA, "--catalog", str(path))
        assert words in line

    def test_a_missing_catalog_file_is_one_clear_line(self, tmp_path: Path) -> None:
        line = refused("cost", *REPLICA, "--catalog", str(tmp_path / "absent.yaml"))
        assert "cannot read --catalog" in line
        assert "absent.yaml" in line


class TestRefusals:
    @pytest.mark.parametrize(
        ("command", "args", "words"),
        [
            ("cost", ("--basis", "leased"), "--basis is owned or rented"),
            ("cost", ("--pool-gpus", "3"), "pool_gpus must be a multiple of the replica's 2"),
            ("cost", ("--energy", "1e-3"), "--energy must be a plain decimal"),
            ("cost", ("--utilization", "1.5"), "utilization_ratio"),
            ("cost", ("--purchase", "-5"), "--purchase"),
            ("cost", ("--itl-ms-max", "1"), "itl_ms_max"),
            ("cost", ("--concurrency", "lots"), "max"),
            ("price", ("--margin", "1"), "margin_ratio must be in [0, 1)"),
            ("price", ("--margin", "-0.1"), "--margin"),
            ("price", ("--margin", "forty"), "--margin"),
        ],
    )
    def test_bad_input_is_one_clear_line_and_exit_1(
        self, command: str, args: tuple[str, ...], words: str
    ) -> None:
        assert words in refused(command, *REPLICA, *args)

    @pytest.mark.parametrize("command", ["cost", "price"])
    def test_an_unknown_gpu_is_one_clear_line(self, command: str) -> None:
        line = refused(command, "--gpu", "h900", "--model", "llama-3.3-70b")
        assert "unknown GPU 'h900'" in line
        assert "h100-sxm" in line  # the known ids follow

    def test_a_gpu_without_a_rent_needs_one(self) -> None:
        line = refused("cost", "--gpu", "gb200", "--model", "llama-3.1-8b", "--basis", "rented")
        assert "give rent_usd_per_gpu_hour" in line
