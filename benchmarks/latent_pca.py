"""The shared latent space: per-atom latents of crystals and molecules, projected on two axes.

The ADiT paper's claim is that one VAE maps the atoms of crystals and of molecules into one
latent space, organised by chemistry rather than by kind. This script encodes ``--num`` held-out
MP-20 crystals and ``--num`` held-out QM9 molecules with a model's VAE (latent means, one vector
per atom), fits one PCA on all atoms together, and draws two panels on the same axes: the
crystals' atoms and the molecules' atoms, coloured by element. It also measures the claim:

* explained variance of the two axes;
* for each element present in both kinds, the distance between its crystal and molecule
  centroids (in the full latent space) against the median distance between centroids of
  different elements of the same kind: a ratio well under 1 means an element sits in the same
  place whatever the kind;
* nearest-centroid element accuracy across kinds: centroids from the crystals' atoms of the
  shared elements, tested on the molecules' atoms of those elements.

Writes ``benchmarks/results/latent_pca_<model>.json`` and the figure
``docs/images/latent_pca.png``. Usage::

    python benchmarks/latent_pca.py [--model adit-xs-joint] [--num 500]
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import date
from pathlib import Path

import numpy as np
import torch

from adit_torch.datasets import load_dataset
from adit_torch.latents import encode_dataset
from adit_torch.pretrained import load_pretrained

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FIGURE = ROOT / "docs" / "images" / "latent_pca.png"


def atom_latents(vae, dataset) -> tuple[np.ndarray, np.ndarray]:
    """Latent means ``(atoms, latent_dim)`` and atomic numbers ``(atoms,)`` of every atom of ``dataset``."""
    with torch.no_grad():
        lat = encode_dataset(vae, dataset, progress=False)
    return lat.z, np.asarray(dataset.numbers, dtype=np.int64)


def centroid_stats(zc, nc, zm, nm, shared) -> dict:
    """Same-element distances across kinds against different-element distances within a kind."""
    cc = {z: zc[nc == z].mean(0) for z in shared}
    cm = {z: zm[nm == z].mean(0) for z in shared}
    across = {int(z): float(np.linalg.norm(cc[z] - cm[z])) for z in shared}
    within = [float(np.linalg.norm(c[a] - c[b])) for c in (cc, cm) for i, a in enumerate(shared)
              for b in shared[i + 1:]]
    centroids = np.stack([cc[z] for z in shared])
    keep = np.isin(nm, shared)
    nearest = np.argmin(((zm[keep, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    accuracy = float((np.asarray(shared)[nearest] == nm[keep]).mean())
    return {"same_element_across_kinds": across, "median_different_elements_within_kind": float(np.median(within)),
            "ratio": float(np.median(list(across.values())) / np.median(within)),
            "cross_kind_nearest_centroid_accuracy": accuracy, "atoms_tested": int(keep.sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="adit-xs-joint")
    parser.add_argument("--num", type=int, default=500, help="held-out systems per kind")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--figure", type=Path, default=FIGURE)
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ase.data import chemical_symbols

    load_start = os.getloadavg()
    _, vae, _, _ = load_pretrained(args.model)
    vae.eval()
    crystals = load_dataset("mp20", "test", skip_invalid=True)[:args.num]
    molecules = load_dataset("qm9", "test", skip_invalid=True)[:args.num]
    zc, nc = atom_latents(vae, crystals)
    zm, nm = atom_latents(vae, molecules)
    everything = np.concatenate([zc, zm])
    mean = everything.mean(0)
    _, s, vt = np.linalg.svd(everything - mean, full_matrices=False)
    axes = vt[:2]
    explained = (s[:2] ** 2 / (s ** 2).sum()).tolist()
    pc, pm = (zc - mean) @ axes.T, (zm - mean) @ axes.T
    shared = sorted(set(nc.tolist()) & set(nm.tolist()))
    stats = centroid_stats(zc, nc, zm, nm, shared)

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5), sharex=True, sharey=True)
    counts = {z: int((nc == z).sum() + (nm == z).sum()) for z in set(nc.tolist()) | set(nm.tolist())}
    labelled = sorted(shared, key=lambda z: -counts[z])[:6]
    for ax, p, n, name in ((left, pc, nc, f"{len(crystals)} MP-20 test crystals (partial MP-20)"),
                           (right, pm, nm, f"{len(molecules)} QM9 test molecules")):
        other = ~np.isin(n, labelled)
        ax.scatter(p[other, 0], p[other, 1], s=2, c="0.85", label="other elements", rasterized=True)
        for z, colour in zip(labelled, plt.get_cmap("tab10").colors, strict=False):
            sel = n == z
            ax.scatter(p[sel, 0], p[sel, 1], s=4, color=colour, label=chemical_symbols[z], rasterized=True)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(f"PC 1 ({100 * explained[0]:.0f}% of the variance)")
    left.set_ylabel(f"PC 2 ({100 * explained[1]:.0f}%)")
    right.legend(markerscale=4, fontsize=8, loc="best")
    fig.suptitle(f"{args.model}: per-atom VAE latents of crystals and molecules, one PCA for both", fontsize=11)
    fig.tight_layout()
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=110)
    result = {"model": args.model, "date": date.today().isoformat(), "machine": "2-core CPU, 24 GiB, no GPU",
              "load_average": [load_start, os.getloadavg()], "num_crystals": len(crystals),
              "num_molecules": len(molecules), "atoms": [int(len(nc)), int(len(nm))],
              "explained_variance_pc1_pc2": explained, "shared_elements": [chemical_symbols[z] for z in shared],
              **stats, "figure": str(args.figure.relative_to(ROOT)) if args.figure.is_relative_to(ROOT) else None}
    out = args.out or RESULTS / f"latent_pca_{args.model}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "same_element_across_kinds"}, indent=1))


if __name__ == "__main__":
    main()
