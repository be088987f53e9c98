"""The training loop of one trial (`dnasweep.train.loop.run_trial`). Never imports ray, optuna or
mlflow (a test holds it to that). Its config, `TrainConfig`, lives with the other configs in
`dnasweep.config` (train imports config, never the reverse)."""
