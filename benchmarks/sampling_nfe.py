"""Quality against network evaluations (NFE): ODE solvers and time grids on one model, same seed.

For each ``--config SOLVER:GRID:STEPS[:LO-HI]`` (``LO-HI``: guidance only at flow times in that
interval) this samples ``--num-samples`` systems per kind from one
model with the same seed (so the same atom counts and the same initial noise), times it, and
scores them with the evaluator (crystals: structural, compositional (smact14), both;
molecules: ADiT route, strict, strict and connected) plus
uniqueness and novelty from ``adit evaluate``'s own functions (novelty against the training
split; PoseBusters on ``--posebusters-subset`` valid molecules when asked for).
``NFE`` is network evaluations per sample; the forward passes (guidance doubles them where it
applies) are recorded too. Writes ``OUT.json`` and ``OUT.png`` (validity, uniqueness, novelty
and PoseBusters all-pass against NFE, one line per solver, grid and guidance interval).

    python benchmarks/sampling_nfe.py --model adit-xs-joint --num-samples 1000 \\
        --config euler:uniform:100 --config euler:uniform:20 --config heun:uniform:10 \\
        --config multistep:uniform:10 --config heun:uniform:10:0-0.6 --posebusters-subset 200 \\
        --out benchmarks/results/sampling_nfe --note "2-core CPU, idle, load 1.0"
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import date
from pathlib import Path

import torch

from adit_torch.checkpoint import load_dit
from adit_torch.flow import ends_with_clean_prediction, evaluation_schedule, time_grid
from adit_torch.pretrained import pretrained_path
from adit_torch.sample import check_guidance_interval, forward_passes, sample_systems

PANELS = (("crystal", "validity"), ("crystal", "uniqueness"), ("crystal", "novelty"),
          ("crystal", "structural_validity"), ("molecule", "validity"), ("molecule", "validity_strict"),
          ("molecule", "novelty"), ("molecule", "posebusters_all_pass"))

CRYSTAL_KEYS = ("structural_validity", "compositional_validity", "validity", "failed_decodes", "uniqueness",
                "novelty", "unique_and_novel_of_valid")
MOLECULE_KEYS = ("validity_connected", "validity_strict", "validity", "uniqueness", "novelty", "atom_stability",
                 "molecule_stability")


def evaluate(systems, kind: str, posebusters_subset: int, seed: int) -> dict:
    """The headline fractions of ``adit evaluate`` (novelty against the training split; PoseBusters on a
    random subset of the valid molecules when ``posebusters_subset > 0``)."""
    if kind == "crystal":
        from adit_torch.evaluate.crystals import evaluate_crystals

        report = evaluate_crystals(systems, with_distributions=False)
        return {k: report[k] for k in CRYSTAL_KEYS}
    from adit_torch.evaluate.molecules import evaluate_molecules

    report = evaluate_molecules(systems, posebusters=posebusters_subset > 0,
                                posebusters_subset=posebusters_subset or None, seed=seed)
    out = {k: report.get(k) for k in MOLECULE_KEYS}
    if report.get("posebusters"):
        out["posebusters_all_pass"] = report["posebusters"].get("all_pass_rate")
    return out


def main() -> None:
    """Run every ``--config`` and write the results."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="registered model name")
    src.add_argument("--checkpoint", type=Path, help="DiT checkpoint")
    p.add_argument("--config", action="append", required=True,
                   help="SOLVER:GRID:STEPS[:LO-HI], e.g. heun:uniform:10 or heun:uniform:10:0-0.6 (guided at "
                        "0 <= t <= 0.6 only)")
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--cfg-scale", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kinds", default="crystal,molecule")
    p.add_argument("--posebusters-subset", type=int, default=0, help="PoseBusters on this many valid molecules")
    p.add_argument("--out", type=Path, required=True, help="output stem (STEM.json, STEM.png)")
    p.add_argument("--note", default="", help="machine and conditions")
    args = p.parse_args()
    path = pretrained_path(args.model) if args.model else args.checkpoint
    dit, vae, flow_cfg, meta = load_dit(path)
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    for spec in args.config:
        solver, grid, steps, *window = spec.split(":")
        steps = int(steps)
        interval = check_guidance_interval(window[0].split("-")) if window else None
        schedule = evaluation_schedule(time_grid(steps, grid), solver, ends_with_clean_prediction(grid))
        nfe = len(schedule)
        for kind in args.kinds.split(","):
            t0 = time.process_time()
            w0 = time.time()
            systems = sample_systems(dit, vae, flow_cfg, meta["data"], kind, args.num_samples, steps=steps,
                                     cfg_scale=args.cfg_scale, seed=args.seed, progress=False, solver=solver,
                                     grid=grid, guidance_interval=interval)
            row = {"solver": solver, "grid": grid, "steps": steps, "nfe": nfe,
                   "guidance_interval": None if interval is None else list(interval),
                   "forward_passes_per_sample": forward_passes(schedule, 1 if args.cfg_scale == 1.0 else 2, interval),
                   "kind": kind,
                   "cpu_s": time.process_time() - t0, "wall_s": time.time() - w0,
                   **evaluate(systems, kind, args.posebusters_subset, args.seed)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"model": args.model or str(args.checkpoint), "num_samples": args.num_samples,
              "cfg_scale": args.cfg_scale, "seed": args.seed, "date": date.today().isoformat(),
              "load_average": os.getloadavg(), "note": args.note, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    plot(result, args.out.with_suffix(".png"))


def line_name(row: dict) -> str:
    """Legend label of a row: solver / grid, and the guidance interval when there is one."""
    name = f"{row['solver']} / {row['grid']}"
    if row.get("guidance_interval"):
        name += " / guided {:g}-{:g}".format(*row["guidance_interval"])
    return name


def plot(result: dict, path: Path) -> None:
    """One panel per :data:`PANELS` entry (kind, metric) against NFE, a line per solver, grid and interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(17, 7.5))
    for ax, (kind, metric) in zip(axes.ravel(), PANELS):
        lines: dict[str, list] = {}
        for r in result["rows"]:
            if r["kind"] == kind and r.get(metric) is not None:
                lines.setdefault(line_name(r), []).append((r["nfe"], r[metric]))
        for name, pts in lines.items():
            ax.plot(*zip(*sorted(pts)), marker="o", ms=3, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("network evaluations per sample (NFE)")
        ax.set_title(f"{kind} {metric}", fontsize=9)
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(f"{result['model']}, {result['num_samples']} samples per kind, seed {result['seed']}; "
                 f"{result['note']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
