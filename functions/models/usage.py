"""Token and cost accounting: every model call of a step, attributed to the run and the step.

The step worker hands LangGraph a ``UsageMeter`` (``meter.py``, a LangChain callback
handler) in the superstep's config; LangChain passes callbacks on to every chat model a node calls, so each
call's ``usage_metadata`` is counted under the model that made it, whatever the graph does.
The step's usage is added to the run's totals (``RunUsage``), which are written with the
step's own record (no extra request) and read by budgets, ``GET run``, the run-ended event
and the webhook payload.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from functions.models.prices import Price, price_for
from functions.resources import METRICS_NAMESPACE, SERVICE_NAME

# The run keeps the usage of its most recent steps one by one (the totals cover them all):
# a run item must stay well under DynamoDB's 400 KB.
MAX_STEPS_KEPT = 100


@dataclass
class ModelUsage:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(self, other: ModelUsage) -> None:
        self.calls += other.calls
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cached_input_tokens += other.cached_input_tokens

    def cost(self, price: Price | None) -> float:
        if price is None:
            return 0.0
        return price.cost(self.input_tokens, self.output_tokens, self.cached_input_tokens)


def _tokens(usage: Any, key: str) -> int:
    value = usage.get(key) if isinstance(usage, dict) else None
    return int(value) if isinstance(value, int | float) and value > 0 else 0


def model_usage(usage_metadata: Any) -> ModelUsage:
    """One call's ``usage_metadata`` as counts."""
    details = usage_metadata.get("input_token_details") if isinstance(usage_metadata, dict) else {}
    return ModelUsage(
        calls=1,
        input_tokens=_tokens(usage_metadata, "input_tokens"),
        output_tokens=_tokens(usage_metadata, "output_tokens"),
        cached_input_tokens=_tokens(details or {}, "cache_read"),
    )


@dataclass
class RunUsage:
    """A run's model usage: totals by model and the usage of its most recent steps."""

    by_model: dict[str, ModelUsage] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: Any) -> RunUsage:
        if not isinstance(data, dict):
            return cls()
        by_model = {
            str(name): ModelUsage(
                calls=_tokens(entry, "calls"),
                input_tokens=_tokens(entry, "input_tokens"),
                output_tokens=_tokens(entry, "output_tokens"),
                cached_input_tokens=_tokens(entry, "cached_input_tokens"),
            )
            for name, entry in (data.get("by_model") or {}).items()
            if isinstance(entry, dict)
        }
        steps = [s for s in data.get("steps") or [] if isinstance(s, dict)]
        return cls(by_model, steps)

    @property
    def empty(self) -> bool:
        return not self.by_model

    def total(self) -> ModelUsage:
        out = ModelUsage()
        for usage in self.by_model.values():
            out.add(usage)
        return out

    def cost(self, prices: dict[str, Price]) -> float:
        return sum(u.cost(price_for(m, prices)) for m, u in self.by_model.items())

    def plus_step(
        self, step: int, step_usage: dict[str, ModelUsage], prices: dict[str, Price]
    ) -> RunUsage:
        """These totals with one step's usage added (a retried step adds to its entry)."""
        if not step_usage:
            return self
        by_model = {name: ModelUsage(**vars(u)) for name, u in self.by_model.items()}
        for name, usage in step_usage.items():
            by_model.setdefault(name, ModelUsage()).add(usage)
        spent = ModelUsage()
        for usage in step_usage.values():
            spent.add(usage)
        cost = sum(u.cost(price_for(m, prices)) for m, u in step_usage.items())
        steps = [dict(s) for s in self.steps]
        entry = next((s for s in steps if s.get("step") == step), None)
        if entry is None:
            entry = {"step": step, "calls": 0, "input_tokens": 0, "output_tokens": 0}
            entry.update(total_tokens=0, cost_usd=0.0)
            steps.append(entry)
        entry["calls"] += spent.calls
        entry["input_tokens"] += spent.input_tokens
        entry["output_tokens"] += spent.output_tokens
        entry["total_tokens"] += spent.total_tokens
        entry["cost_usd"] = round(float(entry["cost_usd"]) + cost, 9)
        return RunUsage(by_model, steps[-MAX_STEPS_KEPT:])

    def to_json(self, prices: dict[str, Price]) -> dict[str, Any]:
        """The run's ``usage`` (stored on the run, returned by ``GET run``)."""
        total = self.total()
        return {
            "calls": total.calls,
            "input_tokens": total.input_tokens,
            "output_tokens": total.output_tokens,
            "cached_input_tokens": total.cached_input_tokens,
            "total_tokens": total.total_tokens,
            "cost_usd": round(self.cost(prices), 9),
            "by_model": {
                name: {
                    "calls": u.calls,
                    "input_tokens": u.input_tokens,
                    "output_tokens": u.output_tokens,
                    "cached_input_tokens": u.cached_input_tokens,
                    "total_tokens": u.total_tokens,
                    "cost_usd": round(u.cost(price_for(name, prices)), 9),
                }
                for name, u in sorted(self.by_model.items())
            },
            "unpriced_models": sorted(m for m in self.by_model if price_for(m, prices) is None),
            "steps": self.steps,
        }


def emit_step_metrics(step_usage: dict[str, ModelUsage], prices: dict[str, Price]) -> None:
    """Tokens and cost of a step's model calls, by model (dimension ``model``): one EMF
    record per model."""
    for model, usage in step_usage.items():
        record = EphemeralMetrics(namespace=METRICS_NAMESPACE, service=SERVICE_NAME)
        record.add_dimension(name="model", value=model)
        record.add_metric(name="ModelCalls", unit=MetricUnit.Count, value=usage.calls)
        record.add_metric(name="ModelInputTokens", unit=MetricUnit.Count, value=usage.input_tokens)
        record.add_metric(
            name="ModelOutputTokens", unit=MetricUnit.Count, value=usage.output_tokens
        )
        record.add_metric(
            name="ModelCostUSD", unit=MetricUnit.NoUnit, value=usage.cost(price_for(model, prices))
        )
        record.flush_metrics()


# --- budgets ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """A run's budget with the deployment's defaults filled in (0 = no limit)."""

    max_tokens: int = 0
    max_cost_usd: float = 0.0


def exceeded(usage: dict[str, Any], limits: Limits, where: str) -> str | None:
    """The error of a run whose ``usage`` (``RunUsage.to_json``) is over ``limits``, None
    when it is within them; ``where`` says when ("after step 4")."""
    tokens = int(usage.get("total_tokens") or 0)
    cost = float(usage.get("cost_usd") or 0.0)
    if limits.max_tokens and tokens > limits.max_tokens:
        return f"budget max_tokens={limits.max_tokens} exceeded: {tokens:,} tokens {where}"
    if limits.max_cost_usd and cost > limits.max_cost_usd:
        return (
            f"budget max_cost_usd={limits.max_cost_usd:g} exceeded: "
            f"${cost:,.6f} spent ({tokens:,} tokens) {where}"
        )
    return None
