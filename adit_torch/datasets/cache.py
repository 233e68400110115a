"""On-disk preprocessing cache: one ``.npz`` per dataset, keyed by source checksums.

The key is the sha256 of: the dataset name, :data:`PREPROCESSING_VERSION` and
the name and sha256 of every source file. Changing any source byte, or the
preprocessing code (bump the version), gives a new key and so a cache miss.
Files are written to a temporary name and renamed, so a crash never leaves a
half-written cache entry; an unreadable entry is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from adit_torch.datasets.dataset import SystemDataset
from adit_torch.io import atomic_write

LOGGER = logging.getLogger(__name__)

#: Bump when preprocessing changes what is stored (invalidates every cache entry).
PREPROCESSING_VERSION = 2  # 2: QM9 keeps EDM's six properties


def default_cache_dir() -> Path:
    """``$ADIT_CACHE_DIR`` if set, else ``~/.cache/aiida-adit``."""
    env = os.environ.get("ADIT_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "aiida-adit"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cache_key(name: str, sources) -> tuple[str, list[dict]]:
    """Cache key (hex) of dataset ``name`` built from ``sources`` (paths), and the source records.

    Each record is ``{"file": name, "sha256": hex, "bytes": size}``.
    """
    records = [{"file": Path(p).name, "sha256": sha256_file(p), "bytes": Path(p).stat().st_size} for p in sources]
    payload = json.dumps({"name": name, "version": PREPROCESSING_VERSION, "sources": records}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest(), records


def cache_path(cache_dir: str | os.PathLike, name: str, key: str) -> Path:
    """Path of the cache entry of ``name`` with ``key``."""
    return Path(cache_dir) / f"{name}-v{PREPROCESSING_VERSION}-{key[:20]}.npz"


def save_entry(path: str | os.PathLike, dataset: SystemDataset, meta: dict) -> Path:
    """Write ``dataset`` and the JSON-serialisable ``meta`` to ``path`` atomically."""
    arrays = dataset.to_arrays()
    arrays["meta"] = np.array(json.dumps(meta))

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    return atomic_write(path, write)


def load_entry(path: str | os.PathLike, name: str) -> tuple[SystemDataset, dict] | None:
    """Read a cache entry; ``None`` when missing or unreadable (then it is rebuilt)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(str(arrays.pop("meta")))
        return SystemDataset.from_arrays(name, arrays), meta
    except Exception as exc:  # a truncated or foreign file: rebuild rather than fail
        LOGGER.warning("%s: unreadable cache entry (%s); rebuilding", path, exc)
        return None


def cached(name: str, sources, build, cache_dir=None) -> tuple[SystemDataset, dict]:
    """Load ``name`` from the cache, or call ``build() -> (dataset, meta)`` and store it.

    ``meta`` gets ``sources`` (file names, sha256, sizes), ``version`` and ``cache_file``
    added; the same dict comes back on a cache hit.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key, records = cache_key(name, sources)
    path = cache_path(cache_dir, name, key)
    hit = load_entry(path, name)
    if hit is not None:
        dataset, meta = hit
        meta["cache_hit"] = True
        return dataset, meta
    dataset, meta = build()
    meta = dict(meta, sources=records, version=PREPROCESSING_VERSION, cache_file=str(path))
    save_entry(path, dataset, meta)
    meta["cache_hit"] = False
    return dataset, meta
