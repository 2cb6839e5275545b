"""cdk-nag acknowledgments: every finding we accept is named with its reason, next to the resource."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct

# The validation plugin's name: CDK files acknowledgments under ``<plugin>::<rule>``; an id
# with no prefix would be taken for a plain annotation warning.
PLUGIN = "AwsSolutions"


def acknowledge(scope: IConstruct, reasons: Mapping[str, str]) -> None:
    """Acknowledge cdk-nag findings (``RuleId`` or ``RuleId[Finding]``) on ``scope`` and below."""
    Validations.of(scope).acknowledge(
        *(Acknowledgment(id=f"{PLUGIN}::{rule}", reason=reason) for rule, reason in reasons.items())
    )
