"""How precise must the DiT be? Decoders compared on the same latents: noisy encodings and DiT samples.

For each VAE (a ``vae`` checkpoint, or the VAE embedded in a DiT checkpoint) this measures, on the
same held-out systems and the same seed:

1. validity of decoded *real* latents with Gaussian noise of std ``s`` added in the DiT's normalised
   units (``s`` = 0 is plain reconstruction), for crystals and molecules;
2. validity of the samples of one DiT (the same latents for every VAE: same DiT, seed, steps and
   guidance), decoded by each VAE.

All VAEs must share the encoder the DiT was trained on (a decoder fine-tuned with
``VAEConfig.freeze_encoder``), so that part 2 compares decoders and nothing else. Validity is the
evaluator's per-structure check (:func:`adit_torch.sample.quick_validity`).

    python benchmarks/decoder_robustness.py --dit adit_torch/resources/models/adit-xs-joint.safetensors \\
        --vae shipped=adit_torch/resources/models/adit-xs-joint.safetensors --vae noise=runs/dec/vae.safetensors \\
        --out benchmarks/results/ablations/decoder_noise --note "2-core CPU, idle, load 1.9"
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from adit_torch.batching import collate
from adit_torch.checkpoint import load_dit, load_vae
from adit_torch.datasets import load_dataset
from adit_torch.sample import quick_validity, sample_latents

KINDS = {"crystal": "mp20", "molecule": "qm9"}


def held_out(kind: str, n: int) -> list:
    """``n`` evenly spaced systems of the validation split of the dataset of ``kind``."""
    ds = load_dataset(KINDS[kind], "val", skip_invalid=True)
    return [ds[int(i)] for i in np.linspace(0, len(ds) - 1, n).astype(int)]


@torch.no_grad()
def noisy_reconstruction(vae, systems: list, mean: torch.Tensor, std: torch.Tensor, kind: str,
                         levels: list[float], seed: int) -> dict[str, dict[str, float]]:
    """``{level: quick_validity}`` of the decoded latent means plus noise ``level * std`` (normalised units)."""
    batch = collate(systems)
    mu, _ = vae.encode(batch)
    out = {}
    for level in levels:
        g = torch.Generator().manual_seed(seed)
        z = mu + level * std * torch.randn(mu.shape, generator=g)
        z = z * batch.mask.unsqueeze(-1)
        out[f"{level:g}"] = quick_validity(vae.decode_to_systems(z, batch.mask, batch.periodic, batch.dataset), kind)
    return out


def main() -> None:
    """Measure every ``--vae`` and write ``OUT.json`` and ``OUT.png``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dit", type=Path, required=True, help="DiT checkpoint whose samples are decoded")
    p.add_argument("--vae", action="append", required=True, help="NAME=checkpoint (vae, or dit with its VAE)")
    p.add_argument("--num-held-out", type=int, default=200, help="held-out systems per kind")
    p.add_argument("--num-samples", type=int, default=500, help="DiT samples per kind")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--cfg-scale", type=float, default=2.0)
    p.add_argument("--levels", default="0,0.05,0.1,0.2,0.3,0.4")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="output stem (STEM.json, STEM.png)")
    p.add_argument("--note", default="", help="machine, date and load average")
    args = p.parse_args()
    levels = [float(x) for x in args.levels.split(",")]
    dit, _, flow_cfg, meta = load_dit(args.dit)
    stats = meta["data"]
    mean = torch.tensor(stats["latent_mean"])
    std = torch.tensor(stats["latent_std"])
    vaes = {}
    for spec in args.vae:
        name, path = spec.split("=", 1)
        vaes[name] = load_vae(path)[0]
    t0 = time.time()
    result = {"dit": str(args.dit), "vaes": {s.split("=", 1)[0]: s.split("=", 1)[1] for s in args.vae},
              "settings": {"num_held_out": args.num_held_out, "num_samples": args.num_samples, "steps": args.steps,
                           "cfg_scale": args.cfg_scale, "seed": args.seed, "levels": levels},
              "note": args.note, "noisy_reconstruction": {}, "dit_samples": {}}
    for kind in KINDS:
        systems = held_out(kind, args.num_held_out)
        for name, vae in vaes.items():
            result["noisy_reconstruction"].setdefault(name, {})[kind] = noisy_reconstruction(
                vae, systems, mean, std, kind, levels, args.seed)
        # one set of DiT latents per kind (same DiT, seed, steps, guidance), decoded by every VAE
        parts = list(sample_latents(dit, flow_cfg, stats, kind, args.num_samples, steps=args.steps,
                                    cfg_scale=args.cfg_scale, seed=args.seed, progress=False))
        for name, vae in vaes.items():
            decoded = [s for _, z, m, per, ds in parts for s in vae.decode_to_systems(z, m, per, ds)]
            result["dit_samples"].setdefault(name, {})[kind] = quick_validity(decoded, kind)
        print(kind, json.dumps({n: result["dit_samples"][n][kind] for n in vaes}), flush=True)
    result["elapsed_s"] = time.time() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    plot(result, args.out.with_suffix(".png"))


#: The panels of both validity plots (this script's and sampling_nfe.py's): ``(kind, metric)``.
VALIDITY_PANELS = (("crystal", "validity"), ("molecule", "validity"), ("molecule", "validity_strict"),
                   ("molecule", "validity_connected"))


def plot_validity_panels(path: Path, title: str, draw) -> None:
    """One panel per :data:`VALIDITY_PANELS` entry, filled by ``draw(ax, kind, metric)``; the first
    panel's legend, ``title`` on top; written to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(VALIDITY_PANELS), figsize=(4.2 * len(VALIDITY_PANELS), 3.6))
    for ax, (kind, metric) in zip(axes, VALIDITY_PANELS):
        draw(ax, kind, metric)
        ax.set_title(f"{kind} {metric}")
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot(result: dict, path: Path) -> None:
    """Validity against latent noise per VAE, one panel per kind and metric."""
    def draw(ax, kind, metric):
        for name, per_kind in result["noisy_reconstruction"].items():
            pts = sorted((float(k), v[metric]) for k, v in per_kind[kind].items())
            line, = ax.plot(*zip(*pts), marker="o", label=f"{name}: real latents + noise")
            dit_value = result["dit_samples"][name][kind][metric]
            ax.axhline(dit_value, color=line.get_color(), ls="--", lw=1, label=f"{name}: DiT samples")
        ax.set_xlabel("latent noise std (normalised units)")
        ax.set_ylim(0, 1.02)

    plot_validity_panels(path, result.get("note", ""), draw)


if __name__ == "__main__":
    main()
