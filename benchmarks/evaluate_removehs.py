"""ADiT-route molecule validity with RDKit's ``removeHs`` False (the reference's setting) and True, on real QM9.

For each molecule of the QM9 split the OpenBabel PDB is made once and read twice with
``MolFromPDBBlock(sanitize=True, removeHs=...)``; the script counts valid molecules, molecules
in one piece, and how often the two settings disagree on validity or on the (stereo-free)
SMILES key, and writes ``benchmarks/results/evaluate_removehs.json``.

    python benchmarks/evaluate_removehs.py --split test --limit 0 --note "2-core CPU, idle, load 1.0"
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def score(pdb: str, remove_hs: bool) -> tuple[bool, int | None, str | None]:
    """(valid, fragments, novelty key) of one PDB text read with ``removeHs=remove_hs``."""
    from rdkit import Chem

    from adit_torch.evaluate.molecules import largest_fragment_smiles, novelty_key

    mol = Chem.MolFromPDBBlock(pdb, removeHs=remove_hs)
    if mol is None:
        return False, None, None
    try:
        return True, len(Chem.GetMolFrags(mol)), novelty_key(largest_fragment_smiles(mol))
    except Exception:  # noqa: BLE001 - as the evaluator: a failure here is an invalid molecule
        return False, None, None


def main() -> None:
    """Run the comparison and write the JSON record."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=0, help="first N molecules of the split (0 = all)")
    p.add_argument("--note", default="", help="machine, date and load average")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/evaluate_removehs.json"))
    args = p.parse_args()
    from adit_torch.datasets import load_dataset
    from adit_torch.evaluate.molecules import _quiet, pdb_block

    _quiet()
    data = load_dataset("qm9", args.split)
    n = len(data) if args.limit <= 0 else min(args.limit, len(data))
    t0 = time.time()
    counts = {"molecules": n, "pdb_failed": 0}
    for setting in ("false", "true"):
        counts.update({f"valid_{setting}": 0, f"one_fragment_{setting}": 0})
    counts.update({"validity_differs": 0, "key_differs": 0, "key_matches_qm9_smiles_false": 0,
                   "key_matches_qm9_smiles_true": 0})
    examples = []
    from adit_torch.evaluate.molecules import novelty_key

    for i in range(n):
        system = data[i]
        try:
            pdb = pdb_block(system)
        except Exception:  # noqa: BLE001
            counts["pdb_failed"] += 1
            continue
        kept, removed = score(pdb, False), score(pdb, True)
        target = novelty_key(system.info.get("smiles")) if system.info.get("smiles") else None
        for setting, (valid, frags, key) in (("false", kept), ("true", removed)):
            counts[f"valid_{setting}"] += valid
            counts[f"one_fragment_{setting}"] += bool(valid and frags == 1)
            counts[f"key_matches_qm9_smiles_{setting}"] += bool(key is not None and key == target)
        counts["validity_differs"] += kept[0] != removed[0]
        if kept[0] and removed[0] and kept[2] != removed[2]:
            counts["key_differs"] += 1
            if len(examples) < 10:
                examples.append({"id": system.info.get("id"), "removeHs_false": kept[2], "removeHs_true": removed[2]})
    record = {"note": args.note, "split": args.split, "seconds": round(time.time() - t0, 1), "counts": counts,
              "rates": {k: counts[k] / max(1, n) for k in counts if k != "molecules"},
              "examples_key_differs": examples, "cpu_count": os.cpu_count()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print(json.dumps(record["rates"], indent=1))


if __name__ == "__main__":
    main()
