#!/usr/bin/env bash
# The main job, from a fresh clone: set up, build, index a gallery, answer a query.
#
#   scripts/demo.sh                      # synthetic gallery + random-weight DeiT-Tiny
#   scripts/demo.sh ~/photos model.safetensors   # your folder and your (timm / ONNX) model
#
# Everything lands in ./demo (override with IRTDB_DEMO_DIR). Re-running is incremental.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-onnxruntime.sh
export ORT_DYLIB_PATH="$PWD/.deps/onnxruntime/libonnxruntime.so.1.32.0"
cargo build --release --locked -p irtdb --bin irtdb --example make_gallery
cargo build --release --locked -p irtdb-plugin-ort-tensorrt
irtdb=target/release/irtdb
work=${IRTDB_DEMO_DIR:-demo}
mkdir -p "$work"

gallery=${1:-}
model=${2:-}
if [ -z "$gallery" ]; then
  gallery="$work/gallery"
  [ -d "$gallery" ] || target/release/examples/make_gallery "$gallery" --classes 12 --per-class 25 --size 160
fi
if [ -z "$model" ]; then
  model="$work/deit_tiny_random.safetensors"
  [ -f "$model" ] || "$irtdb" model random --arch deit_tiny_patch16_224 --out "$model"
fi

"$irtdb" plugins
"$irtdb" index "$gallery" --db "$work/irtdb.db" --model "$model"
query=$(find "$gallery" -type f \( -name '*.jpg' -o -name '*.png' \) | sort | head -n 1)
echo
echo "query: $query"
"$irtdb" query "$query" --db "$work/irtdb.db" --k 10 --html "$work/results.html"
"$irtdb" info --db "$work/irtdb.db"
