"""Stage 3: train the early-exit heads classifier-wise (frozen backbone, one cross-entropy per
head, all heads in one forward/backward pass).

    python exits.py resnet
Output: $CKPT/<family>/heads.pt and heads.json.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.nn as nn

from common import CKPT, load_split, log, preprocess, save_json
import nets
from train import BF16, setup, train_loop

HEAD_EPOCHS = {"resnet": 2, "mobilenet": 2}
HEAD_LR = {"resnet": 0.05, "mobilenet": 0.05}


class Wrapper(nn.Module):
    """Holds the frozen backbone and the trainable heads (only the heads' parameters are given to
    the optimizer; the backbone stays in eval mode, so its batch-norm statistics never move)."""

    def __init__(self, model, heads):
        super().__init__()
        self.model, self.heads = model, heads


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("family", choices=list(nets.FAMILIES))
    a = ap.parse_args()
    d = CKPT / a.family
    if (d / "heads.pt").exists():
        log(f"{a.family}: heads.pt exists")
        return
    setup()
    model = nets.build(a.family)
    model.load_state_dict(torch.load(d / "base.pt"))
    model = model.to(memory_format=torch.channels_last).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    torch.manual_seed(1)
    heads = nets.ExitHeads(a.family, model)
    w = Wrapper(model, heads)
    ce = nn.CrossEntropyLoss()

    def mode(m):
        m.model.eval()
        m.heads.train()

    def loss_fn(m, xb, yb):
        with torch.no_grad():
            feats = []
            x = m.model.stem(xb)
            for i, b in enumerate(m.model.blocks, start=1):
                x = b(x)
                if str(i) in m.heads.heads:
                    feats.append((i, x.detach()))
        return sum(ce(m.heads.heads[str(i)](f), yb) for i, f in feats)

    (rx, ry), (tx, ty), _ = load_split()
    x, y = torch.from_numpy(preprocess(rx)), torch.from_numpy(ry)
    hist = train_loop(w, heads.parameters(), x, y, HEAD_EPOCHS[a.family], HEAD_LR[a.family],
                      d / "heads_state.pt", f"{a.family}-heads", train_mode_fn=mode,
                      loss_fn=loss_fn, seed_offset=7, bf16=BF16[a.family])
    # torch-side accuracy of every exit (a quick check; recorded numbers come from onnxruntime)
    w.eval()
    xt, yt = torch.from_numpy(preprocess(tx)), torch.from_numpy(ty)
    correct = {p: 0 for p in heads.positions}
    final = 0
    with torch.no_grad():
        for i in range(0, len(yt), 500):
            outs, fin = heads.forward_all(model, xt[i:i + 500])
            for p, o in outs.items():
                correct[p] += int((o.argmax(1) == yt[i:i + 500]).sum())
            final += int((fin.argmax(1) == yt[i:i + 500]).sum())
    acc = {f"ee{p}": c / len(yt) for p, c in correct.items()}
    acc["final"] = final / len(yt)
    log(f"{a.family} heads (torch, test):", acc)
    torch.save(heads.state_dict(), d / "heads.pt.tmp")
    os.replace(d / "heads.pt.tmp", d / "heads.pt")
    save_json(d / "heads.json", {"positions": heads.positions, "epochs": HEAD_EPOCHS[a.family],
                                 "max_lr": HEAD_LR[a.family], "history": hist,
                                 "test_acc_torch": acc,
                                 "head_parameters": {p: sum(q.numel() for q in h.parameters())
                                                     for p, h in heads.heads.items()}})


if __name__ == "__main__":
    main()
