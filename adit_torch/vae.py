"""The ADiT variational autoencoder: atoms -> per-atom latents -> atoms.

A pre-LN Transformer encoder reads atom types, centred Cartesian positions,
fractional coordinates (as sin/cos of 2*pi*frac, crystals only), the lattice
(crystals only) and a dataset / periodicity embedding, and produces a mean and
log-variance of an 8-dimensional latent per atom. A Transformer decoder maps
latents back to atom types, centred positions, fractional coordinates and,
from mean-pooled tokens, the lattice (lengths divided by N^(1/3), angles).

Fixes over the reference: the fractional-coordinate loss is periodic (on the
difference wrapped to [-0.5, 0.5)), so 0.99 vs 0.01 costs little, and the
denoising corruption never leaks into the loss targets.

``VAEConfig(encoder="equivariant")`` swaps the encoder for the invariant one of
:mod:`adit_torch.equivariant` and makes the position and fractional-coordinate
losses blind to the decoder's choice of frame (rotation, and origin of crystals).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from adit_torch.batching import Batch
from adit_torch.config import VAEConfig
from adit_torch.layers import Transformer, masked_mean
from adit_torch.system import MAX_ATOMIC_NUMBER, AtomicSystem


def centre(pos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Subtract the centroid of the real atoms: ``pos (B, N, 3)``, ``mask (B, N)`` -> ``(B, N, 3)`` Å."""
    m = mask.unsqueeze(-1).to(pos.dtype)
    return (pos - masked_mean(pos, mask).unsqueeze(1)) * m


def wrap_diff(d: torch.Tensor) -> torch.Tensor:
    """Wrap fractional differences to [-0.5, 0.5) (the periodic residual)."""
    return d - torch.round(d)


def corrupt(batch: Batch, cfg: VAEConfig, generator: torch.Generator | None = None) -> Batch:
    """Denoising corruption: mask ``cfg.mask_type_prob`` of the atom types, jitter ``cfg.jitter_prob``
    of the atoms by ``N(0, cfg.jitter_std^2)`` Å (fractional coordinates of crystals follow the jitter)."""
    dev, dt = batch.pos.device, batch.pos.dtype
    u = torch.rand(batch.mask.shape, generator=generator, device=dev)
    types = torch.where((u < cfg.mask_type_prob) & batch.mask, torch.full_like(batch.atom_types, cfg.mask_token),
                        batch.atom_types)
    sel = (torch.rand(batch.mask.shape, generator=generator, device=dev) < cfg.jitter_prob) & batch.mask
    noise = torch.randn(batch.pos.shape, generator=generator, device=dev, dtype=dt) * cfg.jitter_std
    noise = noise * sel.unsqueeze(-1).to(dt)
    eye = torch.eye(3, dtype=dt, device=dev).expand_as(batch.lattice)
    lat = torch.where(batch.periodic.view(-1, 1, 1), batch.lattice, eye)
    dfrac = torch.linalg.solve(lat.transpose(1, 2), noise.transpose(1, 2)).transpose(1, 2)
    frac = torch.where(batch.periodic.view(-1, 1, 1), torch.remainder(batch.frac + dfrac, 1.0), batch.frac)
    return dataclasses.replace(batch, atom_types=types, pos=batch.pos + noise, frac=frac * batch.mask.unsqueeze(-1))


class VAE(nn.Module):
    """Transformer VAE over atoms; see the module docstring. Built from a :class:`VAEConfig`."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        if cfg.encoder == "equivariant":
            from adit_torch.equivariant import EquivariantEncoder

            self.eq_encoder = EquivariantEncoder(cfg)
        else:
            self.type_embed = nn.Embedding(cfg.vocab_size, d, padding_idx=0)
            self.pos_embed = nn.Linear(3, d)
            self.frac_embed = nn.Linear(6, d)
            self.lattice_embed = nn.Linear(6, d)
            self.dataset_embed = nn.Embedding(cfg.num_datasets, d)
            self.periodic_embed = nn.Embedding(2, d)
            self.encoder = Transformer(d, cfg.num_layers, cfg.num_heads, cfg.mlp_ratio, cfg.dropout)
            self.to_latent = nn.Linear(d, 2 * cfg.latent_dim)
        self.from_latent = nn.Linear(cfg.latent_dim, d)
        self.dec_dataset_embed = nn.Embedding(cfg.num_datasets, d)
        self.dec_periodic_embed = nn.Embedding(2, d)
        self.decoder = Transformer(d, cfg.num_layers, cfg.num_heads, cfg.mlp_ratio, cfg.dropout)
        self.type_head = nn.Linear(d, cfg.vocab_size)
        self.pos_head = nn.Linear(d, 3)
        self.frac_head = nn.Linear(d, 3)
        self.lattice_head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 6))

    # ---------------------------------------------------------------- encode
    def encode(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent mean and log-variance, each ``(B, N, latent_dim)``; zero on padding."""
        if self.cfg.encoder == "equivariant":
            return self.eq_encoder(batch)
        mask = batch.mask
        per = batch.periodic.to(batch.pos.dtype).view(-1, 1, 1)
        ang = 2 * math.pi * batch.frac
        frac_feat = torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1) * per
        lat_feat = torch.cat([batch.lengths, batch.angles], dim=-1).unsqueeze(1) * per
        h = (self.type_embed(batch.atom_types) + self.pos_embed(centre(batch.pos, mask))
             + self.frac_embed(frac_feat) + self.lattice_embed(lat_feat)
             + (self.dataset_embed(batch.dataset) + self.periodic_embed(batch.periodic.long())).unsqueeze(1))
        h = self.encoder(h, mask)
        mean, logvar = self.to_latent(h).chunk(2, dim=-1)
        m = mask.unsqueeze(-1).to(mean.dtype)
        return mean * m, logvar.clamp(-30.0, 20.0) * m

    # ---------------------------------------------------------------- decode
    def decode(self, z: torch.Tensor, mask: torch.Tensor, periodic: torch.Tensor,
               dataset: torch.Tensor) -> dict[str, torch.Tensor]:
        """Decode latents ``z (B, N, latent_dim)``.

        Returns a dict: ``type_logits (B, N, vocab)``, ``pos (B, N, 3)`` Å (centred),
        ``frac (B, N, 3)`` (unwrapped), ``lengths (B, 3)`` (Å / N^(1/3)), ``angles (B, 3)`` radians.
        """
        h = self.from_latent(z) + (self.dec_dataset_embed(dataset)
                                   + self.dec_periodic_embed(periodic.long())).unsqueeze(1)
        h = self.decoder(h, mask)
        lat = self.lattice_head(masked_mean(h, mask))
        return {
            "type_logits": self.type_head(h),
            "pos": self.pos_head(h) * mask.unsqueeze(-1).to(h.dtype),
            "frac": self.frac_head(h),
            "lengths": lat[:, :3],
            "angles": lat[:, 3:],
        }

    # ------------------------------------------------------------------ loss
    def loss(self, batch: Batch, generator: torch.Generator | None = None,
             corruption: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted reconstruction + KL loss on a (possibly augmented) clean batch.

        The corruption is applied to the encoder input only; targets are the
        clean values. Returns the scalar loss and a dict of its parts.
        """
        cfg = self.cfg
        inp = corrupt(batch, cfg, generator) if corruption else batch
        with torch.set_grad_enabled(torch.is_grad_enabled() and not cfg.freeze_encoder):
            mean, logvar = self.encode(inp)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        z = mean + eps * torch.exp(0.5 * logvar)
        if cfg.latent_noise > 0 and self.training:
            z = z + latent_noise(mean.detach(), batch.mask, cfg.latent_noise, generator)
        out = self.decode(z, batch.mask, batch.periodic, batch.dataset)
        return self._loss_terms(batch, out, mean, logvar)

    def _loss_terms(self, batch, out, mean, logvar):
        cfg = self.cfg
        mask = batch.mask
        mf = mask.to(mean.dtype)
        per = batch.periodic.to(mean.dtype)
        per_atom = per.unsqueeze(1) * mf
        mol_atom = (1 - per).unsqueeze(1) * mf
        n_atoms = mf.sum().clamp_min(1)
        ce = F.cross_entropy(out["type_logits"].flatten(0, 1).float(), batch.atom_types.flatten(), reduction="none")
        l_types = (ce.view_as(mf) * mf).sum() / n_atoms
        target = centre(batch.pos, mask)
        if cfg.encoder == "equivariant":  # invariant latents: the decoder's frame is its own choice
            from adit_torch.equivariant import aligned_position_error, origin_free_frac_error

            pred = centre(out["pos"], mask)
            pos_err = aligned_position_error(pred / cfg.pos_loss_unit, target / cfg.pos_loss_unit, mask) / 3
            frac_err = origin_free_frac_error(out["frac"], batch.frac, mask) / 3
        else:
            pos_err = (((out["pos"] - target) / cfg.pos_loss_unit) ** 2).mean(-1)
            frac_err = (wrap_diff(out["frac"] - batch.frac) ** 2).mean(-1)
        l_pos_c = (pos_err * per_atom).sum() / per_atom.sum().clamp_min(1)
        l_pos_m = (pos_err * mol_atom).sum() / mol_atom.sum().clamp_min(1)
        l_frac = (frac_err * per_atom).sum() / per_atom.sum().clamp_min(1)
        n_cryst = per.sum().clamp_min(1)
        l_len = (((out["lengths"] - batch.lengths) ** 2).mean(-1) * per).sum() / n_cryst
        l_ang = (((out["angles"] - batch.angles) ** 2).mean(-1) * per).sum() / n_cryst
        kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).sum(-1)
        l_kl = (kl * mf).sum() / n_atoms
        total = (cfg.w_types * l_types + cfg.w_pos_crystal * l_pos_c + cfg.w_pos_molecule * l_pos_m
                 + cfg.w_frac * l_frac + cfg.w_lengths * l_len + cfg.w_angles * l_ang + cfg.w_kl * l_kl)
        parts = {"types": l_types, "pos_crystal": l_pos_c, "pos_molecule": l_pos_m, "frac": l_frac,
                 "lengths": l_len, "angles": l_ang, "kl": l_kl}
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The parameters that :meth:`encode` uses (frozen by ``VAEConfig.freeze_encoder``)."""
        if self.cfg.encoder == "equivariant":
            return list(self.eq_encoder.parameters())
        mods = (self.type_embed, self.pos_embed, self.frac_embed, self.lattice_embed, self.dataset_embed,
                self.periodic_embed, self.encoder, self.to_latent)
        return [p for m in mods for p in m.parameters()]

    def apply_freeze(self) -> VAE:
        """Set ``requires_grad`` of the encoder's parameters from ``cfg.freeze_encoder``; returns self."""
        for p in self.encoder_parameters():
            p.requires_grad_(not self.cfg.freeze_encoder)
        return self

    # -------------------------------------------------------------- readout
    @torch.no_grad()
    def reconstruct(self, batch: Batch) -> list[AtomicSystem]:
        """Encode with the latent mean and decode back to systems (no corruption, no sampling)."""
        mean, _ = self.encode(batch)
        return self.decode_to_systems(mean, batch.mask, batch.periodic, batch.dataset)

    @torch.no_grad()
    def decode_to_systems(self, z: torch.Tensor, mask: torch.Tensor, periodic: torch.Tensor,
                          dataset: torch.Tensor, types_of=None) -> list[AtomicSystem]:
        """Decode latents ``z (B, N, latent_dim)`` into B systems (crystal from frac + lattice; molecule
        from positions). Atom types are the argmax over elements 1..MAX (padding and [MASK] excluded),
        or ``types_of(logits (n, MAX)) -> (n,)`` atomic numbers per system when given
        (:func:`adit_torch.conditions.assign_types`)."""
        out = self.decode(z, mask, periodic, dataset)
        return systems_from_outputs(out, mask, periodic, types_of)

    def num_params(self) -> int:
        """Number of parameters."""
        return sum(p.numel() for p in self.parameters())


def latent_noise(mean: torch.Tensor, mask: torch.Tensor, level: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Decoder-robustness noise ``(B, N, D)`` for latents ``mean (B, N, D)`` with ``mask (B, N)``.

    Per system a std ``s ~ U(0, level)``; per dimension the unit is the std of ``mean`` over the
    batch's real atoms (the DiT's normalised units, up to the batch estimate). Zero on padding.
    """
    unit = mean[mask].std(0) if int(mask.sum()) > 1 else torch.ones(mean.shape[-1], device=mean.device)
    s = torch.rand(mean.shape[0], 1, 1, generator=generator, device=mean.device, dtype=mean.dtype) * level
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return eps * s * unit * mask.unsqueeze(-1).to(mean.dtype)


def cell_volume_factor(angles_deg: np.ndarray) -> float:
    """``V / (a b c)`` of a cell with these angles (degrees); <= 0 means no such cell exists."""
    c = np.cos(np.radians(angles_deg))
    return float(np.sqrt(max(0.0, 1 - (c ** 2).sum() + 2 * c.prod())))


#: Open interval (degrees) of decoded lattice angles the reference read-out accepts.
DECODE_ANGLE_RANGE = (50.0, 130.0)


def decode_failure(lengths: np.ndarray, angles_deg: np.ndarray, frac: np.ndarray) -> str | None:
    """Why a decoded crystal is a failed decode under the reference's read-out rules, or None.

    Args:
        lengths: ``(3,)`` decoded lattice lengths, Å (already times N^(1/3)).
        angles_deg: ``(3,)`` decoded lattice angles, degrees.
        frac: ``(N, 3)`` decoded fractional coordinates.

    A decode fails when any length, angle or coordinate is NaN or infinite, a length is not
    positive, an angle lies outside (50°, 130°) (the reference's ``array_dict_to_crystal``), or
    the three angles form no cell at all. Nothing is repaired. (Atom types cannot be out of
    range here: they are the argmax over elements 1..MAX.)
    """
    if not (np.isfinite(lengths).all() and np.isfinite(angles_deg).all() and np.isfinite(frac).all()):
        return "non-finite decoded lattice or coordinates"
    if (lengths <= 0).any():
        return "non-positive decoded lattice length(s): " + ", ".join(f"{x:.3g}" for x in lengths)
    lo, hi = DECODE_ANGLE_RANGE
    if not np.all((angles_deg > lo) & (angles_deg < hi)):
        return f"decoded lattice angle(s) outside ({lo:g}°, {hi:g}°): " + ", ".join(f"{a:.1f}" for a in angles_deg)
    if cell_volume_factor(angles_deg) <= 1e-6:
        return "decoded lattice angles form no cell: " + ", ".join(f"{a:.1f}" for a in angles_deg)
    return None


def _failed_crystal(types: np.ndarray, frac: np.ndarray, lengths: np.ndarray, angles_deg: np.ndarray,
                    reason: str) -> AtomicSystem:
    """A placeholder crystal for a failed decode: the decoded types and (finite) coordinates in a 10 Å
    cubic cell, flagged ``info["decode_failed"]`` with the decoded lattice kept in ``info`` as text.
    The geometry means nothing; the flag makes every evaluator count it invalid."""
    frac = np.nan_to_num(frac, nan=0.0, posinf=0.0, neginf=0.0)
    info = {"decode_failed": reason,
            "decoded_lengths": " ".join(f"{x:.6g}" for x in lengths),
            "decoded_angles": " ".join(f"{x:.6g}" for x in angles_deg)}
    return AtomicSystem.from_fractional(types, np.mod(frac, 1.0), 10.0 * np.eye(3), info)


def systems_from_outputs(out: dict[str, torch.Tensor], mask: torch.Tensor,
                         periodic: torch.Tensor, types_of=None) -> list[AtomicSystem]:
    """Read decoder outputs (see :meth:`VAE.decode`) into :class:`AtomicSystem` objects.

    ``types_of`` (optional) maps one system's type logits ``(n, MAX)`` to its ``(n,)`` atomic numbers.

    Crystals whose decoded lattice breaks the reference's read-out rules (:func:`decode_failure`)
    come back as flagged placeholders (``info["decode_failed"]``), never repaired.
    """
    logits = out["type_logits"].float()[..., 1:MAX_ATOMIC_NUMBER + 1]
    types = (logits.argmax(-1) + 1).cpu().numpy()
    pos = out["pos"].float().cpu().numpy().astype(np.float64)
    frac = out["frac"].float().cpu().numpy().astype(np.float64)
    lengths = out["lengths"].float().cpu().numpy().astype(np.float64)
    angles = np.degrees(out["angles"].float().cpu().numpy().astype(np.float64))
    masks = mask.cpu().numpy()
    pers = periodic.cpu().numpy()
    systems = []
    for i in range(len(masks)):
        m = masks[i]
        n = int(m.sum())
        if types_of is not None:
            types[i][m] = types_of(logits[i][torch.as_tensor(m, device=logits.device)])
        if pers[i]:
            length = lengths[i] * n ** (1.0 / 3.0)
            reason = decode_failure(length, angles[i], frac[i][m])
            if reason is None:
                s = AtomicSystem.from_parameters(types[i][m], np.mod(frac[i][m], 1.0), length, angles[i])
            else:
                s = _failed_crystal(types[i][m], frac[i][m], length, angles[i], reason)
        else:
            s = AtomicSystem(types[i][m], pos[i][m])
        systems.append(s)
    return systems
