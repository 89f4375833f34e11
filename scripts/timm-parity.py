#!/usr/bin/env python3
"""irtdb's descriptors against timm's own, for the ViT families irtdb builds from safetensors.

Not part of the test suite (it needs PyTorch and timm, ~3 GB); run it by hand after changing
the ViT graph, the tch modules or the position-embedding resampling:

    python3 -m venv /tmp/timmenv && /tmp/timmenv/bin/pip install torch==2.11.0 timm safetensors
    cargo build -p irtdb-cli -p irtdb-plugin-ort-tensorrt   # and plugins/tch-cuda for --plugin tch-cuda
    /tmp/timmenv/bin/python scripts/timm-parity.py [--plugin ort-tensorrt|tch-cuda] [--irtdb PATH]

For each model: timm builds it with random weights (seeded) and saves its state_dict as
safetensors with a config.json as the hub has it; images are PNGs already at the model's input
size (crop_pct 1.0, so resizing is the identity and only the network is compared); irtdb embeds
them with `irtdb embed --json`; the cosine of each descriptor to timm's
`forward_head(forward_features(x), pre_logits=True)` (L2-normalised) is printed. With --input-size
timm builds the model at that size and loads the native checkpoint through its own
checkpoint_filter_fn (resample_abs_pos_embed), as timm users do.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import timm
from PIL import Image
from safetensors.torch import save_file

MODELS = [
    # (timm name, create_model kwargs, native size, sizes to also run at)
    ("vit_small_patch14_dinov2", {}, 518, [224]),
    ("vit_small_patch14_reg4_dinov2", {}, 518, [224]),
    ("deit3_small_patch16_224", {}, 224, [160]),
    ("vit_small_patch16_224", {"global_pool": "avg", "fc_norm": True}, 224, []),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--irtdb", default=os.path.join(os.path.dirname(__file__), "..", "target", "debug", "irtdb"))
    ap.add_argument("--plugin", default="ort-tensorrt")
    ap.add_argument("--images", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    worst = 1.0
    with tempfile.TemporaryDirectory() as tmp:
        for name, kwargs, native, sizes in MODELS:
            folder = os.path.join(tmp, name)
            os.makedirs(folder)
            model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs).eval()
            with torch.no_grad():  # timm's init leaves layer scale at 1e-5: make blocks matter
                for n, p in model.named_parameters():
                    if n.endswith(".gamma"):
                        p.uniform_(0.05, 0.2)
                    elif n in ("cls_token", "reg_token", "pos_embed"):
                        p.normal_(0, 0.2)
            weights = os.path.join(folder, "model.safetensors")
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
            config = {
                "architecture": name,
                "model_args": {"num_heads": model.blocks[0].attn.num_heads, **kwargs},
                "pretrained_cfg": {"input_size": [3, native, native], "crop_pct": 1.0,
                                   "interpolation": "bicubic",
                                   "mean": list(model.pretrained_cfg["mean"]),
                                   "std": list(model.pretrained_cfg["std"])},
            }
            with open(os.path.join(folder, "config.json"), "w") as f:
                json.dump(config, f)
            for size in [native] + sizes:
                if size == native:
                    ref = model
                else:
                    ref = timm.create_model(name, pretrained=True, num_classes=0, img_size=size,
                                            pretrained_cfg_overlay={"file": weights}, **kwargs).eval()
                rng = np.random.default_rng(size)
                paths, batch = [], []
                for i in range(args.images):
                    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                    path = os.path.join(folder, f"img{size}_{i}.png")
                    Image.fromarray(pixels).save(path)
                    paths.append(path)
                    x = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0
                    mean = torch.tensor(config["pretrained_cfg"]["mean"]).view(3, 1, 1)
                    std = torch.tensor(config["pretrained_cfg"]["std"]).view(3, 1, 1)
                    batch.append((x - mean) / std)
                with torch.no_grad():
                    want = ref.forward_head(ref.forward_features(torch.stack(batch)), pre_logits=True)
                want = torch.nn.functional.normalize(want, dim=-1).numpy()
                cmd = [args.irtdb, "embed", "--json", "--plugin", args.plugin, "--model", weights, *paths]
                if size != native:
                    cmd += ["--input-size", str(size)]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    print(f"{name} @ {size}: irtdb failed:\n{out.stderr}", file=sys.stderr)
                    sys.exit(1)
                got = np.array([row["descriptor"] for row in json.loads(out.stdout)["images"]])
                cos = (got * want).sum(-1)
                worst = min(worst, cos.min())
                print(f"{name:32s} @ {size:3d} ({args.plugin}): cosine to timm min {cos.min():.7f} mean {cos.mean():.7f}")
    print(f"worst cosine {worst:.7f}")
    sys.exit(0 if worst >= 0.9999 else 1)


if __name__ == "__main__":
    main()
