"""Every set of names the configuration may use, each owned by one registry, importable without
torch: strategies, backbones, data sources, test-time augmentation modes, metrics.

``params.yaml`` holds names; the ``params`` stage checks them against these registries once.
A row names its implementation by a ``"module:attribute"`` reference (:mod:`.refs`), resolved
only when that code runs, so checking a name never imports the network code behind it; rows
from installed packages join through entry points (:data:`strategies.ENTRY_POINTS`).
"""
