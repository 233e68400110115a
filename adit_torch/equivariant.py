"""The equivariant encoder option of the VAE (``VAEConfig(encoder="equivariant")``).

An E(3)-equivariant message-passing network (e3nn's gate-points network,
:class:`e3nn.nn.models.v2106.gate_points_message_passing.MessagePassing`) reads
each atom's neighbours within ``cutoff`` Å, periodic images included for
crystals, so one model takes molecules and crystals in one batch. Its last
layer keeps only scalars, even (``0e``) and odd (``0o``) under inversion; their
sum is the latent mean and log-variance. The latents are therefore invariant
to rotations, to translations (crystals included: only differences of
positions enter) and to the periodic image each atom is given in, by
construction; the odd scalars let them tell a molecule from its mirror image.

What enters, per atom: its element and the system's dataset and periodicity
(scalars), and for crystals the lattice lengths and angles (invariant). Per
edge: the direction as spherical harmonics up to ``eq_lmax``, the length in a
smooth radial basis that vanishes at the cutoff, and for crystals the cosines
between the edge and each lattice vector (invariant, and they name the axes
so that fractional coordinates can be decoded in the data's basis), scaled
by the same smooth envelope.

The decoder stays the Transformer one: from invariant latents an equivariant
decoder could only output zero vectors, so a decoder has to choose a frame,
and the losses are made blind to that choice (:func:`aligned_position_error`,
:func:`origin_free_frac_error`).

The reference's equivariant VAE differs: its EquiformerV2 encoder also reads
fractional coordinates, and its latent is a linear map of every spherical
harmonic coefficient of the last layer, so its latents are neither invariant
nor equivariant; it decodes with an equivariant feed-forward decoder.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from adit_torch.batching import Batch
from adit_torch.config import VAEConfig
from adit_torch.errors import InvalidSystemError
from adit_torch.vae import wrap_diff  # vae imports this module only inside functions: no import cycle

#: Most lattice translations per axis searched for neighbours; a cell thinner than cutoff / this is refused
#: (:class:`~adit_torch.errors.InvalidSystemError`).
MAX_IMAGES = 8


def envelope(r: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Smooth cut-off ``(1 - (r / cutoff)^2)^2`` for ``r < cutoff``, else 0; ``r (E,)`` Å -> ``(E,)``."""
    x = (r / cutoff).clamp(max=1.0)
    return (1 - x ** 2) ** 2


def positions(batch: Batch) -> torch.Tensor:
    """Cartesian positions ``(B, N, 3)`` Å the graph is built on: ``frac @ lattice`` for crystals (atoms in
    the home cell), the given positions for molecules."""
    home = torch.einsum("bni,bij->bnj", batch.frac, batch.lattice)
    return torch.where(batch.periodic.view(-1, 1, 1), home, batch.pos)


def image_counts(lattice: torch.Tensor, periodic: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Lattice translations per axis that reach every neighbour within ``cutoff`` Å: ``ceil(cutoff / d_k)`` with
    ``d_k`` the spacing of the lattice planes normal to axis ``k``; ``lattice (B, 3, 3)`` rows -> ``(B, 3)`` long,
    zero for molecules."""
    eye = torch.eye(3, dtype=lattice.dtype, device=lattice.device).expand_as(lattice)
    lat = torch.where(periodic.view(-1, 1, 1), lattice, eye)
    recip = torch.linalg.inv(lat).transpose(1, 2)  # rows b_k with a_i . b_k = delta_ik
    counts = torch.ceil(cutoff * recip.norm(dim=-1)).long()
    return torch.where(periodic.view(-1, 1), counts, torch.zeros_like(counts))


def radius_graph(batch: Batch, cutoff: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every ordered pair of atoms closer than ``cutoff`` Å, periodic images included for crystals.

    Returns ``(src, dst, vec, image)`` over E edges: ``src``, ``dst`` ``(E,)`` indices into the flattened
    ``(B * N)`` atoms, ``vec (E, 3)`` Å from atom ``dst`` to the image of atom ``src`` and ``image (E, 3)`` the
    lattice translation of that image (zero for molecules). A crystal atom's own images are its neighbours too.
    """
    bsz, n = batch.mask.shape
    pos = positions(batch)
    counts = image_counts(batch.lattice, batch.periodic, cutoff)
    if bsz and int(counts.max()) > MAX_IMAGES:
        worst = int(counts.max(dim=1).values.argmax())
        raise InvalidSystemError(f"system {worst} of the batch: a lattice plane spacing below "
                                 f"{cutoff / MAX_IMAGES:.2f} Å would need more than {MAX_IMAGES} periodic images "
                                 f"per axis for a {cutoff} Å cutoff")
    reach = counts.max(dim=0).values.tolist() if bsz else [0, 0, 0]
    pair = batch.mask[:, :, None] & batch.mask[:, None, :]  # (B, N_dst, N_src)
    same = torch.eye(n, dtype=torch.bool, device=pos.device)[None]
    srcs, dsts, vecs, images = [], [], [], []
    rng = [range(-k, k + 1) for k in reach]
    for t in ((a, b, c) for a in rng[0] for b in rng[1] for c in rng[2]):
        image = torch.tensor(t, dtype=pos.dtype, device=pos.device)
        inside = (image.abs().view(1, 3) <= counts.to(pos.dtype)).all(dim=1)  # (B,) this crystal needs it
        shift = torch.einsum("k,bkj->bj", image, batch.lattice)  # (B, 3)
        vec = pos[:, None, :, :] + shift[:, None, None, :] - pos[:, :, None, :]  # (B, N_dst, N_src, 3)
        dist = vec.norm(dim=-1)
        keep = pair & inside.view(-1, 1, 1) & (dist < cutoff)
        if not any(t):
            keep = keep & ~same
        b, i, j = keep.nonzero(as_tuple=True)
        srcs.append(b * n + j)
        dsts.append(b * n + i)
        vecs.append(vec[b, i, j])
        images.append(image.expand(len(b), 3))
    return torch.cat(srcs), torch.cat(dsts), torch.cat(vecs), torch.cat(images)


class EquivariantEncoder(nn.Module):
    """Atoms -> per-atom latent mean and log-variance, invariant by construction (see the module docstring).

    Sizes from :class:`~adit_torch.config.VAEConfig`: ``d_model`` scalar input channels, ``eq_layers`` gated
    layers of ``eq_channels`` even and odd scalars, ``eq_channels // 2`` vectors and pseudovectors and
    ``eq_channels // 4`` rank-2 tensors of each parity (up to ``eq_lmax``), ``eq_num_basis`` radial functions,
    ``cutoff`` Å.
    """

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        from e3nn import o3
        from e3nn.nn.models.v2106.gate_points_message_passing import MessagePassing

        self.cfg = cfg
        d, c = cfg.d_model, cfg.eq_channels
        self.type_embed = nn.Embedding(cfg.vocab_size, d, padding_idx=0)
        self.lattice_embed = nn.Linear(6, d)
        self.dataset_embed = nn.Embedding(cfg.num_datasets, d)
        self.periodic_embed = nn.Embedding(2, d)
        self.irreps_sh = o3.Irreps.spherical_harmonics(cfg.eq_lmax)
        hidden = [(c, (0, 1)), (c, (0, -1))]
        for ell in range(1, cfg.eq_lmax + 1):
            mul = max(1, c // (2 ** ell))
            hidden += [(mul, (ell, -1)), (mul, (ell, 1))]
        hidden = o3.Irreps(hidden).sort().irreps.simplify()
        out = o3.Irreps(f"{2 * cfg.latent_dim}x0e + {2 * cfg.latent_dim}x0o")
        self.net = MessagePassing(
            irreps_node_sequence=[o3.Irreps(f"{d}x0e")] + [hidden] * cfg.eq_layers + [out],
            irreps_node_attr="0e", irreps_edge_attr=self.irreps_sh,
            fc_neurons=[cfg.eq_num_basis + 3, 64], num_neighbors=cfg.eq_num_neighbors)

    def edge_features(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        """``(src, dst, sh (E, (lmax+1)^2), scalars (E, num_basis + 3))`` of :func:`radius_graph`'s edges."""
        from e3nn import o3
        from e3nn.math import soft_one_hot_linspace

        cfg = self.cfg
        src, dst, vec, _ = radius_graph(batch, cfg.cutoff)
        length = vec.norm(dim=-1)
        sh = o3.spherical_harmonics(self.irreps_sh, vec, normalize=True, normalization="component")
        radial = soft_one_hot_linspace(length, 0.0, cfg.cutoff, cfg.eq_num_basis, basis="smooth_finite",
                                       cutoff=True) * math.sqrt(cfg.eq_num_basis)
        n = batch.mask.shape[1]
        lattice = batch.lattice[dst // n]  # (E, 3, 3)
        axes = lattice / lattice.norm(dim=-1, keepdim=True).clamp_min(1e-9)
        cosines = torch.einsum("ekj,ej->ek", axes, vec / length.clamp_min(1e-9).unsqueeze(-1))
        cosines = cosines * envelope(length, cfg.cutoff).unsqueeze(-1)  # zero for molecules (no lattice)
        return src, dst, sh, torch.cat([radial, cosines], dim=-1)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent mean and log-variance, each ``(B, N, latent_dim)``; zero on padding."""
        bsz, n = batch.mask.shape
        per = batch.periodic.to(batch.pos.dtype).view(-1, 1, 1)
        lat_feat = torch.cat([batch.lengths, batch.angles], dim=-1).unsqueeze(1) * per
        h = (self.type_embed(batch.atom_types) + self.lattice_embed(lat_feat)
             + (self.dataset_embed(batch.dataset) + self.periodic_embed(batch.periodic.long())).unsqueeze(1))
        src, dst, sh, scalars = self.edge_features(batch)
        ones = h.new_ones(bsz * n, 1)
        out = self.net(h.reshape(bsz * n, -1), ones, src, dst, sh, scalars).view(bsz, n, -1)
        k = 2 * self.cfg.latent_dim
        mean, logvar = (out[..., :k] + out[..., k:]).chunk(2, dim=-1)  # even + odd scalars: SO(3)-invariant
        m = batch.mask.unsqueeze(-1).to(mean.dtype)
        return mean * m, logvar.clamp(-30.0, 20.0) * m


# ------------------------------------------------------------------ frame-free losses
def kabsch_rotations(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Proper rotations ``R (B, 3, 3)`` that best map centred ``pred (B, N, 3)`` onto centred ``target`` over the real
    atoms of ``mask (B, N)``: ``pred @ R.T ~ target`` (Kabsch; no reflection)."""
    m = mask.unsqueeze(-1).to(pred.dtype)
    cov = torch.einsum("bni,bnj->bij", target * m, pred * m)  # sum_n t_n p_n^T
    u, _, vh = torch.linalg.svd(cov.double())
    d = torch.sign(torch.linalg.det(u @ vh))
    d = torch.where(d == 0, torch.ones_like(d), d)
    fix = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], dim=-1))
    return (u @ fix @ vh).to(pred.dtype)


def aligned_position_error(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Squared error per atom ``(B, N)`` Å^2 after rotating ``pred`` onto ``target`` (both centred, ``(B, N, 3)``)
    by :func:`kabsch_rotations`. The rotation is held fixed in the gradient: at the optimum its own gradient
    is zero, and the SVD's is unstable for flat or linear molecules."""
    rot = kabsch_rotations(pred.detach(), target, mask)
    aligned = torch.einsum("bni,bji->bnj", pred, rot)
    return ((aligned - target) ** 2).sum(-1)


def origin_free_frac_error(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Periodic squared error per atom ``(B, N)`` of fractional coordinates ``(B, N, 3)`` after the best common
    shift of the origin: per crystal and axis the circular mean of the wrapped differences (held fixed in the
    gradient), so a decoder that places the crystal at another origin is not penalised."""
    d = pred - target
    ang = 2 * math.pi * d.detach()
    m = mask.unsqueeze(-1).to(d.dtype)
    shift = torch.atan2((torch.sin(ang) * m).sum(1), (torch.cos(ang) * m).sum(1)) / (2 * math.pi)  # (B, 3)
    return (wrap_diff(d - shift.unsqueeze(1)) ** 2).sum(-1)
