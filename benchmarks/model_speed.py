"""Speed of the ADiT model on this machine: training throughput, sampling time, peak memory, padding.

Each measurement runs in its own subprocess so its peak resident memory
(``ru_maxrss``) is its own. Weights are random: speed does not depend on them.

    python benchmarks/model_speed.py --out benchmarks/results/model_speed.json

Sampling 1,000 crystals at 100 steps with guidance is timed on ``--sample-n``
crystals and scaled linearly to 1,000 (batches are independent, so time is
linear in the number of batches); the JSON says which numbers are scaled.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

MACHINE = "2-core CPU, 24 GiB, no GPU (shared with other jobs)"
DATE = "2026-11-25"


def _real_batches(n_batches: int, batch_size: int):
    import numpy as np

    from adit_torch.batching import BucketBatchSampler, collate
    from adit_torch.datasets import load_dataset

    mp20 = load_dataset("mp20", "train", skip_invalid=True)
    qm9 = load_dataset("qm9", "train", skip_invalid=True)
    rng = np.random.default_rng(0)
    systems = [mp20[int(i)] for i in rng.choice(len(mp20), 512)] + [qm9[int(i)] for i in rng.choice(len(qm9), 512)]
    counts = np.array([s.num_atoms for s in systems])
    batches = BucketBatchSampler(counts, batch_size=batch_size, seed=0).batches(0)[:n_batches]
    return [collate([systems[i] for i in b]) for b in batches], mp20


def bench_train(size: str, model: str, steps: int, batch_size: int) -> dict:
    """Seconds per optimiser step and systems/s for the VAE or the DiT (on latents of the same batches)."""
    import torch

    from adit_torch.augment import augment_batch
    from adit_torch.config import FlowConfig, dit_config, vae_config
    from adit_torch.dit import Condition, DiT
    from adit_torch.flow import flow_matching_loss
    from adit_torch.vae import VAE

    torch.set_num_threads(1)
    batches, _ = _real_batches(steps + 2, batch_size)
    g = torch.Generator().manual_seed(0)
    vae = VAE(vae_config(size))
    if model == "vae":
        net = vae
        def step_loss(b):
            return vae.loss(augment_batch(b, g), g)[0]
    else:
        net = DiT(dit_config(size))
        flow = FlowConfig()
        with torch.no_grad():
            lat = [vae.encode(b)[0] for b in batches]
        def step_loss(i_b):
            i, b = i_b
            cond = Condition(periodic=b.periodic.long())
            return flow_matching_loss(lambda x, t, sc: net(x, t, b.mask, cond, sc), lat[i], b.mask, flow, g)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    items = list(enumerate(batches)) if model == "dit" else batches
    times, systems = [], 0
    for k, item in enumerate(items):
        t0 = time.perf_counter()
        loss = step_loss(item)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if k >= 2:  # first steps warm up allocators
            times.append(time.perf_counter() - t0)
            systems += len(item[1] if model == "dit" else item)
    return {"what": f"train-{model}", "size": size, "batch_size": batch_size, "steps_timed": len(times),
            "s_per_step": sum(times) / len(times), "systems_per_s": systems / sum(times),
            "num_params": sum(p.numel() for p in net.parameters())}


def bench_sample(size: str, n: int, steps: int, cfg_scale: float) -> dict:
    """Seconds to sample ``n`` crystals (atom counts from the MP-20 training histogram), scaled to 1,000."""
    import torch

    from adit_torch.config import FlowConfig, dit_config, vae_config
    from adit_torch.dit import DiT
    from adit_torch.recipes import JointSystems, atom_count_histograms
    from adit_torch.sample import sample_systems
    from adit_torch.vae import VAE

    torch.set_num_threads(1)
    from adit_torch.datasets import load_dataset

    stats = {"num_atoms_hist": atom_count_histograms(JointSystems([load_dataset("mp20", "train", skip_invalid=True)]))}
    dit, vae = DiT(dit_config(size)).eval(), VAE(vae_config(size)).eval()
    t0 = time.perf_counter()
    out = sample_systems(dit, vae, FlowConfig(), stats, "crystal", n, steps=steps, cfg_scale=cfg_scale, seed=0,
                         batch_size=256, progress=False)
    dt = time.perf_counter() - t0
    return {"what": "sample-crystals", "size": size, "n_timed": len(out), "steps": steps, "cfg_scale": cfg_scale,
            "seconds_timed": dt, "seconds_per_1000_scaled": dt * 1000 / n, "scaled_from_n": n}


def bench_padding() -> dict:
    """Padded share of the compute: size-bucketed batches vs. random batches (MP-20 + QM9 train)."""
    import numpy as np

    from adit_torch.batching import BucketBatchSampler, padding_fraction
    from adit_torch.recipes import load_training_data

    data = load_training_data("joint", "train")
    counts = data.num_atoms
    bucketed = BucketBatchSampler(counts, batch_size=256, seed=0).batches(0)
    perm = np.random.default_rng(0).permutation(len(counts))
    random = [perm[i:i + 256].tolist() for i in range(0, len(perm), 256)]
    return {"what": "padding", "dataset": "joint train", "batch_size": 256,
            "padding_fraction_bucketed": padding_fraction(counts, bucketed),
            "padding_fraction_random": padding_fraction(counts, random)}


def _one(args) -> None:
    if args.one == "train":
        res = bench_train(args.size, args.model, args.steps, args.batch_size)
    elif args.one == "sample":
        res = bench_sample(args.size, args.sample_n, args.sample_steps, args.cfg_scale)
    else:
        res = bench_padding()
    res["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(res))


def main() -> None:
    """Run every measurement in a subprocess and write the JSON report."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/model_speed.json"))
    p.add_argument("--sizes", nargs="+", default=["XS", "S"])
    p.add_argument("--steps", type=int, default=5, help="timed training steps per configuration")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--sample-n", type=int, default=0, help="crystals timed (default: 64 for XS, 8 for larger)")
    p.add_argument("--sample-steps", type=int, default=100)
    p.add_argument("--cfg-scale", type=float, default=2.0)
    p.add_argument("--one", choices=("train", "sample", "padding"), help=argparse.SUPPRESS)
    p.add_argument("--size", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        _one(args)
        return
    runs = [["--one", "padding"]]
    for size in args.sizes:
        n = args.sample_n or (64 if size == "XS" else 8)
        runs += [["--one", "train", "--size", size, "--model", m, "--steps", str(args.steps),
                  "--batch-size", str(args.batch_size)] for m in ("vae", "dit")]
        runs.append(["--one", "sample", "--size", size, "--sample-n", str(n), "--sample-steps",
                     str(args.sample_steps), "--cfg-scale", str(args.cfg_scale)])
    results = []
    for r in runs:
        proc = subprocess.run([sys.executable, __file__, *r], capture_output=True, text=True,
                              env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", **_env()})
        if proc.returncode != 0:
            results.append({"run": r, "error": proc.stderr[-2000:]})
        else:
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    report = {"machine": MACHINE, "date": DATE, "python": platform.python_version(), "torch_threads": 1,
              "note": "sampling times are measured on n_timed crystals and scaled linearly to 1,000",
              "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k.startswith(("ADIT_", "HOME", "VIRTUAL_ENV"))}


if __name__ == "__main__":
    main()
