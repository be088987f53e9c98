"""Small builders shared by tests (imported as `from helpers import ...`; conftest holds fixtures only)."""

from dnasweep.model import ModelConfig


def tiny_cfg(task: str = "lm", router: str = "topk", **kw) -> ModelConfig:
    """A small, fast model config; keyword args override top-level fields."""
    cfg = ModelConfig(task=task, d_model=32, n_heads=4, seq_len=24, n_steps=3)
    cfg.router.type = router
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg
