"""Sampling time on a GPU: 1,000 crystals for DiT sizes S and B, fp32 and bf16, at 100 Euler steps
with guidance and at the few-NFE setting (Heun, 10 steps).

One command on a GPU machine gives every number in a few minutes::

    python benchmarks/gpu_sampling.py --device cuda

Timing does not depend on the weights, so the models are the registry's sizes with their
initial weights (the VAE is the shipped model's, XS; decoding is timed apart). Atom counts are
drawn from the shipped model's MP-20 histogram, the same for every setting. Each setting runs
once to warm up (CUDA kernels, caches) and is then timed ``--repeats`` times with
``torch.cuda.synchronize``; the median is reported, in seconds per 1,000 crystals, for the
network integration alone and with decoding to structures. (The sampler's fast path calls the
DiT's blocks directly, so ``torch.compile`` of the module would not change it; it is not timed.)
On the CPU, ``--sizes XS --num 20 --steps 4`` runs the same code in
seconds (the test does that).

Writes ``benchmarks/results/gpu_sampling_<device name>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import torch

from adit_torch.config import FlowConfig, dit_config
from adit_torch.dit import DiT
from adit_torch.pretrained import load_pretrained
from adit_torch.sample import sample_latents

RESULTS = Path(__file__).resolve().parent / "results"


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_setting(dit, vae, stats, args, solver: str, steps: int, precision: str) -> dict:
    """Median seconds for ``args.num`` crystals: integration only, and integration plus decoding."""
    flow = FlowConfig(steps=steps, cfg_scale=2.0)
    runs_lat, runs_all = [], []
    for repeat in range(args.repeats + 1):
        _sync(args.device)
        start = time.perf_counter()
        groups = list(sample_latents(dit, flow, stats, "crystal", args.num, steps, 2.0, seed=0,
                                     batch_size=args.batch_size, device=args.device, progress=False,
                                     solver=solver, precision=precision))
        _sync(args.device)
        mid = time.perf_counter()
        with torch.no_grad():
            for _, z, mask, periodic, dataset in groups:
                vae.decode_to_systems(z, mask, periodic, dataset)
        _sync(args.device)
        end = time.perf_counter()
        if repeat:  # the first run warms up
            runs_lat.append(mid - start)
            runs_all.append(end - start)
    scale = 1000.0 / args.num
    return {"solver": solver, "steps": steps, "precision": precision,
            "seconds_per_1000_integration": scale * statistics.median(runs_lat),
            "seconds_per_1000_with_decoding": scale * statistics.median(runs_all),
            "repeats": args.repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", nargs="+", default=["S", "B"])
    parser.add_argument("--num", type=int, default=1000, help="crystals per timed run")
    parser.add_argument("--steps", type=int, default=100, help="Euler steps of the reference setting")
    parser.add_argument("--few-steps", type=int, default=10, help="Heun steps of the few-NFE setting")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    _, vae, _, meta = load_pretrained()
    vae = vae.to(args.device).eval()
    stats = meta["data"]
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({platform.processor() or 'x86_64'})"
    result = {"device": name, "date": date.today().isoformat(), "torch": torch.__version__,
              "load_average_start": os.getloadavg(), "num": args.num, "batch_size": args.batch_size,
              "cfg_scale": 2.0, "weights": "registry sizes, initial weights; VAE of the shipped model",
              "rows": []}
    precisions = ("fp32", "bf16")
    for size in args.sizes:
        torch.manual_seed(0)
        dit = DiT(dit_config(size, latent_dim=vae.cfg.latent_dim)).to(args.device).eval()
        for precision in precisions:
            for solver, steps in (("euler", args.steps), ("heun", args.few_steps)):
                row = {"size": size, "params": sum(p.numel() for p in dit.parameters()),
                       **time_setting(dit, vae, stats, args, solver, steps, precision)}
                result["rows"].append(row)
                print(json.dumps(row), flush=True)
    result["load_average_end"] = os.getloadavg()
    out = args.out or RESULTS / f"gpu_sampling_{name.replace(' ', '_').replace('/', '_')}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
