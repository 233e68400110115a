"""Train the paper's DiT-S on a GPU machine that has neither qm9pack nor the MP-20 files.

A lent GPU machine is bare: no internet, no qm9pack, no pymatgen, and what travels there
and back is capped (64 MiB each way, files of at most 16 MiB). This script splits the work:

``pack`` (here, where the datasets are)
    the joint training split (partial MP-20 train, QM9 train), as the training commands load
    it, into one compressed ``.npz``. QM9's positions are stored as float32 (22 MiB instead of
    40: relative rounding 6e-8, under 1e-6 Å, against the VAE's 0.07 Å reconstruction error);
    everything else as in the cache.
``train`` (on the GPU)
    rebuilds the training set from the pack (MP-20 listed ``--crystal-repeat`` times, as
    ``adit train-dit --crystal-repeat``) and calls :func:`adit_torch.recipes.train_dit` for
    DiT-S on the frozen VAE of ``adit-xs-joint``, with the space-group and chemical-system
    conditions (trained with condition dropout, so the model also samples unconditioned).
``sample`` (on the GPU)
    ``--num`` crystals and molecules at the model card's setting (100 Euler steps, guidance 2,
    seed 0) into ``.extxyz`` files, to be scored here by ``adit evaluate``.
``export`` (on the GPU)
    the DiT tensors in float16 (:func:`adit_torch.checkpoint.export_half`), without the embedded
    VAE (it is ``adit-xs-joint``'s, which is here), split into files of at most 16 MiB, and the
    header as JSON.
``assemble`` (here)
    the checkpoint again from those parts and ``adit-xs-joint``'s VAE tensors; the file's
    sha256 is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

CHUNK_BYTES = 15 * 2**20  # under the 16 MiB per-file cap of the GPU machine's return path


def pack(out: Path) -> None:
    """Write the joint training split's parts (``mp20__*``, ``qm9__*`` arrays) into ``out`` (compressed npz)."""
    from adit_torch.datasets import load_dataset

    arrays = {}
    for name in ("mp20", "qm9"):
        ds = load_dataset(name, "train", skip_invalid=True)
        for key, value in ds.to_arrays().items():
            arrays[f"{name}__{key}"] = value.astype(np.float32) if key == "positions" and name == "qm9" else value
        print(f"{name}: {len(ds)} systems, {len(ds.numbers)} atoms")
    np.savez_compressed(out, **arrays)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")


def load_pack(path: Path, crystal_repeat: int):
    """The training set of :func:`adit_torch.recipes.load_training_data` rebuilt from a pack."""
    from adit_torch.datasets.dataset import SystemDataset
    from adit_torch.recipes import JointSystems

    parts = []
    with np.load(path, allow_pickle=False) as data:
        for name in ("mp20", "qm9"):
            arrays = {k.split("__", 1)[1]: data[k] for k in data.files if k.startswith(f"{name}__")}
            arrays["positions"] = arrays["positions"].astype(np.float64)
            ds = SystemDataset.from_arrays(name, arrays)
            parts += [ds] * (crystal_repeat if name == "mp20" else 1)
    return JointSystems(parts)


def train(args) -> None:
    from adit_torch.config import FlowConfig, TrainConfig, dit_config
    from adit_torch.pretrained import pretrained_path
    from adit_torch.recipes import train_dit

    data = load_pack(args.pack, args.crystal_repeat)
    vae_path = pretrained_path("adit-xs-joint")
    dit_cfg = dit_config(args.size, latent_dim=8, num_space_groups=230, num_element_types=100,
                         cond_drop_prob=0.1, cond_field_drop_prob=0.3)
    train_cfg = TrainConfig(dataset="joint", batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup,
                            lr_schedule="constant", ema_decay=args.ema_decay, max_steps=10**7,
                            max_minutes=args.minutes, seed=0, num_workers=args.num_workers, log_every=100,
                            val_every=0, ckpt_every=1000, val_size=0, val_samples=0,
                            crystal_repeat=args.crystal_repeat, device=args.device)
    start = time.time()
    result = train_dit(train_cfg, dit_cfg, FlowConfig(), vae_path, args.size, args.out_dir, data=data,
                       progress=False)
    print(json.dumps({"train_seconds": time.time() - start, **{k: v for k, v in result.items()
                                                                if isinstance(v, (int, float, str))}}))


def sample(args) -> None:
    from adit_torch.checkpoint import load_dit
    from adit_torch.io import write_systems
    from adit_torch.sample import sample_systems

    dit, vae, flow_cfg, meta = load_dit(args.model, args.device)
    dit.eval(), vae.eval()
    for kind in ("crystal", "molecule"):
        start = time.time()
        systems = sample_systems(dit, vae, flow_cfg, meta["data"], kind, args.num, steps=100, cfg_scale=2.0,
                                 seed=0, batch_size=1000, device=args.device, progress=False)
        if args.device == "cuda":
            torch.cuda.synchronize()
        print(json.dumps({"kind": kind, "num": len(systems), "seconds": time.time() - start}))
        write_systems(args.out / f"samples_{kind}.extxyz", systems)


def export(model: Path, out: Path, chunk_bytes: int = CHUNK_BYTES) -> list[Path]:
    """``model``'s DiT tensors in float16, without the VAE, in ``out/dit_part*.safetensors`` (each at most
    ``chunk_bytes`` of tensor data), and its header in ``out/header.json``; returns the part files."""
    from safetensors.torch import save_file

    from adit_torch.checkpoint import export_half, load_tensors

    out.mkdir(parents=True, exist_ok=True)
    half = out / "half.safetensors.tmp"
    export_half(model, half)
    meta, tensors = load_tensors(half)
    half.unlink()
    parts, chunk, size = [], {}, 0
    for name in sorted(k for k in tensors if not k.startswith("vae.")):
        nbytes = tensors[name].numel() * tensors[name].element_size()
        if chunk and size + nbytes > chunk_bytes:
            parts.append(chunk)
            chunk, size = {}, 0
        chunk[name] = tensors[name].contiguous()
        size += nbytes
    parts.append(chunk)
    files = []
    for index, part in enumerate(parts):
        files.append(out / f"dit_part{index}.safetensors")
        save_file(part, str(files[-1]))
    (out / "header.json").write_text(json.dumps(meta))
    print(f"exported {sum(len(p) for p in parts)} DiT tensors in {len(parts)} parts")
    return files


def assemble(parts: Path, out: Path, vae_from: str | Path = "adit-xs-joint") -> Path:
    """The checkpoint from :func:`export`'s ``parts`` folder and the VAE tensors of ``vae_from``
    (a registered model name or a DiT checkpoint file), written to ``out``."""
    from safetensors.torch import load_file

    from adit_torch.checkpoint import _atomic_save, load_tensors
    from adit_torch.datasets.cache import sha256_file
    from adit_torch.pretrained import MODELS, pretrained_path

    meta = json.loads((parts / "header.json").read_text())
    tensors = {}
    for part in sorted(parts.glob("dit_part*.safetensors")):
        tensors.update(load_file(str(part)))
    _, base = load_tensors(pretrained_path(str(vae_from)) if str(vae_from) in MODELS else vae_from)
    tensors.update({k: v for k, v in base.items() if k.startswith("vae.")})
    _atomic_save(out, tensors, meta)
    print(f"wrote {out}: {len(tensors)} tensors, sha256 {sha256_file(out)}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("pack")
    p.add_argument("out", type=Path)
    t = sub.add_parser("train")
    t.add_argument("--pack", type=Path, required=True)
    t.add_argument("--out-dir", type=Path, required=True)
    t.add_argument("--size", default="S")
    t.add_argument("--minutes", type=float, default=4.0)
    t.add_argument("--batch-size", type=int, default=512)
    t.add_argument("--lr", type=float, default=4e-4)
    t.add_argument("--warmup", type=int, default=200)
    t.add_argument("--ema-decay", type=float, default=0.999)
    t.add_argument("--num-workers", type=int, default=8)
    t.add_argument("--crystal-repeat", type=int, default=10)
    t.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    s = sub.add_parser("sample")
    s.add_argument("--model", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--num", type=int, default=1000)
    s.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    e = sub.add_parser("export")
    e.add_argument("--model", type=Path, required=True)
    e.add_argument("--out", type=Path, required=True)
    a = sub.add_parser("assemble")
    a.add_argument("--parts", type=Path, required=True)
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--vae-from", default="adit-xs-joint",
                   help="model name or DiT file whose VAE the DiT was trained on")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    actions = {"pack": lambda: pack(args.out), "train": lambda: train(args), "sample": lambda: sample(args),
               "export": lambda: export(args.model, args.out),
               "assemble": lambda: assemble(args.parts, args.out, args.vae_from)}
    actions[args.action]()


if __name__ == "__main__":
    main()
