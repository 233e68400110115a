"""Our evaluator against the reference ADiT evaluator, on the same structures.

Both evaluators score the same structures: generated crystals and molecules (extxyz files
written by ``adit sample``) and real held-out data (the first ``--num-real`` MP-20 test
crystals, in their CIF cells as stored and in Niggli cells, and QM9 test molecules).
Ours runs here through the public API (:func:`adit_torch.evaluate.evaluate_crystals`,
:func:`adit_torch.evaluate.evaluate_molecules`). The reference runs in its own virtualenv
(``--reference-python``) through ``reference_evaluator_child.py``, which imports the
reference's ``CrystalGenerationEvaluator`` and ``MoleculeGenerationEvaluator`` unchanged
and gets each structure as the arrays its sampling loop passes:

* crystals: atomic numbers, fractional coordinates, lattice lengths (Å) and angles (°).
  For our samples whose read-out failed (``info["decode_failed"]``) these are the *decoded*
  lattice parameters, kept in ``info``, so the reference applies its own rules to them;
* molecules: atomic numbers and positions (Å).

Novelty references: for crystals the MP-20 training crystals our default reference uses
(given to the reference as CIF text written by pymatgen); for molecules the QM9 training
split, given to the reference as the dataset's SMILES strings (its ``smiles.pt`` holds the
same kind of list). Ours is scored with its default (SMILES made from the 3D structures,
compared without stereo tags) and, for a like-for-like number, with the same strings.

Getting the reference (it is not part of this repository)::

    git clone https://github.com/facebookresearch/all-atom-diffusion-transformer /path/adit-ref
    python3.11 -m venv /path/venv
    /path/venv/bin/pip install torch==2.13.0 numpy==2.2.2 pymatgen==2024.11.13 rdkit==2024.3.5 \\
        posebusters==0.3.1 openbabel-wheel joblib==1.4.2 tqdm lightning==2.4.0 hydra-core omegaconf rich \\
        wandb ase==3.23.0 attr attrs importlib_resources matplotlib svgwrite pandas scipy scikit-learn \\
        pymongo "setuptools<81"
    /path/venv/bin/pip install --no-deps SMACT==2.6 matminer==0.9.2   # both pin numpy < 2; they run on 2.2

(the versions of the reference's ``requirements.txt`` where pip can still install them).

Run::

    python benchmarks/reference_evaluator.py --reference-path /path/adit-ref \\
        --reference-python /path/venv/bin/python --crystals crystals.extxyz --molecules molecules.extxyz

Writes ``benchmarks/results/reference_evaluator.{json,md}``; text after the
``<!-- findings -->`` line of the Markdown file is kept across runs.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from adit_torch.datasets import default_mp20_dir, load_dataset
from adit_torch.evaluate import evaluate_crystals, evaluate_molecules
from adit_torch.evaluate.inputs import read_for_evaluation
from adit_torch.io import parse_cif
from adit_torch.system import AtomicSystem

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MACHINE = "2-core CPU, 24 GiB, no GPU"

#: (our report key, reference metric key) of the metrics both evaluators compute.
CRYSTAL_METRICS = [("structural_validity", "struct_valid_rate"), ("compositional_validity", "comp_valid_rate"),
                   ("validity", "valid_rate"), ("uniqueness", "unique_rate"), ("novelty", "novel_rate")]
MOLECULE_METRICS = [("validity", "valid_rate"), ("uniqueness", "unique_rate"), ("novelty", "novel_rate")]
#: our crystal per-structure flag -> the reference's.
CRYSTAL_FLAGS = [("structurally_valid", "struct_valid"), ("compositionally_valid", "comp_valid"),
                 ("valid", "valid")]


def crystal_arrays(system: AtomicSystem) -> dict:
    """The arrays the reference's sampling loop hands its crystal evaluator, for one crystal.

    Returns ``{"atom_types": (N,), "frac_coords": (N, 3), "lengths": (3,) Å, "angles": (3,) °}``
    (lists). A sample whose read-out failed gets its decoded lattice parameters from ``info``.
    """
    if system.info.get("decode_failed"):
        lengths = [float(x) for x in str(system.info["decoded_lengths"]).split()]
        angles = [float(x) for x in str(system.info["decoded_angles"]).split()]
    else:
        lengths, angles = system.lengths.tolist(), system.angles.tolist()
    return {"atom_types": system.numbers.tolist(), "frac_coords": system.frac_coords.tolist(),
            "lengths": lengths, "angles": angles}


def molecule_arrays(system: AtomicSystem) -> dict:
    """``{"atom_types": (N,), "pos": (N, 3) Å}`` (lists) of one molecule."""
    return {"atom_types": system.numbers.tolist(), "pos": system.positions.tolist()}


def mp20_test_raw(limit: int) -> list[AtomicSystem]:
    """The first ``limit`` MP-20 test crystals (the workplace's partial MP-20) in their CIF cells as stored."""
    path = default_mp20_dir() / "mp_20_pilot_test.csv.gz"
    out = []
    with gzip.open(path, "rt", newline="") as handle:
        for row in csv.DictReader(handle):
            out.append(parse_cif(row["cif"], {"id": row["material_id"]}))
            if len(out) == limit:
                break
    return out


def run_reference(args, sets: list[dict], crystal_reference: list[AtomicSystem], smiles: list[str]) -> dict:
    """Run ``reference_evaluator_child.py`` in the reference's environment on ``sets``."""
    spec = {"sets": sets, "remove_hs": False,
            "crystal_reference_cifs": [s.to_pymatgen().to(fmt="cif") for s in crystal_reference],
            "molecule_reference_smiles": smiles}
    with tempfile.TemporaryDirectory() as tmp:
        inputs, out = Path(tmp) / "inputs.json", Path(tmp) / "out.json"
        inputs.write_text(json.dumps(spec))
        env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
        subprocess.run([args.reference_python, str(HERE / "reference_evaluator_child.py"),
                        "--reference-path", args.reference_path, "--inputs", str(inputs), "--out", str(out)],
                       check=True, env=env, cwd=args.reference_path)
        return json.loads(out.read_text())


def compare(ours: dict, ref: dict, kind: str) -> dict:
    """Shared metrics side by side (percent) and per-structure disagreements."""
    pairs = CRYSTAL_METRICS if kind == "crystal" else MOLECULE_METRICS
    rows = {}
    for our_key, ref_key in pairs:
        a, b = ours.get(our_key), ref["metrics"].get(ref_key)
        if a is None or b is None or b < 0:
            continue
        rows[our_key] = {"ours": 100 * a, "reference": 100 * b, "difference": 100 * (a - b)}
    per = ours["per_structure"]
    disagree = {}
    if kind == "crystal":
        for our_flag, ref_flag in CRYSTAL_FLAGS:
            idx = [i for i, (r, q) in enumerate(zip(per, ref["per_structure"])) if bool(r[our_flag]) != q[ref_flag]]
            disagree[our_flag] = {"count": len(idx), "first": idx[:10]}
    else:
        idx = [i for i, (r, q) in enumerate(zip(per, ref["per_structure"])) if bool(r["valid"]) != q["valid"]]
        disagree["valid"] = {"count": len(idx), "first": idx[:10]}
        pairs_valid = [(r, q) for r, q in zip(per, ref["per_structure"]) if r["valid"] and q["valid"]]
        same = sum(1 for r, q in pairs_valid if r["smiles"] == q["smiles"])
        both = len(pairs_valid)
        disagree["smiles_identical_of_both_valid"] = {"count": same, "of": both}
        pb = ours.get("posebusters") or {}
        for name, check in (pb.get("checks") or {}).items():
            if name in ref["metrics"] and check["pass_rate"] is not None:
                rows[f"posebusters:{name}"] = {"ours": 100 * check["pass_rate"],
                                               "reference": 100 * ref["metrics"][name],
                                               "difference": 100 * (check["pass_rate"] - ref["metrics"][name])}
    return {"metrics": rows, "disagreements": disagree}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-path", required=True, help="checkout of the reference code")
    parser.add_argument("--reference-python", required=True, help="python of the reference's virtualenv")
    parser.add_argument("--crystals", required=True, help="generated crystals (extxyz from adit sample)")
    parser.add_argument("--molecules", required=True, help="generated molecules (extxyz from adit sample)")
    parser.add_argument("--samples-note", default="", help="how the samples were made (for the report)")
    parser.add_argument("--num-real", type=int, default=1000, help="real test structures per kind")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reference-output", type=Path,
                        help="reuse the reference side of an earlier run (its *_reference_raw.json) instead of "
                             "running the reference again")
    parser.add_argument("--out", default=str(RESULTS / "reference_evaluator.json"))
    args = parser.parse_args()

    crystals, molecules = read_for_evaluation(args.crystals), read_for_evaluation(args.molecules)
    unreadable = [s for s in crystals + molecules if not isinstance(s, AtomicSystem)]
    if unreadable:
        raise SystemExit(f"{len(unreadable)} sample(s) could not be read: {unreadable[0]}")
    mp_raw = mp20_test_raw(args.num_real)
    mp_niggli = [s.canonical() for s in mp_raw]
    qm9_test = list(load_dataset("qm9", "test"))[: args.num_real]
    crystal_reference = list(load_dataset("mp20", "train"))
    qm9_train = list(load_dataset("qm9", "train"))
    train_smiles = [s.info["smiles"] for s in qm9_train]

    sets = [
        {"name": "generated crystals", "kind": "crystal", "systems": crystals, "novelty": True},
        {"name": "generated molecules", "kind": "molecule", "systems": molecules, "novelty": True},
        {"name": "MP-20 test, CIF cells as stored", "kind": "crystal", "systems": mp_raw, "novelty": False},
        {"name": "MP-20 test, Niggli cells", "kind": "crystal", "systems": mp_niggli, "novelty": False},
        {"name": "QM9 test", "kind": "molecule", "systems": qm9_test, "novelty": True},
    ]
    ours, timing = {}, {}
    for item in sets:
        start = time.perf_counter()
        if item["kind"] == "crystal":
            report = evaluate_crystals(item["systems"], crystal_reference if item["novelty"] else False,
                                       reference_name="mp20:train", with_distributions=False,
                                       workers=args.workers)
            strict = evaluate_crystals(item["systems"], False, with_distributions=False, workers=args.workers,
                                       missing_electronegativity="fail")
            report["with_missing_electronegativity_fail"] = strict
        else:
            report = evaluate_molecules(item["systems"], qm9_train, reference_name="qm9:train",
                                        workers=args.workers)
            strings = evaluate_molecules(item["systems"], train_smiles, reference_name="qm9:train SMILES strings",
                                         posebusters=False, workers=args.workers)
            report["novelty_against_smiles_strings"] = strings["novelty"]
        timing[item["name"]] = time.perf_counter() - start
        ours[item["name"]] = report
        print(f"ours, {item['name']}: {timing[item['name']]:.0f} s", flush=True)

    ref_sets = [{"name": item["name"], "kind": item["kind"], "novelty": item["novelty"],
                 "structures": [(crystal_arrays if item["kind"] == "crystal" else molecule_arrays)(s)
                                for s in item["systems"]]} for item in sets]
    if args.reference_output:
        ref = json.loads(args.reference_output.read_text())
    else:
        ref = run_reference(args, ref_sets, crystal_reference, train_smiles)
        Path(args.out).with_name(Path(args.out).stem + "_reference_raw.json").write_text(json.dumps(ref))

    results = {"machine": MACHINE, "date": date.today().isoformat(),
               "load_average_start": os.getloadavg(), "samples": args.samples_note,
               "reference_commit": subprocess.run(["git", "-C", args.reference_path, "rev-parse", "HEAD"],
                                                  capture_output=True, text=True).stdout.strip(),
               "reference_versions": ref["versions"], "reference_python": ref["python"], "sets": {}}
    for item in sets:
        name = item["name"]
        comparison = compare(ours[name], ref["sets"][name], item["kind"])
        extra = {}
        if item["kind"] == "crystal":
            fail = compare(ours[name]["with_missing_electronegativity_fail"], ref["sets"][name], "crystal")
            extra = {"with_missing_electronegativity_fail": fail}
        if item["kind"] == "molecule":
            extra = {"ours_novelty_against_smiles_strings": ours[name]["novelty_against_smiles_strings"],
                     "ours_validity_connected": ours[name]["validity_connected"]}
        results["sets"][name] = {"kind": item["kind"], "num_structures": len(item["systems"]), **comparison,
                                 "reference_metrics": ref["sets"][name]["metrics"], **extra,
                                 "seconds": {"ours": timing[name], "reference": ref["sets"][name]["seconds"]}}
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    write_markdown(results, Path(args.out).with_suffix(".md"))


def write_markdown(results: dict, path: Path) -> None:
    """The comparison as Markdown tables; text after ``<!-- findings -->`` in ``path`` is kept."""
    kept = ""
    if path.exists() and "<!-- findings -->" in path.read_text():
        kept = path.read_text().split("<!-- findings -->", 1)[1]
    lines = ["# Our evaluator against the reference ADiT evaluator, same structures", "",
             f"Machine: {results['machine']}. Date: {results['date']}. Load average at start: "
             f"{', '.join(f'{x:.2f}' for x in results['load_average_start'])}. Reference commit "
             f"`{results['reference_commit']}`, Python {results['reference_python']}, "
             + ", ".join(f"{k} {v}" for k, v in results["reference_versions"].items()) + ".",
             "", f"Samples: {results['samples']}", "",
             "MP-20 numbers are on the workplace's partial MP-20 (about 38% of the dataset; the novelty reference "
             "is its 9,421 training crystals).", ""]
    for name, item in results["sets"].items():
        lines += [f"## {name} ({item['num_structures']} {item['kind']}s)", "",
                  "| metric | ours (%) | reference (%) | ours - reference (points) |", "|---|---:|---:|---:|"]
        for key, row in item["metrics"].items():
            lines.append(f"| {key} | {row['ours']:.2f} | {row['reference']:.2f} | {row['difference']:+.2f} |")
        lines.append("")
        for key, d in item["disagreements"].items():
            if "of" in d:
                lines.append(f"- {key}: {d['count']} of {d['of']}")
            else:
                lines.append(f"- per-structure disagreements on `{key}`: {d['count']}"
                             + (f" (first indices {d['first']})" if d["count"] else ""))
        if "with_missing_electronegativity_fail" in item:
            fail = item["with_missing_electronegativity_fail"]
            lines.append("- ours with `missing_electronegativity=\"fail\"` (SMACT 2.6's rule): "
                         + ", ".join(f"{k} {v['ours']:.2f} ({v['difference']:+.2f})" for k, v in fail["metrics"].items()
                                     if k != "novelty")
                         + "; per-structure disagreements "
                         + ", ".join(f"{k} {d['count']}" for k, d in fail["disagreements"].items()))
        if "ours_novelty_against_smiles_strings" in item:
            lines.append(f"- ours, novelty against the same SMILES strings the reference gets: "
                         f"{100 * item['ours_novelty_against_smiles_strings']:.2f}%")
            lines.append(f"- ours, headline validity (strict and connected): "
                         f"{100 * item['ours_validity_connected']:.2f}%")
        lines.append(f"- seconds: ours {item['seconds']['ours']:.0f}, reference {item['seconds']['reference']:.0f}")
        lines.append("")
    lines.append("<!-- findings -->" + (kept if kept else "\n"))
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
