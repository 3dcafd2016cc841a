"""MLflow side of the pipeline: where runs live, how they are logged, the served model.

Only the track and register stages (and flows) import this package; training code never does.
"""

from petsml.tracking.store import configure, get_or_create_experiment, tracking_uri

__all__ = ["configure", "get_or_create_experiment", "tracking_uri"]
