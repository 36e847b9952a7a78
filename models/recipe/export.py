"""Stage 4: export the base network and its early-exit chains to ONNX (+ manifests).

    python export.py resnet
Writes models/<family>/base.onnx, ee<i>-s<k>.onnx (one chain per insertion point),
ee-all-s<k>.onnx (every exit in one chain) and their manifests; checks that every chain's final
logits equal the base model's. Batch-norm is folded into the convolutions before export.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from common import CKPT, MODELS, atomic_write, load_json, load_split, log, preprocess, \
    run_batched, save_json, variant_toml
import nets


def chain_specs(family):
    """name -> list of exit positions of that chain."""
    pos = list(nets.FAMILIES[family]["exits"])
    specs = {f"ee{p}": [p] for p in pos}
    specs["ee-all"] = pos
    return specs


def quant_chains(family):
    """The chains that get PTQ-EE / DQ-EE versions: the middle exit only (the session file grows
    with every exit of every variant, and the committed zoo has a size budget)."""
    return [f"ee{nets.FAMILIES[family]['exits'][1]}"]


def chain_segments(family, chain, prefix=""):
    """Manifest segments (file, exit, carry) of a chain; prefix "ptq-" / "dq-" for quantized.

    The all-exits chain shares its first segment with the first single-exit chain and its last
    segment with the last single-exit chain (the same graphs), so only its middle segments are
    files of its own."""
    positions = chain_specs(family)[chain]
    files = [f"{prefix}{chain}-s{k}.onnx" for k in range(1, len(positions) + 2)]
    if len(positions) > 1:
        files[0] = f"{prefix}ee{positions[0]}-s1.onnx"
        files[-1] = f"{prefix}ee{positions[-1]}-s2.onnx"
    segs = [{"file": f, "exit": "exit_logits", "carry": f"features{p}"}
            for f, p in zip(files, positions)]
    segs.append({"file": files[-1], "exit": "logits"})
    return segs


def load_trained(family):
    d = CKPT / family
    model = nets.build(family)
    model.load_state_dict(torch.load(d / "base.pt"))
    model.eval()
    heads = nets.ExitHeads(family, model)
    heads.load_state_dict(torch.load(d / "heads.pt"))
    heads.eval()
    return model, heads


def export_chain(family, fused, fheads, chain, out_dir, example):
    positions = chain_specs(family)[chain]
    segs = chain_segments(family, chain)
    bounds = [0] + positions + [len(fused.blocks)]
    x = example
    in_name = "image"
    for k in range(len(bounds) - 1):
        start, end = bounds[k], bounds[k + 1]
        last = k == len(bounds) - 2
        seg = nets.Segment(fused, start, end, None if last else fheads.heads[str(end)])
        outs = ["logits"] if last else ["exit_logits", f"features{end}"]
        shared = len(positions) > 1 and k in (0, len(bounds) - 2)
        if not shared:  # shared segments were exported with the single-exit chains
            nets.export_onnx(seg, x, out_dir / segs[k]["file"], in_name, outs)
        if not last:
            with torch.no_grad():
                x = seg(x)[1]
            in_name = f"features{end}"
    return segs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("family", choices=list(nets.FAMILIES))
    a = ap.parse_args()
    out = MODELS / a.family
    out.mkdir(parents=True, exist_ok=True)
    done = CKPT / a.family / "export.json"
    if done.exists() and (out / "base.onnx").exists():
        log(f"{a.family}: exported already")
        return
    torch.manual_seed(0)
    model, heads = load_trained(a.family)
    fused, fheads = nets.fuse_bn(model), nets.fuse_bn(heads)
    example = torch.from_numpy(preprocess(load_split()[1][0][:2]))
    nets.export_onnx(fused, example, out / "base.onnx", "image", ["logits"])
    atomic_write(out / "base.toml", variant_toml(f"{a.family}/base", ["base"], None,
                                                 [{"file": "base.onnx", "exit": "logits"}]))
    # check on the test split (batched: a float32 graph gives the same logits at any batch size
    # up to float noise; recorded accuracies are measured at batch 1 by evaluate.py)
    _, (tx, ty), _ = load_split()
    x = preprocess(tx)
    (base_logits,) = run_batched(out / "base.onnx", x)
    report = {"base_acc_batched": float((base_logits.argmax(1) == ty).mean()), "chains": {}}
    for chain in chain_specs(a.family):
        segs = export_chain(a.family, fused, fheads, chain, out, example)
        atomic_write(out / f"{chain}.toml", variant_toml(f"{a.family}/{chain}", ["ee"],
                                                         f"{a.family}/base", segs))
        feed = x
        exits = []
        for s in segs:
            names = [s["exit"]] + ([s["carry"]] if "carry" in s else [])
            r = run_batched(out / s["file"], feed, names)
            exits.append(r[0])
            if "carry" in s:
                feed = r[1]
        diff = float(np.abs(exits[-1] - base_logits).max())
        report["chains"][chain] = {"final_max_abs_diff_vs_base": diff,
                                   "final_argmax_disagreements": int(
                                       (exits[-1].argmax(1) != base_logits.argmax(1)).sum()),
                                   "exit_acc_batched": [float((e.argmax(1) == ty).mean())
                                                        for e in exits]}
        log(f"{a.family}/{chain}: final max|diff| {diff:.2e}",
            report["chains"][chain]["exit_acc_batched"])
        assert diff < 1e-3, f"{chain}: final logits differ from the base by {diff}"
    save_json(done, report)


if __name__ == "__main__":
    main()
