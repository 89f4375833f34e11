"""Why one ONNX graph of a ViT runs slower than another in ONNX Runtime: irtdb's own graph
(crates/onnx, written by `cargo run --release -p irtdb-onnx --example write_graph`) against
timm's export of the same weights, side by side in one run. For each: the optimised graph ORT
makes (op types counted: which fusions fired), and the forward's time per op type from ORT's
profiler, and img/s.

    irtdb model random --arch deit_small_patch16_224 --out /tmp/g/m.safetensors
    cargo run --release -p irtdb-onnx --example write_graph -- /tmp/g/m.safetensors /tmp/g/irtdb.onnx
    PY benches/ort_graphs.py /tmp/g/m.safetensors /tmp/g/irtdb.onnx deit_small_patch16_224

PY: a Python with timm, torch, onnx, onnxruntime (the version irtdb uses) and safetensors.
"""
import collections
import json
import os
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import torch
import timm
from safetensors.torch import load_file


def export_timm(weights, arch, out):
    model = timm.create_model(arch, pretrained=False, num_classes=0)
    state = load_file(weights)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not [k for k in missing if not k.startswith("head")], missing
    model.eval()

    class Features(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m.forward_features(x)

    x = torch.randn(2, 3, 224, 224)
    torch.onnx.export(Features(model), (x,), out, input_names=["input"], output_names=["tokens"],
                      dynamic_axes={"input": {0: "batch"}, "tokens": {0: "batch"}}, opset_version=17,
                      dynamo=False)


def ops(path):
    return collections.Counter(n.op_type for n in onnx.load(path, load_external_data=False).graph.node)


def run(path, name, x, threads, runs, level):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.graph_optimization_level = level
    opt = f"{path}.{name}.opt.onnx"
    so.optimized_model_filepath = opt
    so.enable_profiling = True
    so.profile_file_prefix = f"{path}.{name}.prof"
    t = time.perf_counter()
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    build = time.perf_counter() - t
    inp = s.get_inputs()[0].name
    s.run(None, {inp: x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        s.run(None, {inp: x})
        times.append(time.perf_counter() - t)
    prof = s.end_profiling()
    by_op = collections.Counter()
    with open(prof) as f:
        for e in json.load(f):
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                by_op[e["args"]["op_name"]] += e["dur"]
    os.remove(prof)
    total = sum(by_op.values()) or 1
    per_run_ms = {k: v / 1000 / (runs + 1) for k, v in by_op.most_common(8)}
    return {
        "per_run_ms": per_run_ms,
        "build_s": build,
        "img_s": x.shape[0] / float(np.median(times)),
        "ops": ops(opt),
        "time_share": {k: v / total for k, v in by_op.most_common(8)},
    }


def main():
    weights, own, arch = sys.argv[1:4]
    batch = int(os.environ.get("BATCH", "32"))
    threads = int(os.environ.get("THREADS", "2"))
    runs = int(os.environ.get("RUNS", "3"))
    timm_path = own.replace(".onnx", ".timm.onnx")
    export_timm(weights, arch, timm_path)
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    print(f"onnxruntime {ort.__version__}, batch {batch}, {threads} threads, best of 2 sessions, each the median of {runs}")
    for level_name, level in [("all", ort.GraphOptimizationLevel.ORT_ENABLE_ALL)]:
        # Alternate the two, twice each, so that a change in the machine's load hits both.
        res = {}
        for name, p in [("irtdb", own), ("timm", timm_path)] * 2:
            r = run(p, name, x, threads, runs, level)
            if name not in res or r["img_s"] > res[name]["img_s"]:
                res[name] = r
        for name, r in res.items():
            print(f"\n## {name} (optimisation {level_name}): {r['img_s']:.2f} img/s, session {r['build_s']:.2f} s")
            print("optimised graph ops:", dict(sorted(r["ops"].items(), key=lambda kv: -kv[1])))
            print("time by op:", {k: f"{v:.1%}" for k, v in r["time_share"].items()})
            print("ms per forward by op:", {k: f"{v:.0f}" for k, v in r["per_run_ms"].items()})


if __name__ == "__main__":
    main()
