"""CDK app and constructs per concern, and the local stack."""
