#!/usr/bin/env python3
"""Yardstick for irtdb-index's HNSW: hnswlib (and faiss-cpu's IndexHNSWFlat, when installed) on
exactly the vectors the Rust report used (`--no-faiss` skips faiss, e.g. at 1M where it adds ten minutes).

    cargo run --release -p irtdb-index --example index_report -- --n 100000 --out /tmp/irtdb-bench
    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install numpy hnswlib faiss-cpu
    /tmp/venv/bin/python crates/index/benches/hnswlib_peer.py /tmp/irtdb-bench

Reads db.npy, queries.npy and gt.npy (exact top-10 rows computed by irtdb's exact_search) from
the directory, builds with the same parameters as irtdb (M=16, ef_construction=200, inner
product, all cores), then reports recall@10 and single-thread queries per second over the same
ef values, and writes peer_results.json beside the inputs. Queries run as one batch call with
one thread, so the Python loop does not count against the library.
"""

import json
import os
import sys
import time

import numpy as np

EFS = [10, 16, 24, 32, 48, 64, 100, 150, 200, 300]
K = 10


def recall(labels, gt):
    hits = sum(len(set(row[:K]) & set(g[:K])) for row, g in zip(labels, gt))
    return hits / (K * len(gt))


def best_of(n, fn):
    best = float("inf")
    out = None
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def rss():
    """(current, peak) resident memory in bytes, as the Rust report measures it."""
    fields = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            k, _, v = line.partition(":")
            fields[k] = v
    kb = lambda k: int(fields[k].split()[0]) * 1024
    return kb("VmRSS"), kb("VmHWM")


def run_hnswlib(db, queries, gt, threads):
    import hnswlib

    n, dim = db.shape
    index = hnswlib.Index(space="ip", dim=dim)
    before, _ = rss()
    t = time.perf_counter()
    index.init_index(max_elements=n, M=16, ef_construction=200, random_seed=100)
    index.add_items(db, np.arange(n), num_threads=threads)
    build_s = time.perf_counter() - t
    build_bytes = rss()[1] - before
    print(f"hnswlib {hnswlib.__version__ if hasattr(hnswlib, '__version__') else ''}: "
          f"build M=16 ef_c=200 in {build_s:.1f}s ({n / build_s:.0f} inserts/s, {threads} threads), "
          f"peak memory of the build {build_bytes / 1e6:.0f} MB")
    curve = []
    index.set_ef(EFS[0])
    index.knn_query(queries, k=K, num_threads=1)  # warm-up
    for ef in EFS:
        index.set_ef(ef)
        s, (labels, _) = best_of(2, lambda: index.knn_query(queries, k=K, num_threads=1))
        r = recall(labels, gt)
        qps = len(queries) / s
        print(f"  ef {ef:>4}: recall@10 {r:.4f}, {qps:>8.0f} QPS (1 thread)")
        curve.append({"ef": ef, "recall": r, "qps_1thread": qps})
    return {"library": "hnswlib", "build_s": build_s, "build_peak_bytes": build_bytes,
            "curve": curve}


def run_faiss(db, queries, gt, threads):
    try:
        import faiss
    except ImportError:
        print("faiss not installed; skipped")
        return None
    n, dim = db.shape
    faiss.omp_set_num_threads(threads)
    index = faiss.IndexHNSWFlat(dim, 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 200
    before, _ = rss()
    t = time.perf_counter()
    index.add(db)
    build_s = time.perf_counter() - t
    build_bytes = rss()[1] - before
    print(f"faiss {faiss.__version__} IndexHNSWFlat: build M=16 efC=200 in {build_s:.1f}s "
          f"({n / build_s:.0f} inserts/s, {threads} threads), peak memory of the build "
          f"{build_bytes / 1e6:.0f} MB")
    faiss.omp_set_num_threads(1)
    curve = []
    index.hnsw.efSearch = EFS[0]
    index.search(queries, K)  # warm-up
    for ef in EFS:
        index.hnsw.efSearch = ef
        s, (_, labels) = best_of(2, lambda: index.search(queries, K))
        r = recall(labels, gt)
        qps = len(queries) / s
        print(f"  ef {ef:>4}: recall@10 {r:.4f}, {qps:>8.0f} QPS (1 thread)")
        curve.append({"ef": ef, "recall": r, "qps_1thread": qps})
    # Exact inner-product search for comparison with irtdb's exact_search.
    flat = faiss.IndexFlatIP(dim)
    flat.add(db)
    faiss.omp_set_num_threads(threads)
    s, _ = best_of(2, lambda: flat.search(queries, K))
    print(f"faiss IndexFlatIP exact: batch {len(queries) / s:.0f} QPS ({threads} threads)")
    return {"library": "faiss-hnswflat", "build_s": build_s, "build_peak_bytes": build_bytes,
            "curve": curve,
            "flat_batch_qps": len(queries) / s}


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    d = args[0] if args else "/tmp/irtdb-bench"
    skip_faiss = "--no-faiss" in sys.argv
    db = np.load(os.path.join(d, "db.npy"))
    queries = np.load(os.path.join(d, "queries.npy"))
    gt = np.load(os.path.join(d, "gt.npy"))
    threads = os.cpu_count() or 1
    print(f"data: {db.shape[0]} x {db.shape[1]} + {len(queries)} queries; {threads} cores")
    results = {"threads": threads, "n": int(db.shape[0]), "peers": []}
    results["peers"].append(run_hnswlib(db, queries, gt, threads))
    f = None if skip_faiss else run_faiss(db, queries, gt, threads)
    if f:
        results["peers"].append(f)
    with open(os.path.join(d, "peer_results.json"), "w") as fh:
        json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
