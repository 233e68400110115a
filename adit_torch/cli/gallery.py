"""``adit gallery``: draw generated structures on a grid (png, svg or pdf).

    adit gallery samples.extxyz --out gallery.png
    adit gallery samples.extxyz --evaluation report.json --valid-only --num 12 --out valid.png
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    """Add ``gallery`` to the ``adit`` parser."""
    p = subparsers.add_parser(
        "gallery", help="draw generated structures on a grid (png, svg or pdf)",
        description="One panel per structure: atoms in jmol colours, the cell of crystals, the bonds of molecules "
                    "and an RDKit 2D depiction of their OpenBabel bond graph, and a title with "
                    "the reduced formula, the space group of crystals (spglib, symprec 0.1 Å) and, with "
                    "--evaluation, whether it is valid. Structures are drawn as written: nothing is relaxed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("file", help="structures: extxyz, CSV with a 'cif' column, folder of CIFs, or SDF")
    p.add_argument("--out", required=True, help="figure file; the suffix picks the format (png, svg, pdf)")
    p.add_argument("--num", type=int, default=16, help="draw the first NUM structures (after --valid-only)")
    p.add_argument("--columns", type=int, default=4, help="panels per row")
    p.add_argument("--evaluation", default=None,
                   help="the `adit evaluate --json` report of FILE: shows valid / invalid in each title")
    p.add_argument("--valid-only", action="store_true", help="draw only structures the report calls valid")
    p.add_argument("--rotation", default="15x,-25y,0z", help="projection, as ASE rotation angles in degrees")
    p.add_argument("--title", default=None, help="figure title")
    p.add_argument("--no-2d", dest="depict_2d", action="store_false",
                   help="molecules without the RDKit 2D depiction beside the 3D view")
    p.set_defaults(handler=run_gallery)


def run_gallery(args) -> int:
    """Handler of ``adit gallery``."""
    from adit_torch.errors import ConfigError
    from adit_torch.evaluate.inputs import read_for_evaluation
    from adit_torch.gallery import render_gallery, validity_of

    if args.num < 1:
        raise ConfigError(f"--num must be at least 1, got {args.num}")
    if args.valid_only and not args.evaluation:
        raise ConfigError("--valid-only needs --evaluation (the `adit evaluate --json` report of the file)")
    systems = read_for_evaluation(args.file)  # every entry in file order, as `adit evaluate` reads it
    valid = validity_of(args.evaluation, len(systems)) if args.evaluation else None
    chosen = [i for i in range(len(systems)) if not args.valid_only or valid[i]][:args.num]
    if not chosen:
        raise ConfigError(f"{args.evaluation}: no structure of {args.file} is valid; nothing to draw")
    out = render_gallery([systems[i] for i in chosen], args.out, None if valid is None else [valid[i] for i in chosen],
                         columns=args.columns, rotation=args.rotation, title=args.title, depict_2d=args.depict_2d)
    print(f"wrote {out} ({len(chosen)} structures)")
    return 0
