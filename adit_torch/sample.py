"""Sampling: atom counts -> DiT flow ODE (+ guidance) -> VAE decoder -> systems.

What a run draws before it integrates (atom counts, initial noise) and how samples are cut into
padded batches is :mod:`adit_torch.sample_plan`. Guidance runs the conditional and unconditional
passes as one batched forward, with everything that does not depend on the latents computed once
per batch (:class:`adit_torch.dit.GuidedDenoiser`). A ``torch.Generator`` seeded by ``seed``
drives all randomness; each sample's initial noise depends on the seed, its index and the atom
counts only, not on how samples are grouped into batches or chunks
(:class:`adit_torch.sample_plan.SampleNoise`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from adit_torch.conditions import (
    SampleConditions,
    all_conditions,
    assign_types,
    guidance_terms,
    num_guidance_terms,
    symbol,
    warn_out_of_range,
)
from adit_torch.config import FlowConfig
from adit_torch.dit import CRYSTAL, GuidedDenoiser
from adit_torch.errors import ConfigError
from adit_torch.flow import (
    ends_with_clean_prediction,
    evaluation_schedule,
    evaluation_times,
    in_interval,
    solve,
    time_grid,
)
from adit_torch.inpaint import (
    KeepKnown,
    check_fragment,
    encode_fragment,
    encode_in_context,
    fidelity_stats,
    fidelity_summary,
    keep_exactly,
)
from adit_torch.sample_plan import KINDS, draw_sizes_and_noise, forward_cost, padded_groups
from adit_torch.symmetry import compatible_types, symmetrize
from adit_torch.system import AtomicSystem

logger = logging.getLogger(__name__)

#: Network precisions of the sampler: float32, or bfloat16 autocast (GPU speed; the state stays float32).
PRECISIONS = ("fp32", "bf16")


def _autocast(device, precision: str):
    """bfloat16 autocast on ``device`` for ``precision == "bf16"``, else a no-op context."""
    import contextlib

    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_guidance_interval(interval) -> tuple[float, float] | None:
    """``interval`` as ``(lo, hi)`` floats with ``0 <= lo <= hi <= 1`` (None passes); a clear error otherwise."""
    if interval is None:
        return None
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ConfigError(f"guidance_interval must be two times (lo, hi) in [0, 1], got {interval!r}") from None
    if not 0.0 <= lo <= hi <= 1.0:
        raise ConfigError(f"guidance_interval must satisfy 0 <= lo <= hi <= 1, got ({lo}, {hi})")
    return lo, hi


def forward_passes(schedule: list[float], terms: int, interval: tuple[float, float] | None = None) -> int:
    """Network forwards per sample over an evaluation ``schedule`` (:func:`adit_torch.flow.evaluation_schedule`)
    with ``terms`` guidance terms applied inside ``interval`` (everywhere when None) and one forward elsewhere."""
    return sum(terms if in_interval(t, interval) else 1 for t in schedule)


@torch.no_grad()
def sample_latents(dit, flow_cfg: FlowConfig, stats: dict[str, Any], kind: str, num_samples: int,
                   steps: int | None = None, cfg_scale: float | None = None, seed: int = 0, batch_size: int = 256,
                   num_atoms: int | list[int] | None = None, device="cpu", progress: bool = True,
                   solver: str = "euler", grid: str = "uniform", known: torch.Tensor | None = None,
                   precision: str = "fp32", only: np.ndarray | None = None, drawn: tuple | None = None,
                   conditions: SampleConditions | None = None, guidance_interval: tuple[float, float] | None = None):
    """Integrate the DiT's flow for ``num_samples`` systems of ``kind``, one padded group at a time.

    Arguments as :func:`sample_systems`; ``known`` ``(k, latent)`` or ``(num_samples, k, latent)``
    (normalised units, see :func:`adit_torch.inpaint.encode_fragment`) fixes the first ``k`` tokens of every sample
    (:class:`adit_torch.inpaint.KeepKnown`); atom counts drawn from the histogram are then drawn
    among the counts above ``k``. ``precision="bf16"`` runs the network under bfloat16 autocast
    (the ODE state stays float32). ``only`` (sample indices) integrates just those samples; the
    atom counts and noise are still those of all ``num_samples``
    (:func:`adit_torch.sample_plan.draw_sizes_and_noise`, or ``drawn`` when the caller drew them
    already), so a sample is the same whether it is made alone, in a chunk or with all.
    Yields ``(idx, z, mask, periodic, dataset)`` per group:
    ``idx`` the sample indices ``(B,)``, ``z (B, N, latent)`` un-normalised VAE latents (zero on
    padding), ``mask (B, N)``, ``periodic (B,)`` bool and ``dataset (B,)`` long, ready for
    :meth:`adit_torch.vae.VAE.decode_to_systems`. ``conditions`` (:class:`adit_torch.conditions.SampleConditions`)
    adds optional conditions, each with its own guidance scale (:func:`adit_torch.conditions.guidance_terms`).
    ``guidance_interval`` ``(lo, hi)`` applies guidance only at times ``lo <= t <= hi`` (see
    :func:`check_guidance_interval`); elsewhere one forward with every asked condition.
    """
    if kind not in KINDS:
        raise ConfigError(f"kind must be 'crystal' or 'molecule', got {kind!r}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if num_samples <= 0 or batch_size <= 0:
        raise ConfigError("num_samples and batch_size must be positive")
    steps = flow_cfg.steps if steps is None else int(steps)
    scale = flow_cfg.cfg_scale if cfg_scale is None else float(cfg_scale)
    if steps <= 0:
        raise ConfigError(f"steps must be positive, got {steps}")
    guidance_interval = check_guidance_interval(guidance_interval)
    if conditions is not None:
        conditions.check(dit.cfg, kind, stats=stats)
    dim = dit.cfg.latent_dim
    if drawn is None:
        drawn = draw_sizes_and_noise(stats, kind, num_samples, dim, seed, num_atoms, device,
                                     0 if known is None else known.shape[-2],
                                     conditions.formula_size() if conditions is not None else 0)
    counts, offsets, noise = drawn
    mean = torch.tensor(stats.get("latent_mean", [0.0] * dim), device=device)
    std = torch.tensor(stats.get("latent_std", [1.0] * dim), device=device)
    label = KINDS[kind]
    fixed_s, token_s = forward_cost(dit, device, precision)
    ts = time_grid(steps, grid)
    final_clean = ends_with_clean_prediction(grid)
    times = evaluation_times(ts, solver, final_clean)
    schedule = evaluation_schedule(ts, solver, final_clean)
    passes = forward_passes(schedule, num_guidance_terms(conditions, scale), guidance_interval)
    slot_s = token_s * passes / len(schedule)  # mean forwards per sample and evaluation
    if only is None:
        groups = padded_groups(counts, batch_size, fixed_s, slot_s)
    else:
        only = np.asarray(only, dtype=np.int64)
        groups = [only[g] for g in padded_groups(counts[only], batch_size, fixed_s, slot_s)]
    for idx in tqdm(groups, desc=f"sampling {kind}s", disable=not progress, unit="batch"):
        bsz, n = len(idx), int(counts[idx].max())
        mask = torch.as_tensor(np.arange(n)[None, :] < counts[idx][:, None], device=device)
        x0 = torch.zeros(bsz, n, dim, device=device)
        for row, j in enumerate(idx):
            x0[row, :counts[j]] = noise[j]
        terms = guidance_terms(kind, bsz, conditions, scale, dit.cfg, device, stats)
        unguided = None if guidance_interval is None else all_conditions(kind, bsz, conditions, dit.cfg, device,
                                                                         stats)
        net = GuidedDenoiser(dit, mask, None, scale, times, terms, guidance_interval, unguided)
        if known is not None:
            net = KeepKnown(net, known if known.dim() == 2 else known[torch.as_tensor(idx, device=known.device)])
        with _autocast(device, precision):
            z, _ = solve(net, x0, mask, ts, solver, dit.cfg.self_condition, final_clean)
        z = z.float()
        z = (z * std + mean) * mask.unsqueeze(-1)
        periodic = torch.full((bsz,), label == CRYSTAL, dtype=torch.bool, device=device)
        dataset = torch.full((bsz,), 0 if label == CRYSTAL else 1, dtype=torch.long, device=device)
        yield idx, z, mask, periodic, dataset


@torch.no_grad()
def iter_systems(dit, vae, flow_cfg: FlowConfig, stats: dict[str, Any], kind: str, num_samples: int,
                 steps: int | None = None, cfg_scale: float | None = None, seed: int = 0, batch_size: int = 256,
                 num_atoms: int | list[int] | None = None, device="cpu", progress: bool = True,
                 solver: str = "euler", grid: str = "uniform", fragment: AtomicSystem | None = None,
                 inpaint_rounds: int = 2, precision: str = "fp32", chunk: int | None = None,
                 conditions: SampleConditions | None = None, keep_lattice: bool = False,
                 guidance_interval: tuple[float, float] | None = None, exact_keep: bool = True):
    """Generate the samples of :func:`sample_systems` in order, ``chunk`` at a time.

    Yields lists of :class:`AtomicSystem` (samples ``0..chunk-1``, then the next ``chunk``, ...),
    so a caller can write them out and let them go: memory is bounded by the chunk, not by
    ``num_samples``. The samples are the same for every ``chunk`` (None = all at once).
    """
    if inpaint_rounds < 1:
        raise ConfigError(f"inpaint_rounds must be at least 1, got {inpaint_rounds}")
    guidance_interval = check_guidance_interval(guidance_interval)
    chunk = num_samples if chunk is None else int(chunk)
    if chunk <= 0:
        raise ConfigError(f"chunk must be positive, got {chunk}")
    if conditions is not None:
        conditions.check(dit.cfg, kind, stats=stats)
        warn_out_of_range(conditions, stats)
        num_atoms = _constrained_sizes(conditions, num_atoms, fragment)
    if keep_lattice and (fragment is None or not fragment.is_periodic):
        raise ConfigError("keep_lattice keeps a crystal fragment's lattice: give a periodic fragment to keep")
    known = None
    if fragment is not None:
        if num_atoms is not None:
            check_fragment(fragment, kind, np.atleast_1d(np.asarray(num_atoms)))
        else:
            check_fragment(fragment, kind, np.array([fragment.num_atoms + 1]))
        known = encode_fragment(vae, fragment, stats, device)
    snap = snaps_to_space_group(conditions, kind, fragment)
    drawn = draw_sizes_and_noise(stats, kind, num_samples, dit.cfg.latent_dim, seed, num_atoms, device,
                                 0 if known is None else fragment.num_atoms,
                                 conditions.formula_size() if conditions is not None else 0,
                                 conditions.space_group if snap else None)
    types_of = None
    if conditions is not None and conditions.allowed_elements() is not None:
        elements, formula = conditions.allowed_elements(), conditions.formula
        types_of = lambda logits: assign_types(logits, elements, formula)  # noqa: E731
    if snap and conditions.formula is None:  # element counts the group's sites can hold
        group, elements = conditions.space_group, conditions.allowed_elements()
        types_of = lambda logits: compatible_types(logits, group, elements)  # noqa: E731
    in_context = None  # (num_samples, k, latent) from the second round on; chunks fill disjoint rows
    if fragment is not None and inpaint_rounds > 1:
        in_context = known.expand(num_samples, *known.shape).clone()
    for start in range(0, num_samples, chunk):
        only = np.arange(start, min(start + chunk, num_samples))
        round_known = known
        out: list[AtomicSystem | None] = []
        rounds = inpaint_rounds if fragment is not None else 1
        for round_ in range(rounds):
            if round_:
                in_context[torch.as_tensor(only)] = encode_in_context(vae, fragment, out, known, stats, device)
                round_known = in_context
            out = [None] * len(only)
            for idx, z, mask, periodic, dataset in sample_latents(
                    dit, flow_cfg, stats, kind, num_samples, steps, cfg_scale, seed, batch_size, num_atoms, device,
                    progress, solver, grid, round_known, precision, only, drawn, conditions, guidance_interval):
                for j, s in zip(idx, vae.decode_to_systems(z, mask, periodic, dataset, types_of)):
                    if keep_lattice and round_ == rounds - 1:  # the last round's decode only (see sample_systems)
                        s = with_lattice(s, fragment.lattice)
                    if snap and not s.info.get("decode_failed"):  # a failed decode stays a flagged placeholder
                        snapped = symmetrize(s, conditions.space_group)
                        s = snapped.system
                        s.info["symmetrized"] = snapped.ok
                    s.info.update({"id": f"sample-{j}", "kind": kind, "seed": int(seed)})
                    out[j - start] = s
        if fragment is not None:
            fidelity_summary(fragment, out)  # the decoder's own fidelity, before the exact atoms go in
            if exact_keep:
                out = [keep_exactly(fragment, s) for s in out]
        if chunk < num_samples:
            drawn[2].clear()  # the next chunk's samples are in other noise blocks (bar one shared at the edge)
        yield out


def snaps_to_space_group(conditions: SampleConditions | None, kind: str, fragment: AtomicSystem | None) -> bool:
    """Whether sampling applies the space-group decoding of :mod:`adit_torch.symmetry`: a ``space_group``
    condition with ``symmetrize`` on, for crystals, and no inpainting fragment (the snap would move it)."""
    return bool(conditions is not None and conditions.space_group is not None and conditions.symmetrize
                and kind == "crystal" and fragment is None)


def with_lattice(system: AtomicSystem, lattice: np.ndarray) -> AtomicSystem:
    """``system`` (a decoded crystal) with its fractional coordinates in ``lattice`` ``(3, 3)``, Å, rows: the
    decoded lattice replaced by a kept one. A failed decode is returned as it is."""
    if system.lattice is None or system.info.get("decode_failed"):
        return system
    out = AtomicSystem.from_fractional(system.numbers, system.frac_coords, np.asarray(lattice, dtype=float))
    out.info.update(system.info)
    out.info["kept_lattice"] = True
    return out


def _constrained_sizes(conditions: SampleConditions, num_atoms, fragment: AtomicSystem | None):
    """``num_atoms`` under the ``num_atoms`` / ``formula`` constraints of ``conditions`` (ConfigError on a clash)."""
    if conditions.num_atoms is not None and num_atoms is None:
        num_atoms = conditions.num_atoms
    if num_atoms is not None:
        conditions.check_sizes(num_atoms)
    if fragment is not None and conditions.formula is not None:
        raise ConfigError("--condition formula and a kept fragment cannot be combined: the formula fixes every "
                          "atom's type")
    allowed = conditions.allowed_elements()
    if fragment is not None and allowed is not None and not set(fragment.numbers.tolist()) <= set(allowed):
        outside = sorted(set(fragment.numbers.tolist()) - set(allowed))
        raise ConfigError(f"the kept fragment has elements outside the chemical system: "
                          f"{', '.join(symbol(z) for z in outside)}")
    return num_atoms


def sample_systems(dit, vae, flow_cfg: FlowConfig, stats: dict[str, Any], kind: str, num_samples: int,
                   steps: int | None = None, cfg_scale: float | None = None, seed: int = 0, batch_size: int = 256,
                   num_atoms: int | list[int] | None = None, device="cpu", progress: bool = True,
                   solver: str = "euler", grid: str = "uniform",
                   fragment: AtomicSystem | None = None, inpaint_rounds: int = 2,
                   precision: str = "fp32", conditions: SampleConditions | None = None,
                   keep_lattice: bool = False, guidance_interval: tuple[float, float] | None = None,
                   exact_keep: bool = True) -> list[AtomicSystem]:
    """Generate ``num_samples`` systems of ``kind`` (``"crystal"`` or ``"molecule"``).

    Args:
        dit, vae: models in eval mode on ``device``.
        flow_cfg: step count and guidance defaults.
        stats: the checkpoint's ``data`` header (atom-count histograms, latent normalisation).
        steps: solver steps (default ``flow_cfg.steps``).
        cfg_scale: guidance scale (default ``flow_cfg.cfg_scale``; 1 = no guidance).
        seed: seed of the sampling generator.
        batch_size: most systems per forward pass (batches are padded to their largest system when
            that is cheaper than another forward, see :func:`adit_torch.sample_plan.padded_groups`).
        num_atoms: one count for all samples, a list of counts, or None (histogram).
        solver: ODE solver (:data:`adit_torch.flow.SOLVERS`: euler, heun, midpoint, multistep).
        grid: time grid (:data:`adit_torch.flow.TIME_GRIDS`: uniform, power, reference).
        fragment: atoms to keep (inpainting, :mod:`adit_torch.inpaint`): they become the first
            atoms of every sample, each of which must have more atoms than the fragment; each
            sample's ``info`` gets ``kept_types`` and ``kept_rmsd`` (Å), how closely the decoder
            reproduced them.
        inpaint_rounds: with a fragment, rounds of sampling (each costs a full integration); from the
            second on, the kept atoms' latents are encoded inside the previous round's completions
            (:func:`adit_torch.inpaint.encode_in_context`), from the same noise. Two rounds halve the
            kept part's RMSD of the first (``benchmarks/results/inpainting_adit-xs-joint.json``).
        precision: ``"fp32"`` or ``"bf16"`` (the DiT under bfloat16 autocast; decoding stays float32).
        conditions: optional conditions (space group, chemical system) with a guidance scale each
            (:class:`adit_torch.conditions.SampleConditions`); the model must have been trained with them.
        keep_lattice: with a crystal ``fragment``, the last round's samples are decoded into the fragment's
            lattice (their fractional coordinates kept, :func:`with_lattice`). Earlier rounds keep their
            decoded lattices: imposing the kept one before the refinement round kept fewer fragment
            elements (91% against 99% of 96 samples over 6 MP-20 crystals, 2 kept sites each).
            Give ``num_atoms`` to suit the cell's volume: histogram counts ignore it.
        guidance_interval: ``(lo, hi)``: guidance (every term of :func:`adit_torch.conditions.guidance_terms`)
            only at times ``lo <= t <= hi`` of the flow (0 = noise, 1 = data); elsewhere one forward with
            every asked condition. None (default) guides every step.
        exact_keep: with a ``fragment``, write the fragment's own atoms into every sample, placed where
            the decoder put them (:func:`adit_torch.inpaint.keep_exactly`); False keeps the decoded atoms.
    """
    return [s for part in iter_systems(dit, vae, flow_cfg, stats, kind, num_samples, steps, cfg_scale, seed,
                                       batch_size, num_atoms, device, progress, solver, grid, fragment,
                                       inpaint_rounds, precision, conditions=conditions, keep_lattice=keep_lattice,
                                       guidance_interval=guidance_interval, exact_keep=exact_keep)
            for s in part]


def quick_validity(systems: list[AtomicSystem], kind: str) -> dict[str, float]:
    """Validity rates used during training, from the evaluator's per-structure checks (no matching,
    no reference, no PoseBusters).

    Crystals (:func:`~adit_torch.evaluate.crystals.check_crystal`): ``structural_validity``,
    ``compositional_validity`` (smact14), ``validity``. Molecules
    (:func:`~adit_torch.evaluate.molecules.check_molecule`): ``validity`` (ADiT route),
    ``validity_strict`` and ``validity_connected`` (strict and in one piece).
    """
    if kind == "crystal":
        from adit_torch.evaluate.crystals import check_crystal

        records = [check_crystal(s) for s in systems]
        keys = {"structural_validity": "structurally_valid", "compositional_validity": "compositionally_valid",
                "validity": "valid"}
    else:
        from adit_torch.evaluate.molecules import check_molecule

        records = [check_molecule(s) for s in systems]
        keys = {"validity": "valid", "validity_strict": "valid_strict", "validity_connected": "valid_connected"}
    n = max(1, len(records))
    return {name: sum(bool(r[key]) for r in records) / n for name, key in keys.items()}


def sample_checkpoint(path, kind: str, num_samples: int, steps: int | None = None, cfg_scale: float | None = None,
                      seed: int = 0, batch_size: int = 256, num_atoms=None, device="cpu",
                      progress: bool = True, solver: str = "euler", grid: str = "uniform",
                      fragment: AtomicSystem | None = None, inpaint_rounds: int = 2,
                      precision: str = "fp32", chunk: int | None = None,
                      sink=None, conditions: SampleConditions | None = None, keep_lattice: bool = False,
                      guidance_interval: tuple[float, float] | None = None, exact_keep: bool = True,
                      ) -> tuple[list[AtomicSystem], dict[str, Any]]:
    """Load a DiT checkpoint and sample from it; returns the systems and a summary (settings, timing,
    and the network evaluations spent: ``nfe`` per sample, ``forward_passes_per_sample`` counting the
    two halves of guidance; with a ``fragment``, ``inpainting``: how well the samples kept it, see
    :func:`adit_torch.inpaint.fidelity_summary`).

    With ``sink``, the samples are made ``chunk`` at a time (:func:`iter_systems`) and each chunk, in
    order, is passed to ``sink(systems)`` and not kept: the returned list is empty and memory is
    bounded by the chunk whatever ``num_samples`` is (``adit sample`` streams its files this way).
    ``conditions``, ``keep_lattice``, ``guidance_interval`` and ``exact_keep`` as in :func:`sample_systems`;
    they are recorded in the summary.
    """
    from adit_torch.checkpoint import load_dit

    t0 = time.time()
    dit, vae, flow_cfg, meta = load_dit(path, device)
    t_load = time.time() - t0
    systems: list[AtomicSystem] = []
    written = failed = 0
    kept: list[bool] = []
    rmsds: list[float] = []
    snapped = 0
    for part in iter_systems(dit, vae, flow_cfg, meta.get("data", {}), kind, num_samples, steps, cfg_scale, seed,
                             batch_size, num_atoms, device, progress, solver, grid, fragment, inpaint_rounds,
                             precision, chunk if sink is not None else None, conditions=conditions,
                             keep_lattice=keep_lattice, guidance_interval=guidance_interval,
                             exact_keep=exact_keep):
        written += len(part)
        failed += sum(bool(s.info.get("decode_failed")) for s in part)
        snapped += sum(bool(s.info.get("symmetrized")) for s in part)
        if fragment is not None:
            kept += [bool(s.info["kept_types"]) for s in part]
            rmsds += [float(s.info["kept_rmsd"]) for s in part if "kept_rmsd" in s.info]
        if sink is None:
            systems.extend(part)
        else:
            sink(part)
    n_steps = steps or flow_cfg.steps
    scale = flow_cfg.cfg_scale if cfg_scale is None else cfg_scale
    rounds = inpaint_rounds if fragment is not None else 1
    schedule = evaluation_schedule(time_grid(n_steps, grid), solver, ends_with_clean_prediction(grid))
    nfe = rounds * len(schedule)
    passes = rounds * forward_passes(schedule, num_guidance_terms(conditions, scale),
                                     check_guidance_interval(guidance_interval))
    elapsed = time.time() - t0 - t_load
    summary = {
        "num_requested": num_samples, "num_written": written, "kind": kind,
        "num_failed_decodes": failed,
        "nfe": nfe,
        "forward_passes_per_sample": passes,
        "conditions": conditions.as_dict() if conditions is not None else {},
        "settings": {"checkpoint": str(path), "steps": n_steps, "solver": solver, "time_grid": grid,
                     "precision": precision,
                     "cfg_scale": scale, "seed": seed,
                     "guidance_interval": None if guidance_interval is None else list(guidance_interval),
                     "batch_size": batch_size, "num_atoms": num_atoms, "device": str(device),
                     "model_size": meta.get("size"), "trained_on": meta.get("data", {}).get("dataset")},
        "timing": {"load_s": t_load, "sample_s": elapsed, "per_sample_ms": 1000 * elapsed / max(1, written)},
    }
    if conditions is not None and conditions.space_group is not None:
        summary["settings"]["symmetrize"] = snaps_to_space_group(conditions, kind, fragment)
        if summary["settings"]["symmetrize"]:
            summary["num_symmetrized"] = snapped  # samples snapped onto the asked space group
    if fragment is not None:
        summary["inpainting"] = {**fidelity_stats(fragment, kept, rmsds), "rounds": inpaint_rounds,
                                 "keep_lattice": bool(keep_lattice), "exact_keep": bool(exact_keep)}
    return systems, summary
