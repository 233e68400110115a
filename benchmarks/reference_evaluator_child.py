"""Run the reference ADiT evaluator on structures prepared by ``reference_evaluator.py``.

This file runs in the reference code's own Python environment (not ours): it imports
``src.eval.crystal_generation`` and ``src.eval.molecule_generation`` from the reference
checkout given as ``--reference-path``, feeds them the arrays in ``--inputs`` exactly as
its sampling loop does (one dict per structure), calls ``get_metrics`` and writes, for every
structure, the evaluator's own per-structure verdicts plus its summary metrics to ``--out``
(JSON). Nothing of the reference is replaced or patched.

Input (``--inputs``, JSON): ``{"sets": [{"name", "kind": "crystal"|"molecule", "structures":
[...], "novelty": bool}], "crystal_reference_cifs": [...], "molecule_reference_smiles": [...],
"remove_hs": bool}``; a crystal is ``{"atom_types", "frac_coords", "lengths", "angles"}``
(atomic numbers, fractional coordinates, Å, degrees), a molecule ``{"atom_types", "pos"}``
(atomic numbers, Å).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import numpy as np


def _crystals(evaluator_cls, structures, reference_cifs, novelty):
    evaluator = evaluator_cls(dataset_cif_list=reference_cifs, compute_novelty=novelty)
    for i, s in enumerate(structures):
        evaluator.append_pred_array({
            "atom_types": np.asarray(s["atom_types"], dtype=np.int64),
            "frac_coords": np.asarray(s["frac_coords"], dtype=np.float64).reshape(-1, 3),
            "lengths": np.asarray(s["lengths"], dtype=np.float64).reshape(1, 3),
            "angles": np.asarray(s["angles"], dtype=np.float64).reshape(1, 3),
            "sample_idx": i,
        })
    metrics = {k: float(v.float().mean()) for k, v in evaluator.get_metrics().items()}
    per = [{"valid": bool(c.valid), "struct_valid": bool(c.struct_valid), "comp_valid": bool(c.comp_valid),
            "constructed": bool(getattr(c, "constructed", False))} for c in evaluator.pred_crys_list]
    return metrics, per


def _molecules(evaluator_cls, structures, reference_smiles, remove_hs):
    evaluator = evaluator_cls(dataset_smiles_list=reference_smiles, removeHs=remove_hs)
    for i, s in enumerate(structures):
        evaluator.append_pred_array({"atom_types": np.asarray(s["atom_types"], dtype=np.int64),
                                     "pos": np.asarray(s["pos"], dtype=np.float64).reshape(-1, 3),
                                     "sample_idx": i})
    with tempfile.TemporaryDirectory() as tmp:
        metrics = {k: float(v) for k, v in evaluator.get_metrics(save=True, save_dir=tmp).items()}
    per = [{"valid": bool(valid), "smiles": smiles} for (_mol, smiles, _img, valid) in evaluator.pred_rdkit_list]
    return metrics, per


def _joblib_cores(cores: int) -> None:
    """Tell joblib the machine has ``cores`` cores (results are unchanged; only the worker count is).

    The reference maps with ``n_jobs=-4`` (``cpu_count() - 3`` workers). Below 5 cores that is one
    worker, and joblib (>= 1.3, which its ``parallel_config`` import needs) then runs the tasks
    sequentially without calling ``dispatch_one_batch``, where the reference's progress-bar
    subclass creates its bar: ``print_progress`` fails on ``None``. With ``cores`` >= 5 the
    reference's own parallel path runs (on a small machine, oversubscribed).
    """
    from joblib import _parallel_backends

    real = _parallel_backends.cpu_count
    _parallel_backends.cpu_count = lambda *a, **k: max(cores, real(*a, **k))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reference-path", required=True)
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cores", type=int, default=5,
                        help="core count joblib is told (the reference needs at least 5, see _joblib_cores)")
    args = parser.parse_args()
    sys.path.insert(0, args.reference_path)
    _joblib_cores(args.cores)
    from src.eval.crystal_generation import CrystalGenerationEvaluator
    from src.eval.molecule_generation import MoleculeGenerationEvaluator

    with open(args.inputs) as handle:
        spec = json.load(handle)
    results = {"python": sys.version.split()[0], "sets": {}}
    for item in spec["sets"]:
        start = time.perf_counter()
        if item["kind"] == "crystal":
            metrics, per = _crystals(CrystalGenerationEvaluator, item["structures"],
                                     spec["crystal_reference_cifs"], item["novelty"])
        else:
            metrics, per = _molecules(MoleculeGenerationEvaluator, item["structures"],
                                      spec["molecule_reference_smiles"], spec["remove_hs"])
        results["sets"][item["name"]] = {"metrics": metrics, "per_structure": per,
                                         "seconds": time.perf_counter() - start}
        print(f"{item['name']}: {metrics}", flush=True)
    versions = {}
    for name in ("pymatgen", "smact", "rdkit", "posebusters", "matminer", "numpy", "openbabel"):
        try:
            from importlib.metadata import version

            versions[name] = version({"openbabel": "openbabel-wheel", "smact": "SMACT"}.get(name, name))
        except Exception as err:  # noqa: BLE001 - a version we cannot read is reported, not fatal
            versions[name] = f"unknown ({err.__class__.__name__})"
    results["versions"] = versions
    with open(args.out, "w") as handle:
        json.dump(results, handle)


if __name__ == "__main__":
    main()
