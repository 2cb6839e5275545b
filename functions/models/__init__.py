"""Chat models for graphs: provider strings, accounting, budgets, shared rate limits.

The platform attaches models to graphs (graphs read no AWS and no environment); every model
call made during a step sees that step through :mod:`functions.models.context`.
"""
