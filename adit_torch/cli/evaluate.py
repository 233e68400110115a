"""``adit evaluate``: score generated crystals or molecules with the published conventions.

Reads extxyz, a CSV with a ``cif`` column, a folder of CIFs or SDF; every entry
is scored in file order (unreadable or broken entries count as invalid, with
the reason in the per-structure records). Prints a table; ``--json`` writes the
full report (``docs/developer/contracts.md`` section 7) atomically.
"""

from __future__ import annotations

import argparse
import sys

from adit_torch.errors import ConfigError, DataFormatError


def register(subparsers) -> None:
    """Add the ``evaluate`` sub-command to the ``adit`` parser."""
    p = subparsers.add_parser(
        "evaluate", help="validity, uniqueness, novelty (+ stability, PoseBusters) of generated structures",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", help="extxyz, CSV with a 'cif' column (.csv/.csv.gz), folder of CIFs, or SDF")
    p.add_argument("--kind", choices=("crystal", "molecule"), default=None,
                   help="what the file holds (default: crystal if the first readable entry has a lattice)")
    p.add_argument("--format", dest="file_format", choices=("extxyz", "cif", "csv", "sdf"), default=None,
                   help="file format (default: from the suffix)")
    p.add_argument("--reference", default=None,
                   help="novelty reference: a dataset split such as 'mp20:train' or 'qm9:train', a structure file, "
                        "or 'none' to skip novelty (default: the training split of the kind; for crystals the "
                        "packaged partial MP-20 training split where no MP-20 copy is installed)")
    p.add_argument("--json", dest="json_out", default=None, help="write the full report here (JSON)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--oxidation-states", choices=("smact14", "icsd24"), default="smact14",
                   help="SMACT oxidation-state set for compositional validity (default: smact14, as published)")
    p.add_argument("--missing-electronegativity", choices=("pass", "fail"), default="pass",
                   help="a composition with an element lacking a Pauling electronegativity (Pm, noble gases): pass "
                        "the electronegativity test (CDVAE's convention, default) or fail it (SMACT 2.6, which the "
                        "ADiT reference pins)")
    p.add_argument("--check-cell-angles", action="store_true",
                   help="also count crystals whose cell *as given* has a lattice angle outside (50°, 130°) invalid "
                        "(off by default: validity does not depend on the cell setting; failed decodes flagged "
                        "by `adit sample` are invalid either way)")
    p.add_argument("--no-distributions", action="store_true",
                   help="skip the distribution comparison with the reference (space groups are the slow part)")
    p.add_argument("--posebusters-subset", type=int, default=None, metavar="K",
                   help="run PoseBusters on K random valid molecules (rates get 95%% Wilson intervals)")
    p.add_argument("--no-posebusters", action="store_true", help="skip PoseBusters")
    p.add_argument("--seed", type=int, default=0, help="seed of the PoseBusters subset")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=run)


def _reference(spec: str | None, kind: str):
    """Reference structures and their name from a ``--reference`` value (``None`` when skipped).

    Without ``--reference`` the library's default applies (for crystals: the MP-20 training split,
    or the packaged partial copy where no MP-20 is installed); a split asked for by name must exist.
    """
    from pathlib import Path

    if spec is None:
        if kind == "crystal":
            from adit_torch.evaluate.crystals import default_crystal_reference

            return default_crystal_reference()
        from adit_torch.evaluate.molecules import default_molecule_reference

        return default_molecule_reference()
    if spec.lower() == "none":
        return False, None
    if ":" in spec and not Path(spec).exists():
        name, split = spec.split(":", 1)
        if name not in ("mp20", "qm9"):
            raise ConfigError(
                f"--reference {spec!r}: unknown dataset {name!r}; use mp20:<split>, qm9:<split> or a file"
            )
        from adit_torch.datasets import load_dataset

        return list(load_dataset(name, split)), spec
    from adit_torch.io import read_systems

    return list(read_systems(spec, skip_invalid=True)), str(spec)


def run(args: argparse.Namespace) -> int:
    """Handler of ``adit evaluate``; returns the exit status."""
    from adit_torch.evaluate import evaluate_crystals, evaluate_molecules, format_table, write_json
    from adit_torch.evaluate.inputs import read_for_evaluation

    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {args.workers}")
    if args.posebusters_subset is not None and args.posebusters_subset < 1:
        raise ConfigError(f"--posebusters-subset must be at least 1, not {args.posebusters_subset}")
    systems = read_for_evaluation(args.file, kind=args.file_format)
    kind = args.kind
    if kind is None:
        first = next((s for s in systems if hasattr(s, "lattice")), None)
        if first is None:
            raise DataFormatError(f"{args.file}: no readable structure to tell crystals from molecules; pass --kind")
        kind = "crystal" if first.lattice is not None else "molecule"
    progress = not args.quiet and sys.stderr.isatty()
    reference, name = _reference(args.reference, kind)
    if kind == "crystal":
        report = evaluate_crystals(systems, reference, reference_name=name, oxidation_states=args.oxidation_states,
                                   missing_electronegativity=args.missing_electronegativity,
                                   cell_angle_check=args.check_cell_angles,
                                   with_distributions=not args.no_distributions, workers=args.workers,
                                   progress=progress)
    else:
        report = evaluate_molecules(systems, reference, reference_name=name, posebusters=not args.no_posebusters,
                                    posebusters_subset=args.posebusters_subset, seed=args.seed,
                                    workers=args.workers, progress=progress)
    report["source"] = str(args.file)
    print(format_table(report))
    if args.json_out:
        write_json(args.json_out, report)
        print(f"report written to {args.json_out}")
    return 0
