#!/usr/bin/env bash
# Installs irtdb for daily use, so that in a new shell `irtdb doctor`, `irtdb index DIR` and
# `irtdb query IMG` work with no environment variables:
#
#   PREFIX/bin/irtdb
#   PREFIX/lib/irtdb/plugins/libirtdb_plugin_ort_tensorrt.so   (irtdb looks in ../lib/irtdb/plugins)
#   PREFIX/lib/irtdb/plugins/libonnxruntime.so                 (the ort plugin looks beside itself)
#   PREFIX/lib/irtdb/plugins/libirtdb_plugin_tch_cuda.so       (--with-tch)
#   PREFIX/lib/irtdb/plugins/libtorch/{lib,nvidia}             (--with-tch; found by the plugin's rpath)
#
# Usage:
#   scripts/install.sh [--prefix DIR] [--with-tch] [--cuda]   # build (release) and install
#   scripts/install.sh --uninstall [--prefix DIR]             # remove what was installed
# PREFIX defaults to ~/.local (put ~/.local/bin on PATH). Models fetched from the hub stay in the
# Hugging Face cache (~/.cache/huggingface/hub), shared with Python; uninstall leaves it.
# For tests: --profile debug --no-build installs what an earlier `cargo build` left in target/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
prefix="$HOME/.local"
with_tch=0
cuda=()
profile=release
build=1
uninstall=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --prefix=*) prefix="${1#*=}"; shift ;;
    --with-tch) with_tch=1; shift ;;
    --cuda) with_tch=1; cuda=(--cuda); shift ;;
    --profile) profile="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --uninstall) uninstall=1; shift ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
plugins="$prefix/lib/irtdb/plugins"

if [ "$uninstall" -eq 1 ]; then
  rm -f "$prefix/bin/irtdb"
  rm -rf "$prefix/lib/irtdb"
  echo "removed $prefix/bin/irtdb and $prefix/lib/irtdb (the Hugging Face cache is left as is)"
  exit 0
fi

case "$profile" in
  release) cargo_profile=(--release) ;;
  debug) cargo_profile=() ;;
  *) echo "install.sh: --profile is release or debug" >&2; exit 2 ;;
esac
target="${CARGO_TARGET_DIR:-$root/target}/$profile"
"$root/scripts/setup-onnxruntime.sh" >/dev/null
if [ "$build" -eq 1 ]; then
  (cd "$root" && cargo build --locked "${cargo_profile[@]}" -p irtdb -p irtdb-plugin-ort-tensorrt)
fi
for f in "$target/irtdb" "$target/libirtdb_plugin_ort_tensorrt.so"; do
  [ -f "$f" ] || { echo "install.sh: $f is missing; run without --no-build" >&2; exit 1; }
done
mkdir -p "$prefix/bin" "$plugins"
# Copy to a temporary name, then rename: a running irtdb keeps its old file.
install_file() { cp "$1" "$2.tmp.$$" && chmod "$3" "$2.tmp.$$" && mv -f "$2.tmp.$$" "$2"; }
install_file "$target/irtdb" "$prefix/bin/irtdb" 755
install_file "$target/libirtdb_plugin_ort_tensorrt.so" "$plugins/libirtdb_plugin_ort_tensorrt.so" 644
install_file "$(readlink -f "$root/.deps/onnxruntime/libonnxruntime.so")" "$plugins/libonnxruntime.so" 644

if [ "$with_tch" -eq 1 ]; then
  "$root/scripts/setup-libtorch.sh" "${cuda[@]}"
  tch_target="$root/plugins/tch-cuda/target/$profile"
  if [ "$build" -eq 1 ]; then
    (cd "$root/plugins/tch-cuda" && cargo build --locked "${cargo_profile[@]}")
  fi
  install_file "$tch_target/libirtdb_plugin_tch_cuda.so" "$plugins/libirtdb_plugin_tch_cuda.so" 644
  rm -rf "$plugins/libtorch"
  mkdir -p "$plugins/libtorch"
  cp -a "$root/.deps/libtorch/lib" "$plugins/libtorch/lib"
  [ -d "$root/.deps/libtorch/nvidia" ] && cp -a "$root/.deps/libtorch/nvidia" "$plugins/libtorch/nvidia"
fi

# System libraries irtdb loads at run time when present (it runs without them). Installed here
# when missing and the package manager can be used without a password prompt; otherwise said.
# optional_library SONAME_REGEX DEBIAN_PACKAGE WHAT_FOR WITHOUT_IT HOW_ELSEWHERE
optional_library() {
  ldconfig -p 2>/dev/null | grep -q "$1" && return 0
  local sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo -n)
  if command -v apt-get >/dev/null && "${sudo_cmd[@]}" true 2>/dev/null \
      && DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "$2" >/dev/null; then
    echo "installed $2 ($3)"
  else
    echo "note: $2 is not installed: $4;"
    echo "      install it (Debian/Ubuntu: sudo apt install $2; $5)"
  fi
}
optional_library 'libheif\.so\.1' libheif1 "HEIC/AVIF decoding" \
  "HEIC/HEIF and AVIF photos will be skipped with a reason" \
  "Fedora: sudo dnf install libheif; macOS: brew install libheif"
optional_library 'libturbojpeg\.so\.0' libturbojpeg0 "fast decoding of large JPEGs" \
  "large JPEGs are decoded ~1.5x slower" \
  "Fedora: sudo dnf install turbojpeg; macOS: brew install jpeg-turbo"

echo "installed irtdb into $prefix"
case ":$PATH:" in
  *":$prefix/bin:"*) ;;
  *) echo "note: $prefix/bin is not on PATH; add it, e.g. echo 'export PATH=\"$prefix/bin:\$PATH\"' >> ~/.bashrc" ;;
esac
"$prefix/bin/irtdb" doctor || true
