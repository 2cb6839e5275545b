"""Checkpoint, runtime, node cache and memory tables, and the bucket for large checkpoint payloads.

Tables come from the ``TableSpec``s in ``functions.resources`` (the local stack reads the same
specs): on-demand, point-in-time recovery, TTL, encryption with the AWS-managed KMS key.
The bucket keeps payloads a little longer than the items that point at them.

The bucket is versioned, and keeps what is overwritten or deleted for the tables'
point-in-time-recovery window: a table restored to an earlier time points at objects as
they were then, and those can be brought back (docs/deploy.md, "Restoring a table").
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_s3 as s3
from constructs import Construct

from functions.resources import (
    CACHE_TABLE,
    CHECKPOINT_TABLE,
    MEMORY_TABLE,
    PAYLOAD_BUCKET,
    RUNTIME_TABLE,
    TableSpec,
)
from infra.constructs.nag import acknowledge

# DynamoDB deletes expired items within a few days, not at once; payloads outlive their
# items by this margin so no readable checkpoint points at a deleted object.
PAYLOAD_GRACE_DAYS = 2
# DynamoDB point-in-time recovery reaches back 35 days: replaced or deleted payload objects
# are kept (as noncurrent versions) that long.
PITR_DAYS = 35


class Storage(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, ttl_days: int, removal: RemovalPolicy
    ) -> None:
        super().__init__(scope, construct_id)
        self.checkpoint_table = _table(self, CHECKPOINT_TABLE, removal)
        self.runtime_table = _table(self, RUNTIME_TABLE, removal)
        # LangGraph's node cache (functions/cache): TTL on ``expires_at``, set per entry by
        # the node's CachePolicy, not by ``ttl_days``.
        self.cache_table = _table(self, CACHE_TABLE, removal)
        # LangGraph's long-term memory store (functions/memory): what graphs remember across
        # runs and threads, kept (point-in-time recovery like the others) until deleted or
        # put with a TTL (``expires_at``), not by ``ttl_days``.
        self.memory_table = _table(self, MEMORY_TABLE, removal)
        lifecycle = [
            s3.LifecycleRule(
                id="AbortUploads", abort_incomplete_multipart_upload_after=Duration.days(1)
            ),
            s3.LifecycleRule(
                id="KeepForRecovery",
                noncurrent_version_expiration=Duration.days(PITR_DAYS),
                expired_object_delete_marker=True,
            ),
        ]
        if ttl_days > 0:
            lifecycle.append(
                s3.LifecycleRule(
                    id="MatchTtl", expiration=Duration.days(ttl_days + PAYLOAD_GRACE_DAYS)
                )
            )
        self.payload_bucket = s3.Bucket(
            self,
            PAYLOAD_BUCKET.logical_id,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=True,
            lifecycle_rules=lifecycle,
            removal_policy=removal,
            auto_delete_objects=False,
        )
        acknowledge(
            self.payload_bucket,
            {
                "AwsSolutions-S1": (
                    "Payload objects are written and read only by the functions, whose calls "
                    "X-Ray traces; server access logs would add a second bucket and cost for no reader."
                ),
            },
        )


def _table(scope: Construct, spec: TableSpec, removal: RemovalPolicy) -> dynamodb.Table:
    table = dynamodb.Table(
        scope,
        spec.logical_id,
        partition_key=dynamodb.Attribute(
            name=spec.partition_key, type=dynamodb.AttributeType.STRING
        ),
        sort_key=(
            dynamodb.Attribute(name=spec.sort_key, type=dynamodb.AttributeType.STRING)
            if spec.sort_key
            else None
        ),
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        encryption=dynamodb.TableEncryption.AWS_MANAGED,
        time_to_live_attribute=spec.ttl_attribute,
        removal_policy=removal,
    )
    for index in spec.global_indexes:
        table.add_global_secondary_index(
            index_name=index.name,
            partition_key=dynamodb.Attribute(
                name=index.partition_key, type=dynamodb.AttributeType.STRING
            ),
            sort_key=(
                dynamodb.Attribute(name=index.sort_key, type=dynamodb.AttributeType.STRING)
                if index.sort_key
                else None
            ),
            projection_type=dynamodb.ProjectionType.ALL,
        )
    return table
