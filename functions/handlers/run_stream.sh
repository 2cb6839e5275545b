#!/bin/bash
# The stream function's handler (functions.resources.STREAM_FUNCTION): Lambda Web Adapter's
# /opt/bootstrap (AWS_LAMBDA_EXEC_WRAPPER) runs it; it starts the stream routes' web server
# on PORT, which the adapter forwards each invocation to (docs/streaming.md, "Serving").
cd "${LAMBDA_TASK_ROOT:-$(dirname "$0")/../..}" || exit 1
exec python3 -m functions.handlers.stream
