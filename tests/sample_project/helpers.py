"""A sibling module, imported the way a LangGraph project imports its own files."""

from __future__ import annotations

import os


def echo_of(text: str) -> str:
    return f"{os.environ.get('ECHO_PREFIX', 'echo:')} {text}"
