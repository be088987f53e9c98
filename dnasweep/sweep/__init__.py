"""Sweeps: search spaces, Pareto helpers and (lazily) the Ray Tune + Optuna + MLflow runner.
Only this package may import ray, optuna or mlflow, and only inside the functions that need them."""
