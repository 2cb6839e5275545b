"""Counts per Lambda function version: what a canary release's alarms read.

During a CodeDeploy canary 10% of invocations run the new version. An alarm on a count that
carries the version (dimension ``METRIC_VERSION_DIMENSION``, besides ``service``) sees the new
version's failures alone (infra/constructs/monitoring.py reads ``function_version`` = the
version being released).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from functions.resources import METRIC_VERSION_DIMENSION, METRICS_NAMESPACE, SERVICE_NAME


def function_version(context: Any) -> str:
    """The version a Lambda context runs (``$LATEST`` outside Lambda)."""
    return str(getattr(context, "function_version", None) or "$LATEST")


def count_for_version(name: str, version: str) -> None:
    """Emit ``name`` = 1 for ``version`` now (its own EMF record, with its own dimensions)."""
    with single_metric(
        name=name,
        unit=MetricUnit.Count,
        value=1,
        namespace=METRICS_NAMESPACE,
        default_dimensions={"service": SERVICE_NAME, METRIC_VERSION_DIMENSION: version},
    ):
        pass
