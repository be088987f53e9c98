"""Building blocks shared by the DNA and its dense baselines: the dense transformer block, the
input stems (token embedding; ViT patches) and the readout (final norm, pooling, head).

Shapes: B batch, L tokens per sequence (patches per image, + class token), D d_model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dnasweep.model.banks import AttentionBank, MLPBank, Rope
from dnasweep.model.config import ModelConfig


class Block(nn.Module):
    """An ordinary pre-norm transformer block, every token through attention then MLP.

    Built from one-module banks, so it is the very computation a pool's transformer-block module
    performs when every token is routed to it with gate 1 (a test holds us to that).
    """

    def __init__(self, cfg: ModelConfig, rope: Rope | None, out_std: float):
        super().__init__()
        d = cfg.d_model
        self.attn = AttentionBank(1, d, cfg.n_heads, cfg.task == "lm", rope, cfg.init_std, out_std)
        self.mlp = MLPBank(1, d, int(cfg.pool.mlp_ratio * d), cfg.init_std, out_std)

    def forward(self, h_BLD: torch.Tensor) -> torch.Tensor:
        h_BLD = h_BLD + self.attn.full(h_BLD)
        B, L, D = h_BLD.shape
        return h_BLD + self.mlp(h_BLD.reshape(1, B * L, D)).view(B, L, D)

    def flops(self, B: int, L: int) -> float:
        """Forward FLOPs of this block on B sequences of L tokens (matmuls; attention unmasked)."""
        d = self.attn.d
        return B * L * (8.0 * d * d) + B * 4.0 * d * L * L + self.mlp.flops(B * L)


class Stem(nn.Module):
    """Input -> residual stream h_BLD, plus the per-token routing keys the hash router uses
    (token ids for LM, position for vision)."""

    # added to the input rather than multiplied: kept out of weight decay (train/optim.py)
    no_weight_decay = ("pos", "cls")

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        if cfg.task == "lm":
            self.tok = nn.Embedding(cfg.vocab_size, d)
            nn.init.normal_(self.tok.weight, std=cfg.init_std)
        else:
            p, c = cfg.patch_size, cfg.channels
            self.n_patches = (cfg.image_size // p) ** 2
            self.patch = nn.Linear(c * p * p, d, bias=True)
            nn.init.normal_(self.patch.weight, std=cfg.init_std)
            nn.init.zeros_(self.patch.bias)
            # Learned absolute positions, as in the paper's ViT (no RoPE in vision).
            self.pos = nn.Parameter(torch.randn(cfg.tokens_per_example, d) * cfg.init_std)
            self.cls = nn.Parameter(torch.zeros(1, 1, d)) if cfg.pooling == "cls" else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        if cfg.task == "lm":
            if x.dtype != torch.long or x.dim() != 2:
                raise ValueError(f"LM input must be token ids [B, T] (int64), got {tuple(x.shape)} {x.dtype}")
            if x.shape[1] > cfg.seq_len:
                raise ValueError(f"sequence length {x.shape[1]} exceeds model.seq_len={cfg.seq_len}")
            return self.tok(x), x
        if x.dim() != 4 or x.shape[1:] != (cfg.channels, cfg.image_size, cfg.image_size):
            want = (cfg.channels, cfg.image_size, cfg.image_size)
            raise ValueError(f"vision input must be images [B, {want[0]}, {want[1]}, {want[2]}], "
                             f"got {tuple(x.shape)}")
        B, p = x.shape[0], cfg.patch_size
        patches = F.unfold(x, kernel_size=p, stride=p).transpose(1, 2)  # [B, n_patches, C*p*p]
        h_BLD = self.patch(patches)
        if self.cls is not None:
            h_BLD = torch.cat([self.cls.expand(B, -1, -1), h_BLD], dim=1)
        h_BLD = h_BLD + self.pos
        keys_BL = torch.arange(h_BLD.shape[1], device=x.device).expand(B, -1)
        return h_BLD, keys_BL

    def untouched_params_per_token(self) -> int:
        """Embedding rows a token does not look up (LM: all but its own row; vision: none)."""
        return self.tok.weight.numel() - self.cfg.d_model if self.cfg.task == "lm" else 0

    def flops(self, B: int, L: int) -> float:
        if self.cfg.task == "lm":
            return 0.0  # a table lookup
        return 2.0 * self.patch.in_features * self.patch.out_features * B * self.n_patches


class Readout(nn.Module):
    """Final norm, pooling (vision) and the output head -> logits."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.norm = nn.LayerNorm(cfg.d_model, bias=False)
        n_out = cfg.vocab_size if cfg.task == "lm" else cfg.n_classes
        self.head = nn.Linear(cfg.d_model, n_out, bias=False)
        nn.init.normal_(self.head.weight, std=cfg.init_std)

    def forward(self, h_BLD: torch.Tensor) -> torch.Tensor:
        h_BLD = self.norm(h_BLD)
        if self.cfg.task == "vision":
            h_BLD = h_BLD[:, 0] if self.cfg.pooling == "cls" else h_BLD.mean(dim=1)
        return self.head(h_BLD)

    def flops(self, B: int, L: int) -> float:
        rows = B * L if self.cfg.task == "lm" else B
        return 2.0 * self.head.in_features * self.head.out_features * rows
