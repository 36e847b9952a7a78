"""Stage 7: evaluate every variant of the zoo with Python onnxruntime at batch 1 (1 intra-op
thread, CPU) on the 10 000 test images; measure each base's batch-1 latency.

    python evaluate.py [--jobs 2]
Writes models/accuracy.json ({variant: {correct, total, exits}}) and models/results.json (every
number models/README.md shows). Batch-1 logits are cached in $CKPT/b1/ by file content.
"""

from __future__ import annotations

import argparse
import os
import platform
import tomllib
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from common import CKPT, MODELS, b1_exits, bench, fidelity, load_json, load_split, log, \
    onnx_params, preprocess, save_json

FAMILIES = ("resnet", "mobilenet")
ORDER = ["base", "prune", "dq", "ptq"]


def manifests():
    """All variant manifests, families in order, then base/prune/dq/ptq, ee*, ptq-ee*, dq-ee*."""
    out = []
    for fam in FAMILIES:
        files = sorted((MODELS / fam).glob("*.toml"))

        def key(p):
            s = p.stem
            if s in ORDER:
                return (0, ORDER.index(s), s)
            group = 1 if s.startswith("ee") else 2 if s.startswith("ptq-") else 3
            return (group, 0, s.replace("ee-all", "ee~"))
        for p in sorted(files, key=key):
            m = tomllib.loads(p.read_text())
            segs = [{"path": p.parent / s["file"], "exit": s["exit"],
                     **({"carry": s["carry"]} if "carry" in s else {})} for s in m["segments"]]
            out.append({"name": m["name"], "tags": m["tags"], "base": m.get("base"),
                        "manifest": str(p.relative_to(MODELS)), "segments": segs})
    return out


def _run(args):
    segs, name = args
    _, (tx, _), _ = load_split()
    return name, b1_exits(segs, preprocess(tx), name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    _, (tx, ty), _ = load_split()
    vs = manifests()
    # fill the batch-1 cache, two variants at a time (each session single-threaded)
    with ProcessPoolExecutor(a.jobs) as ex:
        for name, _ in ex.map(_run, [(v["segments"], v["name"]) for v in vs]):
            pass
    xt = preprocess(tx)
    logits = {v["name"]: b1_exits(v["segments"], xt, v["name"]) for v in vs}
    accuracy, table = {}, []
    for v in vs:
        ex = logits[v["name"]]
        fam = v["name"].split("/")[0]
        base = logits[f"{fam}/base"][-1]
        fid = fidelity(base, ex[-1], ty)
        size = sum(s["path"].stat().st_size for s in v["segments"])
        row = {"name": v["name"], "tags": v["tags"], "manifest": v["manifest"],
               "files": [str(s["path"].relative_to(MODELS)) for s in v["segments"]],
               "size_bytes": size,
               "parameters": sum(onnx_params(s["path"]) for s in v["segments"]),
               "exit_correct": [int((e.argmax(1) == ty).sum()) for e in ex], **fid}
        if len(ex) > 1:
            row["final_max_abs_diff_vs_base"] = float(np.abs(ex[-1] - base).max())
        table.append(row)
        accuracy[v["name"]] = {"correct": fid["correct"], "total": int(len(ty)),
                               "exits": row["exit_correct"]}
        log(f"{v['name']:24s} acc {fid['accuracy']:.4f} exits {row['exit_correct']} "
            f"size {size / 1e6:.2f} MB")
    save_json(MODELS / "accuracy.json", accuracy)

    res_path = CKPT / "latency.json"
    lat = load_json(res_path, {})
    x1 = xt[:1].copy()
    for fam in FAMILIES:
        for v in ("base", "prune", "dq", "ptq"):
            k = f"{fam}/{v}"
            if k not in lat:
                lat[k] = bench(MODELS / fam / f"{v}.onnx", x1)
                lat[k]["loadavg_before"] = list(os.getloadavg())
                log(k, lat[k])
    lat["_machine"] = {"cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                       "note": "shared 2-core VM; another job may have been running"}
    save_json(res_path, lat)
    results = {"variants": table, "latency": lat}
    for fam in FAMILIES:
        results[fam] = {
            "train": load_json(CKPT / fam / "base.json"),
            "heads": load_json(CKPT / fam / "heads.json"),
            "export": load_json(CKPT / fam / "export.json"),
            "prune": load_json(CKPT / fam / "prune_grid.json"),
            "quant": load_json(CKPT / fam / "quant_sensitivity.json"),
        }
    results["data"] = load_json(CKPT / "data" / "report.json")
    save_json(MODELS / "results.json", results)


if __name__ == "__main__":
    main()
