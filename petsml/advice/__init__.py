"""Which transfer strategy to ship, measured before training (the ``advise`` stage).

Kept import-light on purpose: ``featurize`` and ``train`` import :mod:`petsml.advice.early_block`
to resolve ``model.early_block: auto``, and DVC re-runs a stage for every module it imports, so
this package's ``__init__`` pulls in nothing (the heavy parts are in :mod:`petsml.advice.advise`).
"""
