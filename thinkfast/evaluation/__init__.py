"""Test-time scaling evaluation: datasets, prompts, sampling store, grading, metrics, PRM, budgets, plots.

Flow (see `pipeline.py`): problems -> prompts -> sampler -> JSONL store -> grade (extract + equivalence
+ PRM) -> metrics (pass@k, maj@k, BoN@k, weighted BoN@k) -> seconds per k -> plots and report.
"""
