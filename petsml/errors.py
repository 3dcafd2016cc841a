"""User-facing errors: each message names the file or key at fault and how to fix it.

Stages catch :class:`PetsError` at the top and print the message without a traceback; anything
else is a bug and keeps its traceback.
"""


class PetsError(Exception):
    """An error a user can fix (bad input, bad configuration, unreachable mirror)."""
