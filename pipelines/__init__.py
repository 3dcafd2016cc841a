"""Prefect flows over the DVC pipeline: ``pipelines.train`` (one run) and ``pipelines.sweep``."""

import os

# Without a Prefect server, flows start a temporary one; on a busy 2-core machine that can take
# longer than Prefect's 20 s default. Set before any flow module imports prefect.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# The temporary server's telemetry has no network to reach on an offline machine (or on CI) and
# logs "Failed to send telemetry" as an ERROR mid-run; a user who wants it sets the variable.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
