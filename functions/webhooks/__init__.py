"""Completion webhooks: the run-ended event (one effect of a run's ending) and its signed,
retried delivery to the run's ``webhook`` URL. See docs/webhooks.md."""
