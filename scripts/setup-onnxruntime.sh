#!/usr/bin/env bash
# Puts ONNX Runtime's shared library at .deps/onnxruntime/ (idempotent).
#
# The library comes from the PyPI wheel of onnxruntime: pip only downloads the wheel, and
# the .so is unzipped from it; Python is not needed to use it. irtdb's ort plugin finds it through
# ORT_DYLIB_PATH, beside the plugin library, or in <data dir>/irtdb/onnxruntime (see README).
# The version is stated once, in plugins/ort-tensorrt/src/runtime.rs (ONNXRUNTIME_VERSION), and
# read from there; scripts and tests use the unversioned link .deps/onnxruntime/libonnxruntime.so.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
ORT_VERSION=$(sed -n 's/^pub const ONNXRUNTIME_VERSION: &str = "\(.*\)";$/\1/p' \
  "$root/plugins/ort-tensorrt/src/runtime.rs")
[ -n "$ORT_VERSION" ] || { echo "setup-onnxruntime: no ONNXRUNTIME_VERSION in runtime.rs" >&2; exit 1; }
dest="$root/.deps/onnxruntime"
lib="$dest/libonnxruntime.so.$ORT_VERSION"
if [ -f "$lib" ]; then
  # Everything else names the library without its version, through this link.
  ln -sf "libonnxruntime.so.$ORT_VERSION" "$dest/libonnxruntime.so"
  echo "onnxruntime $ORT_VERSION: $lib"
  exit 0
fi
mkdir -p "$dest" "$root/.deps/cache"
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --dest "$root/.deps/cache" "onnxruntime==$ORT_VERSION"
wheel=$(ls "$root"/.deps/cache/onnxruntime-"$ORT_VERSION"-*.whl | head -n 1)
tmp=$(mktemp -d)
python3 -m zipfile -e "$wheel" "$tmp" >/dev/null 2>&1 || unzip -q -o "$wheel" -d "$tmp"
cp "$tmp/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" "$lib"
rm -rf "$tmp"
ln -sf "libonnxruntime.so.$ORT_VERSION" "$dest/libonnxruntime.so"
echo "onnxruntime $ORT_VERSION: $lib"
