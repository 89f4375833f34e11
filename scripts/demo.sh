#!/usr/bin/env bash
# The main job, from a fresh clone, offline after the package downloads:
#
#   scripts/demo.sh                  # quickstart: train a small ViT on a generated labelled set,
#                                    # index the held-out gallery, query it, Recall@1 before/after
#   scripts/demo.sh ~/photos model.safetensors   # index and query your folder with your model
#
# Everything lands in ./demo (override with IRTDB_DEMO_DIR). IRTDB_DEMO_ITERS sets the training
# length (default 1500). Re-running reuses what is there (delete demo/ to start over).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-onnxruntime.sh
export ORT_DYLIB_PATH="$PWD/.deps/onnxruntime/libonnxruntime.so"
cargo build --release --locked -p irtdb --bin irtdb --example make_gallery
cargo build --release --locked -p irtdb-plugin-ort-tensorrt
irtdb=target/release/irtdb
work=${IRTDB_DEMO_DIR:-demo}
mkdir -p "$work"

if [ $# -gt 0 ]; then
  # Your folder, your model: index and query with the ort-tensorrt plugin.
  gallery=$1
  model=${2:?usage: scripts/demo.sh DIR MODEL}
  "$irtdb" index "$gallery" --db "$work/irtdb.db" --model "$model"
  query=$(find "$gallery" -type f \( -name '*.jpg' -o -name '*.png' \) | sort | head -n 1)
  echo "query: $query"
  "$irtdb" query "$query" --db "$work/irtdb.db" --k 10 --html "$work/results.html"
  "$irtdb" info --db "$work/irtdb.db"
  exit 0
fi

# The quickstart. The tch-cuda plugin (libtorch 2.11.0, CPU build from PyPI) trains; it goes
# into target/release/plugins, where `irtdb --plugin tch-cuda` finds it.
scripts/setup-libtorch.sh
(cd plugins/tch-cuda && cargo build --release --locked)
mkdir -p target/release/plugins
cp plugins/tch-cuda/target/release/libirtdb_plugin_tch_cuda.so target/release/plugins/
"$irtdb" plugins

# Shapes × colours × textures under random pose, scale and background: 24 classes to train on,
# 12 other classes (new combinations) held out for testing.
gen=target/release/examples/make_gallery
[ -d "$work/train" ] || "$gen" "$work/train" --classes 24 --per-class 20 --size 64 --seed 1
[ -d "$work/test" ] || "$gen" "$work/test" --classes 12 --first-class 24 --per-class 20 --size 64 --seed 2
# A small ViT (DeiT-Tiny width, 4 blocks, 64×64 input) with random weights: nothing to download.
start="$work/start.safetensors"
[ -f "$start" ] || "$irtdb" model random --arch deit_tiny_patch16_224 --depth 4 --image-size 64 \
  --seed 1 --out "$start"

# IRT_R: contrastive + cross-batch memory + KoLeo. From scratch a higher learning rate than the
# paper's fine-tuning 3e-5 is needed.
if [ ! -f "$work/run/run.json" ]; then
  "$irtdb" train --plugin tch-cuda --model "$start" --data "$work/train" --val-data "$work/test" \
    --out "$work/run" --iters "${IRTDB_DEMO_ITERS:-1500}" --batch 32 --lr 5e-4 --seed 1
fi

# Index the held-out gallery with the starting and the trained weights (ort-tensorrt plugin,
# PCA, HNSW), query it, and score both collections leave-one-out.
"$irtdb" index "$work/test" --db "$work/before.db" --model "$start" --dim 64
"$irtdb" index "$work/test" --db "$work/after.db" --model "$work/run/model.safetensors" --dim 64
query=$(find "$work/test" -type f -name '*.jpg' | sort | head -n 1)
echo
echo "query: $query"
"$irtdb" query "$query" --db "$work/after.db" --k 10 --html "$work/results.html"
echo
# Recall@1 of every held-out image against the rest, through the ort plugin's descriptors.
r1() { "$irtdb" eval --db "$1" | awk '/^full/ {print $3}'; }
echo "held-out Recall@1 (%), leave-one-out over $work/test:"
echo "  before training: $(r1 "$work/before.db")"
echo "  after training:  $(r1 "$work/after.db")"
echo "contact sheet of the query: $work/results.html"
