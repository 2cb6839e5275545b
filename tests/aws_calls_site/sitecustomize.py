"""Records AWS calls in Python subprocesses of the test suite (e.g. ``python -m infra.local``).

``tests/aws_calls.py`` puts this directory on ``PYTHONPATH`` for the session; a subprocess
records only when the session's directory is in its environment, so others (pip, the bundling
tests' clean interpreters) import nothing from here.
"""

import os
import sys

if os.environ.get("LAMBDAGRAPH_TEST_AWS_CALLS_DIR"):
    _root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, _root)
    try:
        from tests import aws_calls

        aws_calls.install()
    finally:
        sys.path.remove(_root)
