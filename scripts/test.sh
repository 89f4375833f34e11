#!/usr/bin/env bash
# The test command: sets up what the tests need (ONNX Runtime's library from PyPI), builds the
# plugins, and runs the whole suite offline. Safe to re-run; reuses the cargo cache.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-onnxruntime.sh
export ORT_DYLIB_PATH="$PWD/.deps/onnxruntime/libonnxruntime.so.1.32.0"
# The plugin is a cdylib loaded at run time, not linked into anything the tests build: build it.
cargo build --locked -p irtdb-plugin-ort-tensorrt
cargo test --locked --workspace --no-fail-fast "$@"
