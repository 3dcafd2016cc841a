"""Pretrained weights from a model hub: local caches first, then the network, else a clear error.

Shared by the torchvision and timm families. The network is probed with a short connect before
any download (no answer in time = offline), downloads run under a socket timeout, and a missing
file becomes a :class:`WeightsUnavailableError` saying which file to put where. Set
``PETSML_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) to never try the network.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlparse

from petsml.models.base import OFFLINE_HINT, WeightsUnavailableError

PROBE_TIMEOUT_S = 5.0  # connecting to a weights host; no answer in time = offline
DOWNLOAD_TIMEOUT_S = 60.0  # socket timeout while downloading


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def offline_mode() -> bool:
    """True when the environment forbids the network (PETSML_OFFLINE or HF_HUB_OFFLINE)."""
    return _truthy(os.environ.get("PETSML_OFFLINE")) or _truthy(os.environ.get("HF_HUB_OFFLINE"))


def unreachable(url: str) -> str | None:
    """Why ``url``'s host cannot be reached (None when it can); fast, never hangs."""
    if offline_mode():
        return "PETSML_OFFLINE/HF_HUB_OFFLINE is set"
    parsed = urlparse(url)
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as error:
        return f"cannot connect to {host}:{port}: {error}"


@contextlib.contextmanager
def socket_timeout(seconds: float = DOWNLOAD_TIMEOUT_S) -> Iterator[None]:
    """Bound every socket operation while downloading; the previous default comes back."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def unavailable(name: str, reason: str, where: str) -> WeightsUnavailableError:
    """The error for weights that are neither cached (at ``where``) nor downloadable."""
    return WeightsUnavailableError(
        f"pretrained weights for backbone {name!r} are not cached and cannot be downloaded "
        f"({reason}). Put them in {where}, or {OFFLINE_HINT}."
    )
