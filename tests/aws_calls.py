"""IAM coverage: record every AWS call each Lambda function makes while the suite runs.

moto enforces no IAM, so a template can grant too little (``DELETE /threads/{id}`` needed
``s3:ListBucket``) and nothing in the suite notices. This plugin makes the suite say which
calls the code makes, per function, and ``tests/infra/test_iam_coverage.py`` checks the
synthesized template against them: every call allowed on its resource, nothing allowed that
is never called.

How a call is attributed and named
- Every handler named by a ``FunctionSpec`` in ``functions.resources`` (new functions are
  picked up by their spec) is wrapped when its module is imported: the wrapper puts the
  function's logical id and the resource names of the settings it runs with (the ``services``
  / ``worker`` / ``runs`` the tests inject, else ``get_settings()``) in a ``ContextVar``, so
  calls made on threads that copy the context (LangGraph's executor does) count too. A
  function whose handler is a start script (the stream function, a web server under Lambda
  Web Adapter) names its Python entry (``FunctionSpec.entry``, ``functions.handlers.stream.
  serve``, which its server and the local stack's ``local_answer`` both go through); a
  streamed answer's chunks count as made inside it.
- botocore's ``before-parameter-build`` event (on every client of every session) sees the
  call's service, operation and parameters; a call made outside any handler (fixtures, the
  local stack's pollers standing in for event source mappings, tests calling the engine
  directly) is not a function's call and is ignored.
- Each call becomes the IAM actions it needs (``TransactWriteItems`` needs ``PutItem``/
  ``UpdateItem``/... per item; ``ListObjectsV2`` needs ``s3:ListBucket`` on the bucket), on
  its resource named by the setting that pointed the function at it:
  ``LAMBDAGRAPH_RUNTIME_TABLE``, ``LAMBDAGRAPH_RUNTIME_TABLE/index/gsi1``,
  ``LAMBDAGRAPH_PAYLOAD_BUCKET/*`` (objects), ``LAMBDAGRAPH_QUEUE_URL_HIGH``. The template
  test maps the setting to the resource through the function's environment in the template.

Where the calls go
- Each process (the pytest controller, xdist workers, and the local stacks that e2e tests
  start as subprocesses: ``tests/aws_calls_site/sitecustomize.py`` on their ``PYTHONPATH``
  installs the same recorder there) appends each new call to a file in one directory per
  session (``LAMBDAGRAPH_TEST_AWS_CALLS_DIR``).
- At the end of the session the controller reads them all. A call missing from the committed
  manifest, ``tests/infra/aws_calls.json``, fails the session (so the manifest cannot go
  stale, and a new call cannot reach AWS without its grant being checked);
  ``--aws-calls-update`` (``make aws-calls``) rewrites the manifest from the session instead
  (a session with failures only adds to it: its tests may not have made all their calls).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.abc
import importlib.machinery
import json
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

DIR_ENV = "LAMBDAGRAPH_TEST_AWS_CALLS_DIR"
MANIFEST = Path(__file__).resolve().parent / "infra" / "aws_calls.json"
SITE_DIR = Path(__file__).resolve().parent / "aws_calls_site"

# A call: (function logical id, "service:Operation", IAM action, resource).
Call = tuple[str, str, str, str]

# The function (logical id) a handler invocation belongs to, and resource name -> setting.
_CURRENT: contextvars.ContextVar[tuple[str, Mapping[str, str]] | None] = contextvars.ContextVar(
    "lambdagraph_aws_calls_function", default=None
)
_seen: set[Call] = set()
_seen_lock = threading.Lock()
_installed = False


# --- which IAM actions a call needs ----------------------------------------------------------

_TRANSACT_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
    "Get": "GetItem",
}
_S3_OBJECT_ACTIONS = {
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "DeleteObject": "s3:DeleteObject",
    # Multi-object delete is authorized as s3:DeleteObject on each key.
    "DeleteObjects": "s3:DeleteObject",
}
_S3_BUCKET_ACTIONS = {
    "ListObjectsV2": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "HeadBucket": "s3:ListBucket",
}
# SQS authorizes a batch call as its single-message action.
_SQS_ACTIONS = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}
UNMAPPED = "?unmapped"
_TASK_TOKEN_ACTIONS = ("SendTaskSuccess", "SendTaskFailure", "SendTaskHeartbeat")
APPROVAL_STATE_MACHINE_SETTING = "LAMBDAGRAPH_APPROVAL_STATE_MACHINE_ARN"


def iam_requirements(
    service: str, operation: str, params: Mapping[str, Any]
) -> list[tuple[str, str]]:
    """(IAM action, resource name) pairs a call needs; resource names are physical here
    (table name, ``table/index/<name>``, bucket, ``bucket/*``, queue URL).

    An operation not described here gives ``UNMAPPED``: the manifest check then asks for it.
    """
    if service == "dynamodb":
        if operation in ("BatchWriteItem", "BatchGetItem"):
            return [(f"dynamodb:{operation}", table) for table in params.get("RequestItems", {})]
        if operation in ("TransactWriteItems", "TransactGetItems"):
            needs = []
            for item in params.get("TransactItems", []):
                for kind, body in item.items():
                    needs.append((f"dynamodb:{_TRANSACT_ACTIONS[kind]}", body["TableName"]))
            return needs
        table = str(params.get("TableName", ""))
        if params.get("IndexName"):
            table = f"{table}/index/{params['IndexName']}"
        return [(f"dynamodb:{operation}", table)]
    if service == "s3":
        bucket = str(params.get("Bucket", ""))
        if operation in _S3_OBJECT_ACTIONS:
            return [(_S3_OBJECT_ACTIONS[operation], f"{bucket}/*")]
        if operation in _S3_BUCKET_ACTIONS:
            return [(_S3_BUCKET_ACTIONS[operation], bucket)]
        if operation == "CopyObject":
            source = params.get("CopySource")
            source_bucket = (
                source["Bucket"] if isinstance(source, dict) else str(source).split("/")[0]
            )
            return [("s3:GetObject", f"{source_bucket}/*"), ("s3:PutObject", f"{bucket}/*")]
        return [(UNMAPPED, f"s3.{operation}")]
    if service == "sqs":
        action = _SQS_ACTIONS.get(operation, operation)
        return [(f"sqs:{action}", str(params.get("QueueUrl", params.get("QueueName", ""))))]
    if service == "states":
        if operation == "StartExecution":
            return [("states:StartExecution", str(params["stateMachineArn"]))]
        if operation in _TASK_TOKEN_ACTIONS:
            # Authorized on the state machine whose task the token names; the token does not
            # say which, and the approval state machine is the only one (functions/approvals).
            return [(f"states:{operation}", f"@{APPROVAL_STATE_MACHINE_SETTING}")]
    if service == "email" and operation in ("SendEmail", "SendRawEmail"):
        # Authorized on the sender's identity (outside the SES sandbox).
        return [(f"ses:{operation}", str(params["Source"]))]
    if service == "secretsmanager" and operation == "GetSecretValue":
        return [("secretsmanager:GetSecretValue", str(params["SecretId"]))]
    if service == "events" and operation == "PutEvents":
        buses = {str(e.get("EventBusName", "default")) for e in params.get("Entries", [])}
        return [("events:PutEvents", bus) for bus in sorted(buses)]
    return [(UNMAPPED, f"{service}.{operation}")]


def _setting_names(settings: Any) -> dict[str, str]:
    """Resource name -> the setting (environment variable) that holds it."""
    names: dict[str, str] = {}
    for field, value in vars(settings).items():
        if isinstance(value, str) and value:
            names.setdefault(value, f"LAMBDAGRAPH_{field.upper()}")
    return names


def resource_of(name: str, names: Mapping[str, str]) -> str:
    """A physical resource name as ``<setting>``, ``<setting>/index/<index>`` or
    ``<setting>/*`` (``?<name>`` if no setting names it)."""
    if name.startswith("@"):
        return name[1:]  # named by its setting already
    if name in names:
        return names[name]
    if name.endswith("/*") and name[:-2] in names:
        return f"{names[name[:-2]]}/*"
    table, sep, index = name.partition("/index/")
    if sep and table in names:
        return f"{names[table]}/index/{index}"
    return f"?{name}"


# --- attribution: which function is calling --------------------------------------------------


def _handlers() -> dict[str, tuple[str, str]]:
    """module -> (attribute, function logical id), from the FunctionSpecs."""
    from functions import resources

    found: dict[str, tuple[str, str]] = {}
    for value in vars(resources).values():
        if isinstance(value, resources.FunctionSpec):
            # A start script's function (the stream function's web server) names the Python
            # callable serving its requests as its entry.
            module, _, attribute = (value.entry or value.handler).rpartition(".")
            found[module] = (attribute, value.logical_id)
    return found


def _settings_from(kwargs: Mapping[str, Any]) -> Any:
    from functions.settings import Settings, get_settings

    for value in kwargs.values():
        for candidate in (
            getattr(value, "settings", None),
            getattr(getattr(value, "runs", None), "settings", None),
        ):
            if isinstance(candidate, Settings):
                return candidate
    return get_settings()


def _wrap(handler: Callable[..., Any], logical_id: str) -> Callable[..., Any]:
    if getattr(handler, "__aws_calls_function__", None):
        return handler

    @functools.wraps(handler)
    def invocation(*args: Any, **kwargs: Any) -> Any:
        current = (logical_id, _setting_names(_settings_from(kwargs)))
        token = _CURRENT.set(current)
        try:
            result = handler(*args, **kwargs)
        finally:
            _CURRENT.reset(token)
        body = getattr(result, "body", None)
        if isinstance(body, Iterator):
            # A streamed answer (functions.streaming.http.Answer) does its work as it is
            # written, after the handler returned: each chunk counts for the function too.
            result.body = _attributed(body, current)
        return result

    invocation.__aws_calls_function__ = logical_id  # type: ignore[attr-defined]
    return invocation


def _attributed(body: Iterator[bytes], current: tuple[str, Mapping[str, str]]) -> Iterator[bytes]:
    """``body`` with the calls made while each chunk is made attributed to ``current``."""
    try:
        while True:
            token = _CURRENT.set(current)
            try:
                chunk = next(body)
            except StopIteration:
                return
            finally:
                _CURRENT.reset(token)
            yield chunk
    finally:
        close = getattr(body, "close", None)
        if callable(close):
            token = _CURRENT.set(current)
            try:
                close()
            finally:
                _CURRENT.reset(token)


def _wrap_module(module: ModuleType, attribute: str, logical_id: str) -> None:
    handler = getattr(module, attribute, None)
    if callable(handler):
        setattr(module, attribute, _wrap(handler, logical_id))


class _WrappingLoader(importlib.abc.Loader):
    def __init__(self, loader: Any, attribute: str, logical_id: str) -> None:
        self._loader = loader
        self._attribute = attribute
        self._logical_id = logical_id

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        module: ModuleType | None = self._loader.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _wrap_module(module, self._attribute, self._logical_id)


class _HandlerFinder(importlib.abc.MetaPathFinder):
    """Wraps a handler module's handler as the module is imported."""

    def __init__(self, handlers: Mapping[str, tuple[str, str]]) -> None:
        self._handlers = dict(handlers)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self._handlers:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        attribute, logical_id = self._handlers[fullname]
        spec.loader = _WrappingLoader(spec.loader, attribute, logical_id)
        return spec


@contextlib.contextmanager
def invocation(logical_id: str, settings: Any) -> Iterator[None]:
    """Attribute the calls made inside to ``logical_id`` running with ``settings``."""
    token = _CURRENT.set((logical_id, _setting_names(settings)))
    try:
        yield
    finally:
        _CURRENT.reset(token)


# --- recording ---------------------------------------------------------------------------------


def _on_call(params: Mapping[str, Any], model: Any, **_: Any) -> None:
    current = _CURRENT.get()
    if current is None:
        return
    function, names = current
    service = model.service_model.endpoint_prefix
    operation = model.name
    try:
        needs = iam_requirements(service, operation, params)
    except (KeyError, TypeError, AttributeError):
        needs = [(UNMAPPED, f"{service}.{operation}")]
    for action, name in needs:
        resource = name if action == UNMAPPED else resource_of(name, names)
        _record((function, f"{service}:{operation}", action, resource))


def _record(call: Call) -> None:
    with _seen_lock:
        if call in _seen:
            return
        _seen.add(call)
        directory = os.environ.get(DIR_ENV)
        if not directory:
            return
        with open(Path(directory) / f"calls-{os.getpid()}.jsonl", "a") as out:
            out.write(json.dumps(call) + "\n")


def _patch_botocore() -> None:
    import botocore.session

    original = botocore.session.Session.create_client
    if getattr(original, "__aws_calls__", False):
        return

    @functools.wraps(original)
    def create_client(self: Any, *args: Any, **kwargs: Any) -> Any:
        client = original(self, *args, **kwargs)
        client.meta.events.register("before-parameter-build", _on_call)
        return client

    create_client.__aws_calls__ = True  # type: ignore[attr-defined]
    botocore.session.Session.create_client = create_client  # type: ignore[method-assign]


def install() -> None:
    """Record from now on in this process (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    handlers = _handlers()
    sys.meta_path.insert(0, _HandlerFinder(handlers))
    for module_name, (attribute, logical_id) in handlers.items():
        module = sys.modules.get(module_name)
        if module is not None:
            _wrap_module(module, attribute, logical_id)
    _patch_botocore()


def read_calls(directory: Path) -> set[Call]:
    calls: set[Call] = set()
    for path in sorted(directory.glob("calls-*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                function, operation, action, resource = json.loads(line)
                calls.add((function, operation, action, resource))
    return calls


def load_manifest(path: Path = MANIFEST) -> set[Call]:
    if not path.exists():
        return set()
    data = json.loads(path.read_text())
    return {
        (entry["function"], entry["call"], entry["action"], entry["resource"])
        for entry in data["calls"]
    }


def write_manifest(calls: set[Call], path: Path = MANIFEST) -> None:
    entries = [
        {"function": f, "call": c, "action": a, "resource": r} for f, c, a, r in sorted(calls)
    ]
    document = {
        "about": (
            "AWS calls each Lambda function makes in the test suite, with the IAM action and "
            "resource (the setting naming it) each needs. Generated by `make aws-calls` "
            "(tests/aws_calls.py); tests/infra/test_iam_coverage.py checks the template "
            "against it. Do not edit by hand."
        ),
        "calls": entries,
    }
    path.write_text(json.dumps(document, indent=1) + "\n")


# --- the pytest plugin -------------------------------------------------------------------------


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("aws-calls", "IAM coverage (tests/aws_calls.py)")
    group.addoption(
        "--aws-calls-update",
        action="store_true",
        help="rewrite tests/infra/aws_calls.json from the AWS calls this session records",
    )
    group.addoption(
        "--aws-calls-manifest",
        default=str(MANIFEST),
        help="the calls manifest to check against (or to write with --aws-calls-update)",
    )


def pytest_configure(config: Any) -> None:
    if not hasattr(config, "workerinput"):
        # The controller (or the only process): a fresh directory for this session, handed
        # to xdist workers and any subprocess through the environment.
        directory = tempfile.mkdtemp(prefix="lambdagraph-aws-calls-")
        os.environ[DIR_ENV] = directory
        config._aws_calls_dir = Path(directory)
        paths = [str(SITE_DIR), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    install()


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    config = session.config
    directory: Path | None = getattr(config, "_aws_calls_dir", None)
    if directory is None:
        return  # an xdist worker: its calls are in the directory already
    calls = read_calls(directory)
    shutil.rmtree(directory, ignore_errors=True)
    manifest = Path(config.getoption("--aws-calls-manifest"))
    if config.getoption("--aws-calls-update"):
        if exitstatus != 0:
            # Tests that failed may not have made all their calls: add, never drop.
            before = load_manifest(manifest)
            write_manifest(calls | before, manifest)
            config._aws_calls_report = [
                f"the session failed: added {len(calls - before)} calls to {manifest} and "
                "dropped none; rerun once it passes"
            ]
            return
        write_manifest(calls, manifest)
        config._aws_calls_report = [f"wrote {len(calls)} AWS calls to {manifest}"]
        return
    missing = sorted(calls - load_manifest(manifest))
    if missing:
        config._aws_calls_report = [
            f"AWS calls made by the functions but missing from {manifest.name}:",
            *(f"  {f}: {c} needs {a} on {r}" for f, c, a, r in missing),
            "Run `make aws-calls` to regenerate it, then `pytest tests/infra` checks the "
            "template grants each (and nothing more).",
        ]
        config._aws_calls_failed = True
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = getattr(terminalreporter.config, "_aws_calls_report", None)
    if not lines:
        return
    failed = getattr(terminalreporter.config, "_aws_calls_failed", False)
    terminalreporter.section("AWS calls (IAM coverage)", sep="=", red=failed, bold=failed)
    for line in lines:
        terminalreporter.line(line, red=failed)
