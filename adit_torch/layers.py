"""Transformer building blocks shared by the VAE and the DiT.

Attention runs through ``torch.nn.functional.scaled_dot_product_attention``
with a key-padding mask, so fused kernels are used where the backend has them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention over a set of tokens with a padding mask."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x (B, N, D)``, ``mask (B, N)`` bool (True = real token) -> ``(B, N, D)``."""
        bsz, n, dim = x.shape
        qkv = self.qkv(x).view(bsz, n, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn_mask = mask[:, None, None, :]  # keys only; padded queries are ignored downstream
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(bsz, n, dim))


_GELU_K = 2.0 * math.sqrt(2.0 / math.pi)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU, tanh approximation, any shape. With autograd off it runs as ``x * sigmoid(2 u)``
    (``u`` the tanh argument, the same function up to float rounding) in place on one buffer,
    which is about twice as fast as PyTorch's CPU kernel; with autograd on it is ``F.gelu``."""
    if torch.is_grad_enabled() and x.requires_grad:
        return F.gelu(x, approximate="tanh")
    z = x * x
    z.mul_(0.044715 * _GELU_K).add_(_GELU_K).mul_(x)  # 2 * sqrt(2/pi) * (x + 0.044715 x^3)
    return torch.sigmoid_(z).mul_(x)


class Mlp(nn.Module):
    """Two-layer feed-forward network with GELU."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., D) -> (..., D)``."""
        return self.fc2(self.drop(gelu_tanh(self.fc1(x))))


class Block(nn.Module):
    """Pre-LN Transformer block: ``x + Attn(LN(x))``, then ``x + MLP(LN(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x (B, N, D)``, ``mask (B, N)`` -> ``(B, N, D)``."""
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """A stack of pre-LN blocks with a final LayerNorm; padded tokens are zeroed."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.ModuleList([Block(dim, num_heads, mlp_ratio, dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x (B, N, D)``, ``mask (B, N)`` -> ``(B, N, D)``."""
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x) * mask.unsqueeze(-1).to(x.dtype)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens: ``x (B, N, D)``, ``mask (B, N)`` -> ``(B, D)``."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)
