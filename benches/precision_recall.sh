#!/usr/bin/env bash
# `--precision int8` (ort-tensorrt) and `bf16` (tch-cuda, when its plugin is in RELEASE_DIR/plugins)
# against fp32 on TRAINED weights and a labelled set: Recall@1 (leave-one-out, `irtdb eval --db`)
# of each collection, and the cosine of every image's descriptor to its fp32 one. (benches/precision.rs measures speed, on random weights, where recall means
# nothing.)
#
#     benches/precision_recall.sh [MODEL.safetensors] [LABELLED_DIR] [RELEASE_DIR]
#
# Defaults: the model and held-out classes of the quickstart (scripts/demo.sh: demo/run/
# model.safetensors, demo/test). A larger held-out set, as in the issue note:
#     target/release/examples/make_gallery /tmp/r/test --classes 12 --first-class 24 \
#         --per-class 50 --size 64 --seed 2
# Needs ORT_DYLIB_PATH (scripts/setup-onnxruntime.sh) unless the library is installed, and
# python3 (standard library only) for the cosines.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
model=${1:-$root/demo/run/model.safetensors}
data=${2:-$root/demo/test}
release=${3:-$root/target/release}
[ -f "$model" ] || { echo "no model $model: run scripts/demo.sh first, or pass a trained .safetensors" >&2; exit 2; }
[ -d "$data" ] || { echo "no labelled folder $data (one sub-folder per class)" >&2; exit 2; }
: "${ORT_DYLIB_PATH:=$root/.deps/onnxruntime/libonnxruntime.so}"
export ORT_DYLIB_PATH IRTDB_PLUGIN_PATH="$release"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "model: $model"
echo "labelled set: $data ($(find "$data" -type f | wc -l) files)"
runs="fp32:ort-tensorrt int8:ort-tensorrt"
[ -f "$release/plugins/libirtdb_plugin_tch_cuda.so" ] && runs="$runs bf16:tch-cuda"
for run in $runs; do
  p=${run%%:*} plugin=${run#*:}
  "$release/irtdb" index "$data" --db "$work/$p.db" --model "$model" --precision "$p" --dim 64 \
    --plugin "$plugin" --json >/dev/null
  echo "$p ($plugin): $("$release/irtdb" eval --db "$work/$p.db" | grep -E '^(full|collection_pca)' | sed "s/^/  /")"
done
echo "(columns: Recall@1 @2 @4 @8 @10, MAP@R, in %)"
# shellcheck disable=SC2086
python3 - "$work" $runs <<'EOF'
import math, os, sqlite3, struct, sys

def vectors(db):
    rows = sqlite3.connect(db).execute(
        "SELECT i.path, d.vector FROM descriptors d JOIN images i ON i.id = d.image_id")
    return {p: struct.unpack(f"<{len(v) // 4}f", v) for p, v in rows}

work, runs = sys.argv[1], [r.split(":")[0] for r in sys.argv[2:]]
base = vectors(os.path.join(work, "fp32.db"))
for p in runs[1:]:
    other, cos = vectors(os.path.join(work, f"{p}.db")), []
    for k in base:
        x, y = base[k], other[k]
        dot = sum(a * b for a, b in zip(x, y))
        cos.append(dot / math.sqrt(sum(a * a for a in x) * sum(b * b for b in y)))
    print(f"{p} vs fp32 descriptor cosine over {len(cos)} images: mean {sum(cos) / len(cos):.5f}, "
          f"min {min(cos):.5f}")
EOF
