"""Compares flexmoe checkpoints (safetensors) of runs at different world sizes.

  compare-checkpoints.py REFERENCE OTHER... --tolerance T [--skip SUFFIX]...

Every F32 tensor of each OTHER must have REFERENCE's names and shapes (expert
tensors are stored in expert order, so the placement does not matter) and
differ from it by at most T in relative L2 norm, ||a - b|| / max(||a||, 1e-12).
Prints the worst tensor per file; exits 1 on any mismatch. Standard library
only, so lit's python runs it.
"""
import array
import json
import math
import struct
import sys


def load(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        begin, end = info["data_offsets"]
        values = array.array("f")
        values.frombytes(body[begin:end])
        if sys.byteorder != "little":
            values.byteswap()
        tensors[name] = (tuple(info["shape"]), values)
    return tensors


def main():
    args = sys.argv[1:]
    tolerance, skips, files = None, [], []
    i = 0
    while i < len(args):
        if args[i] == "--tolerance":
            tolerance = float(args[i + 1])
            i += 2
        elif args[i] == "--skip":
            skips.append(args[i + 1])
            i += 2
        else:
            files.append(args[i])
            i += 1
    if tolerance is None or len(files) < 2:
        sys.exit(__doc__)
    reference = load(files[0])
    failed = False
    for path in files[1:]:
        other = load(path)
        if sorted(other) != sorted(reference):
            print(f"{path}: tensor names differ from {files[0]}")
            failed = True
            continue
        worst, worst_name = 0.0, None
        for name, (shape, a) in reference.items():
            if any(name.endswith(s) for s in skips):
                continue
            other_shape, b = other[name]
            if other_shape != shape:
                print(f"{path}: '{name}' has shape {other_shape}, not {shape}")
                failed = True
                continue
            diff = math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))
            norm = math.sqrt(sum(x * x for x in a))
            rel = diff / max(norm, 1e-12)
            if rel > worst:
                worst, worst_name = rel, name
        verdict = "ok" if worst <= tolerance else "MISMATCH"
        print(f"{path}: worst relative difference {worst:.2e} ({worst_name}): {verdict}")
        failed |= worst > tolerance
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
