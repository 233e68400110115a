"""Calibrate the evaluation suite on real data: held-out MP-20 crystals and QM9 molecules.

Real structures should score what the literature reports for the data itself:
MP-20 held-out crystals ~100% structurally valid and ~90% compositionally valid;
training crystals 0% novel against the training set; QM9 molecules ~99.0% atom
and ~95.2% molecule stable (EDM), ~95% strictly valid, and nearly all pass
PoseBusters. Writes ``benchmarks/results/evaluate_calibration.json`` (summary)
and prints a table. Usage::

    python benchmarks/evaluate_calibration.py [--workers 2] [--posebusters 300] [--train-subset 3000]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import time
from datetime import date
from pathlib import Path

import numpy as np

from adit_torch.datasets import default_mp20_dir, load_dataset
from adit_torch.evaluate import composition_validity, evaluate_crystals, evaluate_molecules, format_table, write_json
from adit_torch.evaluate.crystals import ANGLE_RANGE
from adit_torch.io import parse_cif

RESULTS = Path(__file__).resolve().parent / "results"
MACHINE = "2-core CPU, 24 GiB, no GPU"
RUN_DATE = "2026-11-25"


def _summary(report: dict, keys) -> dict:
    return {k: report.get(k) for k in keys} | {"counts": report["counts"]}


def raw_cell_angle_pass_rate(limit: int = 1000) -> tuple[int, int]:
    """How many raw MP-20 CIF cells (as stored, before Niggli reduction) have all angles in (50°, 130°)."""
    path = default_mp20_dir() / "mp_20_pilot_test.csv.gz"
    ok = total = 0
    with gzip.open(path, "rt", newline="") as handle:
        for row in csv.DictReader(handle):
            angles = parse_cif(row["cif"]).angles
            ok += bool(np.all((angles > ANGLE_RANGE[0]) & (angles < ANGLE_RANGE[1])))
            total += 1
            if total == limit:
                break
    return ok, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--posebusters", type=int, default=300, help="PoseBusters subset size")
    parser.add_argument("--train-subset", type=int, default=3000, help="training crystals tested against the train set")
    parser.add_argument("--part", choices=("crystals", "molecules", "all"), default="all",
                        help="what to calibrate; results of other parts already in --out are kept")
    parser.add_argument("--out", default=str(RESULTS / "evaluate_calibration.json"))
    args = parser.parse_args()
    results: dict = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    results.update({"machine": MACHINE, "date": RUN_DATE, "run_on": date.today().isoformat(), "workers": args.workers})
    if args.part in ("crystals", "all"):
        calibrate_crystals(args, results)
        write_json(args.out, results)
    if args.part in ("molecules", "all"):
        calibrate_molecules(args, results)
        write_json(args.out, results)
    print(f"written {args.out}")


def calibrate_crystals(args, results: dict) -> None:
    """MP-20 test vs train, raw-cell angle check, and training crystals vs the training set."""
    train, test = list(load_dataset("mp20", "train")), list(load_dataset("mp20", "test"))
    t0 = time.perf_counter()
    report = evaluate_crystals(test, reference=train, reference_name="mp20:train", workers=args.workers, progress=True)
    seconds = time.perf_counter() - t0
    print(format_table(report))
    icsd24 = sum(composition_validity(s.numbers, "icsd24")[0] for s in test)
    ok, total = raw_cell_angle_pass_rate()
    results["mp20_test_vs_train"] = _summary(report, [
        "num_structures", "lattice_angles_in_range", "structural_validity", "compositional_validity", "validity",
        "uniqueness", "novelty"]) | {
        "compositional_validity_icsd24": icsd24 / len(test), "seconds": seconds,
        "reference": report["reference"], "distributions": {
            k: report["distributions"][k] for k in ("wasserstein_density", "wasserstein_num_elements",
                                                    "wasserstein_num_atoms", "tv_elements", "tv_spacegroup")},
        "note": "MP-20 test split as loaded by adit_torch.datasets (canonical Niggli cells)",
    }
    results["mp20_raw_cif_cells_angle_pass"] = {"passed": ok, "of": total, "fraction": ok / total,
                                                "note": "cells as stored in the MP-20 CSV (first 1000 test rows)"}
    subset = train[: args.train_subset]
    t0 = time.perf_counter()
    report = evaluate_crystals(subset, reference=train, reference_name="mp20:train", workers=args.workers,
                               progress=True)
    results["mp20_train_vs_train"] = _summary(report, ["num_structures", "validity", "uniqueness", "novelty"]) | {
        "seconds": time.perf_counter() - t0}
    print(format_table(report))


def calibrate_molecules(args, results: dict) -> None:
    """QM9 test molecules vs the training split, PoseBusters on a subset."""
    qm9_train, qm9_test = list(load_dataset("qm9", "train")), list(load_dataset("qm9", "test"))
    t0 = time.perf_counter()
    report = evaluate_molecules(qm9_test, reference=qm9_train, reference_name="qm9:train",
                                posebusters_subset=args.posebusters, workers=args.workers, progress=True)
    seconds = time.perf_counter() - t0
    print(format_table(report))
    results["qm9_test_vs_train"] = _summary(report, [
        "num_structures", "validity", "validity_strict", "uniqueness", "novelty", "atom_stability",
        "molecule_stability"]) | {"seconds_including_posebusters": seconds, "reference": report["reference"],
                                  "posebusters": report["posebusters"]}


if __name__ == "__main__":
    main()
