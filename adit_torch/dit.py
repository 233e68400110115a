"""Diffusion Transformer (DiT) with adaLN-Zero over per-atom latents.

Conditioning goes through one typed object, :class:`Condition`: a periodic /
non-periodic label (with a null label for classifier-free guidance) and
optional space group, composition and scalar properties. Each present field
is embedded and added to the timestep embedding; enabling a new condition adds
an embedder, not a change to the blocks. Guidance runs as one batched forward
over the conditional and the null condition (:meth:`DiT.forward_with_cfg`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from adit_torch.config import DiTConfig
from adit_torch.flow import in_interval
from adit_torch.layers import Attention, Mlp

#: Labels of the periodicity condition; NULL is the classifier-free guidance label.
MOLECULE, CRYSTAL, NULL = 0, 1, 2


@dataclass
class Condition:
    """What a DiT forward is conditioned on, besides the timestep.

    Attributes:
        periodic: ``(B,)`` long in {MOLECULE, CRYSTAL, NULL}.
        space_group: ``(B,)`` long, 1..230, 0 = null (only when the model has a space-group embedder).
        elements: ``(B, num_element_types)`` float multi-hot chemical system (column ``Z - 1`` for
            atomic number ``Z``), all-zero = null.
        composition: ``(B, num_elements)`` float element fractions, all-zero = null.
        properties: ``(B, num_properties)`` float (normalised scalar targets).
        properties_mask: ``(B, num_properties)`` bool, False = property absent / dropped.
    """

    periodic: torch.Tensor
    space_group: torch.Tensor | None = None
    elements: torch.Tensor | None = None
    composition: torch.Tensor | None = None
    properties: torch.Tensor | None = None
    properties_mask: torch.Tensor | None = None

    def _map(self, fn) -> Condition:
        return Condition(**{f.name: None if getattr(self, f.name) is None else fn(getattr(self, f.name))
                            for f in dataclasses.fields(self)})

    def null(self) -> Condition:
        """The null condition of the same shape (every field dropped)."""
        out = Condition(periodic=torch.full_like(self.periodic, NULL))
        if self.space_group is not None:
            out.space_group = torch.zeros_like(self.space_group)
        if self.elements is not None:
            out.elements = torch.zeros_like(self.elements)
        if self.composition is not None:
            out.composition = torch.zeros_like(self.composition)
        if self.properties is not None:
            out.properties = torch.zeros_like(self.properties)
            out.properties_mask = torch.zeros(self.properties.shape, dtype=torch.bool, device=self.properties.device)
        return out

    def drop(self, keep: torch.Tensor) -> Condition:
        """Replace the condition by null where ``keep (B,)`` bool is False (classifier-free training)."""
        null = self.null()
        def pick(a, b):
            k = keep.view(-1, *([1] * (a.dim() - 1)))
            return torch.where(k, a, b)
        fields = {}
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(null, f.name)
            if f.name == "properties_mask" and a is None and self.properties is not None:
                a = torch.ones_like(b)
            fields[f.name] = None if a is None else pick(a, b)
        return Condition(**fields)

    def cat(self, other: Condition) -> Condition:
        """Concatenate two conditions along the batch."""
        return Condition(**{f.name: None if getattr(self, f.name) is None else
                            torch.cat([getattr(self, f.name), getattr(other, f.name)])
                            for f in dataclasses.fields(self)})

    def index(self, idx) -> Condition:
        """Select rows ``idx`` of every field."""
        return self._map(lambda t: t[idx])

    def to(self, device) -> Condition:
        """The same condition on ``device``."""
        return self._map(lambda t: t.to(device))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation ``x * (1 + scale) + shift`` with ``(B, D)`` shift/scale broadcast over tokens."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of ``t in [0, 1]`` followed by an MLP."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """``t (B,)`` -> ``(B, D)``. Times are scaled by 1000 so the frequencies cover the usual range."""
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = (t.float() * 1000.0)[:, None] * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(self.mlp[0].weight.dtype))


class ConditionEmbedder(nn.Module):
    """Embeds every field of a :class:`Condition` present in the config and sums them: ``(B, D)``."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.d_model
        self.periodic = nn.Embedding(3, d)
        self.space_group = nn.Embedding(cfg.num_space_groups + 1, d) if cfg.num_space_groups else None
        self.elements = (nn.Sequential(nn.Linear(cfg.num_element_types, d), nn.SiLU(), nn.Linear(d, d))
                         if cfg.num_element_types else None)
        self.composition = (nn.Sequential(nn.Linear(cfg.num_elements, d), nn.SiLU(), nn.Linear(d, d))
                            if cfg.num_elements else None)
        self.properties = (nn.Sequential(nn.Linear(2 * cfg.num_properties, d), nn.SiLU(), nn.Linear(d, d))
                           if cfg.num_properties else None)

    def forward(self, cond: Condition) -> torch.Tensor:
        """Sum of the embeddings of the present fields."""
        c = self.periodic(cond.periodic)
        if self.space_group is not None and cond.space_group is not None:
            c = c + self.space_group(cond.space_group)
        if self.elements is not None and cond.elements is not None:
            c = c + self.elements(cond.elements.to(c.dtype))
        if self.composition is not None and cond.composition is not None:
            c = c + self.composition(cond.composition.to(c.dtype))
        if self.properties is not None and cond.properties is not None:
            pm = cond.properties_mask
            pm = torch.ones_like(cond.properties, dtype=torch.bool) if pm is None else pm
            feats = torch.cat([cond.properties * pm, pm.to(cond.properties.dtype)], dim=-1)
            c = c + self.properties(feats.to(c.dtype))
        return c


class DiTBlock(nn.Module):
    """Transformer block whose LayerNorms are modulated by the conditioning (adaLN-Zero)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x (B, N, D)``, ``c (B, D)``, ``mask (B, N)`` -> ``(B, N, D)``."""
        return self.modulated(x, self.ada(c), mask)

    def modulated(self, x: torch.Tensor, mod: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The block with a precomputed modulation ``mod = ada(c) (B, 6 D)``: ``x (B, N, D)`` -> ``(B, N, D)``."""
        s1, sc1, g1, s2, sc2, g2 = mod.chunk(6, dim=-1)
        x = x + g1.unsqueeze(1) * self.attn(modulate(self.norm1(x), s1, sc1), mask)
        return x + g2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), s2, sc2))


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm and a linear map back to the latent size."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out_dim)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``x (B, N, D)``, ``c (B, D)`` -> ``(B, N, out_dim)``."""
        return self.modulated(x, self.ada(c))

    def modulated(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        """The layer with a precomputed modulation ``mod = ada(c) (B, 2 D)``: ``x (B, N, D)`` -> ``(B, N, out_dim)``."""
        shift, scale = mod.chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    """Predicts clean latents ``x1`` from noisy latents ``x_t``, time ``t`` and a :class:`Condition`."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        in_dim = cfg.latent_dim * (2 if cfg.self_condition else 1)
        self.x_embed = nn.Linear(in_dim, d)
        self.t_embed = TimestepEmbedder(d)
        self.c_embed = ConditionEmbedder(cfg)
        self.blocks = nn.ModuleList([DiTBlock(d, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.num_layers)])
        self.final = FinalLayer(d, cfg.latent_dim)
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.c_embed.periodic.weight, std=0.02)
        # optional conditions start at zero: a model fine-tuned with a new one is its base model at step 0
        if self.c_embed.space_group is not None:
            nn.init.zeros_(self.c_embed.space_group.weight)
        for mlp in (self.c_embed.elements, self.c_embed.composition, self.c_embed.properties):
            if mlp is not None:
                nn.init.zeros_(mlp[-1].weight)
        for lin in self.t_embed.mlp[0], self.t_embed.mlp[2]:
            nn.init.normal_(lin.weight, std=0.02)
        # adaLN-Zero: every block starts as the identity, the output as zero
        for block in self.blocks:
            nn.init.zeros_(block.ada[-1].weight)
            nn.init.zeros_(block.ada[-1].bias)
        nn.init.zeros_(self.final.ada[-1].weight)
        nn.init.zeros_(self.final.ada[-1].bias)
        nn.init.zeros_(self.final.linear.weight)
        nn.init.zeros_(self.final.linear.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, cond: Condition,
                self_cond: torch.Tensor | None = None) -> torch.Tensor:
        """``x (B, N, latent)``, ``t (B,)`` in [0, 1], ``mask (B, N)`` -> predicted clean latents ``(B, N, latent)``."""
        x_t = x
        if self.cfg.self_condition:
            x = torch.cat([x, torch.zeros_like(x) if self_cond is None else self_cond], dim=-1)
        h = self.x_embed(x)
        c = self.t_embed(t) + self.c_embed(cond)
        for block in self.blocks:
            h = block(h, c, mask)
        out = self.final(h, c)
        if self.cfg.residual_x1:
            out = x_t + (1 - t.to(out.dtype)).view(-1, 1, 1) * out
        return out * mask.unsqueeze(-1).to(out.dtype)

    def forward_with_cfg(self, x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, cond: Condition,
                         self_cond: torch.Tensor | None = None, scale: float = 1.0) -> torch.Tensor:
        """Classifier-free guidance ``u + scale * (c - u)`` from ONE forward of the doubled batch.

        With ``scale == 1`` only the conditional half is computed.
        """
        if scale == 1.0:
            return self(x, t, mask, cond, self_cond)
        sc = None if self_cond is None else torch.cat([self_cond, self_cond])
        out = self(torch.cat([x, x]), torch.cat([t, t]), torch.cat([mask, mask]), cond.cat(cond.null()), sc)
        cond_out, uncond_out = out.chunk(2)
        return uncond_out + scale * (cond_out - uncond_out)

    def num_params(self) -> int:
        """Number of parameters."""
        return sum(p.numel() for p in self.parameters())


class GuidedDenoiser:
    """Sampling fast path of guided prediction for one batch and a known time grid.

    The prediction is a weighted sum over conditions, ``sum_j w_j * dit(x, t, c_j)``: classifier-free
    guidance is ``[(cond, scale), (null, 1 - scale)]`` (the default from ``cond`` and ``scale``), and
    guidance per condition adds one term per optional condition (:func:`adit_torch.conditions.guidance_terms`).
    All terms run as ONE forward of the stacked batch. Everything that does not depend on the latents
    is computed once per batch: the stacked condition and mask, the condition embedding, and, for
    every time in ``times``, the timestep embedding and every block's (and the final layer's) adaLN
    modulation. Modulations are computed on the distinct condition rows only (usually one per term)
    and gathered per sample at call time. Called with a ``t`` that is not one value of the grid, it
    falls back to plain forwards of the stacked batch.

    With ``interval = (lo, hi)`` the guided sum is used only at times ``lo <= t <= hi``; at other times
    the prediction is one forward under ``unguided`` (every asked condition at weight 1), so those
    steps cost one forward per sample instead of ``len(terms)`` (guidance in a limited interval,
    Kynkaanniemi et al. 2024).

    Args:
        dit: the model (eval mode).
        mask: ``(B, N)`` bool, True = real token.
        cond: the batch's :class:`Condition` (B rows); ignored when ``terms`` is given.
        scale: guidance scale (1 = conditional only, no doubling); ignored when ``terms`` is given.
        times: the times in [0, 1) at which it will be called (e.g. ``i / steps``).
        terms: ``[(Condition of B rows, weight), ...]``; weights usually sum to 1.
        interval: ``(lo, hi)`` times where guidance applies; None = everywhere.
        unguided: the :class:`Condition` (B rows) used outside ``interval`` (default ``cond``, or the
            highest-weighted term's condition).
    """

    @torch.no_grad()
    def __init__(self, dit: DiT, mask: torch.Tensor, cond: Condition | None, scale: float, times,
                 terms: list[tuple[Condition, float]] | None = None,
                 interval: tuple[float, float] | None = None, unguided: Condition | None = None):
        if terms is None:
            scale = float(scale)
            terms = [(cond, 1.0)] if scale == 1.0 else [(cond, scale), (cond.null(), 1.0 - scale)]
        self.dit, self.mask, self.interval = dit, mask, interval
        self.index = {v: i for i, v in enumerate(torch.as_tensor(list(times), dtype=torch.float32).tolist())}
        self.guided = self._plan(terms, times)
        self.single = self.guided
        if interval is not None and len(terms) > 1:
            if unguided is None:
                unguided = cond if cond is not None else max(terms, key=lambda term: term[1])[0]
            self.single = self._plan([(unguided, 1.0)], times)

    def _plan(self, terms: list[tuple[Condition, float]], times) -> dict:
        """Stacked conditions, mask and per-time modulations of one weighted sum of forwards."""
        dit, mask = self.dit, self.mask
        full = terms[0][0]
        for c, _ in terms[1:]:
            full = full.cat(c)
        copies = len(terms)
        rows, inverse = torch.unique(dit.c_embed(full), dim=0, return_inverse=True)  # (U, D), (T B,)
        tt = torch.as_tensor(list(times), dtype=torch.float32, device=mask.device)
        c = dit.t_embed(tt)[:, None, :] + rows[None]  # (S, U, D)
        return {"weights": [float(w) for _, w in terms], "copies": copies, "full": full,
                "mask_full": torch.cat([mask] * copies) if copies > 1 else mask, "inverse": inverse,
                "block_mods": [block.ada(c) for block in dit.blocks],  # each (S, U, 6 D)
                "final_mods": dit.final.ada(c)}  # (S, U, 2 D)

    @staticmethod
    def _combine(plan: dict, out: torch.Tensor) -> torch.Tensor:
        if plan["copies"] == 1:
            return out
        parts = out.chunk(plan["copies"])
        total = plan["weights"][0] * parts[0]
        for w, part in zip(plan["weights"][1:], parts[1:]):
            total = total + w * part
        return total

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: torch.Tensor, self_cond: torch.Tensor | None) -> torch.Tensor:
        """``x (B, N, latent)``, ``t (B,)`` (one value), ``self_cond`` -> guided clean latents ``(B, N, latent)``."""
        dit = self.dit
        plan = self.guided if in_interval(float(t[0]), self.interval) else self.single
        k = plan["copies"]
        i = self.index.get(float(t[0])) if bool((t == t[0]).all()) else None
        if i is None:
            sc = None if self_cond is None else torch.cat([self_cond] * k)
            out = dit(torch.cat([x] * k), torch.cat([t] * k), plan["mask_full"], plan["full"], sc)
            return self._combine(plan, out)
        inp = x
        if dit.cfg.self_condition:
            inp = torch.cat([x, torch.zeros_like(x) if self_cond is None else self_cond], dim=-1)
        h = dit.x_embed(inp)  # identical for every term: embed once
        if k > 1:
            h = torch.cat([h] * k)
        for block, mods in zip(dit.blocks, plan["block_mods"]):
            h = block.modulated(h, mods[i][plan["inverse"]], plan["mask_full"])
        out = self._combine(plan, dit.final.modulated(h, plan["final_mods"][i][plan["inverse"]]))
        if dit.cfg.residual_x1:
            out = x + (1 - t.to(out.dtype)).view(-1, 1, 1) * out
        return out * self.mask.unsqueeze(-1).to(out.dtype)
