"""Time building and reloading the FSDD feature cache.

Prints, for FSDD one/two/three (900 clips): time to extract every clip's MFCCs
in one process (what the coursework's per-item ``__getitem__`` pays every
epoch, the reference), the same on all cores, building the cache from
scratch through ``load_fsdd``, and loading it again; clips per second; and
peak memory.

Usage: python benchmarks/bench_features.py [--root PATH] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

from gradlab.data import FeatureConfig, load_fsdd
from gradlab.data.features import default_num_workers, extract_features
from gradlab.data.fsdd import find_fsdd_root, fsdd_files

_SHARED_FSDD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fsdd"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root",
        default=os.environ.get("GRADLAB_FSDD") or str(_SHARED_FSDD),
        help="FSDD folder (default $GRADLAB_FSDD or ../shared/data/fsdd beside the repository)",
    )
    parser.add_argument(
        "--workers", type=int, default=default_num_workers(), help="extraction processes"
    )
    parser.add_argument("--words", nargs="+", default=["one", "two", "three"], help="digit names")
    args = parser.parse_args()

    recordings = find_fsdd_root(args.root)
    files = fsdd_files(recordings, args.words)
    paths = [p for split in files.values() for p in split.paths]
    config = FeatureConfig()
    extract_features(paths[:4], config, num_workers=1, progress=False)  # warm librosa up

    start = time.perf_counter()
    extract_features(paths, config, num_workers=1, progress=False)
    serial = time.perf_counter() - start
    start = time.perf_counter()
    extract_features(paths, config, num_workers=args.workers, progress=False)
    parallel = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as cache_dir:
        options = dict(
            words=args.words,
            root=recordings,
            cache_dir=cache_dir,
            num_workers=args.workers,
            progress=False,
        )
        start = time.perf_counter()
        built = load_fsdd(**options)
        build = time.perf_counter() - start
        assert not built.info["splits"]["train"]["cache_hit"]
        tracemalloc.start()
        start = time.perf_counter()
        loaded = load_fsdd(**options)
        reload = time.perf_counter() - start
        _, reload_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert loaded.info["splits"]["train"]["cache_hit"]
        cache_bytes = sum(f.stat().st_size for f in Path(cache_dir).iterdir())

    n = len(paths)
    mib = 1024 * 1024
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    workers = f"{args.workers} processes"
    print(
        f"FSDD {'/'.join(args.words)}: {n} clips, features {tuple(built.train.x.shape[1:])}, "
        f"cache {cache_bytes / mib:.1f} MiB"
    )
    print(
        f"extract, 1 process (reference; one coursework epoch): {serial:7.2f} s "
        f"{n / serial:6.0f} clips/s"
    )
    print(
        f"extract, {workers}:{'':<26}{parallel:7.2f} s {n / parallel:6.0f} clips/s "
        f"({serial / parallel:.2f}x the reference)"
    )
    print(f"build cache from scratch, {workers}:{'':<9}{build:7.2f} s {n / build:6.0f} clips/s")
    print(
        f"reload from cache:{'':<35}{reload:7.3f} s "
        f"({serial / reload:.0f}x faster than re-extracting)"
    )
    print(
        f"peak memory: reload {reload_peak / mib:.1f} MiB traced; process RSS {self_peak:.0f} MiB; "
        f"largest worker RSS {child_peak:.0f} MiB"
    )


if __name__ == "__main__":
    main()
