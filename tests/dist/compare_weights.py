"""compare_weights.py A/model.safetensors B/model.safetensors ABS_TOL: the
same tensors (names, shapes, F32 or I32) and max |a - b| over all elements at most
ABS_TOL. Prints the largest difference and the tensor it is in. Pure Python
(struct/array): no numpy needed."""
import array
import json
import struct
import sys


def load(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    head.pop("__metadata__", None)
    out = {}
    for name, t in head.items():
        assert t["dtype"] in ("F32", "I32"), (name, t["dtype"])
        lo, hi = t["data_offsets"]
        a = array.array("f" if t["dtype"] == "F32" else "i")
        a.frombytes(raw[8 + n + lo:8 + n + hi])
        out[name] = (t["shape"], a)
    return out


def main():
    a, b, tol = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3])
    if a.keys() != b.keys():
        sys.exit(f"FAIL: different tensors: {sorted(a.keys() ^ b.keys())}")
    worst, where, n = 0.0, None, 0
    for name in a:
        (sa, xa), (sb, xb) = a[name], b[name]
        if sa != sb:
            sys.exit(f"FAIL: {name}: shape {sa} vs {sb}")
        n += len(xa)
        for u, v in zip(xa, xb):
            d = abs(u - v)
            if not d <= worst:  # NaN counts as a difference
                worst, where = d if d == d else float("inf"), name
    print(f"{n} weights, max |difference| {worst:.3g} in {where}")
    if worst > tol:
        sys.exit(f"FAIL: {worst:.3g} > {tol}")


if __name__ == "__main__":
    main()
