"""The research agent's tools and how they are run.

``search_docs`` searches the small document set shipped in ``docs/`` (a dozen notes about
Quillstream, a fictional workflow engine); ``calculator`` evaluates arithmetic by walking its
syntax tree (no ``eval``). Arguments are checked against each tool's pydantic ``args_schema``
and results against its result model, and :func:`run_tool` turns every way a call can go
wrong — unknown tool, invalid arguments, an exception, a hang past the timeout, a malformed
result — into a ``ToolMessage`` with ``status="error"``: an observation the model can act on,
never a failed run.
"""

from __future__ import annotations

import ast
import concurrent.futures
import contextvars
import json
import math
import operator
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from langchain_core.messages import ToolCall, ToolMessage
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field, ValidationError

from graphs.offline_model import CALCULATOR_TOOL, SEARCH_TOOL

DOCS_DIR = Path(__file__).resolve().parent / "docs"
# The argument a call carries when the model's arguments were not JSON (``invalid_tool_calls``).
INVALID_ARGS = "__invalid_json__"
MAX_EXPRESSION_CHARS = 200
MAX_EXPONENT = 64
MAX_MAGNITUDE = 1e15
_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "how",
        "i",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "the",
        "to",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "with",
        "you",
        "your",
    ]
)


# --- search_docs ---------------------------------------------------------------------------


class SearchArgs(BaseModel):
    """Search the Quillstream documentation."""

    query: str = Field(min_length=1, max_length=500, description="What to look for")
    k: int = Field(default=3, ge=1, le=10, description="How many documents at most")


class SearchHit(BaseModel):
    id: str
    title: str
    snippet: str
    score: int


class SearchResult(BaseModel):
    query: str
    hits: list[SearchHit]


@dataclass(frozen=True)
class Doc:
    id: str
    title: str
    text: str


@cache
def load_docs(directory: Path = DOCS_DIR) -> tuple[Doc, ...]:
    """The shipped documents, by file name (the id), each titled by its first heading."""
    docs = []
    for path in sorted(directory.glob("*.md")):
        lines = path.read_text().strip().splitlines()
        title = lines[0].lstrip("# ").strip() if lines else path.stem
        docs.append(Doc(path.stem, title, " ".join(line.strip() for line in lines[1:])))
    return tuple(docs)


def _terms(text: str) -> list[str]:
    # Lower-cased words without stop words, a plural's "s" cut ("supersteps" is "superstep").
    words = (w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS)
    return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words]


def search_docs(query: str, k: int = 3) -> dict[str, Any]:
    """Documents sharing the most words with the query (a title word counts double)."""
    terms = set(_terms(query))
    scored = []
    for doc in load_docs():
        words = _terms(doc.text)
        title = set(_terms(doc.title))
        score = sum(words.count(t) + 2 * (t in title) for t in terms)
        if score:
            scored.append((score, doc))
    scored.sort(key=lambda pair: (-pair[0], pair[1].id))
    hits = [
        {"id": d.id, "title": d.title, "snippet": d.text[:240], "score": s} for s, d in scored[:k]
    ]
    return {"query": query, "hits": hits}


# --- calculator ----------------------------------------------------------------------------


class CalculatorArgs(BaseModel):
    """Evaluate an arithmetic expression: numbers, + - * / // % ** and parentheses."""

    expression: str = Field(min_length=1, max_length=MAX_EXPRESSION_CHARS)


class CalculatorResult(BaseModel):
    expression: str
    value: int | float


class UnsafeExpression(ValueError):
    """An expression the calculator will not evaluate (not plain arithmetic, or too big)."""


_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}


def evaluate(expression: str) -> int | float:
    """The value of an arithmetic expression; UnsafeExpression for anything else.

    Only number literals, the operators of ``_BINARY`` and ``_UNARY`` and parentheses: names,
    calls, attributes, subscripts and every other construct are refused before anything is
    evaluated. Exponents above ``MAX_EXPONENT`` and values above ``MAX_MAGNITUDE`` are
    refused too, so a short expression cannot take the worker's CPU or memory.
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise UnsafeExpression(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(
            expression.replace("^", "**").replace("\N{MULTIPLICATION SIGN}", "*"), mode="eval"
        )
    except SyntaxError as exc:
        raise UnsafeExpression(f"not an arithmetic expression: {expression!r}") from exc
    value = _eval(tree.body)
    if isinstance(value, float) and not math.isfinite(value):
        raise UnsafeExpression("the result is not a finite number")
    return value


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise UnsafeExpression(f"only numbers are allowed, not {node.value!r}")
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_eval(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise UnsafeExpression(f"exponent {right} is larger than {MAX_EXPONENT}")
        try:
            return _checked(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError as exc:
            raise UnsafeExpression("division by zero") from exc
    raise UnsafeExpression(f"{type(node).__name__} is not allowed: only arithmetic on numbers")


def _checked(value: Any) -> int | float:
    if isinstance(value, complex):
        raise UnsafeExpression("the result is not a real number")
    if abs(value) > MAX_MAGNITUDE:
        raise UnsafeExpression(f"the result is larger than {MAX_MAGNITUDE:g}")
    return value


def calculator(expression: str) -> dict[str, Any]:
    value = evaluate(expression)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, float):
        value = round(value, 6)
    return {"expression": expression, "value": value}


# --- the tool set and running a call -------------------------------------------------------


@dataclass(frozen=True)
class ResearchTool:
    """A tool the model can call: what it sees (``tool``: name, description, args schema),
    the function that does the work, and what its result must look like."""

    tool: BaseTool
    func: Callable[..., Any]
    result_schema: type[BaseModel]

    @property
    def name(self) -> str:
        return self.tool.name


def default_tools() -> dict[str, ResearchTool]:
    search = StructuredTool.from_function(
        search_docs,
        name=SEARCH_TOOL,
        description="Search the Quillstream documentation; returns the best matching "
        "documents with their ids (cite them as [id]).",
        args_schema=SearchArgs,
    )
    calc = StructuredTool.from_function(
        calculator,
        name=CALCULATOR_TOOL,
        description="Evaluate arithmetic: numbers, + - * / // % ** and parentheses.",
        args_schema=CalculatorArgs,
    )
    return {
        t.name: t
        for t in (
            ResearchTool(search, search_docs, SearchResult),
            ResearchTool(calc, calculator, CalculatorResult),
        )
    }


def _error(call: ToolCall, text: str) -> ToolMessage:
    return ToolMessage(
        content=f"Error: {text}",
        name=call.get("name") or "unknown",
        tool_call_id=call.get("id") or "",
        status="error",
    )


def run_tool(
    call: ToolCall,
    tools: Mapping[str, ResearchTool],
    *,
    timeout_s: float,
    pause_s: float = 0.0,
) -> ToolMessage:
    """Run one tool call; always an observation, with ``status="error"`` when it failed.

    The call runs on a worker thread and is waited for at most ``timeout_s`` (``pause_s``,
    the research graph's stand-in for a slow tool, counts against it). A thread cannot be
    killed: a hung tool's thread is left behind, and the step goes on without it.
    """
    name = call.get("name") or ""
    spec = tools.get(name)
    if spec is None:
        return _error(call, f"unknown tool {name!r}; the tools are: {', '.join(sorted(tools))}")
    if INVALID_ARGS in (call.get("args") or {}):
        text = call["args"][INVALID_ARGS]
        return _error(call, f"the arguments for {name} are not valid JSON: {text}")
    schema = spec.tool.args_schema
    try:
        args = call.get("args") or {}
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            args = schema.model_validate(args).model_dump()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors()
        )
        return _error(call, f"invalid arguments for {name}: {problems}")

    def work() -> Any:
        if pause_s > 0:
            time.sleep(pause_s)
        return spec.func(**args)

    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"tool-{name}")
    future = pool.submit(contextvars.copy_context().run, work)
    try:
        result = future.result(timeout=timeout_s)
    except concurrent.futures.TimeoutError:
        return _error(call, f"{name} timed out after {timeout_s:g} s")
    except Exception as exc:  # a tool's failure is the model's observation, not the run's
        return _error(call, f"{name} failed: {type(exc).__name__}: {exc}")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    try:
        checked = spec.result_schema.model_validate(result)
    except ValidationError as exc:
        return _error(
            call, f"{name} returned malformed data ({exc.error_count()} problems): {result!r:.200}"
        )
    return ToolMessage(
        content=json.dumps(checked.model_dump(), sort_keys=True),
        name=name,
        tool_call_id=call.get("id") or "",
        status="success",
    )
