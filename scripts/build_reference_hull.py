"""Build the offline reference convex hull shipped in ``adit_torch/resources``.

Every energy in the hull comes from the same potential (CHGNet by default) so
that energies above the hull of CHGNet-relaxed structures are self-consistent:

1. compounds: CHGNet static total energies of every unique MP-20 structure in
   the workplace copy (``--mp20-dir``, 17,259 structures), at the MP (DFT)
   geometry, batched; results are appended to ``WORK/energies.jsonl`` so an
   interrupted build resumes where it stopped;
2. elements: for each of the 89 elements of the MP elemental reference file
   the candidates are (a) CHGNet static energies of the MP-20 elemental
   structures and (b) ASE's reference crystal structure of the element
   (``ase.build.bulk``; a dimer in a 12 Å box for H, N, O, F, Cl) relaxed with
   CHGNet; the lowest energy per atom wins. Elements with no candidate fall
   back to the DFT energy per atom of the MP 2023-02-07 elemental reference
   entry, flagged ``"dft-fallback"`` in the file;
3. the result is written (gzip JSON, compact rows) atomically to ``--out``.

Run: ``python scripts/build_reference_hull.py --work-dir /work/runs/reference_hull``.
``--check N`` instead scores N random MP-20 entries against the built hull
(with each entry in the hull, and with the entry left out) and compares with
the MP values stored in MP-20; the result goes to ``--check-out`` (JSON).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from adit_torch.errors import InvalidSystemError
from adit_torch.stability.hull import HULL_FORMAT, default_hull_path
from adit_torch.stability.potentials import get_potential
from adit_torch.system import AtomicSystem

MP20_FILES = (
    "slices_raw_mp20_dataset_mini.csv.gz",
    "mp_20_pilot_train.csv.gz",
    "mp_20_pilot_val.csv.gz",
    "mp_20_biternary_val.csv.gz",
    "mp_20_pilot_test.csv.gz",
    "mp_20_biternary_test.csv.gz",
)
ELEMENT_REFERENCE = "2023-02-07-mp-elemental-reference-entries.json.gz"
DIATOMIC = {"H": 0.74, "N": 1.10, "O": 1.21, "F": 1.42, "Cl": 1.99}


def read_mp20(mp20_dir: Path) -> pd.DataFrame:
    """All unique MP-20 rows of the six workplace files, with a ``split`` column."""
    frames = []
    for name in MP20_FILES:
        df = pd.read_csv(mp20_dir / name)
        df["split"] = "train" if "train" in name or "slices" in name else ("val" if "val" in name else "test")
        frames.append(df)
    return pd.concat(frames, ignore_index=True).drop_duplicates("material_id").reset_index(drop=True)


def to_system(row) -> AtomicSystem:
    """Parse one MP-20 CIF into an :class:`AtomicSystem` with ``info['id']`` = material id."""
    from pymatgen.core import Structure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structure = Structure.from_str(row.cif, fmt="cif")
    return AtomicSystem.from_pymatgen(structure, info={"id": row.material_id})


def compound_energies(df: pd.DataFrame, potential, cache: Path, chunk: int, batch_size: int) -> dict:
    """CHGNet static energies ``{material_id: (energy eV, n_atoms, composition)}``, resumable via ``cache``."""
    done = {}
    if cache.exists():
        with cache.open() as fh:
            for line in fh:
                rec = json.loads(line)
                done[rec["id"]] = rec
    todo = df[~df.material_id.isin(done)]
    with cache.open("a") as fh, tqdm(total=len(df), initial=len(df) - len(todo), desc="CHGNet static",
                                     unit="struct", file=sys.stderr) as bar:
        for start in range(0, len(todo), chunk):
            rows = list(todo.iloc[start:start + chunk].itertuples())
            systems = [to_system(r) for r in rows]
            ok, recs = [], []
            for r, s in zip(rows, systems, strict=True):
                try:
                    potential.graph(s)
                    ok.append(s)
                except InvalidSystemError as exc:
                    recs.append({"id": r.material_id, "error": str(exc)})
            energies = potential.predict_energies(ok, batch_size=batch_size) if ok else []
            for s, e in zip(ok, energies, strict=True):
                counts = {}
                for sym in s.symbols:
                    counts[sym] = counts.get(sym, 0) + 1
                recs.append({"id": s.label, "energy": float(e), "composition": counts})
            for rec in recs:
                fh.write(json.dumps(rec) + "\n")
                done[rec["id"]] = rec
            fh.flush()
            bar.update(len(rows))
    return done


def prototype(symbol: str) -> AtomicSystem | None:
    """ASE's reference structure of an element (dimer in a box for diatomic gases), or None."""
    from ase import Atoms
    from ase.build import bulk

    if symbol in DIATOMIC:
        d = DIATOMIC[symbol]
        atoms = Atoms(f"{symbol}2", positions=[[6.0, 6.0, 6.0 - d / 2], [6.0, 6.0, 6.0 + d / 2]],
                      cell=np.eye(3) * 12.0, pbc=True)
    else:
        try:
            atoms = bulk(symbol)
        except Exception:  # ASE has no generic structure for this element  # noqa: BLE001
            return None
    return AtomicSystem.from_ase(atoms, info={"id": f"ase-{symbol}"})


def element_references(ref_entries: dict, compounds: dict, potential, fmax: float, steps: int) -> dict:
    """Per-element reference ``{symbol: {"energy_per_atom", "source", "candidates", "dft_energy_per_atom"}}``."""
    from adit_torch.stability.relax import relax_system

    out = {}
    for symbol in tqdm(sorted(ref_entries), desc="elements", file=sys.stderr):
        entry = ref_entries[symbol]
        dft = entry["energy"] / sum(entry["composition"].values())
        candidates = []
        for rec in compounds.values():
            comp = rec.get("composition")
            if comp and list(comp) == [symbol]:
                candidates.append({"source": rec["id"], "energy_per_atom": rec["energy"] / comp[symbol]})
        proto = prototype(symbol)
        if proto is not None:
            result = relax_system(proto, potential, fmax=fmax, steps=steps, relax_cell=symbol not in DIATOMIC)
            if result.ok:
                candidates.append({"source": f"ase-{symbol} relaxed ({result.status})",
                                   "energy_per_atom": result.energy / proto.num_atoms})
        if candidates:
            best = min(candidates, key=lambda c: c["energy_per_atom"])
            out[symbol] = {"energy_per_atom": best["energy_per_atom"], "source": best["source"],
                           "candidates": candidates, "dft_energy_per_atom": dft}
        else:
            out[symbol] = {"energy_per_atom": dft, "source": "dft-fallback", "candidates": [],
                           "dft_energy_per_atom": dft}
    return out


def check_hull(df: pd.DataFrame, hull_path: Path, n: int, seed: int, out: Path) -> dict:
    """E_hull of ``n`` random MP-20 entries against the hull, entry kept and left out, vs MP's values."""
    from adit_torch.stability.hull import ReferenceHull

    hull = ReferenceHull.from_file(hull_path)
    stored = {e.entry_id: e for e in hull.entries}
    sample = df[df.material_id.isin(stored)].sample(n=n, random_state=seed)
    within, left_out, mp = [], [], []
    for row in tqdm(list(sample.itertuples()), desc="check", file=sys.stderr):
        entry = stored[row.material_id]
        within.append(hull.e_above_hull(entry.composition, entry.energy))
        left_out.append(hull.excluding([row.material_id]).e_above_hull(entry.composition, entry.energy))
        mp.append(row.e_above_hull)
    within, left_out, mp = map(np.asarray, (within, left_out, mp))
    stats = {
        "hull": str(hull_path), "num_entries_checked": n, "seed": seed,
        "mp_e_above_hull_mean": float(mp.mean()),
        "in_hull": {"fraction_below_0.05": float((within < 0.05).mean()), "fraction_below_0.1": float((within < 0.1)
                    .mean()), "mean": float(within.mean()), "median": float(np.median(within)),
                    "mean_abs_diff_vs_mp": float(np.abs(within - mp).mean())},
        "left_out": {"fraction_abs_below_0.05": float((np.abs(left_out) < 0.05).mean()),
                     "fraction_below_0.1": float((left_out < 0.1).mean()),
                     "fraction_below_minus_0.1": float((left_out < -0.1).mean()),
                     "median": float(np.median(left_out))},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(stats, indent=1) + "\n")
    return stats


def main(argv=None) -> int:
    """Build the hull file; see the module docstring."""
    here = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mp20-dir", type=Path, default=here.parent / "shared" / "data" / "mp20")
    parser.add_argument("--reference-dir", type=Path, default=here.parent / "shared" / "data" / "mp_reference")
    parser.add_argument("--work-dir", type=Path, default=Path("/work/runs/reference_hull"))
    parser.add_argument("--out", type=Path, default=default_hull_path())
    parser.add_argument("--limit", type=int, default=None, help="use only the first N structures (a subset)")
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--element-fmax", type=float, default=0.02)
    parser.add_argument("--element-steps", type=int, default=300)
    parser.add_argument("--check", type=int, default=None, metavar="N",
                        help="do not build: score N random MP-20 entries against the hull at --out")
    parser.add_argument("--check-out", type=Path, default=here / "benchmarks" / "results" / "reference_hull_check.json")
    args = parser.parse_args(argv)
    if args.check:
        print(json.dumps(check_hull(read_mp20(args.mp20_dir), args.out, args.check, 0, args.check_out), indent=1))
        return 0
    torch.set_num_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    potential = get_potential("chgnet")
    df = read_mp20(args.mp20_dir)
    if args.limit:
        df = df.iloc[:args.limit]
    compounds = compound_energies(df, potential, args.work_dir / "energies.jsonl", args.chunk, args.batch_size)
    t_compounds = time.time() - t0
    with gzip.open(args.reference_dir / ELEMENT_REFERENCE, "rt") as fh:
        ref_entries = json.load(fh)
    elements = element_references(ref_entries, compounds, potential, args.element_fmax, args.element_steps)
    t_total = time.time() - t0

    split = dict(zip(df.material_id, df.split, strict=True))
    rows, failures = [], []
    for mid in df.material_id:
        rec = compounds[mid]
        if "error" in rec:
            failures.append(rec)
        elif len(rec["composition"]) > 1:
            rows.append([mid, rec["composition"], round(rec["energy"], 5), split[mid]])
    diffs = [v["energy_per_atom"] - v["dft_energy_per_atom"]
             for v in elements.values() if v["source"] != "dft-fallback"]
    payload = {
        "format": HULL_FORMAT,
        "name": "offline-mp20-chgnet",
        "potential": potential.describe(),
        "energy": "CHGNet static total energy (eV) at the MP-20 (DFT-relaxed) geometry; "
                  "elements: lowest CHGNet energy per atom over MP-20 elemental structures and relaxed ASE prototypes",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "build": {
            "command": "python scripts/build_reference_hull.py " + " ".join(argv or sys.argv[1:]),
            "mp20_files": list(MP20_FILES), "elemental_reference": ELEMENT_REFERENCE,
            "num_structures": int(len(df)), "num_compound_entries": len(rows), "num_failed": len(failures),
            "failures": failures[:50],
            "seconds_compounds": round(t_compounds, 1), "seconds_total": round(t_total, 1),
            "machine": f"{platform.machine()} {os.cpu_count()} cores (shared), torch threads {args.threads}",
            "element_sources": {k: v["source"] for k, v in elements.items()},
            "element_minus_dft_mean_abs_ev_per_atom": float(np.mean(np.abs(diffs))) if diffs else None,
        },
        "limits": "covers only the 17,259 MP-20 structures of the workplace subset (about 38% of MP-20, mostly "
                  "binary/ternary): chemical systems missing phases make energies above this hull optimistic "
                  "(too low); static energies at DFT geometries sit slightly above CHGNet minima.",
        "elements": {k: {"energy_per_atom": round(v["energy_per_atom"], 5), "source": v["source"],
                         "dft_energy_per_atom": round(v["dft_energy_per_atom"], 5)} for k, v in elements.items()},
        "entries": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    with gzip.open(tmp, "wt") as fh:
        json.dump(payload, fh, separators=(",", ":"))
    os.replace(tmp, args.out)
    (args.work_dir / "elements.json").write_text(json.dumps(elements, indent=1))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes): {len(rows)} compounds, {len(elements)} elements, "
          f"{len(failures)} failures, {t_total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
