"""The performance model against published measurements (pure but for reading the packaged
``catalogs/calibration.yaml`` once).

``compare`` runs every published case through ``perf.operating_point`` at ``max``
concurrency with one set of efficiency factors for all cases (no factor per case) and
reports published, modeled and the relative error; ``median_error_ratio`` sums it up.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from tokenmill.economics import catalog, perf
from tokenmill.errors import ConfigurationError

CALIBRATION_FILE = "calibration.yaml"


@dataclass(frozen=True)
class Case:
    """One published measurement: a replica, a request shape and its output tokens/s/GPU."""

    model: str
    gpu: str
    gpus: int
    parallel: str
    precision: str
    input_tokens: int
    output_tokens: int
    published_tokens_per_s_per_gpu: float


@dataclass(frozen=True)
class Comparison:
    case: Case
    modeled_tokens_per_s_per_gpu: float
    batch: int
    bound: str

    @property
    def error_ratio(self) -> float:
        """(modeled - published) / published: positive when the model is optimistic."""
        published = self.case.published_tokens_per_s_per_gpu
        return (self.modeled_tokens_per_s_per_gpu - published) / published


def _case(raw: object, index: int) -> Case:
    if not isinstance(raw, dict):
        raise ConfigurationError(f"{CALIBRATION_FILE} case {index} must be a mapping")
    try:
        return Case(
            model=str(raw["model"]),
            gpu=str(raw["gpu"]),
            gpus=int(raw["gpus"]),
            parallel=str(raw["parallel"]),
            precision=str(raw["precision"]),
            input_tokens=int(raw["input"]),
            output_tokens=int(raw["output"]),
            published_tokens_per_s_per_gpu=float(raw["output_tokens_per_s_per_gpu"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        message = f"{CALIBRATION_FILE} case {index}: {exc!r}"
        raise ConfigurationError(message) from exc


@functools.cache
def _document() -> dict[str, Any]:
    resource = importlib.resources.files("tokenmill.economics") / "catalogs" / CALIBRATION_FILE
    document = yaml.safe_load(resource.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or not isinstance(document.get("cases"), list):
        raise ConfigurationError(f"{CALIBRATION_FILE} must map 'cases' to a list")
    return document


def published_cases() -> list[Case]:
    """The packaged calibration set, in file order."""
    return [_case(raw, index) for index, raw in enumerate(_document()["cases"])]


def source() -> str:
    """Where the packaged calibration set comes from."""
    return str(_document()["source"])


def setup_for(case: Case, factors: Mapping[str, Any]) -> perf.Setup:
    """The replica of ``case`` with the given efficiency factors (perf.Setup fields)."""
    setup = perf.Setup(
        gpu=catalog.gpu(case.gpu),
        gpu_count=case.gpus,
        model=catalog.model(case.model),
        precision=case.precision,
        parallel=perf.parallel_of(case.parallel),
    )
    return dataclasses.replace(setup, **factors)


def compare(cases: list[Case], factors: Mapping[str, Any] | None = None) -> list[Comparison]:
    """Every case at ``max`` concurrency under one set of factors (the defaults if None)."""
    rows = []
    for case in cases:
        setup = setup_for(case, factors or {})
        point = perf.operating_point(setup, case.input_tokens, case.output_tokens, None)
        rows.append(
            Comparison(
                case=case,
                modeled_tokens_per_s_per_gpu=point.output_tokens_per_s_per_gpu,
                batch=point.batch,
                bound=point.bound,
            )
        )
    return rows


def median_error_ratio(rows: list[Comparison]) -> float:
    """The median of |modeled - published| / published."""
    assert rows
    return statistics.median(abs(row.error_ratio) for row in rows)
