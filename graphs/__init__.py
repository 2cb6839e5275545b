"""The agent graphs and their registry (no AWS, no environment variables inside a graph)."""
