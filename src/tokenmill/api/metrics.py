"""Prometheus metrics of the gateway, in a registry of its own (no process-global state)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tokenmill.usage import UsageRecord

_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "tokenmill_requests",
            "Requests by model, endpoint and outcome (refused = rejected before any engine).",
            ["model", "endpoint", "status"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "tokenmill_tokens",
            "Tokens metered, by model and kind (prompt, completion).",
            ["model", "kind"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tokenmill_request_duration_seconds",
            "Request start to last byte, by model.",
            ["model"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "tokenmill_time_to_first_token_seconds",
            "Request start to the first token from the engine, by model.",
            ["model"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "tokenmill_requests_in_flight",
            "Requests being served now.",
            registry=self.registry,
        )
        self.refused = Counter(
            "tokenmill_refused_requests",
            "Requests refused before any engine call, by HTTP status.",
            ["endpoint", "http_status"],
            registry=self.registry,
        )
        self.loss_nano = Counter(
            "tokenmill_loss_nano",
            "Charges above their hold, booked to the operator's loss account (nano-units).",
            ["currency"],
            registry=self.registry,
        )
        self.holds_expired = Counter(
            "tokenmill_holds_expired",
            "Holds released because they outlived limits.hold_ttl_s.",
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, str], RecordMetrics] = {}

    def of(self, model: str, endpoint: str, status: str) -> RecordMetrics:
        """The labelled series of one (model, endpoint, status), looked up once, then cached.

        Bounded: models and endpoints come from the configuration, statuses are three.
        """
        key = (model, endpoint, status)
        found = self._children.get(key)
        if found is None:
            found = RecordMetrics(
                requests=self.requests.labels(model, endpoint, status),
                prompt_tokens=self.tokens.labels(model, "prompt"),
                completion_tokens=self.tokens.labels(model, "completion"),
                latency=self.latency.labels(model),
                ttft=self.ttft.labels(model),
            )
            self._children[key] = found
        return found


@dataclass(frozen=True)
class RecordMetrics:
    requests: Counter
    prompt_tokens: Counter
    completion_tokens: Counter
    latency: Histogram
    ttft: Histogram

    def observe(self, record: UsageRecord) -> None:
        self.requests.inc()
        if record.prompt_tokens:
            self.prompt_tokens.inc(record.prompt_tokens)
        if record.completion_tokens:
            self.completion_tokens.inc(record.completion_tokens)
        self.latency.observe(record.duration_ms / 1000)
        if record.ttft_ms is not None:
            self.ttft.observe(record.ttft_ms / 1000)
