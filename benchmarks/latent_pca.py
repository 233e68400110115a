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

The paper's own figure is per system: the mean latent of each crystal and molecule, on one PCA,
where the first component separates periodic from non-periodic systems and the second groups
them by the atoms they hold. The script draws that too and measures it:

* the kind accuracy of the best single threshold on each of the two axes (1.0: the axis
  separates crystals from molecules completely);
* per kind, the correlation of each axis with the system's mean atomic number, and the share of
  systems whose nearest neighbour on the two axes has the same most common element.

Writes ``benchmarks/results/latent_pca_<model>.json`` and the figures
``docs/images/latent_pca.png`` (atoms) and ``docs/images/latent_pca_systems.png`` (systems).
Usage::

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
SYSTEMS_FIGURE = ROOT / "docs" / "images" / "latent_pca_systems.png"


def atom_latents(vae, dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latent means ``(atoms, latent_dim)``, atomic numbers ``(atoms,)`` of every atom of ``dataset``, and the
    system offsets ``(systems + 1,)`` into both."""
    with torch.no_grad():
        lat = encode_dataset(vae, dataset, progress=False)
    return lat.z, np.asarray(dataset.numbers, dtype=np.int64), lat.offsets


def system_means(z: np.ndarray, numbers: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per system: mean latent ``(systems, latent_dim)``, mean atomic number and most common atomic number."""
    sizes = np.diff(offsets)
    means = np.add.reduceat(z, offsets[:-1], axis=0) / sizes[:, None]
    mean_z = np.add.reduceat(numbers.astype(float), offsets[:-1]) / sizes
    common = np.array([np.bincount(numbers[a:b]).argmax() for a, b in zip(offsets[:-1], offsets[1:], strict=True)])
    return means, mean_z, common


def best_threshold_accuracy(values: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of the best rule ``label = values > t`` (or ``<= t``) over all thresholds ``t``: 1.0 when one
    cut on this axis separates the two classes."""
    order = np.argsort(values)
    lab = labels[order].astype(float)
    n, positives = len(lab), lab.sum()
    below_pos = np.concatenate([[0.0], np.cumsum(lab)])  # positives at or below each cut
    below = np.arange(n + 1)
    correct = (below - below_pos) + (positives - below_pos)  # negatives below + positives above
    return float(max(correct.max(), (n - correct).max()) / n)


def system_stats(pc: np.ndarray, periodic: np.ndarray, mean_z: np.ndarray, common: np.ndarray) -> dict:
    """How the two per-system axes split kinds and group chemistry (see the module docstring)."""
    out = {"kind_accuracy_best_threshold": [best_threshold_accuracy(pc[:, k], periodic) for k in range(2)]}
    for name, sel in (("crystals", periodic), ("molecules", ~periodic)):
        p, mz, cz = pc[sel], mean_z[sel], common[sel]
        distance = ((p[:, None, :] - p[None, :, :]) ** 2).sum(-1)
        np.fill_diagonal(distance, np.inf)
        neighbour = distance.argmin(1)
        out[name] = {"corr_mean_atomic_number": [float(np.corrcoef(p[:, k], mz)[0, 1]) for k in range(2)],
                     "nearest_neighbour_same_main_element": float((cz[neighbour] == cz).mean()),
                     "chance_same_main_element": float(sum((np.bincount(cz) / len(cz)) ** 2))}
    return out


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
    parser.add_argument("--systems-figure", type=Path, default=SYSTEMS_FIGURE)
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
    zc, nc, oc = atom_latents(vae, crystals)
    zm, nm, om = atom_latents(vae, molecules)
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

    # the paper's figure: one point per system (its mean latent), one PCA over crystals and molecules
    mc, zmc, cc = system_means(zc, nc, oc)
    mm, zmm, cm = system_means(zm, nm, om)
    systems = np.concatenate([mc, mm])
    periodic = np.concatenate([np.ones(len(mc), bool), np.zeros(len(mm), bool)])
    smean = systems.mean(0)
    _, ss, svt = np.linalg.svd(systems - smean, full_matrices=False)
    ps = (systems - smean) @ svt[:2].T
    systems_explained = (ss[:2] ** 2 / (ss ** 2).sum()).tolist()
    sstats = system_stats(ps, periodic, np.concatenate([zmc, zmm]), np.concatenate([cc, cm]))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5), sharex=True, sharey=True)
    left.scatter(ps[periodic, 0], ps[periodic, 1], s=6, color="tab:blue", label="MP-20 crystals", rasterized=True)
    left.scatter(ps[~periodic, 0], ps[~periodic, 1], s=6, color="tab:orange", label="QM9 molecules", rasterized=True)
    left.legend(markerscale=3, fontsize=8)
    left.set_title("coloured by kind", fontsize=10)
    shown = ps[:, 0].argsort()
    points = right.scatter(ps[shown, 0], ps[shown, 1], s=6, c=np.concatenate([zmc, zmm])[shown], cmap="viridis",
                           rasterized=True)
    fig.colorbar(points, ax=right, label="mean atomic number of the system")
    right.set_title("coloured by mean atomic number", fontsize=10)
    for ax in (left, right):
        ax.set_xlabel(f"PC 1 ({100 * systems_explained[0]:.0f}% of the variance)")
    left.set_ylabel(f"PC 2 ({100 * systems_explained[1]:.0f}%)")
    fig.suptitle(f"{args.model}: mean VAE latent per system, {len(mc)} crystals (partial MP-20) and {len(mm)} "
                 "molecules, one PCA", fontsize=11)
    fig.tight_layout()
    args.systems_figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.systems_figure, dpi=110)
    result = {"model": args.model, "date": date.today().isoformat(), "machine": "2-core CPU, 24 GiB, no GPU",
              "load_average": [load_start, os.getloadavg()], "num_crystals": len(crystals),
              "num_molecules": len(molecules), "atoms": [int(len(nc)), int(len(nm))],
              "explained_variance_pc1_pc2": explained, "shared_elements": [chemical_symbols[z] for z in shared],
              **stats, "figure": str(args.figure.relative_to(ROOT)) if args.figure.is_relative_to(ROOT) else None,
              "systems": {"explained_variance_pc1_pc2": systems_explained, **sstats,
                          "figure": str(args.systems_figure.relative_to(ROOT))
                          if args.systems_figure.is_relative_to(ROOT) else None}}
    out = args.out or RESULTS / f"latent_pca_{args.model}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "same_element_across_kinds"}, indent=1))


if __name__ == "__main__":
    main()
