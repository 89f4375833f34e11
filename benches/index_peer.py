"""`irtdb index` against the Python pipeline people would write (Pillow decode + timm's
preprocessing + onnxruntime on timm's ONNX export of the same weights), on the same JPEGs, in
one run; and `irtdb index` on 12-megapixel photos against 800×600 ones.

    irtdb model random --arch deit_small_patch16_224 --out /tmp/g/m.safetensors
    PY benches/ort_graphs.py /tmp/g/m.safetensors /tmp/g/irtdb.onnx deit_small_patch16_224  # writes /tmp/g/irtdb.timm.onnx
    cargo build --release -p irtdb-plugin-ort-tensorrt --bin irtdb
    PY benches/index_peer.py /tmp/g/m.safetensors /tmp/g/irtdb.timm.onnx target/release

PY: a Python with Pillow, numpy and onnxruntime (the version irtdb uses). 2 threads throughout
(ORT's intra-op threads; irtdb's own default on this machine).
"""
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
from PIL import Image

BATCH = 32
MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(3, 1, 1)


def photos(folder, n, size, seed):
    """Photo-like JPEGs: smooth colour fields, edges and grain, quality 90."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(n):
        c = rng.uniform(0, 255, (3, 3)).astype(np.float32)
        fx, fy = rng.uniform(0.5, 3, 2) * np.pi / max(w, h)
        base = np.stack([c[k, 0] + c[k, 1] * 0.5 * (1 + np.sin(xx * fx * (k + 1) + yy * fy))
                         for k in range(3)], -1) / 1.5
        cx, cy, r = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h, rng.uniform(0.1, 0.3) * h
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2) < r * r
        base[disc] = c[:, 2]
        base += rng.normal(0, 6, base.shape).astype(np.float32)
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(
            os.path.join(folder, f"img{i:04d}.jpg"), quality=90)


def timm_preprocess(path):
    # timm's eval transform for DeiT-S: resize the short side to 248 (224 / crop_pct 0.9),
    # bicubic, centre crop 224, to tensor, normalise.
    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = 248 / min(w, h)
    im = im.resize((max(224, round(w * s)), max(224, round(h * s))), Image.BICUBIC)
    w, h = im.size
    left, top = (w - 224) // 2, (h - 224) // 2
    im = im.crop((left, top, left + 224, top + 224))
    x = np.asarray(im, np.float32).transpose(2, 0, 1) / 255.0
    return (x - MEAN) / STD


def python_pipeline(files, onnx_path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    s = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    s.run(None, {name: np.zeros((1, 3, 224, 224), np.float32)})
    t = time.perf_counter()
    forward = 0.0
    for i in range(0, len(files), BATCH):
        x = np.stack([timm_preprocess(f) for f in files[i:i + BATCH]])
        f0 = time.perf_counter()
        s.run(None, {name: x})
        forward += time.perf_counter() - f0
    total = time.perf_counter() - t
    return len(files) / total, len(files) / forward


def irtdb_index(release, folder, model, extra, scratch):
    env = dict(os.environ, IRTDB_PLUGIN_PATH=release, XDG_CACHE_HOME=os.path.join(scratch, "cache"))
    db = os.path.join(scratch, f"c{time.monotonic_ns()}.db")
    # A first run on one file warms the model cache (a cold first query builds it once).
    t = time.perf_counter()
    out = subprocess.run([os.path.join(release, "irtdb"), "index", folder, "--model", model, "--db",
                          db, "--json", "--batch", str(BATCH)] + extra, env=env, check=True,
                         capture_output=True, text=True)
    wall = time.perf_counter() - t
    r = json.loads(out.stdout)
    return r["embedded"] / wall, r.get("images_per_second")


def main():
    model, timm_onnx, release = sys.argv[1:4]
    n = int(os.environ.get("N", "192"))
    n12 = int(os.environ.get("N12", "32"))
    with tempfile.TemporaryDirectory() as tmp:
        small, big = os.path.join(tmp, "800x600"), os.path.join(tmp, "4000x3000")
        photos(small, n, (800, 600), 1)
        photos(big, n12, (4000, 3000), 2)
        files = sorted(os.path.join(small, f) for f in os.listdir(small))
        # Warm irtdb's model cache once (its first load optimises and writes the entry).
        for m in (model, timm_onnx):
            for prec in ("fp32", "int8"):
                irtdb_index(release, big, m, ["--dim", "0", "--precision", prec], tmp)
        tch = os.path.exists(os.path.join(release, "plugins", "libirtdb_plugin_tch_cuda.so"))
        if tch:  # warm libtorch's files into the page cache
            irtdb_index(release, big, model, ["--dim", "0", "--plugin", "tch-cuda"], tmp)
            irtdb_index(release, big, model,
                        ["--dim", "0", "--plugin", "tch-cuda", "--precision", "bf16"], tmp)
        rows = []
        for rnd in range(2):
            py, py_fwd = python_pipeline(files, timm_onnx)
            rows.append(("Python: Pillow + onnxruntime (timm export)", py, py_fwd))
            for prec in ["fp32", "int8"]:
                wall, embed = irtdb_index(release, small, model, ["--precision", prec], tmp)
                rows.append((f"irtdb index {prec}, 800x600", wall, embed))
                wall, embed = irtdb_index(release, big, model, ["--precision", prec], tmp)
                rows.append((f"irtdb index {prec}, 4000x3000 (12 MP)", wall, embed))
                # The same weights as timm's ONNX export (at int8 rewritten by irtdb).
                wall, embed = irtdb_index(release, small, timm_onnx, ["--precision", prec], tmp)
                rows.append((f"irtdb index {prec} of timm's export, 800x600", wall, embed))
            if tch:
                wall, embed = irtdb_index(release, small, model, ["--plugin", "tch-cuda"], tmp)
                rows.append(("irtdb index fp32 --plugin tch-cuda (libtorch CPU), 800x600", wall,
                             embed))
                wall, embed = irtdb_index(release, small, model,
                                          ["--plugin", "tch-cuda", "--precision", "bf16"], tmp)
                rows.append(("irtdb index bf16 --plugin tch-cuda (libtorch CPU), 800x600", wall,
                             embed))
        print(f"onnxruntime {ort.__version__}; {n} 800x600 and {n12} 4000x3000 photo-like JPEGs; "
              f"batch {BATCH}; 2 threads; load {os.getloadavg()}")
        print("| pipeline | img/s (whole run) | img/s (embedding phase / forward alone) |")
        print("|---|---:|---:|")
        for name, a, b in rows:
            print(f"| {name} | {a:.1f} | {b if b is None else f'{b:.1f}'} |")
        # Ratios of the embedding-phase rates (the Python pipeline has no other phase), per round.
        print()
        per_round = len(rows) // 2
        for rnd in range(2):
            r = {name: (a, b) for name, a, b in rows[rnd * per_round:(rnd + 1) * per_round]}
            py = r["Python: Pillow + onnxruntime (timm export)"][0]
            rate = lambda k: r[k][1]
            f32, i8 = rate("irtdb index fp32, 800x600"), rate("irtdb index int8, 800x600")
            t32 = rate("irtdb index fp32 of timm's export, 800x600")
            t8 = rate("irtdb index int8 of timm's export, 800x600")
            line = (f"round {rnd + 1}: irtdb fp32 / Python {f32 / py:.2f}x; int8 / fp32 {i8 / f32:.2f}x; "
                    f"own graph / timm's export: fp32 {f32 / t32:.2f}x, int8 {i8 / t8:.2f}x; "
                    f"12 MP / 800x600: fp32 {rate('irtdb index fp32, 4000x3000 (12 MP)') / f32:.2f}x, "
                    f"int8 {rate('irtdb index int8, 4000x3000 (12 MP)') / i8:.2f}x")
            if tch:
                t = rate("irtdb index fp32 --plugin tch-cuda (libtorch CPU), 800x600")
                b16 = rate("irtdb index bf16 --plugin tch-cuda (libtorch CPU), 800x600")
                line += (f"; tch-cuda (libtorch CPU) fp32 / Python {t / py:.2f}x, "
                         f"bf16 / Python {b16 / py:.2f}x")
            print(line)


if __name__ == "__main__":
    main()
