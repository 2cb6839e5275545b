"""lambdagraph engine: the one Lambda code asset.

Plain Python that knows no Lambda event shapes, except under ``functions.handlers``.
"""
