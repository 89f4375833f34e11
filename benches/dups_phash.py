"""imagededup's PHash on a folder, for benches/dups.rs: prints one JSON object
{"<max_distance>": [[file, file], ...], ...} with every pair it finds at each Hamming distance.

Run with a Python that has imagededup (it pulls torch; keep it out of the test venv):
    python benches/dups_phash.py DIR 0 2 4 ...
"""
import json
import sys

from imagededup.methods import PHash


def main():
    folder = sys.argv[1]
    distances = [int(d) for d in sys.argv[2:]] or [10]
    hasher = PHash(verbose=False)
    encodings = hasher.encode_images(image_dir=folder, recursive=True)
    out = {}
    for d in distances:
        found = hasher.find_duplicates(encoding_map=encodings, max_distance_threshold=d)
        pairs = sorted({tuple(sorted((a, b))) for a, dups in found.items() for b in dups})
        out[str(d)] = [list(p) for p in pairs]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
