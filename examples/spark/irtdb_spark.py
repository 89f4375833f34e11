#!/usr/bin/env python3
"""Index an image folder with irtdb on a Spark cluster: one task per shard, merged on the driver.

    spark-submit [--master ...] examples/spark/irtdb_spark.py \\
        --images /shared/photos --model hf-hub:timm/deit_small_patch16_224.fb_in1k \\
        --shards 64 --out /shared/photos.db [--irtdb /opt/irtdb/bin/irtdb]

Task I of N runs `irtdb index IMAGES --shard I/N --db SHARDS/shard-I-of-N.db --descriptors-only`
on an executor: irtdb picks the files whose relative path hashes to I, embeds them, and commits
them batch by batch. A task that fails (a lost executor, a crash) is retried by Spark
(spark.task.maxFailures; in local mode give the master as local[CORES,ATTEMPTS]), and the retry
resumes the shard where the failed attempt stopped: the shard databases are irtdb collections,
crash-safe and incremental. The driver then runs `irtdb merge SHARDS/*.db --db OUT`, which joins
the shards and fits the PCA and builds the HNSW index once. Run again, the job embeds only new
or changed images and the merge writes only what changed.

Every executor needs the irtdb binary (--irtdb, default `irtdb` on the PATH), its plugins, the
model (a path every machine sees, or an hf-hub: reference each executor fetches into its own
Hugging Face cache) and the image folder at the same path; the shard folder (--shard-dir,
default OUT.shards beside OUT) must be shared storage the driver can read (NFS, a parallel file
system). GPU executors: start the job with `--conf spark.executor.resource.gpu.amount=1 --conf
spark.task.resource.gpu.amount=1` (and a discovery script); each task then gets one GPU, which
this script hands to irtdb through CUDA_VISIBLE_DEVICES, and passes `--plugin tch-cuda` or the
ort plugin's CUDA/TensorRT providers via --index-arg.

The last line printed is a JSON summary: each shard's attempt count and irtdb report, and the
merge report.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", required=True, help="the image folder (same path on every executor)")
    p.add_argument("--model", help="model file or hf-hub: reference (default: irtdb's default model)")
    p.add_argument("--shards", type=int, required=True, help="number of shards = Spark tasks")
    p.add_argument("--out", required=True, help="the merged collection database")
    p.add_argument("--irtdb", default="irtdb", help="the irtdb binary on the executors and driver")
    p.add_argument("--shard-dir", help="shared folder for the shard databases (default OUT.shards)")
    p.add_argument("--plugin", help="plugin name or path, passed to irtdb index")
    p.add_argument("--dim", type=int, help="PCA dimension for the merged index (irtdb's default 128)")
    p.add_argument("--index-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for every `irtdb index` (repeatable), e.g. --index-arg=--batch=64")
    p.add_argument("--merge-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for `irtdb merge` (repeatable)")
    a = p.parse_args(argv)
    if a.shards < 1:
        p.error("--shards must be at least 1")
    return a


def shard_db(shard_dir, i, n):
    width = len(str(n - 1))
    return os.path.join(shard_dir, f"shard-{i:0{width}d}-of-{n}.db")


def last_json_line(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON summary in irtdb's output")


def index_shard(i, cfg):
    """One Spark task: irtdb index of shard i. Raises (so that Spark retries) when irtdb fails."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    attempt = ctx.attemptNumber() if ctx else 0
    env = dict(os.environ)
    env["IRTDB_SPARK_ATTEMPT"] = str(attempt)
    gpus = ctx.resources().get("gpu") if ctx else None
    if gpus is not None and gpus.addresses:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus.addresses)
    db = shard_db(cfg["shard_dir"], i, cfg["shards"])
    cmd = [cfg["irtdb"], "index", cfg["images"], "--shard", f"{i}/{cfg['shards']}", "--db", db,
           "--descriptors-only", "--wait", "--json"]
    if cfg["model"]:
        cmd += ["--model", cfg["model"]]
    if cfg["plugin"]:
        cmd += ["--plugin", cfg["plugin"]]
    cmd += cfg["index_args"]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"shard {i}/{cfg['shards']} (attempt {attempt}): `{shlex.join(cmd)}` exited "
            f"{proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return {"shard": i, "attempt": attempt, "db": db, "report": last_json_line(proc.stdout)}


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    from pyspark.sql import SparkSession

    out = os.path.abspath(args.out)
    shard_dir = os.path.abspath(args.shard_dir or out + ".shards")
    os.makedirs(shard_dir, exist_ok=True)
    cfg = {
        "images": os.path.abspath(args.images),
        "model": args.model,
        "plugin": args.plugin,
        "shards": args.shards,
        "shard_dir": shard_dir,
        "irtdb": args.irtdb,
        "index_args": list(args.index_arg),
    }
    spark = SparkSession.builder.appName(f"irtdb index {cfg['images']}").getOrCreate()
    try:
        sc = spark.sparkContext
        shards = (sc.parallelize(range(args.shards), args.shards)
                  .map(lambda i: index_shard(i, cfg))
                  .collect())
    finally:
        spark.stop()
    shards.sort(key=lambda s: s["shard"])

    merge = [args.irtdb, "merge", *[s["db"] for s in shards], "--db", out, "--json"]
    if args.dim is not None:
        merge += ["--dim", str(args.dim)]
    merge += list(args.merge_arg)
    proc = subprocess.run(merge, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        sys.exit(f"irtdb merge failed (exit {proc.returncode}): {shlex.join(merge)}")
    summary = {"out": out, "shard_dir": shard_dir, "shards": shards,
               "merge": last_json_line(proc.stdout)}
    m = summary["merge"]
    embedded = sum(s["report"].get("embedded", 0) for s in shards)
    retried = [s["shard"] for s in shards if s["attempt"] > 0]
    print(f"irtdb on Spark: {args.shards} shards, {embedded} images embedded"
          + (f", shards {retried} retried" if retried else "")
          + f"; merged into {out}: {m['images']} images ({m['added']} added, {m['changed']} "
          f"changed, {m['removed']} removed), HNSW over {m['indexed']} vectors", file=sys.stderr)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
