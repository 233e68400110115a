"""Inpainting (motif scaffolding): keep given atoms, generate the rest, in the per-atom latent space.

ADiT's latents are one token per atom, so a fragment to keep is a set of tokens. The fragment
(a molecule's atoms with positions, or a crystal's sites with fractional coordinates in their
cell) is encoded once by the VAE (posterior mean, in the DiT's normalised units); its ``k``
tokens take the first ``k`` places of every sample of ``N > k`` atoms.

During integration, the denoiser's clean prediction on the kept tokens is replaced by the
fragment's latents (:class:`KeepKnown`). With the flow ``x_t = t x1 + (1 - t) x0`` and the
velocity ``(x1_hat - x_t) / (1 - t)``, this moves each kept token on the straight path from its
own noise to its latent, so at every step it holds exactly its noised encoding (the replacement
of RePaint, without re-noising the state by hand) and it ends on the latent itself, for any
solver and time grid. The generated tokens see the kept ones through the DiT's attention at
every step.

The kept atoms survive only as far as the decoder reproduces them from latents made in a
smaller context: :func:`kept_fidelity` measures it (types kept, RMSD of the kept part after
the best rigid or periodic alignment), and ``benchmarks/inpainting.py`` reports it together
with the validity of the completions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from adit_torch._geometry import kabsch_rmsd, kabsch_rotation
from adit_torch.errors import ConfigError
from adit_torch.system import AtomicSystem


def encode_fragment(vae, fragment: AtomicSystem, stats: dict[str, Any], device="cpu") -> torch.Tensor:
    """The fragment's latents in the DiT's normalised units.

    Args:
        vae: the DiT's VAE (eval mode).
        fragment: the atoms to keep (``k`` atoms; a crystal's sites in their cell).
        stats: the checkpoint's ``data`` header (``latent_mean``, ``latent_std``).

    Returns:
        ``(k, latent)`` posterior means, ``(z - latent_mean) / latent_std``.
    """
    return _encode_first(vae, [fragment.validate()], fragment.num_atoms, stats, device)[0]


def _encode_first(vae, systems: list[AtomicSystem], k: int, stats: dict[str, Any], device) -> torch.Tensor:
    """Posterior means of the first ``k`` atoms of each system, ``(len(systems), k, latent)``, normalised
    by the checkpoint's ``latent_mean`` / ``latent_std``."""
    from adit_torch.batching import collate

    with torch.no_grad():
        mean, _ = vae.encode(collate(systems).to(device))
    dim = mean.shape[-1]
    mu = torch.tensor(stats.get("latent_mean", [0.0] * dim), device=device)
    sd = torch.tensor(stats.get("latent_std", [1.0] * dim), device=device)
    return (mean[:, :k] - mu) / sd


def check_fragment(fragment: AtomicSystem, kind: str, counts: np.ndarray) -> None:
    """Refuse a fragment that does not fit the request: wrong kind, or samples not larger than it."""
    if fragment.is_periodic != (kind == "crystal"):
        raise ConfigError(f"the fragment is a {'crystal' if fragment.is_periodic else 'molecule'} "
                          f"({fragment.formula}) but {kind}s were asked for")
    small = counts[counts <= fragment.num_atoms]
    if len(small):
        raise ConfigError(f"every sample needs more atoms than the fragment's {fragment.num_atoms} "
                          f"({fragment.formula}); got {int(small.min())}")


class KeepKnown:
    """Wrap a denoiser so that the first ``k`` tokens' clean prediction is the fragment's latents.

    Args:
        net: the denoiser ``(x (B, N, D), t (B,), self_cond) -> x1_hat (B, N, D)``.
        known: ``(k, D)`` latents of the kept tokens (normalised units), the same for every row, or
            ``(B, k, D)``, one set per row.
    """

    def __init__(self, net, known: torch.Tensor):
        self.net, self.known = net, known

    def __call__(self, x: torch.Tensor, t: torch.Tensor, self_cond: torch.Tensor | None) -> torch.Tensor:
        """The wrapped prediction with tokens ``0..k-1`` set to the known latents."""
        out = self.net(x, t, self_cond).clone()
        out[:, : self.known.shape[-2]] = self.known.to(out.dtype)
        return out


def _best_shift(frac: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """The common translation ``(3,)`` (fractional) that best maps ``ref (k, 3)`` onto ``frac (k, 3)``
    modulo 1: the circular mean of the differences."""
    angle = 2 * np.pi * (frac - ref)
    return np.arctan2(np.sin(angle).mean(0), np.cos(angle).mean(0)) / (2 * np.pi)


def _placed(fragment: AtomicSystem, sample: AtomicSystem) -> AtomicSystem:
    """``sample`` with its first ``k`` atoms replaced by the fragment's, placed where the sample put them:
    the fragment rigidly aligned onto them (molecules) or shifted by their best common translation
    (crystals, fractional coordinates in the sample's cell)."""
    k = fragment.num_atoms
    numbers = sample.numbers.copy()
    numbers[:k] = fragment.numbers
    if fragment.is_periodic:
        frac = sample.frac_coords.copy()
        shift = _best_shift(sample.frac_coords[:k], fragment.frac_coords)
        frac[:k] = np.mod(fragment.frac_coords + shift, 1.0)
        return AtomicSystem.from_fractional(numbers, frac, sample.lattice)
    a, b = sample.positions[:k], fragment.positions
    ca, cb = a.mean(0), b.mean(0)
    pos = sample.positions.copy()
    pos[:k] = (b - cb) @ kabsch_rotation(a - ca, b - cb) + ca
    return AtomicSystem(numbers, pos)


def keep_exactly(fragment: AtomicSystem, sample: AtomicSystem) -> AtomicSystem:
    """``sample`` with its first ``k`` atoms replaced by the fragment's own elements and positions.

    The decoder reproduces kept atoms only approximately (``kept_rmsd``); this writes the given
    atoms themselves, placed where the sample put them: rigidly aligned onto them (molecules) or
    shifted by their best common translation in the sample's cell (crystals, fractional
    coordinates). The generated atoms do not move. ``info`` is kept and ``kept_exact`` set; a
    failed decode is returned unchanged.
    """
    if sample.info.get("decode_failed") or sample.num_atoms <= fragment.num_atoms:
        return sample
    out = _placed(fragment, sample)
    out.info.update(sample.info)
    out.info["kept_exact"] = True
    return out


def encode_in_context(vae, fragment: AtomicSystem, samples: list[AtomicSystem], previous: torch.Tensor,
                      stats: dict[str, Any], device="cpu") -> torch.Tensor:
    """Latents of the kept atoms encoded inside each completion (a refinement round).

    The fragment is placed into each completion (:func:`_placed`) and the whole system encoded, so
    the kept tokens' latents are made in the context and frame of a full system, as the DiT saw
    latents in training, instead of the fragment's alone.

    Args:
        samples: the completions of the previous round (M systems, fragment first).
        previous: ``(k, D)`` or ``(M, k, D)`` latents used in that round; kept for failed decodes.

    Returns:
        ``(M, k, D)`` latents in normalised units.
    """
    out = previous.expand(len(samples), *previous.shape[-2:]).clone()
    rows = [i for i, s in enumerate(samples) if not s.info.get("decode_failed")]
    if rows:
        placed = [_placed(fragment, samples[i]) for i in rows]
        out[rows] = _encode_first(vae, placed, fragment.num_atoms, stats, device).to(out.dtype)
    return out


def _periodic_rmsd(frag: AtomicSystem, sample: AtomicSystem) -> float:
    """RMSD (Å, in the sample's cell) of the kept sites' fractional coordinates after the best
    common translation (circular mean of the differences)."""
    k = frag.num_atoms
    d = sample.frac_coords[:k] - frag.frac_coords - _best_shift(sample.frac_coords[:k], frag.frac_coords)
    d -= np.round(d)
    cart = d @ sample.lattice
    return float(np.sqrt((cart ** 2).sum(1).mean()))


def kept_fidelity(fragment: AtomicSystem, sample: AtomicSystem) -> dict[str, Any]:
    """How well a completion kept the fragment (its first ``k`` atoms).

    Returns:
        ``{"types_kept": bool, "rmsd": Å or None}``: the kept atoms' elements equal the
        fragment's, and the RMSD of their positions after the best rigid alignment (molecules)
        or the best common translation of fractional coordinates (crystals); ``None`` for a
        failed decode.
    """
    k = fragment.num_atoms
    if sample.info.get("decode_failed") or sample.num_atoms < k:
        return {"types_kept": False, "rmsd": None}
    types = bool(np.array_equal(sample.numbers[:k], fragment.numbers))
    if fragment.is_periodic:
        return {"types_kept": types, "rmsd": _periodic_rmsd(fragment, sample)}
    return {"types_kept": types, "rmsd": kabsch_rmsd(fragment.positions, sample.positions[:k])}


def fidelity_summary(fragment: AtomicSystem, samples: list[AtomicSystem]) -> dict[str, Any]:
    """Per-sample :func:`kept_fidelity` in ``info`` and their summary: fraction with the types kept,
    median and 90th-percentile RMSD (Å) of the kept part over decoded samples."""
    rmsds, kept = [], []
    for s in samples:
        f = kept_fidelity(fragment, s)
        s.info["kept_types"] = f["types_kept"]
        if f["rmsd"] is not None:
            s.info["kept_rmsd"] = round(f["rmsd"], 4)
            rmsds.append(f["rmsd"])
        kept.append(f["types_kept"])
    return fidelity_stats(fragment, kept, rmsds)


def fidelity_stats(fragment: AtomicSystem, kept: list[bool], rmsds: list[float]) -> dict[str, Any]:
    """``{"fragment", "kept_atoms", "types_kept" (fraction), "rmsd_median", "rmsd_p90" (Å)}`` from
    per-sample flags (elements kept) and RMSDs (decoded samples only)."""
    return {"fragment": fragment.formula, "kept_atoms": fragment.num_atoms,
            "types_kept": float(np.mean(kept)) if kept else 0.0,
            "rmsd_median": float(np.median(rmsds)) if rmsds else None,
            "rmsd_p90": float(np.percentile(rmsds, 90)) if rmsds else None}
