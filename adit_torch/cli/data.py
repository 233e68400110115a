"""``adit data info`` and ``adit data download``: what the datasets hold, and how to get MP-20."""

from __future__ import annotations

import argparse
import sys

import numpy as np


def register(subparsers) -> None:
    """Add ``adit data info`` and ``adit data download`` to the ``adit`` parser."""
    data = subparsers.add_parser("data", help="inspect and download the training datasets")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True

    info = sub.add_parser("info", help="counts, elements and atom counts of each dataset and split")
    info.add_argument("--dataset", choices=("mp20", "qm9", "all"), default="all")
    info.add_argument("--mp20-dir", default=None, help="MP-20 folder (default: $ADIT_MP20_DIR or the workplace copy)")
    info.add_argument("--qm9-dir", default=None, help="folder of qm9_part*.csv (default: the qm9pack package)")
    info.add_argument("--cache-dir", default=None, help="preprocessing cache (default: $ADIT_CACHE_DIR)")
    info.add_argument("--skip-invalid", action="store_true", help="leave out invalid rows instead of failing")
    info.set_defaults(handler=run_info)

    download = sub.add_parser("download", help="download a dataset (needs internet)")
    download.add_argument("name", choices=("mp20",))
    download.add_argument("--dest", required=True, help="folder to write train.csv, val.csv, test.csv into")
    download.add_argument("--force", action="store_true", help="download again even if the files exist")
    download.set_defaults(handler=run_download)


def split_rows(name: str, root=None, cache_dir=None, skip_invalid: bool = False) -> list[dict]:
    """One summary row per split of dataset ``name`` (and ``all``): count, atoms range/mean, elements."""
    from adit_torch.datasets import load_full, split_indices

    full, meta = load_full(name, root, cache_dir, skip_invalid)
    parts = dict(split_indices(name, full, meta))
    parts["all"] = np.arange(len(full))
    rows = []
    for split, idx in parts.items():
        part = full.subset(idx)
        n = part.num_atoms
        rows.append({
            "dataset": name, "split": split, "systems": len(part),
            "atoms_min": int(n.min()) if len(n) else 0, "atoms_max": int(n.max()) if len(n) else 0,
            "atoms_mean": float(n.mean()) if len(n) else 0.0, "elements": part.elements(),
            "skipped": len(meta.get("skipped", [])) if split == "all" else None,
        })
    return rows


def format_table(rows: list[dict]) -> str:
    """A plain-text table of :func:`split_rows` output."""
    head = f"{'dataset':<8} {'split':<7} {'systems':>8} {'atoms':>7} {'mean':>6} {'#el':>4}  elements"
    lines = [head, "-" * len(head)]
    for r in rows:
        elements = r["elements"]
        shown = " ".join(elements) if len(elements) <= 12 else " ".join(elements[:10]) + f" ... {elements[-1]}"
        lines.append(
            f"{r['dataset']:<8} {r['split']:<7} {r['systems']:>8} {r['atoms_min']:>3}-{r['atoms_max']:<3} "
            f"{r['atoms_mean']:>6.2f} {len(elements):>4}  {shown}"
        )
    return "\n".join(lines)


def run_info(args: argparse.Namespace) -> int:
    """Handler of ``adit data info``: print the table (and any skipped rows) to stdout."""
    names = ("mp20", "qm9") if args.dataset == "all" else (args.dataset,)
    roots = {"mp20": args.mp20_dir, "qm9": args.qm9_dir}
    rows = []
    for name in names:
        print(f"loading {name} ...", file=sys.stderr)
        rows.extend(split_rows(name, roots[name], args.cache_dir, args.skip_invalid))
    print(format_table(rows))
    skipped = {r["dataset"]: r["skipped"] for r in rows if r["skipped"]}
    for name, count in skipped.items():
        print(f"{name}: {count} invalid row(s) skipped", file=sys.stderr)
    return 0


def run_download(args: argparse.Namespace) -> int:
    """Handler of ``adit data download``: fetch and verify the files, then print where they are."""
    from adit_torch.datasets.download import download_mp20

    paths = download_mp20(args.dest, force=args.force)
    for path in paths:
        print(path)
    print(f"set ADIT_MP20_DIR={args.dest} to use them", file=sys.stderr)
    return 0
