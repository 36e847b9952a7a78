"""Stage 2: train a base network (resumable; one checkpoint per epoch in $CKPT/<family>/).

    python train.py resnet [--epochs N]
Output: $CKPT/<family>/base.pt (state dict) and base.json (what was done).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torch.nn as nn

from common import CKPT, MEAN, SEED, STD, load_split, log, preprocess, save_json
import nets

EPOCHS = {"resnet": 8, "mobilenet": 8}
# bfloat16 autocast (CPU, AVX512-BF16) nearly halves the resnet step time here; the weights stay
# float32 and the exported graphs are float32. Measured: resnet 240 vs 437 ms/step, mobilenet
# slower under bf16 (232 vs 177 ms/step with channels_last), so mobilenet trains in float32.
BF16 = {"resnet": True, "mobilenet": False}
MAX_LR = {"resnet": 0.1, "mobilenet": 0.1}
BATCH = 128
WD = 5e-4
PAD = 2


def setup(threads=1):
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(int(os.environ.get("RECIPE_THREADS", threads)))


class Augment:
    """Random crop with zero (background) padding of PAD pixels and horizontal flip, seeded
    per epoch so a resumed run sees the same batches."""

    def __init__(self, x: torch.Tensor):
        bg = (0.0 - MEAN) / STD
        self.xp = torch.nn.functional.pad(x, (PAD, PAD, PAD, PAD), value=bg)  # N,1,32,32
        self.ar = torch.arange(28)

    def batch(self, idx: torch.Tensor, g: torch.Generator):
        b = idx.numel()
        dy = torch.randint(0, 2 * PAD + 1, (b,), generator=g)
        dx = torch.randint(0, 2 * PAD + 1, (b,), generator=g)
        flip = torch.rand(b, generator=g) < 0.5
        rows = (dy[:, None] + self.ar)[:, :, None]            # b,28,1
        cols = dx[:, None] + self.ar                           # b,28
        cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, :]  # b,1,28
        src = self.xp[idx, 0]                                  # b,32,32
        out = src[torch.arange(b)[:, None, None], rows, cols]  # b,28,28
        return out[:, None]


def evaluate(model, x, y, batch=500):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            correct += int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    return correct / len(y)


def train_loop(model, params, x, y, epochs, max_lr, state_path, tag, xt=None, yt=None,
               train_mode_fn=None, loss_fn=None, fraction=1.0, seed_offset=0, bf16=False):
    """SGD(nesterov) + OneCycle, resumable from state_path. loss_fn(model, xb, yb) -> loss."""
    n = len(y)
    steps_per_epoch = int(np.ceil(n * fraction / BATCH))
    opt = torch.optim.SGD(params, lr=max_lr, momentum=0.9, nesterov=True, weight_decay=WD)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, epochs=epochs,
                                                steps_per_epoch=steps_per_epoch, pct_start=0.25)
    start = 0
    history = []
    if state_path is not None and state_path.exists():
        st = torch.load(state_path, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        start, history = st["epoch"], st["history"]
        log(f"{tag}: resuming after epoch {start}")
    aug = Augment(x)
    ce = nn.CrossEntropyLoss()
    for ep in range(start, epochs):
        g = torch.Generator().manual_seed(SEED + 1000 * seed_offset + ep)
        perm = torch.randperm(n, generator=g)[:steps_per_epoch * BATCH]
        (train_mode_fn or (lambda m: m.train()))(model)
        t0 = time.time()
        tot, cnt = 0.0, 0
        for s in range(steps_per_epoch):
            idx = perm[s * BATCH:(s + 1) * BATCH]
            if idx.numel() == 0:
                break
            xb, yb = aug.batch(idx, g).contiguous(memory_format=torch.channels_last), y[idx]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(model, xb, yb) if loss_fn else ce(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss) * len(idx)
            cnt += len(idx)
            if s % 100 == 0:
                log(f"{tag} ep {ep + 1}/{epochs} step {s}/{steps_per_epoch} loss {tot / cnt:.4f}")
        rec = {"epoch": ep + 1, "loss": tot / max(cnt, 1), "seconds": round(time.time() - t0, 1)}
        if xt is not None and loss_fn is None:
            rec["test_acc_torch"] = evaluate(model, xt, yt)
        history.append(rec)
        log(f"{tag}: {rec}")
        if state_path is not None:
            tmp = state_path.with_name(state_path.name + ".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                        "sched": sched.state_dict(), "epoch": ep + 1, "history": history}, tmp)
            os.replace(tmp, state_path)
    return history


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("family", choices=list(nets.FAMILIES))
    ap.add_argument("--epochs", type=int)
    a = ap.parse_args()
    d = CKPT / a.family
    d.mkdir(parents=True, exist_ok=True)
    if (d / "base.pt").exists():
        log(f"{a.family}: base.pt exists")
        return
    setup()
    epochs = a.epochs or EPOCHS[a.family]
    (rx, ry), (tx, ty), _ = load_split()
    x, y = torch.from_numpy(preprocess(rx)), torch.from_numpy(ry)
    xt, yt = torch.from_numpy(preprocess(tx)), torch.from_numpy(ty)
    model = nets.build(a.family).to(memory_format=torch.channels_last)
    nparams = sum(p.numel() for p in model.parameters())
    log(f"{a.family}: {nparams} parameters, {epochs} epochs")
    t0 = time.time()
    hist = train_loop(model, model.parameters(), x, y, epochs, MAX_LR[a.family], d / "train_state.pt",
                      a.family, xt, yt, bf16=BF16[a.family])
    torch.save(model.state_dict(), d / "base.pt.tmp")
    os.replace(d / "base.pt.tmp", d / "base.pt")
    save_json(d / "base.json", {"family": a.family, "parameters": nparams, "epochs": epochs,
                                "batch": BATCH, "max_lr": MAX_LR[a.family], "weight_decay": WD,
                                "optimizer": "SGD momentum 0.9 nesterov, OneCycleLR pct_start 0.25",
                                "augmentation": f"random crop (pad {PAD}) + horizontal flip",
                                "bf16_autocast": BF16[a.family], "channels_last": True,
                                "history": hist, "wall_seconds_this_run": round(time.time() - t0)})


if __name__ == "__main__":
    main()
