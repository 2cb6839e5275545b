"""functions/models/factory.py: provider strings -> chat models, SDKs imported lazily."""

from __future__ import annotations

import sys

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import ValidationError

from functions.models.factory import ModelSpecError, chat_model, parse_spec
from functions.settings import Settings
from graphs.offline_model import SPECIALIST_REPLIES, OfflineChatModel


def test_a_fake_model_is_the_offline_model_streaming_its_reply_with_usage() -> None:
    # GIVEN the offline model by its provider string
    model = chat_model("fake:offline")
    assert isinstance(model, OfflineChatModel)

    # WHEN it streams a billing specialist's reply
    messages = [SystemMessage("[billing] specialist"), HumanMessage("I was charged twice")]
    chunks = list(model.stream(messages))

    # THEN the reply comes token by token and the last chunk carries the usage
    assert len(chunks) > 1
    assert "".join(str(c.content) for c in chunks) == SPECIALIST_REPLIES["billing"]
    usage = chunks[-1].usage_metadata
    assert usage is not None
    assert usage["output_tokens"] == len(SPECIALIST_REPLIES["billing"].split())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gpt-4o", "is not 'provider:model'"),
        ("openai:", "is not 'provider:model'"),
        ("anthropic:claude", "unknown provider 'anthropic'"),
    ],
)
def test_a_spec_naming_no_model_is_refused_with_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ModelSpecError, match=message):
        parse_spec(spec)


def test_a_bad_chat_model_setting_fails_when_settings_are_read() -> None:
    with pytest.raises(ValidationError, match="unknown provider 'antrhopic'"):
        Settings(chat_model="antrhopic:claude")
    assert Settings(chat_model=" fake:offline ").chat_model == "fake:offline"


@pytest.mark.parametrize(
    ("spec", "package"),
    [
        ("openai:gpt-4o-mini", "langchain-openai"),
        ("bedrock:amazon.nova-lite-v1:0", "langchain-aws"),
    ],
)
def test_a_provider_whose_sdk_is_missing_says_what_to_install(
    spec: str, package: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the provider's SDK cannot be imported (None in sys.modules blocks the import)
    monkeypatch.setitem(sys.modules, package.replace("-", "_"), None)

    # WHEN the model is made THEN the error names the package to install
    with pytest.raises(ModelSpecError, match=f"pip install {package}"):
        chat_model(spec)
