"""PoseBusters checks of generated molecules (``PoseBusters(config="mol")``), in parallel.

The molecules busted are the valid ones, as RDKit reads them from the
OpenBabel PDB (the ADiT evaluator's input). Every check the installed
PoseBusters returns is reported (newer versions add checks), each with its pass
rate over the molecules it evaluated, plus the rate of molecules passing all of
them. PoseBusters costs ~0.4 s per molecule on one core (the energy check
embeds an ETKDG ensemble), so a random subset can be busted instead; rates then
come with 95% Wilson score intervals.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from adit_torch.evaluate.report import fraction, wilson_interval

#: Index columns of PoseBusters' result table, not checks.
_NOT_CHECKS = {"file", "molecule", "position", "mol_pred", "mol_true", "mol_cond"}


def _reset_rdkit_log_stream() -> None:
    """Point RDKit's Python log handler at the current ``sys.stderr``.

    PoseBusters routes RDKit's log through Python and, after each check, points
    the handler at whatever ``sys.stderr`` was then; if that stream has since
    been closed (a captured stream in a notebook or test), every later energy
    check fails with "I/O operation on closed file".
    """
    import sys

    import rdkit

    handler = getattr(rdkit, "log_handler", None)
    if handler is not None and hasattr(handler, "stream"):
        handler.stream = sys.stderr  # not setStream(): it would flush the closed stream first


def _bust_chunk(pdb_blocks: list[str]) -> list[dict[str, bool | None]]:
    """Bust molecules given as PDB text; one ``{check: passed}`` dict per molecule, in order."""
    from posebusters import PoseBusters
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    logging.getLogger("posebusters").setLevel(logging.CRITICAL)
    _reset_rdkit_log_stream()
    from adit_torch.evaluate.molecules import REMOVE_HS

    mols = [Chem.MolFromPDBBlock(block, removeHs=REMOVE_HS) for block in pdb_blocks]
    out: list[dict[str, bool | None]] = [{} for _ in mols]
    ok = [i for i, m in enumerate(mols) if m is not None]
    if not ok:
        return out
    table = PoseBusters(config="mol").bust([mols[i] for i in ok], None, None).reset_index(drop=True)
    columns = [c for c in table.columns if c not in _NOT_CHECKS]
    for row, i in enumerate(ok):
        for column in columns:
            value = table.at[row, column]
            out[i][column] = None if value is None or (isinstance(value, float) and np.isnan(value)) else bool(value)
    return out


def run_posebusters(records: list[dict[str, Any]], valid: list[int], subset: int | None = None, seed: int = 0,
                    workers: int = 1, progress: bool = False) -> dict[str, Any] | None:
    """Bust the valid molecules (or a random subset) and summarise per check.

    Args:
        records: per-molecule records with ``pdb`` text for the valid ones;
            ``records[i]["posebusters"]`` is set for each busted molecule.
        valid: indices of the valid molecules.
        subset: bust at most this many, drawn uniformly without replacement.
        seed: seed of the draw.
        workers: processes.
        progress: show a tqdm bar.

    Returns:
        ``{"evaluated", "of_valid", "subset", "seed", "checks", "all_passed", "all_pass_rate",
        "all_pass_ci95"}`` with ``checks = {name: {"passed", "evaluated", "pass_rate", "ci95"}}``,
        or ``None`` when there is no valid molecule.
    """
    from tqdm.auto import tqdm

    if not valid:
        return None
    chosen = list(valid)
    if subset is not None and subset < len(chosen):
        rng = np.random.default_rng(seed)
        chosen = sorted(rng.choice(chosen, size=subset, replace=False).tolist())
    chunk = 8
    blocks = [[records[i]["pdb"] for i in chosen[k:k + chunk]] for k in range(0, len(chosen), chunk)]
    bar = tqdm(total=len(chosen), desc="PoseBusters", disable=not progress, unit="mol")
    results: list[dict[str, bool | None]] = []
    if workers <= 1 or len(blocks) < 2:
        for block in blocks:
            results.extend(_bust_chunk(block))
            bar.update(len(block))
    else:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            for block, part in zip(blocks, pool.imap(_bust_chunk, blocks)):
                results.extend(part)
                bar.update(len(block))
    bar.close()
    names: list[str] = []
    for result in results:
        names.extend(k for k in result if k not in names)
    checks = {}
    for name in names:
        values = [r.get(name) for r in results if r.get(name) is not None]
        passed = int(sum(values))
        checks[name] = {"passed": passed, "evaluated": len(values), "pass_rate": fraction(passed, len(values)),
                        "ci95": wilson_interval(passed, len(values))}
    all_passed = 0
    for i, result in zip(chosen, results):
        records[i]["posebusters"] = result
        failed = [k for k, v in result.items() if v is False]
        if result and not failed:
            all_passed += 1
        elif failed:
            records[i]["reasons"].append("PoseBusters failed: " + ", ".join(failed))
        else:
            records[i]["reasons"].append("PoseBusters could not load the molecule")
    n = len(chosen)
    return {
        "config": "mol", "evaluated": n, "of_valid": len(valid), "subset": subset, "seed": seed,
        "checks": checks, "all_passed": all_passed, "all_pass_rate": fraction(all_passed, n),
        "all_pass_ci95": wilson_interval(all_passed, n),
    }
