"""Stage 5: structured L1 channel pruning grid (torch-pruning), a short fine-tune after each
configuration, batch-1 onnxruntime evaluation, and export of the selected configuration.

    python prune.py resnet [--fraction F]
Grid: channel granularity CG (torch-pruning's round_to) in {16, 32} x pruning ratio PR in
{0.05, 0.1, 0.2, 0.3}. Each configuration: $CKPT/<family>/prune/cg<CG>-pr<PR>.{onnx,json}.
Selected: models/<family>/prune.onnx + prune.toml; the grid goes to $CKPT/<family>/prune_grid.json.
"""

from __future__ import annotations

import argparse
import copy
import shutil

import numpy as np
import torch
import torch_pruning as tp

from common import CKPT, MODELS, atomic_write, b1_exits, fidelity, load_json, load_split, log, \
    onnx_params, preprocess, save_json, variant_toml
import nets
from train import BF16, setup, train_loop

CGS = (16, 32)
PRS = (0.05, 0.1, 0.2, 0.3)
FT_LR = 0.01
# the selection rule: the smallest model whose batch-1 top-1 accuracy stays within this many
# percentage points of the base (ties: the more accurate)
MAX_DROP_PP = 1.0


class Pruner(tp.pruner.MetaPruner):
    """torch-pruning rounds the kept channels *down* to a multiple of round_to; a layer narrower
    than round_to would be removed entirely (0 channels). Keep at least min(round_to, channels)."""

    def _round_to(self, n_pruned, current_channels, round_to):
        kept = current_channels - n_pruned
        kept = kept - kept % round_to
        kept = max(kept, min(round_to, current_channels))
        return max(current_channels - kept, 0)


def prune_model(model, cg, pr):
    m = copy.deepcopy(model).eval()
    example = torch.zeros(1, 1, 28, 28)
    last_fc = m.classifier[-1]
    pruner = Pruner(m, example, importance=tp.importance.MagnitudeImportance(p=1),
                    pruning_ratio=pr, round_to=cg, ignored_layers=[last_fc])
    pruner.step()
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("family", choices=list(nets.FAMILIES))
    ap.add_argument("--fraction", type=float, default=0.25,
                    help="fine-tune on this fraction of one training epoch")
    a = ap.parse_args()
    d = CKPT / a.family / "prune"
    d.mkdir(parents=True, exist_ok=True)
    setup()
    (rx, ry), (tx, ty), _ = load_split()
    x, y = torch.from_numpy(preprocess(rx)), torch.from_numpy(ry)
    xt = preprocess(tx)
    base_onnx = MODELS / a.family / "base.onnx"
    (base_logits,) = b1_exits([{"path": base_onnx, "exit": "logits"}], xt, f"{a.family}/base")
    base_fid = fidelity(base_logits, base_logits, ty)
    base_size = base_onnx.stat().st_size
    model = nets.build(a.family)
    model.load_state_dict(torch.load(CKPT / a.family / "base.pt"))
    model.eval()
    grid = []
    for cg in CGS:
        for pr in PRS:
            tag = f"cg{cg}-pr{pr}"
            res_path = d / f"{tag}.json"
            onnx_path = d / f"{tag}.onnx"
            res = load_json(res_path)
            if res is None or not onnx_path.exists():
                torch.manual_seed(0)
                m = prune_model(model, cg, pr)
                nparams = sum(p.numel() for p in m.parameters())
                log(f"{a.family} {tag}: {nparams} parameters after pruning; fine-tuning")
                m = m.to(memory_format=torch.channels_last)
                hist = train_loop(m, m.parameters(), x, y, 1, FT_LR, None, f"{a.family}-{tag}",
                                  fraction=a.fraction, seed_offset=100 + cg + int(pr * 100),
                                  bf16=BF16[a.family])
                m.eval()
                nets.export_onnx(nets.fuse_bn(m), torch.zeros(2, 1, 28, 28), onnx_path, "image",
                                 ["logits"])
                (lg,) = b1_exits([{"path": onnx_path, "exit": "logits"}], xt, f"{a.family}/{tag}")
                res = {"cg": cg, "pr": pr, "size_bytes": onnx_path.stat().st_size,
                       "parameters": onnx_params(onnx_path),
                       "channels": [b.out_channels if hasattr(b, "out_channels") else None
                                    for b in m.modules() if isinstance(b, torch.nn.Conv2d)],
                       "fine_tune": {"epochs_fraction": a.fraction, "max_lr": FT_LR,
                                     "history": hist},
                       **fidelity(base_logits, lg, ty)}
                res["compression"] = base_size / res["size_bytes"]
                save_json(res_path, res)
            log(f"{a.family} {tag}: acc {res['accuracy']:.4f} size {res['size_bytes']} "
                f"compression {res['compression']:.2f}x LL {res['label_loyalty']:.4f} "
                f"PL {res['prob_loyalty']:.4f}")
            grid.append(res)
    ok = [r for r in grid if 100 * (base_fid["accuracy"] - r["accuracy"]) <= MAX_DROP_PP]
    if not ok:
        ok = [max(grid, key=lambda r: r["accuracy"])]
    sel = min(ok, key=lambda r: (r["size_bytes"], -r["accuracy"]))
    for r in grid:
        r["selected"] = r is sel
    save_json(CKPT / a.family / "prune_grid.json",
              {"base": {"size_bytes": base_size, "parameters": onnx_params(base_onnx),
                        **base_fid},
               "rule": f"smallest model within {MAX_DROP_PP} pp of the base's batch-1 top-1 "
                       "accuracy (ties: the more accurate)",
               "fine_tune_fraction": a.fraction, "grid": grid})
    out = MODELS / a.family
    shutil.copyfile(d / f"cg{sel['cg']}-pr{sel['pr']}.onnx", out / "prune.onnx")
    atomic_write(out / "prune.toml", variant_toml(f"{a.family}/prune", ["prune"],
                                                  f"{a.family}/base",
                                                  [{"file": "prune.onnx", "exit": "logits"}]))
    log(f"{a.family}: selected CG={sel['cg']} PR={sel['pr']}")


if __name__ == "__main__":
    main()
