"""DVC stage entry points, one module per stage: ``python -m stages.<name>`` (see dvc.yaml)."""
