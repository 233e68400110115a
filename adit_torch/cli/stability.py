"""``adit relax`` and ``adit hull``: relax crystals with a potential, then score them against a reference hull.

``adit relax FILE --out RELAXED.extxyz --json OUT.json`` relaxes every crystal
of FILE (extxyz, CSV with a ``cif`` column, CIF file or folder) with CHGNet by
default. RELAXED.extxyz holds the kept structures (converged, or flagged
``converged=False`` at the step limit), each with ``index`` (its position in
FILE), ``relaxed_from`` (its id), ``total_energy`` (eV) and ``relax_status``; OUT.json
lists every input with its status and, for failures, the reason. Both files
are rewritten atomically every ``--save-every`` structures, and ``--resume``
continues an interrupted run.

``adit hull FILE --reference offline|mp2023|PATH --json OUT.json`` computes the
energy above hull (eV/atom) of every crystal of FILE, taking ``total_energy``
from the file when present (as written by ``adit relax``) and a static prediction
of the potential otherwise, then stable / metastable (and, with
``--evaluation``, S.U.N. / M.S.U.N.) rates.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from adit_torch.errors import ConfigError, DataFormatError


def register(subparsers) -> None:
    """Add the ``relax`` and ``hull`` sub-commands to the ``adit`` parser."""
    from adit_torch.stability.potentials import POTENTIALS
    from adit_torch.stability.relax import OPTIMIZERS

    p = subparsers.add_parser("relax", help="relax crystals (positions + cell) with a machine-learned potential",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="extxyz, CSV with a 'cif' column, CIF file or folder of CIFs")
    p.add_argument("--out", required=True, help="relaxed structures (extxyz)")
    p.add_argument("--json", dest="json_out", default=None, help="per-structure results and summary (JSON)")
    p.add_argument("--fmax", type=float, default=0.05, help="force threshold, eV/Å (default 0.05)")
    p.add_argument("--steps", type=int, default=500, help="maximum optimiser steps (default 500)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="FIRE")
    p.add_argument("--fixed-cell", action="store_true", help="relax positions only")
    p.add_argument("--potential", choices=sorted(POTENTIALS), default="chgnet")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--max-atoms", type=int, default=500, help="larger structures fail with a reason")
    p.add_argument("--max-volume-ratio", type=float, default=3.0,
                   help="a volume change beyond this factor counts as exploded (default 3)")
    p.add_argument("--save-every", type=int, default=10, help="rewrite the outputs every N structures")
    p.add_argument("--resume", action="store_true", help="skip the structures already in --json")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_relax)

    h = subparsers.add_parser("hull", help="energy above hull and stable / metastable / S.U.N. rates",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    h.add_argument("file", help="crystals (extxyz from 'adit relax', CSV with 'cif', CIF file or folder)")
    h.add_argument("--reference", default="offline",
                   help="'offline' (shipped CHGNet/MP-20 hull), 'mp2023' (needs matbench-discovery) or a file: "
                        "JSON list of ComputedEntry dicts or CSV formula,energy (default offline)")
    h.add_argument("--json", dest="json_out", default=None, help="per-structure energies above hull and rates")
    h.add_argument("--potential", choices=sorted(POTENTIALS), default="chgnet",
                   help="potential for structures without an 'energy' in the file")
    h.add_argument("--device", default="cpu")
    h.add_argument("--relax-json", default=None,
                   help="the JSON of 'adit relax': rates then count every structure it was given, failures included")
    h.add_argument("--evaluation", default=None,
                   help="the JSON of 'adit evaluate' on the same structures (in the order of the relax input) "
                        "for S.U.N. / M.S.U.N.")
    h.add_argument("--stable-threshold", type=float, default=0.0, help="stable when E_hull <= this (eV/atom)")
    h.add_argument("--metastable-threshold", type=float, default=0.1, help="metastable when E_hull < this")
    h.add_argument("--quiet", action="store_true")
    h.set_defaults(handler=run_hull)


# ------------------------------------------------------------------ relax
def _write_json(path: Path, payload: dict) -> None:
    from adit_torch.io import atomic_write

    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n"))


def _relax_outputs(args, records, kept, potential, done: bool) -> None:
    from adit_torch.io import write_systems
    from adit_torch.stability.relax import STATUSES

    if kept:
        write_systems(args.out, [kept[i] for i in sorted(kept)], kind="extxyz")
    counts = {s: sum(r["status"] == s for r in records) for s in STATUSES}
    if args.json_out:
        _write_json(Path(args.json_out), {
            "complete": done, "input": str(args.file), "output": str(args.out),
            "potential": potential.describe(),
            "settings": {"fmax_ev_per_angstrom": args.fmax, "steps": args.steps, "optimizer": args.optimizer,
                         "relax_cell": not args.fixed_cell, "cell_filter": None if args.fixed_cell else
                         "FrechetCellFilter", "max_volume_ratio": args.max_volume_ratio},
            "num_structures": len(records), "counts": counts, "structures": records,
        })


def _previous(args) -> tuple[list[dict], dict]:
    """Records and kept structures of an interrupted run (``--resume``)."""
    from adit_torch.io import read_systems

    if not args.json_out or not Path(args.json_out).is_file():
        return [], {}
    try:
        data = json.loads(Path(args.json_out).read_text())
        records = list(data["structures"])
    except (OSError, ValueError, KeyError) as exc:
        raise DataFormatError(f"{args.json_out}: cannot resume from it ({exc})") from None
    kept = {}
    if Path(args.out).is_file():
        for s in read_systems(args.out, skip_invalid=True):
            kept[int(s.info["index"])] = s
    return records, kept


def run_relax(args: argparse.Namespace) -> int:
    """Handler of ``adit relax``; returns the exit status (6 when no structure could be kept)."""
    from tqdm import tqdm

    from adit_torch.evaluate.inputs import read_for_evaluation
    from adit_torch.stability.potentials import get_potential
    from adit_torch.stability.relax import RelaxResult, relax_system

    if args.fmax <= 0 or args.steps < 0 or args.save_every < 1 or args.max_volume_ratio <= 1:
        raise ConfigError("need --fmax > 0, --steps >= 0, --save-every >= 1 and --max-volume-ratio > 1")
    if Path(args.out).suffix.lower() not in (".extxyz", ".xyz"):
        raise ConfigError(f"--out {args.out}: relaxed structures are written as extxyz (.extxyz)")
    entries = read_for_evaluation(args.file)
    potential = get_potential(args.potential, device=args.device, max_atoms=args.max_atoms)
    records, kept = _previous(args) if args.resume else ([], {})
    records = records[:len(entries)]
    calculator = potential.ase_calculator()
    bar = tqdm(total=len(entries), initial=len(records), desc=f"relax ({potential.name})", unit="struct",
               file=sys.stderr, disable=args.quiet)
    for i in range(len(records), len(entries)):
        entry = entries[i]
        if not hasattr(entry, "numbers"):  # an Unreadable placeholder
            result = RelaxResult(index=i, id=entry.label, status="failed", reason=f"{entry.label}: {entry.reason}")
        else:
            entry.info.setdefault("id", f"{Path(args.file).name}:{i}")
            result = relax_system(entry, potential, fmax=args.fmax, steps=args.steps, optimizer=args.optimizer,
                                  relax_cell=not args.fixed_cell, max_volume_ratio=args.max_volume_ratio,
                                  index=i, calculator=calculator)
        records.append(result.to_record())
        if result.system is not None:
            result.system.info["index"] = i
            result.system.info.pop("source", None)
            kept[i] = result.system
        bar.update(1)
        bar.set_postfix(kept=len(kept), failed=len(records) - len(kept))
        if (i + 1) % args.save_every == 0:
            _relax_outputs(args, records, kept, potential, done=False)
    bar.close()
    _relax_outputs(args, records, kept, potential, done=True)
    n_fail = len(records) - len(kept)
    n_unconv = sum(r["status"] == "unconverged" for r in records)
    print(f"relaxed {len(kept)}/{len(records)} structures ({n_unconv} not converged, {n_fail} failed or exploded) "
          f"-> {args.out}")
    for r in records:
        if r["status"] in ("failed", "exploded"):
            print(f"  {r['status']}: {r['reason']}", file=sys.stderr)
    return 0 if kept else 6


# ------------------------------------------------------------------ hull
def _evaluation_records(path: str | None) -> list[dict] | None:
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text())
        return list(data["per_structure"])
    except (OSError, ValueError, KeyError) as exc:
        raise DataFormatError(f"{path}: not an 'adit evaluate' JSON with per_structure records ({exc})") from None


def run_hull(args: argparse.Namespace) -> int:
    """Handler of ``adit hull``; returns the exit status."""
    from adit_torch.evaluate.inputs import read_for_evaluation
    from adit_torch.stability.hull import load_reference_hull
    from adit_torch.stability.potentials import get_potential
    from adit_torch.stability.scoring import score_structures

    hull = load_reference_hull(args.reference)
    entries = read_for_evaluation(args.file)
    potential = get_potential(args.potential, device=args.device)
    relax_records = None
    if args.relax_json:
        try:
            relax_records = json.loads(Path(args.relax_json).read_text())["structures"]
        except (OSError, ValueError, KeyError) as exc:
            raise DataFormatError(f"{args.relax_json}: not an 'adit relax' JSON ({exc})") from None
    report = score_structures(entries, hull, potential, relax_records=relax_records,
                              evaluation=_evaluation_records(args.evaluation),
                              stable_threshold=args.stable_threshold,
                              metastable_threshold=args.metastable_threshold, progress=not args.quiet)
    report["input"] = str(args.file)
    if args.json_out:
        _write_json(Path(args.json_out), report)
    r = report["rates"]
    fmt = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"
    print(f"hull {hull.name} | potential {report['potential']['name']} | {r['counts']['structures']} structures, "
          f"{r['counts']['with_e_hull']} with E_hull | stable {fmt(r['stable_rate'])} | metastable "
          f"{fmt(r['metastable_rate'])} | S.U.N. {fmt(r['sun_rate'])} | M.S.U.N. {fmt(r['msun_rate'])}")
    return 0
