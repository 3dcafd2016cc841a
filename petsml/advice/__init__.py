"""Which transfer strategy to ship, measured on the cached features before training (the
``advise`` stage); the heavy parts are in :mod:`petsml.advice.advise`."""
