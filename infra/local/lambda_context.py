"""A Lambda context object for handlers invoked by the local stack."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

ACCOUNT_ID = "123456789012"


@dataclass
class LocalLambdaContext:
    """Carries the attributes Powertools and handlers read from ``context`` on AWS."""

    function_name: str
    timeout_s: float
    memory_limit_in_mb: int = 1024
    region: str = "us-east-1"
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    _deadline: float = field(init=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_s

    @property
    def deadline(self) -> float:
        """``time.monotonic()`` at which the function timeout strikes."""
        return self._deadline

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return f"local/[{self.function_version}]{self.aws_request_id}"

    @property
    def identity(self) -> None:
        return None

    @property
    def client_context(self) -> None:
        return None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))
