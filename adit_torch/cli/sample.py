"""`adit sample`: generate crystals or molecules from a DiT checkpoint or a named pretrained model.

With neither ``--checkpoint`` nor ``--model`` it samples the default shipped
model (:data:`adit_torch.pretrained.DEFAULT_MODEL`), or, for ``--condition`` keys the default was not
trained with, the first shipped model that was (:func:`adit_torch.pretrained.models_with_conditions`).
Writes ``OUT.extxyz``,
``OUT.summary.json`` (requested / written counts, settings, timing) and ``OUT_cif/`` (crystals, one CIF per sample) or
``OUT.sdf`` (molecules). The checkpoint is checked before any sampling.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from adit_torch.checkpoint import read_metadata
from adit_torch.cli import IncompleteOutputError
from adit_torch.errors import CheckpointError, ConfigError
from adit_torch.flow import SOLVERS, TIME_GRIDS, time_grid
from adit_torch.sample import PRECISIONS


def register(subparsers) -> None:
    """Add ``sample`` to the ``adit`` parser."""
    p = subparsers.add_parser("sample", help="generate crystals or molecules from a DiT checkpoint",
                              description="Sample systems from a trained ADiT (DiT + its VAE).")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, help="DiT checkpoint (dit.safetensors)")
    source.add_argument("--model", help="a pretrained model by name (see `adit models`; default: "
                                        "the shipped joint model when --checkpoint is not given either, or "
                                        "for --condition keys it lacks the first shipped model trained with them)")
    p.add_argument("--kind", required=True, choices=("crystal", "molecule"), help="what to generate")
    p.add_argument("--num-samples", required=True, type=int, help="number of systems")
    p.add_argument("--steps", type=int, help="solver steps (default: the checkpoint's, 100)")
    p.add_argument("--solver", choices=tuple(SOLVERS), default="euler",
                   help="ODE solver: euler (1 evaluation per step), heun or midpoint (2nd order, 2 per step), "
                        "multistep (2nd order, 1 per step: reuses the previous step's prediction)")
    p.add_argument("--time-grid", choices=TIME_GRIDS, default="uniform",
                   help="uniform; power (steps shrink towards the data end); reference (linspace(0.01, 1, steps) "
                        "and a final clean prediction, as the reference code)")
    p.add_argument("--cfg-scale", type=float, help="classifier-free guidance scale (default 2.0; 1 = off)")
    p.add_argument("--guidance-interval", metavar="LO,HI",
                   help="guide only at flow times LO <= t <= HI (0 = noise, 1 = data); the other steps cost one "
                        "forward per sample instead of two or more (default: guide every step)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed -> same samples)")
    p.add_argument("--batch-size", type=int, default=256, help="systems per forward pass")
    p.add_argument("--num-atoms", type=int, help="atoms per system (default: drawn from the training histogram)")
    p.add_argument("--keep", "--fragment", dest="fragment", type=Path, metavar="FILE",
                   help="inpainting: a structure file (extxyz, CIF, SDF; its first structure) whose atoms every "
                        "sample keeps as its first atoms; the rest is generated (samples need more atoms than it)")
    p.add_argument("--keep-lattice", action="store_true",
                   help="with --keep and a crystal: decode the samples (last round) into the kept structure's "
                        "lattice, their fractional coordinates kept (choose --num-atoms to suit its volume)")
    p.add_argument("--no-exact-keep", dest="exact_keep", action="store_false",
                   help="with --keep: write the kept atoms as the decoder reproduced them (within a few tenths "
                        "of an Å). By default the given atoms themselves are written, placed where the sample "
                        "put them; the summary's `inpainting` reports the decoder's own fidelity either way")
    p.add_argument("--inpaint-rounds", type=int, default=2,
                   help="with --keep: sampling rounds; from the second on the kept atoms are encoded inside the "
                        "previous completion (default 2: half the kept part's RMSD of one round, twice the time)")
    p.add_argument("--condition", action="append", metavar="KEY=VALUE",
                   help="generate under a condition the model was trained with (repeatable): space_group=225 "
                        "(crystals), chemical_system=Li-Fe-O (atom types are then decoded inside the set), and for "
                        "crystals formation_energy_per_atom=-2.0 (eV/atom), band_gap=1.5 (eV), e_above_hull=0.0 "
                        "(eV/atom); `adit models` lists each model's conditions. Any model also takes num_atoms=12 "
                        "(exact) and, with chemical_system, formula=LiFePO4 (exact composition: a multiple of the "
                        "formula unit's atoms, types assigned with its counts)")
    p.add_argument("--guidance", action="append", metavar="KEY=SCALE",
                   help="guidance scale of one --condition (repeatable; default 1.0): space_group=2.0")
    p.add_argument("--no-symmetrize", action="store_true",
                   help="with --condition space_group=N: keep the crystals as decoded. By default each one is "
                        "snapped onto group N when a symmetric structure lies within 1 Å (the rest are kept as "
                        "decoded, marked symmetrized=False), atom counts are drawn from the training crystals "
                        "of group N and element counts are ones its sites can hold")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="network precision: fp32, or bf16 autocast (for GPUs; the ODE state stays fp32)")
    p.add_argument("--out", required=True, type=Path, help="output .extxyz file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_sample)


def output_paths(out: Path, kind: str) -> dict[str, Path]:
    """The files ``adit sample --out OUT.extxyz`` writes."""
    stem = out.with_suffix("")
    paths = {"extxyz": out, "summary": Path(f"{stem}.summary.json")}
    paths["structures"] = Path(f"{stem}_cif") if kind == "crystal" else Path(f"{stem}.sdf")
    return paths


def _resolve_checkpoint(args) -> None:
    """Set ``args.checkpoint`` from ``--model``, or when neither was given from the default model, or
    from the first registered model trained with every key of ``args.conditions`` (parsed) when the
    default was not (said on stderr)."""
    if args.checkpoint is None:
        from adit_torch.pretrained import DEFAULT_MODEL, models_with_conditions, pretrained_path

        if args.model is None:
            args.model = DEFAULT_MODEL
            keys = args.conditions.keys() + args.conditions.constraint_keys()
            able = models_with_conditions(keys)
            if able and DEFAULT_MODEL not in able:
                args.model = able[0]
                print(f"adit sample: --condition {', '.join(sorted(keys))}: sampling {args.model}, the first "
                      f"shipped model trained with it (the default {DEFAULT_MODEL} has no conditions; "
                      "--model chooses)", file=sys.stderr)
        args.checkpoint = pretrained_path(args.model)


def _check(args) -> None:
    from adit_torch.conditions import parse_conditions

    args.conditions = parse_conditions(args.condition, args.guidance)  # the model may follow from its keys
    _resolve_checkpoint(args)
    if args.out.suffix != ".extxyz":
        raise ConfigError(f"--out must end in .extxyz, got {args.out}")
    if args.num_samples <= 0:
        raise ConfigError(f"--num-samples must be positive, got {args.num_samples}")
    if args.steps is not None and args.steps <= 0:
        raise ConfigError(f"--steps must be positive, got {args.steps}")
    if args.batch_size <= 0:
        raise ConfigError(f"--batch-size must be positive, got {args.batch_size}")
    if args.num_atoms is not None and not 0 < args.num_atoms <= 1000:
        raise ConfigError(f"--num-atoms must lie in 1..1000, got {args.num_atoms}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for, but no CUDA device is available")
    meta = read_metadata(args.checkpoint)
    if meta["kind"] != "dit":
        raise CheckpointError(f"--checkpoint {args.checkpoint} is a {meta['kind']} checkpoint; sampling needs a "
                              "dit checkpoint (from adit train-dit)")
    args.guidance_window = None
    if args.guidance_interval is not None:
        from adit_torch.sample import check_guidance_interval

        parts = args.guidance_interval.split(",")
        if len(parts) != 2:
            raise ConfigError(f"--guidance-interval takes LO,HI (two times in [0, 1]), got {args.guidance_interval!r}")
        args.guidance_window = check_guidance_interval(parts)
    # the grid's own checks (e.g. the reference grid needs 2 steps), before any work
    time_grid(args.steps or meta.get("config", {}).get("flow", {}).get("steps", 100), args.time_grid)
    if args.no_symmetrize and args.conditions.space_group is None:
        raise ConfigError("--no-symmetrize applies to --condition space_group=N, and none is given")
    args.conditions.symmetrize = not args.no_symmetrize
    if args.guidance and not args.condition:
        raise ConfigError("--guidance needs a --condition to scale")
    if args.conditions.keys():
        from adit_torch.config import DiTConfig, from_dict

        dit_cfg = from_dict(DiTConfig, meta.get("config", {}).get("dit", {}), where=f"{args.checkpoint} [dit]")
        args.conditions.check(dit_cfg, args.kind, stats=meta.get("data", {}))
    if args.conditions.num_atoms is not None:
        if args.num_atoms is not None and args.num_atoms != args.conditions.num_atoms:
            raise ConfigError(f"--num-atoms {args.num_atoms} and --condition num_atoms={args.conditions.num_atoms} "
                              "disagree; give one")
        args.num_atoms = args.conditions.num_atoms
    if args.num_atoms is not None:
        args.conditions.check_sizes(args.num_atoms)
    if args.num_atoms is None and args.kind not in meta.get("data", {}).get("num_atoms_hist", {}):
        raise CheckpointError(f"--checkpoint {args.checkpoint} was not trained on {args.kind}s; "
                              "pass --num-atoms or use a checkpoint trained on them")
    args.fragment_system = None
    if args.inpaint_rounds < 1:
        raise ConfigError(f"--inpaint-rounds must be at least 1, got {args.inpaint_rounds}")
    if not args.exact_keep and args.fragment is None:
        raise ConfigError("--no-exact-keep is about the atoms given with --keep; give --keep FILE")
    if args.keep_lattice and args.fragment is None:
        raise ConfigError("--keep-lattice keeps the lattice of the structure given with --keep; give --keep FILE")
    if args.keep_lattice and args.kind != "crystal":
        raise ConfigError(f"--keep-lattice is for crystals; --kind is {args.kind}")
    if args.fragment is not None:
        import numpy as np

        from adit_torch.inpaint import check_fragment
        from adit_torch.io import read_systems

        systems = read_systems(args.fragment)
        if len(systems) != 1:
            raise ConfigError(f"--keep {args.fragment}: holds {len(systems)} structures; give one")
        args.fragment_system = systems[0]
        check_fragment(args.fragment_system, args.kind,
                       np.array([args.num_atoms if args.num_atoms is not None else args.fragment_system.num_atoms + 1]))


#: Samples made and written per chunk: the command's memory is bounded by this, not by --num-samples.
CHUNK = 2_000


def run_sample(args) -> int:
    """Handler of ``adit sample``: samples are made and streamed to the output files :data:`CHUNK` at a
    time (the files appear whole when the run ends, or not at all)."""
    from adit_torch.io import StreamWriter
    from adit_torch.sample import sample_checkpoint

    _check(args)
    paths = output_paths(args.out, args.kind)
    with StreamWriter(paths["extxyz"], "extxyz") as frames, \
            StreamWriter(paths["structures"], "cif" if args.kind == "crystal" else "sdf") as structures:
        def sink(systems):
            frames.write(systems)
            structures.write(systems)

        _, summary = sample_checkpoint(args.checkpoint, args.kind, args.num_samples, args.steps, args.cfg_scale,
                                       args.seed, args.batch_size, args.num_atoms, args.device,
                                       progress=not args.quiet, solver=args.solver, grid=args.time_grid,
                                       fragment=args.fragment_system, inpaint_rounds=args.inpaint_rounds,
                                       precision=args.precision, chunk=CHUNK, sink=sink,
                                       keep_lattice=args.keep_lattice, guidance_interval=args.guidance_window,
                                       exact_keep=args.exact_keep,
                                       conditions=args.conditions if args.conditions.as_dict() else None)
    written = summary["num_written"]
    summary["settings"]["model"] = args.model
    summary["settings"]["fragment"] = None if args.fragment is None else str(args.fragment)
    summary["files"] = {k: str(v) for k, v in paths.items()}
    tmp = paths["summary"].with_name(f".{paths['summary'].name}.tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, paths["summary"])
    print(f"wrote {written} {args.kind}s to {args.out}")
    if written < args.num_samples:
        raise IncompleteOutputError(f"only {written} of {args.num_samples} samples were written")
    return 0
