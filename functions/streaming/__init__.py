"""Run streams: the worker publishes a run's stream events, the stream routes tail them.

See docs/streaming.md for the design (event log layout, batching, ids, what a retried step
publishes) and README "Streaming" for the behaviour clients rely on.
"""
