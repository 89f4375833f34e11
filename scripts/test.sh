#!/usr/bin/env bash
# The test command: sets up what the tests need (ONNX Runtime's library and a CPU libtorch, both
# from PyPI wheels), builds the plugins, runs clippy and rustdoc with warnings denied, and runs
# every suite offline. Safe to re-run; reuses
# the cargo and wheel caches.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-onnxruntime.sh
scripts/setup-libtorch.sh
scripts/setup-test-env.sh
export IRTDB_TEST_PYTHON="$PWD/.deps/venv/bin/python"
export ORT_DYLIB_PATH="$PWD/.deps/onnxruntime/libonnxruntime.so"
# Tests that would skip for want of a peer (the other plugin, a Python module, libheif) fail
# instead under this command.
export IRTDB_TEST_STRICT=1
# The plugins are cdylibs loaded at run time, not linked into anything the tests build. The tch
# plugin binds one libtorch exactly, so it is its own workspace (see its README); the root
# suite's training tests load it from plugins/tch-cuda/target/debug.
cargo build --locked -p irtdb-plugin-ort-tensorrt
(cd plugins/tch-cuda && cargo build --locked)
status=0
# Lints and API docs are part of passing: warnings are errors (both workspaces; the CLI's clap
# help texts are not rustdoc, so only the libraries are documented).
cargo clippy --locked --workspace --all-targets -- -D warnings || status=$?
(cd plugins/tch-cuda && cargo clippy --locked --all-targets -- -D warnings) || status=$?
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --workspace --lib || status=$?
cargo test --locked --workspace --no-fail-fast "$@" || status=$?
(cd plugins/tch-cuda && cargo test --locked --no-fail-fast) || status=$?
[ "$status" -eq 0 ] || exit "$status"
# Bounded fuzzing of image decoding, safetensors → ONNX and index-file loading from the kept
# corpus (IRTDB_FUZZ_SECONDS per target; 0 skips).
fuzz_seconds="${IRTDB_FUZZ_SECONDS:-20}"
if [ "$fuzz_seconds" -gt 0 ]; then
  scripts/fuzz.sh "$fuzz_seconds"
fi
