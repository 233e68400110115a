"""Uniqueness and novelty of crystals with pymatgen's ``StructureMatcher``, fast.

Conventions (CDVAE / FlowMM / ADiT): ``StructureMatcher(stol=0.5, angle_tol=10,
ltol=0.3)``; uniqueness groups the valid structures greedily in input order
(as ``StructureMatcher.group_structures`` does); a group is novel when its first
member matches no reference structure.

Speed without changing the answer:

* two structures can only match when their reduced compositions are equal, so
  candidates and references are bucketed by reduced composition first and only
  compared within a bucket (``fit`` would return False on the rest anyway);
* each structure is reduced (primitive cell, then Niggli) once, and ``fit`` is
  called with ``skip_structure_reduction=True`` (what ``group_structures``
  does internally); reference structures are reduced only when a candidate
  shares their composition;
* buckets are independent tasks spread over a process pool;
* reduced reference cells are cached on disk (:class:`ReferenceIndex`).

Unlike the ADiT evaluator, which compared *unreduced* structures when testing
novelty, both sides are reduced here, as ``StructureMatcher.fit`` does by default.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from adit_torch.evaluate.smact_validity import reduced_composition
from adit_torch.system import SYMBOLS, AtomicSystem

#: The matcher settings of the published crystal evaluators.
MATCHER_SETTINGS = {"stol": 0.5, "angle_tol": 10.0, "ltol": 0.3}


def composition_key(numbers) -> str:
    """Reduced composition as a string, elements by atomic number, e.g. ``"O3Fe2"`` -> ``"O3-Fe2"``."""
    elements, counts = reduced_composition(numbers)
    return "-".join(f"{SYMBOLS[z]}{c}" for z, c in zip(elements, counts))


def _matcher():
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher(**MATCHER_SETTINGS)


def _reduce(structure):
    """Primitive cell then Niggli reduction (the matcher's own preprocessing), done once per structure."""
    return _matcher()._get_reduced_structure(structure, primitive_cell=True, niggli=True)


def _structure(system: AtomicSystem):
    return system.to_pymatgen()


def _bucket_task(task):
    """Group one composition bucket and test its groups for novelty.

    Args:
        task: ``(candidate_systems, references)`` where ``references`` is
            ``None`` (no novelty) or a list of ``(reference_index, system,
            reduced_system_or_None)``.

    Returns:
        ``(labels, novel, newly_reduced)``: a group label per candidate (0, 1, ...
        in order of first appearance), a novelty flag per group (``None``
        without reference) and ``{reference_index: reduced AtomicSystem}`` for
        the references reduced here (for the cache).
    """
    candidates, references = task
    matcher = _matcher()
    reduced = [_reduce(_structure(s)) for s in candidates]
    labels = [-1] * len(reduced)
    reps: list[int] = []
    for i, structure in enumerate(reduced):
        if labels[i] >= 0:
            continue
        labels[i] = len(reps)
        reps.append(i)
        for j in range(i + 1, len(reduced)):
            if labels[j] < 0 and matcher.fit(structure, reduced[j], skip_structure_reduction=True):
                labels[j] = labels[i]
    if references is None:
        return labels, [None] * len(reps), {}
    novel = []
    newly: dict[int, AtomicSystem] = {}
    reduced_refs: list | None = None
    for i in reps:
        if not references:
            novel.append(True)
            continue
        if reduced_refs is None:
            reduced_refs = []
            for k, system, done in references:
                if done is None:
                    structure = _reduce(_structure(system))
                    newly[k] = AtomicSystem.from_pymatgen(structure)
                    reduced_refs.append(structure)
                else:
                    reduced_refs.append(_structure(done))
        novel.append(not any(matcher.fit(reduced[i], r, skip_structure_reduction=True) for r in reduced_refs))
    return labels, novel, newly


def _indexed_bucket_task(item):
    k, task = item
    return k, _bucket_task(task)


def _cache_dir() -> Path:
    return Path(os.environ.get("ADIT_CACHE_DIR", Path.home() / ".cache" / "aiida-adit")) / "evaluate"


class ReferenceIndex:
    """Reference crystals bucketed by reduced composition, with their reduced cells cached.

    A reference crystal is reduced (primitive, Niggli) the first time a
    candidate shares its composition; reduced cells are kept in memory and, with
    ``cache=True``, in ``$ADIT_CACHE_DIR/evaluate`` (keyed by a hash of the
    reference), so later evaluations against the same reference skip that work.

    Args:
        systems: reference crystals (``AtomicSystem``), e.g. the MP-20 training split.
        name: a description for reports (``"mp20:train"``).
        cache: keep reduced cells on disk.
    """

    def __init__(self, systems: Sequence[AtomicSystem], name: str = "reference", cache: bool = True):
        self.name = name
        self.systems = list(systems)
        self.size = len(self.systems)
        self.buckets: dict[str, list[int]] = defaultdict(list)
        digest = hashlib.sha256()
        for k, system in enumerate(self.systems):
            self.buckets[composition_key(system.numbers)].append(k)
            digest.update(system.numbers.tobytes())
            digest.update(np.round(system.positions, 4).tobytes())
            digest.update(np.round(system.lattice, 4).tobytes())
        self.path = _cache_dir() / f"reduced_reference_{digest.hexdigest()[:24]}.npz" if cache else None
        self.reduced: dict[int, AtomicSystem] = self._load()
        self._dirty = False

    def get(self, key: str) -> list[tuple[int, AtomicSystem, AtomicSystem | None]]:
        """``(index, system, reduced_or_None)`` of the reference crystals with reduced composition ``key``."""
        return [(k, self.systems[k], self.reduced.get(k)) for k in self.buckets.get(key, [])]

    def add_reduced(self, reduced: dict[int, AtomicSystem]) -> None:
        """Remember reduced cells computed by a matching task."""
        if reduced:
            self.reduced.update(reduced)
            self._dirty = True

    def _load(self) -> dict[int, AtomicSystem]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            with np.load(self.path, allow_pickle=False) as data:
                index, offsets = data["index"], data["offsets"]
                numbers, frac, lattices = data["numbers"], data["frac"], data["lattices"]
        except (OSError, ValueError, KeyError):
            return {}  # a damaged cache is rebuilt
        return {int(k): AtomicSystem.from_fractional(numbers[a:b], frac[a:b], lattices[i])
                for i, (k, a, b) in enumerate(zip(index, offsets[:-1], offsets[1:]))}

    def save(self) -> None:
        """Write the reduced cells to the cache (temporary name, then rename) if anything was added."""
        if self.path is None or not self._dirty or not self.reduced:
            return
        keys = sorted(self.reduced)
        systems = [self.reduced[k] for k in keys]
        offsets = np.concatenate([[0], np.cumsum([s.num_atoms for s in systems])])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.stem}.tmp{os.getpid()}.npz")
        try:
            np.savez(tmp, index=np.array(keys), offsets=offsets,
                     numbers=np.concatenate([s.numbers for s in systems]),
                     frac=np.concatenate([s.frac_coords for s in systems]),
                     lattices=np.stack([s.lattice for s in systems]))
            os.replace(tmp, self.path)
        finally:
            if tmp.exists():
                tmp.unlink()
        self._dirty = False


def _run(tasks, workers: int, progress: bool, desc: str):
    """Map :func:`_bucket_task` over tasks, in a process pool when ``workers > 1``; results in task order."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks), desc=desc, disable=not progress, unit="bucket")
    results: list = [None] * len(tasks)
    if workers <= 1 or len(tasks) < 2:
        for k, task in enumerate(tasks):
            results[k] = _bucket_task(task)
            bar.update()
    else:
        import multiprocessing as mp

        # big buckets first, in small chunks, so that no worker is left with the longest task at the end
        order = sorted(range(len(tasks)), key=lambda k: -len(tasks[k][0]) * (1 + len(tasks[k][1] or ())))
        with mp.get_context("fork").Pool(workers) as pool:
            chunk = max(1, min(8, len(tasks) // (workers * 64)))
            for k, result in pool.imap_unordered(_indexed_bucket_task, [(k, tasks[k]) for k in order], chunksize=chunk):
                results[k] = result
                bar.update()
    bar.close()
    return results


def unique_and_novel(
    systems: Sequence[AtomicSystem],
    reference: ReferenceIndex | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, list[bool | None]]:
    """Group crystals by structural equivalence and test each group against a reference.

    Args:
        systems: the crystals to compare (normally the valid ones), length M.
        reference: reference crystals; ``None`` skips novelty.
        workers: processes (default: all cores).
        progress: show a tqdm bar.

    Returns:
        ``(group, novel)``: ``group`` ``(M,)`` int, the group index of each
        crystal (groups numbered by first appearance); ``novel`` one flag per
        group (``None`` entries without reference).
    """
    workers = workers or os.cpu_count() or 1
    keys = [composition_key(s.numbers) for s in systems]
    members: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        members[key].append(i)
    bucket_keys = list(members)
    tasks = [
        ([systems[i] for i in members[key]], None if reference is None else reference.get(key))
        for key in bucket_keys
    ]
    results = _run(tasks, workers, progress, "uniqueness/novelty")
    if reference is not None:
        for result in results:
            reference.add_reduced(result[2])
        reference.save()
    # translate bucket-local labels into global groups numbered by first appearance
    local = np.empty(len(systems), dtype=np.int64)
    bucket_of = np.empty(len(systems), dtype=np.int64)
    for b, key in enumerate(bucket_keys):
        for i, label in zip(members[key], results[b][0]):
            local[i], bucket_of[i] = label, b
    group = np.empty(len(systems), dtype=np.int64)
    novel: list[bool | None] = []
    seen: dict[tuple[int, int], int] = {}
    for i in range(len(systems)):
        key = (int(bucket_of[i]), int(local[i]))
        if key not in seen:
            seen[key] = len(novel)
            novel.append(results[key[0]][1][key[1]])
        group[i] = seen[key]
    return group, novel
