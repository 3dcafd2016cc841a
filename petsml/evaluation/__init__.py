"""Test-set evaluation: pure metrics (:mod:`.metrics`), logits (:mod:`.inference`), figures
(:mod:`.plots`) and the evaluate stage's reports (:mod:`.report`).

Pure evaluation: nothing here imports MLflow, Prefect or DVC.
"""
