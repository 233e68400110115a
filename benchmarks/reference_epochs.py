"""Whole training epochs, data loading included, ours against the reference ADiT code: MP-20 alone and joint
MP-20 + QM9, the same systems on both sides, both sides at once on their own pinned cores.

One epoch of each side's own data path over the same systems, at our ``XS`` size, batches of 256 (both
CLIs' default), one data-loading process each (``num_workers 0``: a pinned core is all a side has):

* **ours**, as ``adit train-vae`` / ``adit train-dit`` run it: the cached datasets (the same ``.npz`` cache a
  training reads, load time reported), :class:`adit_torch.recipes.JointSystems` of the chosen systems, and
  :func:`adit_torch.train.fit` (size-bucketed batches, collation, AdamW, clipping, EMA, the run log and the
  final checkpoint) for exactly one epoch. The DiT epoch trains on latents cached once by the VAE
  (:func:`adit_torch.latents.encode_dataset`), whose time is reported beside it.
* **the reference**, as its ``JointDataModule`` serves a training epoch once its datasets are processed:
  ``InMemoryDataset`` storage (crystals with the fields of its MP-20 dataset; molecules as QM9 records whose
  ``custom_transform`` runs at every access, hydrogens kept as in its ``joint.yaml``), ``ConcatDataset``,
  PyG ``DataLoader`` with ``shuffle=True, drop_last=True``, and its own ``training_step`` + AdamW + clipping
  (+ its EMA optimiser for the DiT), as in ``benchmarks/reference_comparison.py``. Lightning's trainer loop is
  not run.

The joint case takes ``--joint-crystals`` MP-20 training crystals and as many QM9 training molecules as the
reference's joint data holds per crystal (100,000 QM9 to 27,136 MP-20; ``--molecules-per-crystal``). Writes
``OUT.json`` and ``OUT.md``::

    python benchmarks/reference_epochs.py --reference-path /path/adit-ref \\
        --reference-python /path/venv/bin/python --repeats 3 --out benchmarks/results/reference_epochs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_comparison import RESULTS, _reference_data, build_reference, finish_side, start_side  # noqa: E402

CASES = ("mp20", "joint")


def prepare_inputs(path: Path, args) -> dict:
    """Choose each case's systems (indices into the MP-20 and QM9 training splits) and write them with the arrays
    the reference side builds its records from. Returns the counts and mean atoms per case."""
    from adit_torch.config import dit_config, to_dict, vae_config
    from adit_torch.datasets import load_dataset

    mp, qm = load_dataset("mp20", "train", skip_invalid=True), load_dataset("qm9", "train", skip_invalid=True)
    rng = np.random.default_rng(args.seed)
    n_joint = min(args.joint_crystals, len(mp))
    n_mol = min(int(round(n_joint * args.molecules_per_crystal)), len(qm))
    n_mp = min(args.max_crystals, len(mp)) if args.max_crystals > 0 else len(mp)
    choice = {"mp20": (np.arange(n_mp), np.zeros(0, dtype=np.int64)),
              "joint": (np.sort(rng.choice(len(mp), n_joint, replace=False)),
                        np.sort(rng.choice(len(qm), n_mol, replace=False)))}
    crystals = [mp[int(i)] for i in range(len(mp))]
    mols = np.unique(choice["joint"][1])
    molecules = [qm[int(i)] for i in mols]
    arrays = {
        "numbers": np.concatenate([s.numbers for s in crystals]).astype(np.int64),
        "frac": np.concatenate([np.mod(s.frac_coords, 1.0) for s in crystals]),
        "lattice": np.stack([s.lattice for s in crystals]), "lengths": np.stack([s.lengths for s in crystals]),
        "angles": np.stack([s.angles for s in crystals]),
        "spacegroup": np.array([int(s.info.get("spacegroup", 1)) for s in crystals]),
        "offsets": np.concatenate([[0], np.cumsum([s.num_atoms for s in crystals])]),
        "mol_index": mols, "mol_numbers": np.concatenate([s.numbers for s in molecules]).astype(np.int64),
        "mol_positions": np.concatenate([s.positions for s in molecules]),
        "mol_offsets": np.concatenate([[0], np.cumsum([s.num_atoms for s in molecules])]),
        "sizes": json.dumps({"vae": to_dict(vae_config("XS")), "dit": to_dict(dit_config("XS"))}),
    }
    info = {}
    for case, (ci, mi) in choice.items():
        arrays[f"{case}_crystals"], arrays[f"{case}_molecules"] = ci, mi
        n = np.concatenate([mp.num_atoms[ci], qm.num_atoms[mi]])
        info[case] = {"crystals": len(ci), "molecules": len(mi), "mean_atoms": float(n.mean())}
    np.savez(path, **arrays)
    return info


def _clock(fn, *args, **kwargs):
    """``(fn(*args, **kwargs), {"wall": s, "cpu": s})`` (CPU: this process, all threads)."""
    t0, c0 = time.perf_counter(), time.process_time()
    res = fn(*args, **kwargs)
    return res, {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}


def run_ours(data: dict, args) -> dict:
    """One VAE epoch and one DiT epoch per case through :func:`adit_torch.train.fit`."""
    from adit_torch.batching import BucketBatchSampler, collate
    from adit_torch.checkpoint import save_checkpoint
    from adit_torch.config import FlowConfig, dit_config, train_config, vae_config
    from adit_torch.datasets import load_dataset
    from adit_torch.dit import DiT
    from adit_torch.latents import collate_latents, encode_dataset
    from adit_torch.recipes import JointSystems, dit_loss_fn, vae_loss_fn
    from adit_torch.train import fit
    from adit_torch.vae import VAE

    (mp, qm), load = _clock(lambda: (load_dataset("mp20", "train", skip_invalid=True),
                                     load_dataset("qm9", "train", skip_invalid=True)))
    out = {"load": load}

    def saver(kind):
        return lambda path, model: save_checkpoint(path, kind, "XS", {}, model.state_dict(), {})

    for case in args.cases:
        systems = JointSystems([p for p in (mp[data[f"{case}_crystals"]], qm[data[f"{case}_molecules"]])
                                if len(p)])
        torch.manual_seed(args.seed)
        vae, dit = VAE(vae_config("XS")), DiT(dit_config("XS"))
        # the batches of epoch 0 of fit's own sampler: exactly one epoch
        steps = len(BucketBatchSampler(systems.num_atoms, batch_size=args.batch_size, shuffle=True,
                                       seed=args.seed).batches(0))
        cfg = train_config("XS")
        cfg.batch_size, cfg.max_steps, cfg.num_workers, cfg.seed = args.batch_size, steps, 0, args.seed
        cfg.val_every, cfg.ckpt_every, cfg.log_every = 0, 10 ** 9, 10
        with tempfile.TemporaryDirectory() as tmp:
            metrics, t = _clock(fit, vae, vae_loss_fn(True), systems, collate, cfg, Path(tmp) / "vae",
                                saver("vae"), progress=False)
            out[f"{case}_vae"] = {**t, "systems": len(systems), "steps": metrics["step"], "epoch": metrics["epoch"]}
            latents, t = _clock(encode_dataset, vae.eval(), systems, batch_size=256, progress=False)
            out[f"{case}_latent_cache"] = t
            flow = FlowConfig()
            metrics, t = _clock(fit, dit, dit_loss_fn(flow, dit.cfg.cond_drop_prob), latents, collate_latents, cfg,
                                Path(tmp) / "dit", saver("dit"), progress=False)
            out[f"{case}_dit"] = {**t, "systems": len(latents), "steps": metrics["step"], "epoch": metrics["epoch"]}
    return out


def _reference_sets(data: dict, case: str):
    """The case's systems as the reference's datasets hold them: crystals as processed records, molecules as
    QM9 records with its ``custom_transform`` (hydrogens kept) applied at every access."""
    import types
    from functools import partial

    # the raw-data processing modules its data module imports (pymatgen, pyxtal, p_tqdm, ...) never run in an
    # epoch over processed records: empty stand-ins, as for its evaluation modules
    for name, cls in (("src.data.components.mp20_dataset", "MP20"), ("src.data.components.qmof150_dataset",
                                                                     "QMOF150")):
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
            setattr(sys.modules[name], cls, type(cls, (), {}))
    from src.data.joint_datamodule import custom_transform
    from torch_geometric.data import Data, InMemoryDataset

    class Stored(InMemoryDataset):
        def __init__(self, items, transform=None):
            super().__init__(None, transform)
            self.data, self.slices = self.collate(items)

    sets = []
    crystals = _reference_data(data, data[f"{case}_crystals"])
    for i, d in zip(data[f"{case}_crystals"], crystals):  # the rest of its MP-20 record's fields
        d.id = f"mp20-{int(i)}"
        d.lattices_scaled = torch.cat([d.lengths_scaled, d.angles_radians], 1)
    if crystals:
        sets.append(Stored(crystals))
    where = {int(g): i for i, g in enumerate(data["mol_index"])}
    records = []
    for g in data[f"{case}_molecules"]:
        i = where[int(g)]
        a, b = data["mol_offsets"][i], data["mol_offsets"][i + 1]
        records.append(Data(z=torch.as_tensor(data["mol_numbers"][a:b]),
                            pos=torch.as_tensor(data["mol_positions"][a:b], dtype=torch.float32),
                            name=f"gdb_{int(g)}", num_nodes=int(b - a)))
    if records:
        sets.append(Stored(records, transform=partial(custom_transform, removeHs=False)))
    return sets


def run_reference(data: dict, args) -> dict:
    """One VAE epoch and one DiT epoch per case through the reference's loader and training steps."""
    import random
    import warnings

    from torch.utils.data import ConcatDataset

    tmp = Path(tempfile.mkdtemp(prefix="adit_ref_"))
    hist = (np.arange(1, 30), np.ones(29, dtype=np.int64))  # sampling histograms: unused by training
    out = {}
    for case in args.cases:
        torch.manual_seed(args.seed)
        np.random.seed(args.seed)  # noqa: NPY002 - the reference draws its corruption with np.random
        random.seed(args.seed)
        vae, ldm, conf, scatter = build_reference(Path(args.reference_path).resolve(), json.loads(str(data["sizes"])),
                                                  {"mp_20": hist, "qm9": hist, "qmof": hist}, tmp)
        from src.callbacks.ema import EMAOptimizer
        from torch_geometric.loader import DataLoader

        warnings.filterwarnings("ignore", message=".*self.log.*")
        out["scatter"] = scatter
        dataset = ConcatDataset(_reference_sets(data, case))
        clip = float(conf("trainer/default.yaml").gradient_clip_val)

        def epoch(module, opt, after_step=None, dataset=dataset, clip=clip):
            loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=0)
            steps = 0
            for i, batch in enumerate(loader):
                loss = module.training_step(batch, i)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
                opt.step()
                if after_step:
                    after_step()
                steps += 1
            return steps

        vae.train()
        steps, t = _clock(epoch, vae, vae.hparams.optimizer(params=vae.parameters()))
        out[f"{case}_vae"] = {**t, "systems": steps * args.batch_size, "steps": steps}
        ldm.train()
        ldm.autoencoder.eval()
        dopt = EMAOptimizer(ldm.hparams.optimizer(params=ldm.parameters()), torch.device("cpu"),
                            decay=conf("callbacks/ema.yaml").exponetial_moving_average.decay)
        steps, t = _clock(epoch, ldm, dopt, dopt.join)
        out[f"{case}_dit"] = {**t, "systems": steps * args.batch_size, "steps": steps}
    return out


def summarise(runs: dict, cases) -> dict:
    """Per case and stage: median seconds per epoch (CPU) and systems per CPU-second per side, and the paired
    per-repeat ratios ours / reference of systems per CPU-second."""
    out = {}
    for case in cases:
        for stage in ("vae", "dit"):
            key = f"{case}_{stage}"
            ours = [r[key]["systems"] / r[key]["cpu"] for r in runs["ours"]]
            ref = [r[key]["systems"] / r[key]["cpu"] for r in runs["reference"]]
            pairs = [a / b for a, b in zip(ours, ref)]
            out[key] = {"ours_systems_per_cpu_s": statistics.median(ours),
                        "reference_systems_per_cpu_s": statistics.median(ref),
                        "ours_epoch_cpu_s": statistics.median(r[key]["cpu"] for r in runs["ours"]),
                        "reference_epoch_cpu_s": statistics.median(r[key]["cpu"] for r in runs["reference"]),
                        "ratios": pairs, "median": statistics.median(pairs), "min": min(pairs), "max": max(pairs)}
            if stage == "dit":
                out[key]["ours_latent_cache_cpu_s"] = statistics.median(r[f"{case}_latent_cache"]["cpu"]
                                                                        for r in runs["ours"])
    out["ours_load_cpu_s"] = statistics.median(r["load"]["cpu"] for r in runs["ours"])
    return out


def write_report(out: Path, result: dict) -> None:
    """``out.json`` (everything) and ``out.md`` (the table)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=float))
    a, s, i = result["settings"], result["summary"], result["inputs"]
    lines = ["# Whole training epochs, data loading included: aiida-adit vs the reference ADiT code", "",
             f"Machine: {a['machine']}. Date: {a['date']}. Both sides at once, 1 thread each, each pinned to its own "
             f"core (swapped every repeat), {a['repeats']} repeats; load average (1 min) {a['load_min']:.1f} to "
             f"{a['load_max']:.1f}. Reference commit `{a['reference_commit']}`. XS size, batches of "
             f"{a['batch_size']}, one data-loading process per side. Versions as the children recorded them: "
             + "; ".join(f"{k}: torch {v['torch']}, numpy {v['numpy']}" for k, v in result["versions"].items())
             + ".", ""]
    for case in a["cases"]:
        lines.append(f"- `{case}`: {i[case]['crystals']:,} MP-20 training crystals and {i[case]['molecules']:,} QM9 "
                     f"training molecules (mean {i[case]['mean_atoms']:.1f} atoms).")
    lines += ["", "| case | stage | reference: CPU s per epoch | ours: CPU s per epoch | systems per CPU-second, "
              "reference / ours | paired ratio ours / reference, median (min-max) |",
              "|---|---|---:|---:|---:|---:|"]
    for case in a["cases"]:
        for stage in ("vae", "dit"):
            r = s[f"{case}_{stage}"]
            name = "VAE" if stage == "vae" else "DiT"
            lines.append(f"| {case} | {name} | {r['reference_epoch_cpu_s']:.1f} | {r['ours_epoch_cpu_s']:.1f} | "
                         f"{r['reference_systems_per_cpu_s']:.0f} / {r['ours_systems_per_cpu_s']:.0f} | "
                         f"**{r['median']:.2f}x** ({r['min']:.2f}-{r['max']:.2f}) |")
    lines += ["", f"Ours also loads the cached datasets once per run ({s['ours_load_cpu_s']:.1f} CPU s for MP-20 and "
              "QM9) and encodes the DiT's latents once per run (" + ", ".join(
                  f"{case}: {s[f'{case}_dit']['ours_latent_cache_cpu_s']:.1f} CPU s" for case in a["cases"])
              + "); neither is in the epoch times above. The reference drops the last partial batch "
              "(`drop_last=True`) and counts only the systems it trained on.", "",
              f"Reproduce: `{result['command']}`", ""]
    out.with_suffix(".md").write_text("\n".join(lines))


def parse_args(argv=None):
    """Command-line options (the child processes get the same ones)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference-path", default=os.environ.get("ADIT_REFERENCE_PATH"))
    ap.add_argument("--reference-python", default=os.environ.get("ADIT_REFERENCE_PYTHON", sys.executable))
    ap.add_argument("--cases", default="mp20,joint")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--max-crystals", type=int, default=0, help="the mp20 case's first N crystals (0: all)")
    ap.add_argument("--joint-crystals", type=int, default=2000)
    ap.add_argument("--molecules-per-crystal", type=float, default=100_000 / 27_136)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "reference_epochs"))
    ap.add_argument("--machine", default="2-core CPU, 24 GiB, no GPU")
    ap.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    ap.add_argument("--side", choices=["ours", "reference"], help=argparse.SUPPRESS)
    ap.add_argument("--inputs", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.cases = [c for c in args.cases.split(",") if c]
    if any(c not in CASES for c in args.cases):
        ap.error(f"--cases takes {', '.join(CASES)}, got {args.cases}")
    args.child_argv = ["--cases", ",".join(args.cases), "--batch-size", str(args.batch_size), "--seed", str(args.seed)]
    if args.reference_path:
        args.child_argv += ["--reference-path", args.reference_path]
    return args


def main(argv=None) -> int:
    """Driver (both sides, repeats, report) or one side in a child process (``--side``)."""
    args = parse_args(argv)
    torch.set_num_threads(1)
    if args.side:
        data = dict(np.load(args.inputs))
        res = (run_ours if args.side == "ours" else run_reference)(data, args)
        res["versions"] = {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
                           "cpus": sorted(os.sched_getaffinity(0))}
        Path(args.result).write_text(json.dumps(res))
        return 0
    if not (Path(args.reference_path or "") / "src" / "models").is_dir():
        raise SystemExit("--reference-path must point at a checkout of the reference ADiT code; see "
                         "benchmarks/reference_comparison.py")
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("both sides run at once on their own core: this needs 2 cores")
    inputs = Path(tempfile.mkdtemp(prefix="adit_epochs_")) / "inputs.npz"
    info = prepare_inputs(inputs, args)
    print(f"inputs: {info}", flush=True)
    python = {"ours": sys.executable, "reference": args.reference_python}
    runs, loads, versions = {"ours": [], "reference": []}, [], {}
    for r in range(args.repeats):
        print(f"repeat {r + 1}/{args.repeats}", flush=True)
        order = ("ours", "reference") if r % 2 == 0 else ("reference", "ours")
        handles = [start_side(__file__, side, inputs, args.child_argv, 1, python[side], {cores[i]})
                   for i, side in enumerate(order)]
        for side, handle in zip(order, handles):
            res = finish_side(handle, lambda r: json.dumps({k: v for k, v in r.items() if k != "versions"}))
            runs[side].append(res)
            versions[side] = res["versions"]
            loads += [res["load_before"], res["load_after"]]
    commit = subprocess.run(["git", "-C", args.reference_path, "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    settings = {k: getattr(args, k) for k in ("cases", "repeats", "batch_size", "max_crystals", "joint_crystals",
                                              "molecules_per_crystal", "seed", "machine", "date")}
    settings.update(reference_commit=commit, load_min=min(loads), load_max=max(loads))
    command = ("python benchmarks/reference_epochs.py --reference-path ADIT_REF --reference-python "
               f"REF_VENV/bin/python --cases {','.join(args.cases)} --repeats {args.repeats} --batch-size "
               f"{args.batch_size} --max-crystals {args.max_crystals} --joint-crystals {args.joint_crystals} "
               f"--seed {args.seed}")
    result = {"settings": settings, "inputs": info, "versions": versions, "summary": summarise(runs, args.cases),
              "runs": runs, "command": command}
    write_report(Path(args.out), result)
    print(json.dumps(result["summary"], indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
