"""The study service: Hydra configs → validated spec → Ray Tune trials with per-cell Optuna searches → MLflow."""
