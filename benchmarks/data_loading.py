"""Time the first (preprocessing) and second (cached) load of all MP-20 and all QM9.

Usage: ``python benchmarks/data_loading.py [--cache-dir DIR] [--out results.json]``.
The first load runs in an empty temporary cache (unless ``--cache-dir``), so it
includes parsing every CIF / XYZ row, validation and canonicalisation; the second
load reads the ``.npz`` entry (checksumming the sources included). Also timed:
the sha256 of the sources alone, and building ``AtomicSystem`` objects from the
packed arrays.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def bench(name: str, cache_dir: Path) -> dict:
    """Timings (seconds) and sizes of one dataset."""
    from adit_torch.datasets import cache, load_full
    from adit_torch.datasets.mp20 import default_mp20_dir, mp20_source_files
    from adit_torch.datasets.qm9 import default_qm9_dir, qm9_source_files

    sources = ([p for p, _ in mp20_source_files(default_mp20_dir())] if name == "mp20"
               else qm9_source_files(default_qm9_dir()))
    _, t_sha = _timed(lambda: [cache.sha256_file(p) for p in sources])
    (data, meta1), t_first = _timed(lambda: load_full(name, cache_dir=cache_dir, progress=False))
    (data2, meta2), t_second = _timed(lambda: load_full(name, cache_dir=cache_dir, progress=False))
    assert not meta1["cache_hit"] and meta2["cache_hit"] and len(data) == len(data2)
    n = min(len(data), 10_000)
    _, t_items = _timed(lambda: [data[i] for i in range(n)])
    return {
        "dataset": name, "systems": len(data), "atoms": int(len(data.numbers)),
        "source_bytes": sum(Path(p).stat().st_size for p in sources),
        "cache_bytes": Path(meta1["cache_file"]).stat().st_size,
        "first_load_s": round(t_first, 2), "second_load_s": round(t_second, 2),
        "sha256_only_s": round(t_sha, 2), "systems_per_s_first": round(len(data) / t_first, 1),
        "getitem_us": round(1e6 * t_items / n, 1), "skipped": len(meta1["skipped"]),
    }


def main() -> None:
    """Run both datasets and print/write the results as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=None, help="cache folder (default: a fresh temporary one)")
    parser.add_argument("--out", default=None, help="write the JSON results here")
    parser.add_argument("--datasets", nargs="+", default=["mp20", "qm9"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="adit-bench-") as tmp:
        cache_dir = Path(args.cache_dir or tmp)
        results = {
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                        "load_average_at_start": os.getloadavg()},
            "results": [bench(name, cache_dir) for name in args.datasets],
        }
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
