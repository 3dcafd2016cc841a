"""Training: cached features, linear heads on them, and the fine-tuned strategies.

Nothing here imports MLflow, Prefect, DVC or Great Expectations.
"""
