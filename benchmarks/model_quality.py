"""Quality of a trained ADiT: VAE reconstruction, full sample evaluation and (crystals) stability.

For one DiT checkpoint (a file or a registered model name) this script

1. reconstructs ``--val-size`` validation systems per kind with the embedded VAE
   (crystals: ``StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)``; molecules: all
   types right and RMSD < 0.5 Å in the same frame);
2. samples ``--num-samples`` systems per kind with ``adit sample`` (100 Euler steps and
   guidance 2 by default) and scores them with ``adit evaluate`` (novelty against the
   training split; PoseBusters on ``--posebusters-subset`` valid molecules);
3. relaxes the first ``--relax-subset`` crystals with CHGNet (``adit relax``) and scores
   them against the offline hull (``adit hull``: stable, metastable, S.U.N.);

and writes ``benchmarks/results/model_quality_<NAME>.json`` with the machine, date and
load average.

    python benchmarks/model_quality.py --model adit-xs-joint --num-samples 1000 --note "2-core CPU, ..."
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from datetime import date
from pathlib import Path

CRYSTAL_KEYS = ["structural_validity", "compositional_validity", "validity", "failed_decodes", "uniqueness",
                "novelty", "unique_and_novel_of_valid"]
MOLECULE_KEYS = ["validity_connected", "validity_strict", "validity", "validity_one_fragment", "uniqueness",
                 "novelty", "atom_stability", "molecule_stability"]


def reconstruction(checkpoint: Path, val_size: int) -> dict:
    """Reconstruction rates of the DiT checkpoint's embedded VAE on the validation split."""
    from adit_torch.checkpoint import load_dit
    from adit_torch.recipes import _val_subset, load_training_data, reconstruction_metrics

    _, vae, _, meta = load_dit(checkpoint)
    systems = _val_subset(load_training_data(meta["data"]["dataset"], "val"), val_size)
    out = reconstruction_metrics(vae, systems)
    out["num_crystals"] = sum(s.is_periodic for s in systems)
    out["num_molecules"] = sum(not s.is_periodic for s in systems)
    return out


def run(cmd: list[str]) -> float:
    """Run a command (failing loudly); returns its wall seconds."""
    t0 = time.time()
    subprocess.run(cmd, check=True)
    return time.time() - t0


def samples(checkpoint: Path, kind: str, args, work: Path) -> dict:
    """``adit sample`` then ``adit evaluate``; the headline fractions, PoseBusters and timing."""
    out = work / f"{kind}.extxyz"
    t_sample = run(["adit", "sample", "--checkpoint", str(checkpoint), "--kind", kind, "--num-samples",
                    str(args.num_samples), "--steps", str(args.steps), "--cfg-scale", str(args.cfg_scale),
                    "--seed", str(args.seed), "--out", str(out), "--quiet"])
    report = work / f"{kind}.eval.json"
    cmd = ["adit", "evaluate", str(out), "--kind", kind, "--json", str(report), "--quiet", "--no-distributions"]
    if kind == "molecule" and args.posebusters_subset:
        cmd += ["--posebusters-subset", str(args.posebusters_subset)]
    t_eval = run(cmd)
    ev = json.loads(report.read_text())
    res = {k: ev.get(k) for k in (CRYSTAL_KEYS if kind == "crystal" else MOLECULE_KEYS)}
    res["counts"] = ev["counts"]
    if kind == "molecule" and isinstance(ev.get("posebusters"), dict):
        pb = ev["posebusters"]
        res["posebusters"] = {"evaluated": pb["evaluated"], "all_pass_rate": pb["all_pass_rate"],
                              "checks": {k: v["pass_rate"] for k, v in pb["checks"].items()}}
    summary = json.loads((work / f"{kind}.summary.json").read_text())
    res.update({"num_samples": args.num_samples, "steps": args.steps, "cfg_scale": args.cfg_scale, "seed": args.seed,
                "sample_seconds": summary["timing"]["sample_s"], "sample_command_seconds": t_sample,
                "evaluate_seconds": t_eval, "num_failed_decodes": summary.get("num_failed_decodes")})
    return res


def stability(work: Path, subset: int) -> dict:
    """CHGNet relaxation of the first ``subset`` sampled crystals and their rates against the offline hull."""
    import ase.io

    frames = ase.io.read(work / "crystal.extxyz", index=f":{subset}")
    part = work / "crystal_subset.extxyz"
    ase.io.write(part, frames, format="extxyz")
    ev_part = work / "crystal_subset.eval.json"
    run(["adit", "evaluate", str(part), "--kind", "crystal", "--json", str(ev_part), "--quiet", "--no-distributions"])
    t_relax = run(["adit", "relax", str(part), "--out", str(work / "relaxed.extxyz"), "--json",
                   str(work / "relax.json"), "--quiet"])
    hull = work / "hull.json"
    run(["adit", "hull", str(work / "relaxed.extxyz"), "--reference", "offline", "--relax-json",
         str(work / "relax.json"), "--evaluation", str(ev_part), "--json", str(hull), "--quiet"])
    rates = json.loads(hull.read_text())["rates"]
    keep = {k: v for k, v in rates.items() if k.endswith("_rate") or k in ("counts", "potential", "hull", "convention")}
    keep["relax_seconds"] = t_relax
    keep["num_crystals"] = len(frames)
    return keep


def main() -> None:
    """Score one model and write the JSON record."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a registered model name (adit models)")
    source.add_argument("--checkpoint", type=Path, help="a DiT checkpoint file")
    p.add_argument("--name", help="name in the output file (default: the model name or the file stem)")
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--cfg-scale", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-size", type=int, default=200)
    p.add_argument("--posebusters-subset", type=int, default=200)
    p.add_argument("--relax-subset", type=int, default=100)
    p.add_argument("--kinds", default="crystal,molecule")
    p.add_argument("--note", default="", help="machine and conditions (load average is recorded as well)")
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/adit_quality"))
    args = p.parse_args()
    if args.model:
        from adit_torch.pretrained import pretrained_path

        checkpoint = pretrained_path(args.model)
    else:
        checkpoint = args.checkpoint
    name = args.name or args.model or checkpoint.stem
    work = args.work_dir / name
    work.mkdir(parents=True, exist_ok=True)
    out = Path("benchmarks/results") / f"model_quality_{name}.json"
    record = {"name": name, "checkpoint": str(checkpoint), "date": date.today().isoformat(), "note": args.note,
              "load_average_start": os.getloadavg()}
    record["reconstruction"] = reconstruction(checkpoint, args.val_size)
    for kind in args.kinds.split(","):
        record[f"samples_{kind}"] = samples(checkpoint, kind, args, work)
        out.write_text(json.dumps(record, indent=1))  # keep what is done
    if "crystal" in args.kinds and args.relax_subset:
        record["stability_crystal"] = stability(work, args.relax_subset)
    record["load_average_end"] = os.getloadavg()
    out.write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
