"""The local stack: the whole of lambdagraph on a laptop, with moto playing AWS (``make run``)."""

from infra.local.stack import LocalStack

__all__ = ["LocalStack"]
