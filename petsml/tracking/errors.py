"""The model registry's error, shared by the gate, the MLflow wrapper and the promotion.

It lives apart so that the pure statistics (:mod:`petsml.tracking.gate`) can raise it without
importing the MLflow side.
"""

from petsml.errors import PetsError


class RegistryError(PetsError):
    """A registry request that cannot be met (no champion, unknown version, ...)."""
