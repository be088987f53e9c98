"""The training loop of one trial (`dnasweep.train.loop.run_trial`). Never imports ray, optuna or
mlflow (a test holds it to that). Kept import-light: the trial config imports TrainConfig from here."""

from dnasweep.train.config import TrainConfig

__all__ = ["TrainConfig"]
