#!/usr/bin/env bash
# The Spark job against its yardstick, in one run: a single-machine `irtdb index` of the same
# folder with the same model, then examples/spark/irtdb_spark.py (N shards), then the same job
# again (nothing to embed: the cost of Spark + a no-op merge). Prints wall times and the job's
# merge report; the collections are left in OUT_DIR for comparison.
#
#   examples/spark/bench.sh IMAGES MODEL [SHARDS] [MASTER] [OUT_DIR]
#
# Environment: IRTDB (the binary; default target/release/irtdb, else target/debug/irtdb),
# SPARK_SUBMIT (default .deps/venv/bin/spark-submit), JAVA_HOME (default: from `java` on the
# PATH), ORT_DYLIB_PATH (default .deps/onnxruntime/libonnxruntime.so).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
images=$(realpath "$1")
model=$(realpath "$2")
shards=${3:-4}
master=${4:-local[2,2]}
out=$(realpath -m "${5:-$(mktemp -d)}")
mkdir -p "$out"
irtdb=${IRTDB:-}
if [ -z "$irtdb" ]; then
  irtdb="$root/target/release/irtdb"
  [ -x "$irtdb" ] || irtdb="$root/target/debug/irtdb"
fi
submit=${SPARK_SUBMIT:-$root/.deps/venv/bin/spark-submit}
export JAVA_HOME=${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")}
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$root/.deps/onnxruntime/libonnxruntime.so}
venv_bin=$(dirname "$submit")
export PYSPARK_PYTHON=${PYSPARK_PYTHON:-$venv_bin/python}
export PYSPARK_DRIVER_PYTHON=${PYSPARK_DRIVER_PYTHON:-$PYSPARK_PYTHON}
export SPARK_LOCAL_IP=${SPARK_LOCAL_IP:-127.0.0.1}
export PATH="$venv_bin:$PATH"
echo "irtdb $irtdb; $shards shards on $master; out $out"

now() { date +%s.%N; }
t0=$(now)
"$irtdb" index "$images" --model "$model" --db "$out/single.db" --json > "$out/single.json"
t1=$(now)
job() {
  "$submit" --master "$master" --conf spark.ui.enabled=false \
    "$root/examples/spark/irtdb_spark.py" --images "$images" --model "$model" \
    --shards "$shards" --out "$out/spark.db" --irtdb "$irtdb" 2> "$out/spark-$1.log" | tail -1
}
job 1 > "$out/spark-1.json"
t2=$(now)
job 2 > "$out/spark-2.json"
t3=$(now)
"$venv_bin/python" - "$out" "$t0" "$t1" "$t2" "$t3" <<'EOF'
import json, sys
out, t0, t1, t2, t3 = sys.argv[1], *map(float, sys.argv[2:])
single = json.load(open(f"{out}/single.json"))
first = json.load(open(f"{out}/spark-1.json"))
second = json.load(open(f"{out}/spark-2.json"))
n = single["embedded"]
print(f"single-machine irtdb index: {t1 - t0:7.1f} s  ({n} images, {n / (t1 - t0):.1f} img/s)")
emb = sum(s["report"]["embedded"] for s in first["shards"])
print(f"Spark job, first run:       {t2 - t1:7.1f} s  ({emb} embedded in {len(first['shards'])} "
      f"tasks; merge {first['merge']['seconds']:.1f} s)")
emb = sum(s["report"]["embedded"] for s in second["shards"])
m = second["merge"]
print(f"Spark job, second run:      {t3 - t2:7.1f} s  ({emb} embedded; merge {m['seconds']:.1f} s, "
      f"{m['added']} added, {m['changed']} changed, {m['removed']} removed)")
EOF
