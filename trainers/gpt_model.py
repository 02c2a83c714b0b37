"""A small nanoGPT-style causal transformer over bytes, and the rule that sizes it from N.

The model is deliberately plain: pre-LayerNorm blocks, causal self-attention through
``scaled_dot_product_attention``, a 4x GELU MLP, no biases, no dropout, and an output head tied
to the token embedding. Everything random (the initial weights) comes from an explicit
``torch.Generator``, so two models built with one seed are bit-identical.

Parameter count. "N" follows the scaling-law convention (Kaplan et al. 2020): parameters outside
the token and position embeddings. With no biases and LayerNorm weights only, one block has
``12 d^2 + 2 d`` (attention 4 d^2, MLP 8 d^2, two LayerNorms), so

    N(L, d) = L * (12 d^2 + 2 d) + d          (the final LayerNorm adds d)

Sizing rule (``config_for_params``). Depth grows with N at an aspect ratio d / L ~ 64 (the
shape Kaplan et al. found near-optimal over a wide range): L0 = round((N / (12 * 64^2))^(1/3)),
at least 1. For each depth L in L0 - 3 .. L0 + 3 the width solving N(L, d) = N is rounded two
ways: to whole 64-dim heads (d a multiple of 64, which fast GPU attention kernels want), and
finely, to a multiple of a head count of about d / 64. Candidates within 3 % of the requested N
are preferred; among them, whole 64-dim heads with d / L within a factor 2 of 64 come first;
then the shape closest to d / L = 64 (in log) wins. The fine rounding moves d by at most
n_head / 2, so at depth L0 a candidate within about 2 % always exists: the real N is within 3 %
of the request from N = 2e4 up (tested from 2e4 to 2e9). Small models (the CPU range, d < 256)
get L0 and fine rounding; large ones get 64-dim heads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB_SIZE = 256  # byte-level tokens: every file is valid input, no tokenizer to ship


@dataclass(frozen=True)
class GPTConfig:
    """Shape of the transformer. Fields say why they have their defaults."""

    n_layer: int          # depth; from the sizing rule (aspect ratio d / L ~ 64)
    d_model: int          # width; solves N(L, d) = requested N
    n_head: int           # d_model / n_head ~ 64 (the usual head size), at least 1
    seq_len: int = 128    # context in bytes; short keeps attention cheap next to the MLP on CPU
    vocab_size: int = VOCAB_SIZE
    init_std: float = 0.02  # GPT-2 init; residual projections are scaled by 1/sqrt(2 L)

    def __post_init__(self) -> None:
        if self.n_layer < 1 or self.d_model < 1 or self.n_head < 1 or self.seq_len < 1:
            raise ValueError(f"GPTConfig sizes must be positive: {self}")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} is not a multiple of n_head={self.n_head}")

    @property
    def non_embedding_params(self) -> int:
        return non_embedding_params(self.n_layer, self.d_model)


def non_embedding_params(n_layer: int, d_model: int) -> int:
    """N(L, d) = L (12 d^2 + 2 d) + d for this architecture (no biases, LayerNorm weights)."""
    return n_layer * (12 * d_model * d_model + 2 * d_model) + d_model


def _widths(n_layer: int, N: float, head_dim: int) -> list[tuple[int, int]]:
    """(d_model, n_head) candidates for depth n_layer: the width solving N(L, d) = N, rounded
    to whole head_dim heads, and rounded finely to a multiple of a head count ~ d / head_dim."""
    b = 2 * n_layer + 1  # solve 12 L d^2 + (2 L + 1) d - N = 0 for d > 0
    d_exact = (-b + math.sqrt(b * b + 48.0 * n_layer * N)) / (24.0 * n_layer)
    whole = head_dim * max(1, round(d_exact / head_dim))
    n_head = max(1, round(d_exact / head_dim))
    return [(whole, whole // head_dim), (n_head * max(1, round(d_exact / n_head)), n_head)]


def config_for_params(N: float, seq_len: int = 128, aspect: float = 64.0,
                      head_dim: int = 64, tol: float = 0.03) -> GPTConfig:
    """The GPTConfig that the sizing rule gives for a non-embedding parameter count N."""
    if not N >= 1000:
        raise ValueError(f"N={N} is too small for a transformer block (need N >= 1000)")
    L0 = max(1, round((N / (12.0 * aspect * aspect)) ** (1.0 / 3.0)))
    best = None
    for n_layer in range(max(1, L0 - 3), L0 + 4):
        for d_model, n_head in _widths(n_layer, N, head_dim):
            err = abs(non_embedding_params(n_layer, d_model) / N - 1.0)
            shape = abs(math.log(d_model / n_layer / aspect))
            good_heads = d_model == n_head * head_dim and shape <= math.log(2.0)
            key = (err > tol, not good_heads, shape if err <= tol else err)
            if best is None or key < best[0]:
                best = (key, n_layer, d_model, n_head)
    _, n_layer, d_model, n_head = best
    return GPTConfig(n_layer=n_layer, d_model=d_model, n_head=n_head, seq_len=seq_len)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, 4 * cfg.d_model, bias=False)
        self.proj = nn.Linear(4 * cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, bias=False)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model, bias=False)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Byte-level causal language model; ``forward(idx, targets)`` returns (logits, mean loss)."""

    def __init__(self, cfg: GPTConfig, generator: torch.Generator):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=False)
        self._init_weights(generator)

    @torch.no_grad()
    def _init_weights(self, generator: torch.Generator) -> None:
        resid_std = self.cfg.init_std / math.sqrt(2 * self.cfg.n_layer)
        for name, p in self.named_parameters():  # named_parameters has a fixed order
            if p.dim() == 1:      # LayerNorm weights
                p.fill_(1.0)
            elif name.endswith("proj.weight"):  # writes into the residual stream
                p.normal_(0.0, resid_std, generator=generator)
            else:
                p.normal_(0.0, self.cfg.init_std, generator=generator)

    def non_embedding_params(self) -> int:
        """Counted from the live module (equals ``cfg.non_embedding_params``; tested)."""
        emb = {id(self.wte.weight), id(self.wpe.weight)}
        return sum(p.numel() for p in self.parameters() if id(p) not in emb)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        T = idx.shape[1]
        pos = torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # tied head
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))
        return logits, loss


def flops_per_token(cfg: GPTConfig) -> float:
    """Training FLOPs per token (forward + backward), PaLM appendix B convention.

    6 N for the non-embedding matmuls, 6 d V for the tied output head, and 12 L T d for the
    attention scores and values (T = context length; causal masking is not discounted).
    """
    return (6.0 * cfg.non_embedding_params + 6.0 * cfg.d_model * cfg.vocab_size
            + 12.0 * cfg.n_layer * cfg.seq_len * cfg.d_model)
