"""Dense baselines: a GPT (LM) or a ViT (vision) made of the same blocks as the DNA, sized by
default to the FLOPs per token the DNA of the same config measures (`model.kind: dense`;
`model.dense_match` and dnasweep.model.calibrate say what that means and its limits)."""

from __future__ import annotations

import torch
from torch import nn

from dnasweep.model.banks import Rope, out_std
from dnasweep.model.config import ModelConfig
from dnasweep.model.flops import dense_blocks
from dnasweep.model.layers import Block, Readout, Stem
from dnasweep.model.output import ModelOutput, RoutingStats


class DenseModel(nn.Module):
    """Stem -> n_backbone + dense_blocks(cfg) blocks -> readout."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        n = cfg.n_backbone + dense_blocks(cfg)
        rope = Rope(cfg.d_model // cfg.n_heads, cfg.seq_len) if cfg.task == "lm" else None
        self.stem = Stem(cfg)
        self.blocks = nn.ModuleList(Block(cfg, rope, out_std(cfg.init_std, n)) for _ in range(n))
        self.readout = Readout(cfg)
        self.params_total = sum(p.numel() for p in self.parameters())
        emb = self.stem.untouched_params_per_token()
        self.params_active = float(self.params_total - emb)  # one embedding row per token

    def forward(self, x: torch.Tensor, return_paths: bool = False) -> ModelOutput:
        h_BLD, _ = self.stem(x)
        for blk in self.blocks:
            h_BLD = blk(h_BLD)
        B, L, _ = h_BLD.shape
        flops = (self.stem.flops(B, L) + sum(b.flops(B, L) for b in self.blocks)
                 + self.readout.flops(B, L)) / (B * L)
        stats = RoutingStats(flops, flops, self.params_active, self.params_total)
        return ModelOutput(self.readout(h_BLD), stats)

    def update_routing_biases(self, out: ModelOutput) -> None:
        """Nothing to update: a dense model has no routers."""
