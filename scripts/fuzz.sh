#!/usr/bin/env bash
# Builds and runs every cargo-fuzz target under fuzz/ for a bounded time each.
#
#   scripts/fuzz.sh [SECONDS]        # default 30 s per target
#   FUZZ_TARGETS="hnsw_load" scripts/fuzz.sh 600
#
# What it fuzzes (see fuzz/README.md): image decoding + preprocessing, the safetensors → ONNX
# path, and loading HNSW index files. cargo-fuzz needs `-Z` flags: a nightly toolchain is used
# when rustup has one, else the stable one with RUSTC_BOOTSTRAP=1. cargo-fuzz is installed
# with `cargo install --locked cargo-fuzz` if missing. Seeds come from fuzz/corpus/<target>/
# (committed, read-only here); what a run discovers goes to fuzz/work/<target>/ (ignored by
# git), crashes to fuzz/artifacts/<target>/. Exits non-zero on the first crash, printing how to
# reproduce it.
set -euo pipefail

seconds="${1:-30}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  cargo=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  cargo=(cargo fuzz)
fi

targets="${FUZZ_TARGETS:-$("${cargo[@]}" list --fuzz-dir fuzz)}"
"${cargo[@]}" build --fuzz-dir fuzz

for t in $targets; do
  mkdir -p "fuzz/work/$t"
  echo "== $t: ${seconds}s"
  leaks=1
  # Memory limits: the targets' decode limits keep honest inputs far below these; one bigger
  # allocation is a finding (a size taken from the input without a bound).
  ASAN_OPTIONS="detect_leaks=$leaks" "${cargo[@]}" run --fuzz-dir fuzz "$t" "fuzz/work/$t" \
    "fuzz/corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=512 \
    -timeout=20 -print_final_stats=1 -detect_leaks="$leaks"
done
echo "fuzzing done: no crash in ${seconds}s per target ($targets)"
