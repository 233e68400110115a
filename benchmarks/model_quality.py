"""Quality of trained ADiT checkpoints: VAE reconstruction and sample validity.

For each run folder (holding ``vae/`` and ``dit/`` sub-folders, or a DiT whose
``run_config.json`` names its VAE) this script

1. reconstructs up to ``--val-size`` validation systems per kind with the VAE
   (crystals: ``StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)``;
   molecules: all types right and RMSD < 0.5 Å in the same frame);
2. samples ``--num-samples`` systems per kind with ``adit sample`` and scores
   them with ``adit evaluate``;

and writes ``benchmarks/results/model_quality.json`` and ``.md``.

    python benchmarks/model_quality.py --run joint=/work/runs/xs_joint/dit --num-samples 100 --steps 50
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

DATE = "2026-11-25"
MACHINE = "2-core CPU, 24 GiB, no GPU (shared with other jobs)"


def reconstruction(vae_path: Path, dataset: str, val_size: int) -> dict:
    """VAE reconstruction rates on the validation split (evenly spaced systems)."""
    import torch

    from adit_torch.checkpoint import load_vae
    from adit_torch.recipes import _val_subset, load_training_data, reconstruction_metrics

    torch.set_num_threads(1)
    vae, _ = load_vae(vae_path)
    val = load_training_data(dataset, "val")
    systems = _val_subset(val, val_size)
    out = reconstruction_metrics(vae, systems)
    out["num_crystals"] = sum(s.is_periodic for s in systems)
    out["num_molecules"] = sum(not s.is_periodic for s in systems)
    return out


def sample_and_evaluate(dit: Path, kind: str, n: int, steps: int, cfg: float, out_dir: Path) -> dict:
    """``adit sample`` then ``adit evaluate``; returns the headline fractions and timing."""
    out = out_dir / f"{kind}.extxyz"
    t0 = time.time()
    subprocess.run(["adit", "sample", "--checkpoint", str(dit), "--kind", kind, "--num-samples", str(n),
                    "--steps", str(steps), "--cfg-scale", str(cfg), "--seed", "0", "--out", str(out), "--quiet"],
                   check=True)
    t_sample = time.time() - t0
    report = out_dir / f"{kind}.eval.json"
    subprocess.run(["adit", "evaluate", str(out), "--kind", kind, "--json", str(report), "--workers", "1",
                    "--no-distributions", "--quiet"], check=True)
    ev = json.loads(report.read_text())
    keys = (["structural_validity", "compositional_validity", "validity", "uniqueness", "novelty"] if kind == "crystal"
            else ["validity", "validity_strict", "uniqueness", "novelty", "atom_stability", "molecule_stability"])
    summary = json.loads((out_dir / f"{kind}.summary.json").read_text())
    res = {k: ev.get(k) for k in keys}
    if kind == "molecule" and isinstance(ev.get("posebusters"), dict):
        res["posebusters"] = ev["posebusters"]
    res.update({"num_samples": n, "steps": steps, "cfg_scale": cfg, "sample_seconds": summary["timing"]["sample_s"],
                "command_seconds": t_sample,
                "num_lattice_repaired": summary.get("num_lattice_repaired")})
    return res


def main() -> None:
    """Score every ``--run NAME=DIT_RUN_FOLDER`` and write the reports."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", required=True, help="NAME=path of a train-dit run folder")
    p.add_argument("--num-samples", type=int, default=100)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--cfg-scale", type=float, default=2.0)
    p.add_argument("--val-size", type=int, default=200)
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/adit_quality"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/model_quality.json"))
    args = p.parse_args()
    results = {}
    for spec in args.run:
        name, folder = spec.split("=", 1)
        folder = Path(folder)
        run_cfg = json.loads((folder / "run_config.json").read_text())
        vae_path = Path(run_cfg["vae_path"])
        dataset = run_cfg["train"]["dataset"]
        metrics = json.loads((folder / "metrics.json").read_text())
        vae_metrics = json.loads((vae_path.parent / "metrics.json").read_text())
        entry = {"dataset": dataset, "size": run_cfg["size"], "vae": str(vae_path),
                 "vae_training": {k: vae_metrics.get(k) for k in ("step", "epoch", "elapsed_s", "systems_per_s")},
                 "dit_training": {k: metrics.get(k) for k in ("step", "epoch", "elapsed_s", "systems_per_s")},
                 "reconstruction": reconstruction(vae_path, dataset, args.val_size)}
        kinds = ["crystal", "molecule"] if dataset == "joint" else (["crystal"] if dataset == "mp20" else ["molecule"])
        for kind in kinds:
            work = args.work_dir / name
            work.mkdir(parents=True, exist_ok=True)
            entry[f"samples_{kind}"] = sample_and_evaluate(folder / "dit.safetensors", kind, args.num_samples,
                                                           args.steps, args.cfg_scale, work)
        results[name] = entry
        print(json.dumps({name: entry}, indent=1), flush=True)
    report = {"machine": MACHINE, "date": DATE, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
