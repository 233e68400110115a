"""The equivariant encoder against the Transformer one, at equal CPU budget: the seed's "Equivariant ADiT" rows.

Two steps, each its own command so that a training owns the machine:

``train``: one VAE and one DiT for ``--dataset`` (mp20 or qm9) and ``--encoder``, through the ``adit`` command
with the size's recipe (XS unless ``--size``), seed 0 and the same ``--vae-minutes`` / ``--dit-minutes`` for
either encoder; the run folders are ``RUNS/<dataset>_<encoder>/{vae,dit}``.

``evaluate``: for every run folder under ``RUNS``,

* reconstruction of ``--val-size`` validation systems by the VAE (crystals: StructureMatcher; molecules:
  types right and RMSD below 0.5 Å, after the best rotation for both encoders so they compare);
* training throughput (median systems/s of the run's log, VAE and DiT) and the optimisation steps reached;
* ``--num-samples`` samples (``--solver``/``--steps``, guidance 2, seed 0) with the CPU seconds per 1,000,
  scored as the seed's tables score them: crystals by structural / compositional validity and both,
  molecules by validity and uniqueness (``adit evaluate``'s fractions, novelty against the training split).

It writes ``OUT.json`` and a Markdown table ``OUT.md`` beside the seed's numbers. Usage::

    python benchmarks/equivariant_comparison.py train --dataset mp20 --encoder equivariant --runs runs/eqcmp \\
        --vae-minutes 10 --dit-minutes 8
    python benchmarks/equivariant_comparison.py evaluate --runs runs/eqcmp \\
        --out benchmarks/results/equivariant_comparison --note "2-core CPU, ..."
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ADIT = str(Path(sys.executable).parent / "adit")
KIND = {"mp20": "crystal", "qm9": "molecule"}
#: The seed's tables (ADiT paper): MP-20-only and QM9-only models, equivariant and Transformer.
SEED = {
    ("mp20", "equivariant"): {"structural_validity": 0.992, "compositional_validity": 0.861, "validity": 0.855},
    ("mp20", "transformer"): {"structural_validity": 0.996, "compositional_validity": 0.905, "validity": 0.901},
    ("qm9", "equivariant"): {"validity": 0.915, "uniqueness": 0.980},
    ("qm9", "transformer"): {"validity": 0.922, "uniqueness": 0.979},
}


def train(args) -> None:
    """Train the VAE, then the DiT on its latents, for one dataset and encoder."""
    run = args.runs / f"{args.dataset}_{args.encoder}"
    common = ["--dataset", args.dataset, "--size", args.size, "--seed", "0", "--quiet"]
    if args.max_train_systems:
        common += ["--max-train-systems", str(args.max_train_systems)]
    vae = [ADIT, "train-vae", "--encoder", args.encoder, "--out-dir", str(run / "vae"),
           "--max-minutes", str(args.vae_minutes), *common]
    dit = [ADIT, "train-dit", "--vae", str(run / "vae" / "vae.safetensors"), "--out-dir", str(run / "dit"),
           "--max-minutes", str(args.dit_minutes), *common]
    record = {"dataset": args.dataset, "encoder": args.encoder, "size": args.size,
              "vae_minutes": args.vae_minutes, "dit_minutes": args.dit_minutes, "date": date.today().isoformat(),
              "max_train_systems": args.max_train_systems,
              "load_average_start": os.getloadavg()}
    for name, cmd in (("vae", vae), ("dit", dit)):
        if args.resume:
            cmd = [*cmd, "--resume"]
        t0 = time.time()
        subprocess.run(cmd, check=True)
        record[f"{name}_wall_s"] = time.time() - t0
        record[f"load_average_after_{name}"] = os.getloadavg()
    (run / "comparison_run.json").write_text(json.dumps(record, indent=1) + "\n")


def _metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def evaluate_run(run: Path, args) -> dict:
    """Reconstruction, throughput and sample quality of one ``<dataset>_<encoder>`` run folder."""
    import torch

    from adit_torch.checkpoint import load_dit
    from adit_torch.recipes import _val_subset, load_training_data, reconstruction_metrics
    from adit_torch.sample import sample_systems

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from sampling_nfe import evaluate

    record = json.loads((run / "comparison_run.json").read_text())
    dataset, encoder, kind = record["dataset"], record["encoder"], KIND[record["dataset"]]
    dit, vae, flow_cfg, meta = load_dit(run / "dit" / "dit.safetensors")
    assert vae.cfg.encoder == encoder, f"{run}: the VAE's encoder is {vae.cfg.encoder}, not {encoder}"
    torch.set_num_threads(os.cpu_count() or 1)
    val = _val_subset(load_training_data(dataset, "val"), args.val_size)
    rec = reconstruction_metrics(vae, val)
    vae_m, dit_m = _metrics(run / "vae"), _metrics(run / "dit")
    cpu0, wall0 = time.process_time(), time.time()
    systems = sample_systems(dit, vae, flow_cfg, meta["data"], kind, args.num_samples, steps=args.steps,
                             cfg_scale=2.0, seed=0, progress=False, solver=args.solver)
    cpu, wall = time.process_time() - cpu0, time.time() - wall0
    quality = evaluate(systems, kind, 0, 0)
    return {
        "dataset": dataset, "encoder": encoder, "kind": kind, "train": record,
        "vae_params": sum(p.numel() for p in vae.parameters()),
        "encoder_params": sum(p.numel() for p in vae.encoder_parameters()),
        "vae_steps": vae_m.get("step"), "vae_systems_per_s": vae_m.get("systems_per_s"),
        "dit_steps": dit_m.get("step"), "dit_systems_per_s": dit_m.get("systems_per_s"),
        "reconstruction": {**rec, "num_val": len(val)},
        "sampling": {"num_samples": args.num_samples, "solver": args.solver, "steps": args.steps,
                     "cpu_s_per_1000": 1000 * cpu / args.num_samples,
                     "wall_s_per_1000": 1000 * wall / args.num_samples},
        "quality": quality, "seed_paper": SEED.get((dataset, encoder)),
    }


def report(rows: list[dict], note: str) -> str:
    """A Markdown table of the rows, the seed's numbers beside ours."""
    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}%"

    def num(x, fmt=".0f"):
        return "-" if x is None else format(x, fmt)

    lines = [f"# Equivariant against Transformer encoder at equal CPU budget ({note})", "",
             "| data | encoder | VAE / DiT minutes | reconstruction | VAE systems/s | DiT systems/s | "
             "CPU s per 1,000 samples | seed's table columns (ours) | the seed's numbers |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rec = r["reconstruction"]
        recon = (f"match {pct(rec.get('crystal_match_rate'))}" if r["kind"] == "crystal" else
                 f"match {pct(rec.get('molecule_match_rate_aligned'))}, "
                 f"RMSD {num(rec.get('molecule_rmsd_aligned'), '.2f')} Å")
        q = r["quality"]
        if r["kind"] == "crystal":
            ours = (f"{pct(q['structural_validity'])} / {pct(q['compositional_validity'])} / "
                    f"{pct(q['validity'])}")
            seed = r["seed_paper"] and (f"{pct(r['seed_paper']['structural_validity'])} / "
                                        f"{pct(r['seed_paper']['compositional_validity'])} / "
                                        f"{pct(r['seed_paper']['validity'])}")
        else:
            ours = f"{pct(q['validity'])} valid / {pct(q['uniqueness'])} unique"
            seed = r["seed_paper"] and (f"{pct(r['seed_paper']['validity'])} / "
                                        f"{pct(r['seed_paper']['uniqueness'])}")
        t = r["train"]
        lines.append(f"| {r['dataset']} | {r['encoder']} | {t['vae_minutes']:g} / {t['dit_minutes']:g} | {recon} | "
                     f"{num(r['vae_systems_per_s'])} | {num(r['dit_systems_per_s'])} | "
                     f"{num(r['sampling']['cpu_s_per_1000'], '.1f')} | {ours} | {seed or '-'} |")
    lines += ["", "Crystals: structural / compositional validity / both. Molecules: validity (the ADiT route) and "
              "uniqueness. The seed's models are far larger and trained for far longer; the comparison is between "
              "the two rows of one dataset, at the same recipe and budget."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="step", required=True)
    t = sub.add_parser("train")
    t.add_argument("--dataset", choices=tuple(KIND), required=True)
    t.add_argument("--encoder", choices=("transformer", "equivariant"), required=True)
    t.add_argument("--runs", type=Path, required=True)
    t.add_argument("--size", default="XS")
    t.add_argument("--vae-minutes", type=float, default=10.0)
    t.add_argument("--dit-minutes", type=float, default=8.0)
    t.add_argument("--max-train-systems", type=int, default=None,
                   help="train both models on the first N training systems only (the DiT encodes them all first)")
    t.add_argument("--resume", action="store_true", help="continue the run folders (more minutes)")
    e = sub.add_parser("evaluate")
    e.add_argument("--runs", type=Path, required=True)
    e.add_argument("--num-samples", type=int, default=1000)
    e.add_argument("--val-size", type=int, default=500)
    e.add_argument("--solver", default="multistep")
    e.add_argument("--steps", type=int, default=10)
    e.add_argument("--out", type=Path, required=True, help="output stem (STEM.json, STEM.md)")
    e.add_argument("--note", default="", help="machine, date and load")
    args = p.parse_args()
    if args.step == "train":
        train(args)
        return
    rows = []
    for run in sorted(r for r in args.runs.iterdir() if (r / "comparison_run.json").is_file()):
        rows.append(evaluate_run(run, args))
        print(json.dumps({k: rows[-1][k] for k in ("dataset", "encoder", "quality")}), flush=True)
    result = {"date": date.today().isoformat(), "note": args.note, "load_average_end": os.getloadavg(),
              "machine": "2-core CPU, 24 GiB, no GPU", "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(report(rows, args.note))


if __name__ == "__main__":
    main()
