"""CDK constructs, one per concern; ``infra.stack`` composes them."""
