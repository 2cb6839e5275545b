"""Crash points, systematically: every AWS call of a scenario, the process dying at each."""
