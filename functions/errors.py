"""The project's exceptions. ``functions.handlers.api`` maps them to HTTP status codes in one place."""

from __future__ import annotations


class LambdagraphError(Exception):
    """Base class for errors a client can cause (never a 5xx)."""

    status_code = 400


class NotFoundError(LambdagraphError):
    status_code = 404


class ConflictError(LambdagraphError):
    status_code = 409


class InvalidRequestError(LambdagraphError):
    status_code = 422


class PayloadTooLargeError(LambdagraphError):
    status_code = 413


class UnauthorizedError(LambdagraphError):
    status_code = 401


class InfrastructureError(Exception):
    """AWS failed us (throttling, timeouts): retry later. Never caused by client input."""


class ItemTooLargeError(PayloadTooLargeError, InfrastructureError):
    """A record would exceed DynamoDB's 400 KB item limit (big metadata or run input).

    The client caused it, so the API answers 413 (``LambdagraphError`` comes first in the
    MRO, and the API looks handlers up along it). In the step worker it stays an
    infrastructure error: retried, then the run ends ``error`` instead of crashing the batch.
    """
