#!/usr/bin/env bash
# Makes libtorch 2.11.0 (the version tch 0.24.0 binds) available for building and running
# plugins/tch-cuda, from PyPI wheels, without installing PyTorch into any Python environment.
#
#   scripts/setup-libtorch.sh            # CPU: torch + the two CUDA libraries libtorch_cpu.so needs
#   scripts/setup-libtorch.sh --cuda     # also the CUDA stack libtorch_cuda.so needs
#
# Sizes: CPU: wheels 531 MB (torch) + 2 MB (cuda-runtime) + 11 MB (cupti); on disk torch/lib
# 464 MB, include 62 MB, nvidia 45 MB. --cuda: another 1.97 GB of wheels (cublas 423 MB, cudnn
# 366 MB, cufft 214 MB, cusolver 201 MB, nccl 196 MB, cusparselt 170 MB, cusparse 146 MB, ...);
# on disk torch/lib 923 MB + nvidia 2.7 GB.
#
# Idempotent: wheels are cached in .deps/cache (reused if present), extraction is skipped when the
# stamp file says the same mode was already done. Afterwards prints the environment to use.
#
# Layout (mirrors site-packages, so the RPATH baked into the wheel's libraries,
# `$ORIGIN/../../nvidia/<pkg>/lib`, finds the NVIDIA libraries without LD_LIBRARY_PATH):
#   .deps/libtorch/torch/{lib,include,share/cmake}   <- torch-2.11.0 wheel (LIBTORCH points here)
#   .deps/libtorch/nvidia/cu13/lib                   <- nvidia-cuda-runtime, nvidia-cuda-cupti, ...
#   .deps/libtorch/nvidia/{cudnn,nccl,nvshmem,cusparselt}/lib   (--cuda only)
#
# What the libraries need at load time (ldd, torch 2.11.0 cp311 manylinux_2_28 wheel):
#   libc10.so                 : nothing outside the wheel
#   libtorch_cpu.so           : libc10, libgomp (in the wheel) + libcudart.so.13 + libcupti.so.13
#   libtorch.so               : libtorch_cpu + libtorch_cuda (a hard DT_NEEDED)
#   libtorch_cuda.so          : cudart, cublas(Lt), cufft, curand, cusparse, cufile, cusparseLt,
#                               nccl, cudnn, nvshmem_host (+ libc10_cuda, libtorch_nvshmem)
# So the CPU minimum is torch --no-deps + nvidia-cuda-runtime + nvidia-cuda-cupti, and in CPU mode
# the CUDA-only libraries of the wheel are left out: torch-sys links libtorch_cuda.so whenever the
# file exists, and libtorch.so (which needs it) is then dropped by the linker's --as-needed.
set -euo pipefail

MODE=cpu
for a in "$@"; do
    case "$a" in
        --cuda) MODE=cuda ;;
        --cpu) MODE=cpu ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "unknown argument: $a (expected --cpu or --cuda)" >&2; exit 2 ;;
    esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="$ROOT/.deps"
CACHE="$DEPS/cache"
DEST="$DEPS/libtorch"
TORCH_VERSION=2.11.0
PY_TAG=cp311 # any CPython tag works: libtorch itself does not depend on the interpreter
TORCH_WHEEL="torch-${TORCH_VERSION}-${PY_TAG}-${PY_TAG}-manylinux_2_28_x86_64.whl"

# Exact pins from torch 2.11.0's METADATA (Requires-Dist: cuda-toolkit[...]==13.0.2 and the
# nvidia-* lines), resolved through cuda-toolkit 13.0.2's own METADATA.
CPU_WHEELS=(
    "nvidia-cuda-runtime==13.0.96.*"
    "nvidia-cuda-cupti==13.0.85.*"
)
CUDA_WHEELS=(
    "nvidia-cublas==13.1.0.3.*"
    "nvidia-cufft==12.0.0.61.*"
    "nvidia-cufile==1.15.1.6.*"
    "nvidia-curand==10.4.0.35.*"
    "nvidia-cusolver==12.0.4.66.*"
    "nvidia-cusparse==12.6.3.3.*"
    "nvidia-nvjitlink==13.0.88.*"
    "nvidia-cuda-nvrtc==13.0.88.*"
    "nvidia-nvtx==13.0.85.*"
    "nvidia-cudnn-cu13==9.19.0.56"
    "nvidia-cusparselt-cu13==0.8.0"
    "nvidia-nccl-cu13==2.28.9"
    "nvidia-nvshmem-cu13==3.4.5"
)
# Libraries of the torch wheel that only the CUDA mode extracts.
CUDA_ONLY_LIBS=(libtorch_cuda.so libtorch_cuda_linalg.so libc10_cuda.so libtorch_nvshmem.so
                libcaffe2_nvrtc.so)

mkdir -p "$CACHE" "$DEST"
rm -f "$DEST"/.setup-cpu-* "$DEST"/.setup-cuda-* # stamps of an earlier version of this script
STAMP="$DEST/.setup-stamp" # "<torch version> <mode>" of the last complete setup
PREVIOUS="$(cat "$STAMP" 2>/dev/null || true)"
if [[ "$PREVIOUS" == "$TORCH_VERSION $MODE" ]]; then
    echo "libtorch $TORCH_VERSION ($MODE) already set up in $DEST" >&2
else
    # 1. Wheels, cached. A copy made elsewhere (e.g. /tmp/torchdl) is picked up to save 530 MB.
    if [[ ! -f "$CACHE/$TORCH_WHEEL" ]]; then
        for c in /tmp/torchdl/"$TORCH_WHEEL"; do
            [[ -f "$c" ]] && cp "$c" "$CACHE/"
        done
    fi
    if [[ ! -f "$CACHE/$TORCH_WHEEL" ]]; then
        python3 -m pip download --no-deps --only-binary=:all: --python-version 3.11 \
            "torch==$TORCH_VERSION" -d "$CACHE"
    fi
    want=("${CPU_WHEELS[@]}")
    [[ "$MODE" == cuda ]] && want+=("${CUDA_WHEELS[@]}")
    # pip reuses a matching wheel already in -d (it reports "File was already downloaded").
    python3 -m pip download --no-deps --only-binary=:all: -d "$CACHE" "${want[@]}" >&2

    # 2. Extract only what torch-sys and the loader need.
    excludes=(torch/lib/libtorch_python.so 'torch/lib/libshm*')
    if [[ "$MODE" == cpu ]]; then
        for l in "${CUDA_ONLY_LIBS[@]}"; do excludes+=("torch/lib/$l"); done
        # A previous --cuda setup left them: remove, so that nothing links libtorch_cuda.
        for l in "${CUDA_ONLY_LIBS[@]}"; do rm -f "$DEST/torch/lib/$l"; done
        rm -rf "$DEST/nvidia"
    fi
    rm -rf "$DEST/torch/lib/libtorch_python.so" "$DEST"/torch/lib/libshm*
    unzip -q -o "$CACHE/$TORCH_WHEEL" 'torch/lib/*' 'torch/include/*' 'torch/share/cmake/*' \
        -x "${excludes[@]}" -d "$DEST"
    printf '%s' "$TORCH_VERSION" > "$DEST/torch/build-version"
    for spec in "${want[@]}"; do
        name="${spec%%=*}"; name="${name//-/_}"
        whl=$(ls -t "$CACHE"/"$name"-*.whl 2>/dev/null | head -1)
        [[ -n "$whl" ]] || { echo "wheel for $spec not found in $CACHE" >&2; exit 1; }
        unzip -q -o "$whl" 'nvidia/*' -x '*/include/*' -d "$DEST"
    done
    printf '%s %s' "$TORCH_VERSION" "$MODE" > "$STAMP"
    if [[ -n "$PREVIOUS" ]]; then
        # torch-sys decides once, when its build script runs, whether to link libtorch_cuda.
        echo "note: the setup changed ($PREVIOUS -> $TORCH_VERSION $MODE); in plugins/tch-cuda" \
             "run: cargo clean -p torch-sys -p irtdb-plugin-tch-cuda" >&2
    fi
fi

# 3. Check: every library torch-sys links must resolve.
LIB="$DEST/torch/lib"
check=("$LIB/libc10.so" "$LIB/libtorch_cpu.so")
[[ "$MODE" == cuda ]] && check+=("$LIB/libtorch_cuda.so" "$LIB/libtorch.so")
missing=$(for f in "${check[@]}"; do LD_LIBRARY_PATH= ldd "$f" | grep 'not found' || true; done)
if [[ -n "$missing" ]]; then
    echo "unresolved libraries:" >&2; echo "$missing" | sort -u >&2; exit 1
fi

NV_DIRS=$(find "$DEST/nvidia" -maxdepth 3 -type d -name lib | sort | tr '\n' ':')
du -sh "$DEST/torch/lib" "$DEST/nvidia" >&2
echo "# libtorch $TORCH_VERSION ($MODE) ready; use:"
echo "export LIBTORCH=$DEST/torch"
# Not needed by the plugin (built with an rpath) nor by libtorch (its own RPATH finds nvidia/),
# but by anything else loading libtorch, e.g. a test binary built without the plugin's build.rs.
echo "export LD_LIBRARY_PATH=$LIB:${NV_DIRS%:}\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
