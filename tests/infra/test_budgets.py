"""Deployment-wide budgets and model prices reach every function's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from functions.settings import Settings
from infra.stack import StackConfig
from tests.infra.conftest import CONTEXT, Synth

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("infra")]


def test_budget_context_becomes_every_functions_settings(synth: Synth) -> None:
    functions = synth.resources("AWS::Lambda::Function").values()
    envs = [
        f["Properties"]["Environment"]["Variables"]
        for f in functions
        if f["Properties"].get("Handler", "").startswith("functions.handlers.")
    ]
    assert envs
    for env in envs:
        # What the functions read is what Settings parses: the figures the context gave.
        settings = Settings(
            budget_max_steps=env["LAMBDAGRAPH_BUDGET_MAX_STEPS"],
            budget_max_tokens=env["LAMBDAGRAPH_BUDGET_MAX_TOKENS"],
            budget_max_cost_usd=env["LAMBDAGRAPH_BUDGET_MAX_COST_USD"],
            model_prices=env["LAMBDAGRAPH_MODEL_PRICES"],
        )
        assert settings.budget_max_tokens == CONTEXT["budgetMaxTokens"]
        assert settings.budget_max_steps == 0
        assert settings.budget_max_cost_usd == 0
        assert settings.model_prices == CONTEXT["modelPrices"]


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"model_prices": "{not json"}, "not JSON"),
        ({"model_prices": '{"m": {"input": 1}}'}, "'input' and 'output'"),
        ({"budget_max_tokens": -1}, "budgets must be >= 0"),
        ({"model_limits": '{"m": {"rpm": -1}}'}, "rpm must be a number"),
        ({"model_limits": '{"m": {"fallback": "nope"}}'}, "not 'provider:model'"),
    ],
)
def test_a_malformed_budget_or_price_table_fails_the_synth(
    bad: dict[str, object], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        StackConfig(asset_dir=Path("."), **bad)  # type: ignore[arg-type]
