#!/usr/bin/env bash
# `--precision int8` against fp32 on TRAINED weights and a labelled set: Recall@1 (leave-one-out,
# `irtdb eval --db`) of both collections, and the cosine of every image's int8 descriptor to
# its fp32 one. (benches/precision.rs measures speed, on random weights, where recall means
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
for p in fp32 int8; do
  "$release/irtdb" index "$data" --db "$work/$p.db" --model "$model" --precision "$p" --dim 64 \
    --json >/dev/null
  echo "$p: $("$release/irtdb" eval --db "$work/$p.db" | grep -E '^(full|collection_pca)' | sed "s/^/  /")"
done
echo "(columns: Recall@1 @2 @4 @8 @10, MAP@R, in %)"
python3 - "$work/fp32.db" "$work/int8.db" <<'EOF'
import math, sqlite3, struct, sys

def vectors(db):
    rows = sqlite3.connect(db).execute(
        "SELECT i.path, d.vector FROM descriptors d JOIN images i ON i.id = d.image_id")
    return {p: struct.unpack(f"<{len(v) // 4}f", v) for p, v in rows}

a, b = vectors(sys.argv[1]), vectors(sys.argv[2])
cos = []
for k in a:
    x, y = a[k], b[k]
    dot = sum(p * q for p, q in zip(x, y))
    cos.append(dot / math.sqrt(sum(p * p for p in x) * sum(q * q for q in y)))
print(f"int8 vs fp32 descriptor cosine over {len(cos)} images: mean {sum(cos) / len(cos):.5f}, "
      f"min {min(cos):.5f}")
EOF
