"""Numbers `dnasweep train` shows besides the metrics of record: the training FLOPs of a run with no
step past warm-up yet, and the progress bar's rate on a resumed run."""

from helpers import TINY_LM

from dnasweep.config import load_trial
from dnasweep.train import loop
from dnasweep.train.report import ConsoleReporter

TINY = [*TINY_LM, "train.log_every=1"]


def test_training_flops_before_any_step_is_past_warm_up_are_the_training_steps(tmp_path, monkeypatch):
    """perf/train_flops_per_token at an evaluation within a start's first 2 steps was the evaluation
    batch's FLOPs (eval mode, other tokens): 30% above the two training steps' mean."""
    seen = []
    compute_loss = loop.compute_loss

    def spy(out, y, cfg):
        seen.append(float(out.stats.flops_per_token))
        return compute_loss(out, y, cfg)

    monkeypatch.setattr(loop, "compute_loss", spy)
    r = loop.run_trial(load_trial("search_spaces/lm.yaml", [*TINY, "train.max_steps=2", "train.eval_every=2",
                                                            "train.lr=0.05", f"out_dir={tmp_path}"]))
    train = seen[:2]  # the evaluation's forwards do not go through compute_loss
    assert abs(r.metrics["perf/train_flops_per_token"] - sum(train) / 2) < 1e-6 * sum(train)


def test_a_resumed_run_starts_its_progress_bar_at_its_checkpoint(tmp_path):
    """The bar started at 0 and its first report counted the checkpoint's steps as trained now
    (6x the true rate)."""

    class Begun:
        def __init__(self):
            self.steps = []

        def begin(self, step):
            self.steps.append(step)

        def report(self, metrics, checkpoint_dir=None):
            pass

        def close(self):
            pass

    rep = Begun()
    for steps in (3, 5):
        loop.run_trial(load_trial("search_spaces/lm.yaml", [*TINY, f"train.max_steps={steps}", "train.eval_every=3",
                                                            f"out_dir={tmp_path}"]), rep)
    assert rep.steps == [0, 3]
    bar = ConsoleReporter(5)
    bar.begin(3)
    bar.report({"step": 5, "train/loss": 1.0})
    assert (bar.bar.initial, bar.bar.n) == (3, 5)  # two steps trained now
    bar.close()


def test_a_vit_position_table_and_class_token_are_not_weight_decayed():
    """make_optimizer's rule: matrices decay; norms, biases and embeddings (looked up or added) do not.
    The ViT stem's position table (2-D) and class token (3-D) were decayed."""
    import torch

    from dnasweep.model import build_model
    from dnasweep.train.optim import make_optimizer

    cfg = load_trial("search_spaces/vision.yaml", [])
    model = build_model(cfg.model)
    opt = make_optimizer(model, cfg.train, torch.device("cpu"))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in decayed}
    assert "stem.pos" not in names and "stem.cls" not in names and "stem.patch.weight" in names, sorted(names)
