"""Speed of the evaluation suite against a straightforward one-by-one implementation.

With no trained model yet, the "generated" sets are real held-out data plus
perturbed copies (Gaussian noise on positions, a random lattice strain for
crystals), which gives a realistic mix of duplicates and invalid samples:

* crystals: 10,000 = the MP-20 test split + perturbed copies; validity,
  uniqueness and novelty against every MP-20 structure available (train, val
  and test), distributions off (target < 5 min);
* molecules: 10,000 = QM9 test molecules + perturbed copies; everything but
  PoseBusters against the QM9 training split, with the reference SMILES cache
  cold and warm (target < 2 min); PoseBusters on 1,000 valid molecules.

The one-by-one baseline follows the published evaluators: one process, every
novelty candidate fitted against every reference structure with
``StructureMatcher.fit``; molecules written to and read from PDB files one by
one. It runs on a subset (too slow for 10,000) and is extrapolated linearly in
the number of candidates; the optimised code runs on the same subset too, so
the ratio at equal size is measured, not inferred. Writes
``benchmarks/results/evaluate_speed.json``. Usage::

    python benchmarks/evaluate_speed.py [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from adit_torch.datasets import load_dataset
from adit_torch.evaluate import check_crystal, check_molecule, evaluate_crystals, evaluate_molecules, write_json
from adit_torch.evaluate.matching import MATCHER_SETTINGS
from adit_torch.evaluate.molecules import largest_fragment_smiles, reference_smiles
from adit_torch.evaluate.posebusters import run_posebusters
from adit_torch.system import AtomicSystem

RESULTS = Path(__file__).resolve().parent / "results"
MACHINE = "2-core CPU, 24 GiB, no GPU (shared with other jobs while measured)"
RUN_DATE = "2026-11-25"


def perturbed(systems, n, sigma, strain, seed):
    """``n`` perturbed copies (position noise ``sigma`` Å, lattice strain ``strain``) cycling through ``systems``."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        s = systems[k % len(systems)].copy()
        s.info = {"id": f"perturbed-{k}-of-{s.info.get('id')}"}
        if s.lattice is not None:
            frac = s.frac_coords
            s.lattice = s.lattice @ (np.eye(3) + strain * rng.normal(size=(3, 3)))
            s.positions = frac @ s.lattice
        s.positions = s.positions + sigma * rng.normal(size=s.positions.shape)
        out.append(s)
    return out


def timed(func, *args, **kwargs):
    start = time.perf_counter()
    result = func(*args, **kwargs)
    return result, time.perf_counter() - start


# ------------------------------------------------------------------ baselines
def baseline_crystals(generated: list[AtomicSystem], reference: list[AtomicSystem]) -> dict:
    """One process, no bucketing, no pre-reduction: the published evaluators' loops."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    matcher = StructureMatcher(**MATCHER_SETTINGS)
    start = time.perf_counter()
    ref_structures = [s.to_pymatgen() for s in reference]
    convert = time.perf_counter() - start
    records = [check_crystal(s) for s in generated]
    valid = [s.to_pymatgen() for s, r in zip(generated, records) if r["valid"]]
    groups = matcher.group_structures(valid)
    per_candidate = time.perf_counter()
    novel = [not any(matcher.fit(g[0], ref) for ref in ref_structures) for g in groups]
    novelty_seconds = time.perf_counter() - per_candidate
    return {"seconds": time.perf_counter() - start, "reference_conversion_seconds": convert,
            "novelty_seconds": novelty_seconds, "num_groups": len(groups), "num_novel": int(sum(novel)),
            "num_valid": len(valid)}


def baseline_molecules(generated: list[AtomicSystem], reference: list[AtomicSystem]) -> dict:
    """One process; PDB files written and read back one by one, as the ADiT evaluator does."""
    from pymatgen.core import Molecule
    from rdkit import Chem

    def smiles_via_file(system, folder, k):
        path = os.path.join(folder, f"molecule_{k}.pdb")
        Molecule(system.numbers.tolist(), system.positions).to(filename=path, fmt="pdb")
        mol = Chem.MolFromPDBFile(path, removeHs=True)
        return None if mol is None else largest_fragment_smiles(mol)

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        ref = {smiles_via_file(s, folder, k) for k, s in enumerate(reference)}
        reference_seconds = time.perf_counter() - start
        start = time.perf_counter()
        smiles = [smiles_via_file(s, folder, k) for k, s in enumerate(generated)]
        records = [check_molecule(s) for s in generated]  # strict validity + stability, one by one
        generated_seconds = time.perf_counter() - start
    valid = [s for s in smiles if s]
    return {"reference_seconds": reference_seconds, "generated_seconds": generated_seconds,
            "num_valid": len(valid), "num_novel": len(set(valid) - ref),
            "num_stable": sum(r["molecule_stable"] for r in records)}


# ------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--crystals", type=int, default=10000)
    parser.add_argument("--molecules", type=int, default=10000)
    parser.add_argument("--posebusters", type=int, default=1000)
    parser.add_argument("--baseline-crystals", type=int, default=10)
    parser.add_argument("--baseline-molecules", type=int, default=1000)
    parser.add_argument("--baseline-reference-molecules", type=int, default=2000)
    parser.add_argument("--baseline-posebusters", type=int, default=40)
    parser.add_argument("--qm9-reference", type=int, default=0, help="use only this many training molecules (0: all)")
    parser.add_argument("--reference-timing-subset", type=int, default=10000,
                        help="QM9 training molecules canonicalised with a cold cache to time the reference step")
    parser.add_argument("--reference-from-smiles", action="store_true",
                        help="QM9 reference keys from the SMILES strings (fast) instead of the cache")
    parser.add_argument("--part", choices=("crystals", "molecules", "all"), default="all",
                        help="what to measure; results of other parts already in --out are kept")
    parser.add_argument("--out", default=str(RESULTS / "evaluate_speed.json"))
    args = parser.parse_args()
    out: dict = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    out.update({"machine": MACHINE, "date": RUN_DATE, "run_on": date.today().isoformat(), "workers": args.workers,
                "generated_sets": "real held-out data plus perturbed copies (no trained model yet)"})
    if args.part in ("crystals", "all"):
        bench_crystals(args, out)
        write_json(args.out, out)
    if args.part in ("molecules", "all"):
        bench_molecules(args, out)
        write_json(args.out, out)
    print(f"written {args.out}")


def bench_crystals(args, out: dict) -> None:
    """10,000 crystals against all of MP-20, cold and warm reduced-reference cache, and the baseline."""
    test = list(load_dataset("mp20", "test"))
    reference = list(load_dataset("mp20", "all"))
    generated = test[: args.crystals] + perturbed(test, max(0, args.crystals - len(test)), 0.05, 0.02, 0)
    os.environ["ADIT_CACHE_DIR"] = tempfile.mkdtemp(prefix="adit-eval-bench-")  # start with a cold cache
    report, cold = timed(evaluate_crystals, generated, reference, reference_name="mp20:all",
                         with_distributions=False, workers=args.workers, progress=True)
    _, seconds = timed(evaluate_crystals, generated, reference, reference_name="mp20:all",
                       with_distributions=False, workers=args.workers, progress=True)
    out["crystals"] = {"num": len(generated), "reference": "mp20:all", "reference_size": len(reference),
                       "seconds_cold_reference_cache": cold, "seconds_warm_reference_cache": seconds,
                       "target_seconds": 300, "counts": report["counts"]}
    print("crystals", out["crystals"], flush=True)
    subset = generated[: args.baseline_crystals]
    _, fast = timed(evaluate_crystals, subset, reference, with_distributions=False, workers=args.workers)
    slow = baseline_crystals(subset, reference)
    per_candidate = slow["novelty_seconds"] / max(1, slow["num_groups"])
    groups_at_full = report["counts"]["unique"]
    extrapolated = slow["reference_conversion_seconds"] + (slow["seconds"] - slow["reference_conversion_seconds"]
                                                           - slow["novelty_seconds"]) * len(generated) / len(subset)
    extrapolated += per_candidate * groups_at_full
    out["crystals_baseline"] = {
        "subset": len(subset), "optimised_seconds_on_subset": fast, "baseline_seconds_on_subset": slow["seconds"],
        "ratio_on_subset": slow["seconds"] / fast, "baseline_detail": slow,
        "baseline_extrapolated_seconds_full": extrapolated, "ratio_extrapolated_full_warm": extrapolated / seconds,
        "ratio_extrapolated_full_cold": extrapolated / cold,
        "extrapolation": "validity and grouping scale with the candidates, novelty with the unique groups",
    }
    print("crystals baseline", out["crystals_baseline"], flush=True)


def bench_molecules(args, out: dict) -> None:
    """10,000 molecules against the QM9 training split, the baseline, and PoseBusters on 1,000."""
    qm9_train, qm9_test = list(load_dataset("qm9", "train")), list(load_dataset("qm9", "test"))
    qm9_train = qm9_train[: args.qm9_reference or None]
    keep = min(len(qm9_test), int(0.8 * args.molecules))
    mols = qm9_test[:keep] + perturbed(qm9_test, args.molecules - keep, 0.1, 0.0, 1)
    # the reference step alone, cold, on a subset of the training split (it is linear in the reference size)
    part = qm9_train[: args.reference_timing_subset]
    with tempfile.TemporaryDirectory() as cache:
        os.environ["ADIT_CACHE_DIR"] = cache
        _, ref_seconds = timed(reference_smiles, part, args.workers, True)
    os.environ.pop("ADIT_CACHE_DIR", None)
    if args.reference_from_smiles:  # stands in for a warm cache: the keys are ready before the timed run
        ref_keys, _ = reference_smiles([s.info["smiles"] for s in qm9_train])
    else:
        ref_keys, _ = reference_smiles(qm9_train, args.workers, True)  # the user cache: warm after the first run
    report, warm = timed(evaluate_molecules, mols, ref_keys, reference_name="qm9:train", posebusters=False,
                         workers=args.workers, progress=True)
    cold = warm + ref_seconds * len(qm9_train) / len(part)
    out["molecules"] = {"num": len(mols), "reference": "qm9:train", "reference_size": len(qm9_train),
                        "seconds_warm_reference_cache": warm,
                        "reference_seconds_cold_on_subset": ref_seconds, "reference_timing_subset": len(part),
                        "seconds_cold_reference_cache_extrapolated": cold,
                        "reference_keys": "from SMILES strings" if args.reference_from_smiles else "3D pipeline cache",
                        "target_seconds": 120, "counts": report["counts"]}
    print("molecules", out["molecules"], flush=True)
    slow = baseline_molecules(mols[: args.baseline_molecules], qm9_train[: args.baseline_reference_molecules])
    per_mol = slow["generated_seconds"] / args.baseline_molecules
    per_ref = slow["reference_seconds"] / args.baseline_reference_molecules
    extrapolated = per_mol * len(mols) + per_ref * len(qm9_train)
    _, fast = timed(evaluate_molecules, mols[: args.baseline_molecules], False, posebusters=False,
                    workers=args.workers)
    out["molecules_baseline"] = {  # ratios against the warm and the (extrapolated) cold optimised runs
        "subset": args.baseline_molecules, "reference_subset": args.baseline_reference_molecules,
        "detail": slow, "optimised_seconds_on_subset_no_reference": fast,
        "ratio_on_subset_no_reference": slow["generated_seconds"] / fast,
        "baseline_extrapolated_seconds_full": extrapolated,
        "ratio_extrapolated_full_cold": extrapolated / cold,
        "ratio_extrapolated_full_warm": extrapolated / warm,
    }
    print("molecules baseline", out["molecules_baseline"], flush=True)

    # ---------------------------------------------------------- PoseBusters
    records = [check_molecule(m) for m in mols[: int(args.posebusters * 1.1)]]
    valid = [i for i, r in enumerate(records) if r["valid"]][: args.posebusters]
    summary, seconds = timed(run_posebusters, records, valid, workers=args.workers, progress=True)
    few = valid[: args.baseline_posebusters]
    _, serial = timed(run_posebusters, records, few, workers=1)
    out["posebusters"] = {"num": len(valid), "seconds": seconds, "all_pass_rate": summary["all_pass_rate"],
                          "serial_seconds_on_subset": serial, "serial_subset": len(few),
                          "serial_extrapolated_seconds": serial * len(valid) / len(few),
                          "ratio": serial * len(valid) / len(few) / seconds}
    print("posebusters", out["posebusters"], flush=True)


if __name__ == "__main__":
    main()
