"""Each deployment's serving cost, from the configuration: the vendor's price list, or the
pool's cost per hour over the deployment's modeled or measured throughput."""

from __future__ import annotations

from tokenmill.config import Config, DeploymentConfig, PoolConfig
from tokenmill.economics import catalog, perf
from tokenmill.economics.cost import (
    PoolCost,
    modeled_throughput,
    pool_cost_per_hour,
    token_costs,
)
from tokenmill.errors import ConfigurationError, TokenmillError
from tokenmill.fleet.costs import ServingCost
from tokenmill.money import div_ceil

# The request shape that modeled throughput assumes: a chat turn of this size.
MODELED_PROMPT_TOKENS = 1000
MODELED_OUTPUT_TOKENS = 250
MODELED_CONCURRENCY = 64  # when the deployment sets no concurrency_max


def serving_costs(config: Config) -> dict[str, ServingCost]:
    """Deployment -> its serving cost; deployments with neither a vendor price nor a pool
    have none (their records carry no cost)."""
    found = {}
    for name, deployment in config.deployments.items():
        engine = config.engines[deployment.engine]
        prices = getattr(engine, "prices", {})
        if deployment.model in prices:
            price = prices[deployment.model]
            found[name] = ServingCost(
                "vendor",
                price.currency,
                price.input,
                price.output,
                price.input if price.cached_input is None else price.cached_input,
                price.request_fee,
                cache_write_input_nano_per_mtok=price.cache_write_input,
            )
        elif deployment.pool is not None:
            try:
                found[name] = own_cost(config.pools[deployment.pool], deployment)
            except TokenmillError as exc:
                raise ConfigurationError(
                    f"deployments.{name} on pool {deployment.pool}: {exc.message}",
                    param=f"deployments.{name}",
                ) from exc
    return found


def pool_cost(pool: PoolConfig) -> PoolCost:
    return PoolCost(
        gpu_count=pool.gpu_count,
        power_w_per_gpu=pool.power_w_per_gpu or catalog.gpu(pool.gpu).power_w,
        node_overhead_ratio=pool.node_overhead_ratio,
        pue=pool.pue,
        energy_nano_per_kwh=pool.energy_per_kwh,
        utilization_power_ratio=pool.utilization_power_ratio,
        hosting_nano_per_month=pool.hosting_per_month,
        operations_nano_per_month=pool.operations_per_month,
        purchase_nano_per_gpu=pool.purchase_per_gpu,
        depreciation_years=pool.depreciation_years,
        residual_ratio=pool.residual_ratio,
        rent_nano_per_gpu_hour=pool.rent_per_gpu_hour,
    )


def deployment_setup(pool: PoolConfig, deployment: DeploymentConfig) -> perf.Setup:
    """The performance model's replica for a deployment on a pool of own GPUs."""
    return perf.Setup(
        gpu=catalog.gpu(pool.gpu),
        gpu_count=deployment.gpu_count,
        model=catalog.model(deployment.catalog_model or deployment.model),
        precision=deployment.precision,
        kv_precision=deployment.kv_precision,
        efficiency_compute_ratio=deployment.efficiency_compute_ratio,
        efficiency_memory_ratio=deployment.efficiency_memory_ratio,
        efficiency_moe_ratio=deployment.efficiency_moe_ratio,
        parallel=deployment.parallel,
        batch_requests_max=deployment.batch_requests_max,
    )


def own_cost(pool: PoolConfig, deployment: DeploymentConfig) -> ServingCost:
    """The deployment's share of its pool's cost per hour (its GPUs over the pool's), spread
    over the tokens it serves at the pool's utilization."""
    hour_nano = div_ceil(
        pool_cost_per_hour(pool_cost(pool)).total_nano * deployment.gpu_count, pool.gpu_count
    )
    prefill = deployment.measured_prefill_tokens_per_s
    output = deployment.measured_output_tokens_per_s
    if prefill is not None and output is not None:
        costs = token_costs(hour_nano, prefill, output, pool.utilization_ratio, basis="measured")
    else:
        setup = deployment_setup(pool, deployment)
        prefill, output = modeled_throughput(
            setup,
            MODELED_PROMPT_TOKENS,
            MODELED_OUTPUT_TOKENS,
            deployment.concurrency_max or MODELED_CONCURRENCY,
        )
        costs = token_costs(hour_nano, prefill, output, pool.utilization_ratio, basis="modeled")
    return ServingCost(
        costs.basis,
        pool.currency,
        costs.input_nano_per_mtok,
        costs.output_nano_per_mtok,
        costs.input_nano_per_mtok,
    )
