"""The local stack: moto as AWS, the real handlers, pollers for the queues, the API over HTTP.

``LocalStack`` is what ``make run`` (``python -m infra.local``) starts, and what tests and
benchmarks start in-process::

    with LocalStack(port=0) as stack:
        client = get_sync_client(url=stack.url)

Start-up order matters: the environment (moto endpoint, resource names, the lease) is set
and the botocore hook installed before the handler modules are imported, because functions
read their settings once and their boto3 clients copy the hooks present when they are made.

Timings follow the deployed ones (``infra.local.timings``; ``LAMBDAGRAPH_LOCAL_TIME_SCALE``
makes them faster), and ``LAMBDAGRAPH_FAULTS`` injects crashes, duplicate deliveries and
throttling (``infra.local.faults``), counted at ``GET /_local/faults``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import boto3

from functions.resources import (
    API_FUNCTION,
    APPROVAL_NOTIFIER_FUNCTION,
    APPROVAL_QUEUE,
    HOUSEKEEPING_FUNCTION,
    METRICS_NAMESPACE,
    PRIORITIES,
    SERVICE_NAME,
    STEP_QUEUES,
    STEP_WORKER_FUNCTION,
    WEBHOOK_FUNCTION,
    WEBHOOK_QUEUE,
    FunctionSpec,
    local_name,
)
from infra.local.api_gateway import ApiGatewayServer
from infra.local.approvals import EMAILS_PATH
from infra.local.emails import sent_emails
from infra.local.environments import EnvironmentPool, load_handler_path
from infra.local.faults import (
    FAULT_NAMES,
    FAULTS_ENV,
    SEED_ENV,
    FaultConfig,
    FaultInjector,
    parse_seed,
)
from infra.local.invocations import Invocation, install_aws_call_hook, run_invocation
from infra.local.lambda_context import ACCOUNT_ID, LocalLambdaContext
from infra.local.pollers import PolledQueue, QueuePollers, moto_peek
from infra.local.resources import CreatedResources, create_resources
from infra.local.timings import LEASE_ENV, LocalTimings, local_timings
from infra.local.webhooks import create_webhook_routing, webhook_env

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any], Any]

DEFAULT_WORKERS = 10
DEFAULT_PORT = 8000
REGION = "us-east-1"
FAULTS_PATH = "/_local/faults"

# Set for the handlers unless the user chose otherwise (traces need an X-Ray daemon,
# EMF metrics are noise on a terminal).
_DEFAULT_ENV = {
    "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
    "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_DISABLED": "true",
}


def load_handler(spec: FunctionSpec) -> Handler:
    """The callable a FunctionSpec's handler string names (``module.attribute``)."""
    handler: Handler = load_handler_path(spec.handler)
    return handler


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    if not raw.isdigit():
        raise ValueError(f"{name} must be a whole number, got {raw!r}")
    return int(raw)


class LocalStack:
    """moto + resources + pollers + API adapter, started and stopped as one."""

    def __init__(
        self,
        *,
        port: int | None = None,
        moto_port: int | None = None,
        host: str = "127.0.0.1",
        workers: int | None = None,
        housekeeping_interval_s: float | None = None,
        retry_delay_s: int = 1,
        api_handler: Handler | None = None,
        step_handler: Handler | None = None,
        housekeeping_handler: Handler | None = None,
        webhook_handler: Handler | None = None,
        readable_logs: bool = False,
        api_environments: int | None = None,
        api_handler_path: str | None = None,
        time_scale: float | None = None,
        faults: str | FaultConfig | None = None,
        fault_seed: int | None = None,
    ) -> None:
        """Options left None come from the environment (see docs/local-stack.md).

        ``housekeeping_interval_s`` (0 = off), ``time_scale`` and ``faults`` override
        ``LAMBDAGRAPH_LOCAL_HOUSEKEEPING_S``, ``LAMBDAGRAPH_LOCAL_TIME_SCALE`` and
        ``LAMBDAGRAPH_FAULTS``; they are read and checked when the stack starts.
        """
        self._host = host
        self._port = port if port is not None else _env_int("LAMBDAGRAPH_PORT", DEFAULT_PORT)
        self._moto_port = (
            moto_port if moto_port is not None else _env_int("LAMBDAGRAPH_MOTO_PORT", 0)
        )
        # Enough workers that a burst of ``normal`` runs is not one step at a time: a queue
        # gets its MaximumConcurrency share of them (high 10, normal 4, low 1 of 10). A step
        # mostly waits on moto, so workers overlap; far more only add contention (measured,
        # docs/local-stack.md "A burst of runs").
        self._workers = (
            workers
            if workers is not None
            else _env_int("LAMBDAGRAPH_LOCAL_WORKERS", DEFAULT_WORKERS)
        )
        self._housekeeping_interval_s = housekeeping_interval_s
        self._time_scale = time_scale
        self._fault_option = faults
        self._fault_seed = fault_seed
        self._faults: FaultInjector | None = None
        self.timings: LocalTimings | None = None
        self._retry_delay_s = retry_delay_s
        self._handlers = {
            "api": api_handler,
            "step": step_handler,
            "housekeeping": housekeeping_handler,
            "webhooks": webhook_handler,
        }
        self._readable_logs = readable_logs
        self._api_handler_path = api_handler_path
        self._max_api_environments = (
            api_environments
            if api_environments is not None
            else _env_int("LAMBDAGRAPH_LOCAL_API_ENVIRONMENTS", 4)
        )
        self._moto: Any = None
        self._api: ApiGatewayServer | None = None
        self._environments: EnvironmentPool | None = None
        self._pollers: QueuePollers | None = None
        self._notifier: QueuePollers | None = None
        self._webhook_pollers: QueuePollers | None = None
        self._housekeeping: threading.Thread | None = None
        self._stopping = threading.Event()
        self._saved_env: dict[str, str | None] = {}
        self.resources: CreatedResources | None = None
        self.moto_url = ""

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> LocalStack:
        try:
            self._start()
        except BaseException:
            # Leave nothing half-started behind (threads, ports, environment).
            self.stop()
            raise
        return self

    def _start(self) -> None:
        from moto.server import ThreadedMotoServer

        from infra.local.moto_fidelity import serialise_dynamodb_requests

        self._stopping.clear()
        # Settings first: a stack that would not behave like AWS does not start at all.
        timings = self._configure()
        # moto's request log would drown the stack's own; its errors still show.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        # Conditional writes atomic, as on DynamoDB (the step claim relies on it).
        serialise_dynamodb_requests()
        self._moto = ThreadedMotoServer(ip_address=self._host, port=self._moto_port, verbose=False)
        self._moto.start()
        moto_host, moto_port = self._moto.get_host_and_port()
        self.moto_url = f"http://{moto_host}:{moto_port}"
        self._set_env(self._aws_env())
        # Before any handler exists: its clients copy the hooks present when they are created.
        install_aws_call_hook()
        self.resources = create_resources(
            self.moto_url,
            REGION,
            visibility_timeouts={
                spec.logical_id: timings.visibility_timeout_s for spec in STEP_QUEUES.values()
            },
        )
        self._set_env(self.resources.env)
        self._set_up_approvals()
        # Run-ended events: bus -> rule -> the webhook deliveries queue (infra.local.webhooks).
        deliveries = self.resources.queues[local_name(WEBHOOK_QUEUE.logical_id)]
        self._set_env(create_webhook_routing(self.moto_url, REGION, deliveries.arn))
        self._set_env(webhook_env())
        if not timings.lease_from_env:
            self._set_env({LEASE_ENV: f"{timings.steps.lease_s:g}"})
        # The heartbeat renews a message's visibility to this, on the scaled clock. The
        # re-send of a step nobody claimed is not scaled: it must outlast a backlog, and a
        # backlog drains at this machine's real speed whatever the time scale (scaled, 200
        # runs at scale 60 waited longer than "30 minutes" and were re-sent every minute).
        self._set_env({"LAMBDAGRAPH_VISIBILITY_TIMEOUT_S": str(timings.visibility_timeout_s)})
        self._refresh_settings()

        api_path = self._api_handler_path or API_FUNCTION.handler
        api = self._handlers["api"] or load_handler_path(api_path)
        step = self._handlers["step"] or load_handler(STEP_WORKER_FUNCTION)
        housekeeping = self._handlers["housekeeping"]
        if timings.housekeeping_every_s <= 0:
            housekeeping = None
        elif housekeeping is None:
            housekeeping = load_handler(HOUSEKEEPING_FUNCTION)
        if self._readable_logs:
            from infra.local.logs import use_readable_powertools_logs

            use_readable_powertools_logs()

        self._pollers = QueuePollers(
            self.step_queues(),
            step,
            sqs_client=self.client("sqs"),
            region=REGION,
            workers=self._workers,
            function_name=local_name(STEP_WORKER_FUNCTION.logical_id),
            timeout_s=timings.steps.function_timeout_s,
            retry_delay_s=self._retry_delay_s,
            peek=moto_peek(REGION),
            faults=self._faults,
        )
        self._pollers.start()
        self._webhook_pollers = QueuePollers(
            [
                PolledQueue(
                    label="webhooks",
                    name=deliveries.name,
                    url=deliveries.url,
                    arn=deliveries.arn,
                    batch_size=WEBHOOK_QUEUE.batch_size,
                )
            ],
            self._handlers["webhooks"] or load_handler(WEBHOOK_FUNCTION),
            sqs_client=self.client("sqs"),
            region=REGION,
            workers=2,
            function_name=local_name(WEBHOOK_FUNCTION.logical_id),
            timeout_s=WEBHOOK_FUNCTION.timeout_s,
            # The sender sets a failed delivery's visibility to its retry delay itself.
            retry_delay_s=None,
            peek=moto_peek(REGION),
        )
        self._webhook_pollers.start()
        self._environments = EnvironmentPool(
            api,
            # An injected callable cannot be imported elsewhere: it gets one environment.
            handler_path=None if self._handlers["api"] else api_path,
            max_environments=self._api_environments(),
            function_name=local_name(API_FUNCTION.logical_id),
            timeout_s=API_FUNCTION.timeout_s,
            region=REGION,
            readable_logs=self._readable_logs,
        )
        self._api = ApiGatewayServer(
            self._environments.invoke,
            host=self._host,
            port=self._port,
            local_routes={FAULTS_PATH: self.fault_counts, EMAILS_PATH: sent_emails},
            stream=None if self._handlers["api"] else _stream_route(),
            reports_start=True,
        )
        # Reviewers' links point at this server (the notifier runs in this process).
        self._set_env({"LAMBDAGRAPH_PUBLIC_BASE_URL": self._api.url})
        self._refresh_settings()
        self._start_notifier()
        self._api.start()
        log.info("approval emails are not sent: read them at GET %s%s", self._api.url, EMAILS_PATH)
        if housekeeping is not None:
            self._housekeeping = threading.Thread(
                target=self._run_housekeeping,
                args=(housekeeping, timings.housekeeping_every_s),
                name="housekeeping",
                daemon=True,
            )
            self._housekeeping.start()

    def _set_up_approvals(self) -> None:
        """The approval state machine, SES sender and signing key (infra.local.approvals)."""
        from infra.local.approvals import set_up

        assert self.resources is not None
        queue = self.resources.queues[local_name(APPROVAL_QUEUE.logical_id)]
        # moto's Step Functions integrations call this server back (it runs in-process).
        self._set_env({"MOTO_PORT": self.moto_url.rsplit(":", 1)[1]})
        self._set_env(
            set_up(self.moto_url, self.client("stepfunctions"), self.client("ses"), queue.url)
        )

    def _start_notifier(self) -> None:
        """The approval notifier on the approval-requests queue, as its event source would."""
        assert self.resources is not None
        queue = self.resources.queues[local_name(APPROVAL_QUEUE.logical_id)]
        self._notifier = QueuePollers(
            [
                PolledQueue(
                    label="approvals",
                    name=queue.name,
                    url=queue.url,
                    arn=queue.arn,
                    batch_size=queue.spec.batch_size,
                    max_in_flight=1,
                )
            ],
            load_handler(APPROVAL_NOTIFIER_FUNCTION),
            sqs_client=self.client("sqs"),
            region=REGION,
            workers=1,
            function_name=local_name(APPROVAL_NOTIFIER_FUNCTION.logical_id),
            timeout_s=APPROVAL_NOTIFIER_FUNCTION.timeout_s,
            retry_delay_s=self._retry_delay_s,
            peek=moto_peek(REGION),
        )
        self._notifier.start()

    def _configure(self) -> LocalTimings:
        """Read and check the timings and faults; LocalConfigError / FaultConfigError if wrong."""
        timings = local_timings(
            self._time_scale, housekeeping_every_s=self._housekeeping_interval_s
        )
        timings.check()
        option = self._fault_option
        config = (
            option
            if isinstance(option, FaultConfig)
            else FaultConfig.parse(os.environ.get(FAULTS_ENV) if option is None else option)
        )
        seed = (
            self._fault_seed
            if self._fault_seed is not None
            else parse_seed(os.environ.get(SEED_ENV))
        )
        self._faults = FaultInjector(config, seed=seed) if config else None
        self.timings = timings
        self._check_project()
        log.info("%s", timings.describe())
        if config:
            log.warning(
                "fault injection is ON (%s): %s; counts at GET %s",
                FAULTS_ENV,
                config.describe(),
                FAULTS_PATH,
            )
        return timings

    @staticmethod
    def _check_project() -> None:
        """Import every graph of the LangGraph project, if one is configured; a wrong entry
        stops the stack here (ProjectConfigError) rather than failing its first run."""
        from graphs.project import PROJECT_ENV, find_project

        if find_project(os.environ.get(PROJECT_ENV)) is None:
            return
        from graphs import registry

        # Read again: the environment may have changed since the registry was imported.
        project = registry.load_project_from_environment()
        registry.check_project()
        if project is not None:
            log.info(
                "LangGraph project %s: graphs %s",
                project.config_path,
                ", ".join(e.graph_id for e in project.graphs),
            )

    def fault_counts(self) -> dict[str, int]:
        """Faults injected so far (``GET /_local/faults``); all 0 when injection is off."""
        if self._faults is None:
            return dict.fromkeys(FAULT_NAMES, 0)
        return self._faults.counts()

    def stop(self) -> None:
        """Stop taking requests, finish the steps in progress, stop moto, restore the environment."""
        self._stopping.set()
        if self._api is not None:
            self._api.stop()
            self._api = None
        if self._environments is not None:
            self._environments.close()
            self._environments = None
        if self._pollers is not None:
            self._pollers.stop()
            self._pollers = None
        if self._notifier is not None:
            self._notifier.stop()
            self._notifier = None
        if self._webhook_pollers is not None:
            self._webhook_pollers.stop()
            self._webhook_pollers = None
        if self._housekeeping is not None:
            self._housekeeping.join(5.0)
            self._housekeeping = None
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        self._restore_env()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- what callers use --------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._api is None:
            raise RuntimeError("the stack is not running")
        return self._api.url

    def client(self, service: str) -> Any:
        """A boto3 client for the stack's moto server (fake credentials)."""
        return boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        ).client(service, endpoint_url=self.moto_url)  # type: ignore[call-overload]

    def pause_steps(self) -> None:
        """Leave step messages on their queues until ``resume_steps()`` (to build a backlog)."""
        if self._pollers is None:
            raise RuntimeError("the stack is not running")
        self._pollers.pause()

    def resume_steps(self) -> None:
        if self._pollers is None:
            raise RuntimeError("the stack is not running")
        self._pollers.resume()

    def step_queues(self) -> list[PolledQueue]:
        """The step queues in priority order (high first), as the pollers read them."""
        if self.resources is None:
            raise RuntimeError("the stack is not running")
        queues = []
        # Each queue's share of the local workers follows its MaximumConcurrency on AWS
        # (high 50, normal 20, low 5 -> with 3 workers: 3, 1, 1), so fewer low steps share
        # the interpreter with a high run that arrives.
        top = max(spec.max_concurrency or 1 for spec in STEP_QUEUES.values())
        for priority in PRIORITIES:
            created = self.resources.queues[local_name(STEP_QUEUES[priority].logical_id)]
            share = (created.spec.max_concurrency or top) / top
            queues.append(
                PolledQueue(
                    label=priority,
                    name=created.name,
                    url=created.url,
                    arn=created.arn,
                    batch_size=created.spec.batch_size,
                    max_in_flight=max(1, int(self._workers * share)),
                )
            )
        return queues

    # --- internals ---------------------------------------------------------------------

    def _aws_env(self) -> dict[str, str]:
        env = {
            "AWS_ENDPOINT_URL": self.moto_url,
            # Fake credentials on purpose: nothing the stack runs may reach real AWS.
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "",
            "AWS_PROFILE": "",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }
        # A service-specific endpoint (AWS_ENDPOINT_URL_DYNAMODB, ...) would win over moto.
        for name in os.environ:
            if name.startswith("AWS_ENDPOINT_URL_"):
                env[name] = ""
        for name, value in _DEFAULT_ENV.items():
            env[name] = os.environ.get(name, value)
        return env

    def _set_env(self, values: dict[str, str]) -> None:
        for name, value in values.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            if value:
                os.environ[name] = value
            else:
                os.environ.pop(name, None)

    def _restore_env(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()
        self._refresh_settings()

    def _api_environments(self) -> int:
        from functions.settings import get_settings

        # Checkpoints kept in memory live in this process only: other environments would
        # not see them.
        if getattr(get_settings(), "checkpointer", "dynamodb") == "memory":
            return 1
        return max(1, self._max_api_environments)

    @staticmethod
    def _refresh_settings() -> None:
        # Settings are parsed once per process; re-read them now that the environment moved.
        from functions.settings import get_settings

        get_settings.cache_clear()

    def _run_housekeeping(self, handler: Handler, interval_s: float) -> None:
        function_name = local_name(HOUSEKEEPING_FUNCTION.logical_id)
        while not self._stopping.wait(interval_s):
            context = LocalLambdaContext(
                function_name, HOUSEKEEPING_FUNCTION.timeout_s, region=REGION
            )
            # Its AWS calls are throttled like the worker's (it is not crashed: crashes are
            # about steps), and it is stopped at its own function timeout.
            invocation = Invocation(
                function_name, context.aws_request_id, context.deadline, faults=self._faults
            )
            outcome = run_invocation(
                handler, scheduled_event(), context, invocation, thread_name=function_name
            )
            if outcome.died:
                log.error(
                    "%s Task timed out after %.2f seconds",
                    context.aws_request_id,
                    HOUSEKEEPING_FUNCTION.timeout_s,
                )
            elif outcome.error is not None:
                # As a scheduled Lambda would: report the failure, run again next time.
                log.error("housekeeping failed", exc_info=outcome.error)
            else:
                log.debug("housekeeping: %s", outcome.result)


def _stream_route() -> Any:
    """The stream routes, served in this process (functions.handlers.stream)."""
    from functions.handlers.stream import local_answer

    return local_answer


def scheduled_event() -> dict[str, Any]:
    """The EventBridge event a schedule rule sends."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/lambdagraph-housekeeping"],
        "detail": {},
    }


@contextmanager
def running_stack(**options: Any) -> Iterator[LocalStack]:
    """``LocalStack(**options)`` for the duration of a ``with`` block."""
    stack = LocalStack(**options).start()
    try:
        yield stack
    finally:
        stack.stop()


def wait_until_ok(url: str, timeout_s: float = 30.0) -> float:
    """Seconds until ``GET {url}/ok`` answers 200 (raises TimeoutError after ``timeout_s``)."""
    import urllib.error
    import urllib.request

    started = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(f"{url}/ok", timeout=1.0) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            # Not listening yet (or still importing): try again shortly.
            pass
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"{url}/ok did not answer within {timeout_s} s")
        time.sleep(0.02)
