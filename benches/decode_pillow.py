"""Pillow's side of benches/decode.rs: timm's eval transform of each file (decode, RGB, resize the
shorter side with bicubic, centre crop, bytes), with or without `Image.draft`, timed per file.

    python decode_pillow.py SHORTER CROP ROUNDS FILE...

Prints one JSON object: {"full": [seconds per file per round...], "draft": [...]}. The float
normalisation (ToTensor + Normalize) is left out: it needs numpy and costs well under 1 ms.
"""
import json
import sys
import time

from PIL import Image


def prepare(path, shorter, crop, draft):
    im = Image.open(path)
    if draft:
        # The smallest DCT scale whose result is still at least shorter × shorter.
        im.draft("RGB", (shorter, shorter))
    im = im.convert("RGB")
    w, h = im.size
    if w <= h:
        size = (shorter, int(shorter * h / w))
    else:
        size = (int(shorter * w / h), shorter)
    im = im.resize(size, Image.BICUBIC)
    left = int(round((size[0] - crop) / 2.0))
    top = int(round((size[1] - crop) / 2.0))
    return im.crop((left, top, left + crop, top + crop)).tobytes()


def main():
    shorter, crop, rounds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    files = sys.argv[4:]
    out = {"full": [], "draft": []}
    for f in files:  # warm the page cache and the code
        prepare(f, shorter, crop, True)
    for _ in range(rounds):
        for f in files:
            for key, draft in (("full", False), ("draft", True)):
                t = time.perf_counter()
                prepare(f, shorter, crop, draft)
                out[key].append(time.perf_counter() - t)
    print(json.dumps(out))


main()
