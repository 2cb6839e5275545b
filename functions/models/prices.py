"""What model tokens cost: USD per million tokens, per model, for input, output and cached
input (docs/models.md, "Accounting").

A model is looked up by its name as the chat model reports it to LangChain's tracing
(``ls_model_name``: ``gpt-4o-mini``, ``amazon.nova-lite-v1:0``, ``offline``); a dated or
regional variant (``gpt-4o-mini-2024-07-18``, ``us.amazon.nova-lite-v1:0``) takes the
price of the longest listed name it contains. ``LAMBDAGRAPH_MODEL_PRICES`` (JSON, the same
shape as ``DEFAULT_PRICES``) adds models or replaces listed ones. A model with no price is
counted in tokens and listed in the run's ``usage.unpriced_models``; its cost counts as 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    # Input tokens read from the provider's prompt cache (``input_token_details.cache_read``).
    cached_input: float | None = None

    def cost(self, input_tokens: int, output_tokens: int, cached_input_tokens: int) -> float:
        cached = min(cached_input_tokens, input_tokens)
        cached_rate = self.input if self.cached_input is None else self.cached_input
        return (
            (input_tokens - cached) * self.input
            + cached * cached_rate
            + output_tokens * self.output
        ) / 1_000_000


# List prices (USD per 1M tokens) as published by the providers in 2025; check yours.
DEFAULT_PRICES: dict[str, dict[str, float]] = {
    # OpenAI
    "gpt-4o-mini": {"input": 0.15, "output": 0.60, "cached_input": 0.075},
    "gpt-4o": {"input": 2.50, "output": 10.00, "cached_input": 1.25},
    "gpt-4.1": {"input": 2.00, "output": 8.00, "cached_input": 0.50},
    "gpt-4.1-mini": {"input": 0.40, "output": 1.60, "cached_input": 0.10},
    "gpt-4.1-nano": {"input": 0.10, "output": 0.40, "cached_input": 0.025},
    "o4-mini": {"input": 1.10, "output": 4.40, "cached_input": 0.275},
    # Amazon Bedrock (on-demand, us-east-1)
    "amazon.nova-micro-v1:0": {"input": 0.035, "output": 0.14, "cached_input": 0.00875},
    "amazon.nova-lite-v1:0": {"input": 0.06, "output": 0.24, "cached_input": 0.015},
    "amazon.nova-pro-v1:0": {"input": 0.80, "output": 3.20, "cached_input": 0.20},
    "anthropic.claude-3-haiku-20240307-v1:0": {"input": 0.25, "output": 1.25},
    "anthropic.claude-3-5-haiku-20241022-v1:0": {"input": 0.80, "output": 4.00},
    "anthropic.claude-3-5-sonnet-20241022-v2:0": {"input": 3.00, "output": 15.00},
    # The offline model (``fake:``): a made-up price, so that cost budgets can be tried
    # and tested with no provider at all.
    "offline": {"input": 1.00, "output": 2.00},
}


class PriceTableError(ValueError):
    """``LAMBDAGRAPH_MODEL_PRICES`` that is not a price table."""


def parse_prices(text: str) -> dict[str, Price]:
    """``LAMBDAGRAPH_MODEL_PRICES`` -> prices; PriceTableError naming what is wrong."""
    if not text.strip():
        return {}
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PriceTableError(f"model prices are not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise PriceTableError('model prices must be an object: {"model": {"input": ..., ...}}')
    return {str(name): _price(str(name), entry) for name, entry in raw.items()}


def _price(name: str, entry: Any) -> Price:
    if not isinstance(entry, dict) or not {"input", "output"} <= set(entry):
        raise PriceTableError(
            f"price of {name!r} must be an object with 'input' and 'output' "
            "(USD per million tokens) and optionally 'cached_input'"
        )
    unknown = set(entry) - {"input", "output", "cached_input"}
    if unknown:
        raise PriceTableError(f"price of {name!r}: unknown keys {sorted(unknown)}")
    values: dict[str, float] = {}
    for key, value in entry.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise PriceTableError(f"price of {name!r}: {key} must be a number >= 0")
        values[key] = float(value)
    return Price(**values)


@lru_cache(maxsize=8)
def price_table(overrides: str = "") -> dict[str, Price]:
    table = {name: _price(name, entry) for name, entry in DEFAULT_PRICES.items()}
    table.update(parse_prices(overrides))
    return table


def price_for(model: str, table: dict[str, Price]) -> Price | None:
    """The price of ``model``: listed under its own name, else under the longest listed
    name it contains (a dated or regional variant); None if it has none."""
    if model in table:
        return table[model]
    matches = [name for name in table if name in model]
    return table[max(matches, key=len)] if matches else None
