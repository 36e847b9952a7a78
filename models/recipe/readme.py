"""Stage 9: write models/README.md from models/results.json (+ Table 2 of `edgescope report` on
sessions/demo.json when the binary and the session exist).

    python readme.py
"""

from __future__ import annotations

import json
import re
import subprocess

from common import MODELS, REPO, atomic_write, log
import nets

NOTES_FILE = MODELS / "recipe" / "NOTES.md"


def mb(b):
    return f"{b / 1e6:.2f}"


def pct(x):
    return f"{100 * x:.2f}"


def technique(tags, name):
    t = "+".join(x.upper() for x in tags)
    return t.replace("PTQ+EE", "PTQ-EE").replace("DQ+EE", "DQ-EE")


def macs(fam):
    """Multiply-adds of one 28x28 image through the base network (Conv2d and Linear layers)."""
    import torch
    m = nets.build(fam).eval()
    total = [0]

    def hook(mod, inp, out):
        if isinstance(mod, torch.nn.Conv2d):
            total[0] += out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, torch.nn.Linear):
            total[0] += mod.in_features * mod.out_features
    for mod in m.modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
            mod.register_forward_hook(hook)
    with torch.no_grad():
        m(torch.zeros(1, 1, 28, 28))
    return total[0]


def describe(fam):
    if fam == "resnet":
        widths = ", ".join(str(c) for c, _ in nets.RESNET_BLOCKS)
        strides = [i + 1 for i, (_, st) in enumerate(nets.RESNET_BLOCKS) if st == 2]
        return (f"ResNet-style: 3x3 conv stem (32) + {len(nets.RESNET_BLOCKS)} basic blocks (two 3x3 convs + "
                f"identity or 1x1 projection shortcut), widths {widths} (stride 2 at blocks "
                f"{' and '.join(map(str, strides))}: 28 -> 14 -> 7), global average pooling, one fully connected "
                f"layer. {macs(fam) / 1e6:.1f} M multiply-adds per image.")
    widths = ", ".join(str(c) for _, c, _ in nets.MOBILENET_BLOCKS)
    exp = ", ".join(str(t) for t, _, _ in nets.MOBILENET_BLOCKS)
    strides = [i + 1 for i, (_, _, st) in enumerate(nets.MOBILENET_BLOCKS) if st == 2]
    return (f"MobileNetV2-style: 3x3 conv stem (24) + {len(nets.MOBILENET_BLOCKS)} inverted-residual blocks (1x1 "
            f"expand, ReLU6, 3x3 depthwise, ReLU6, 1x1 linear projection; residual when shapes allow), expansions "
            f"{exp}, widths {widths} (stride 2 at blocks {' and '.join(map(str, strides))}), 1x1 conv to "
            f"{nets.MOBILENET_LAST} + ReLU6, global average pooling, dropout 0.1, one fully connected layer. "
            f"{macs(fam) / 1e6:.1f} M multiply-adds per image.")


def table2():
    binp = REPO / "target" / "release" / "edgescope"
    sess = REPO / "sessions" / "demo.json"
    if not (binp.exists() and sess.exists()):
        return None
    try:
        out = subprocess.run([str(binp), "report", str(sess), "--format", "md"], cwd=REPO,
                             capture_output=True, text=True, check=True, timeout=600).stdout
    except Exception as e:  # the README still gets written; say why the table is missing
        log("edgescope report failed:", e)
        return None
    # keep the section of Table 2 only
    lines = out.splitlines()
    start = next((i for i, l in enumerate(lines) if re.search(r"Table 2\b", l)), None)
    if start is None:
        return out
    end = next((j for j in range(start + 1, len(lines))
                if re.search(r"Tables? [3-9]\b", lines[j])), len(lines))
    return "\n".join(lines[start:end]).strip()


def main():
    r = json.loads((MODELS / "results.json").read_text())
    acc = json.loads((MODELS / "accuracy.json").read_text())
    fams = ("resnet", "mobilenet")
    base_size = {f: next(v["size_bytes"] for v in r["variants"] if v["name"] == f"{f}/base")
                 for f in fams}
    total = sum(p.stat().st_size for p in MODELS.rglob("*") if p.is_file()
                and "recipe" not in p.parts)
    s = []
    s.append("""# Demo model zoo

Real CNNs trained on Fashion-MNIST (`assets/fashion-mnist/`, see its README) and their optimized variants,
built the way the study (`../shared/seeds/000_*.txt`, sections 3.1, 4 and Appendix A) builds them: a residual
network in the "large" role and a MobileNetV2-style network in the "edge-optimized" role; structured L1
pruning with torch-pruning; post-training static quantization (PTQ, QDQ) and dynamic quantization (DQ) with
ONNX Runtime's own quantizer; early exits trained classifier-wise on a frozen backbone and exported as chains
of ONNX segments; and quantized early-exit chains (every segment quantized on its own, section 4.3).

Every variant is a manifest (`<family>/<variant>.toml`, format `edgescope-variant` v1) next to its ONNX
file(s). Every accuracy below was measured by the recipe with Python onnxruntime 1.31.1 on the CPU, **batch 1,
one intra-op thread**, on the 10 000 test images (`assets/fashion-mnist/test`); `accuracy.json` holds the same
numbers for the tests, and `edgescope eval` reproduces them (batch 1 matters: DQ computes its activation
scales per batch). `results.json` holds every number of this page and more (training curves, the whole
pruning grid, the sensitivity check).
""")
    s.append("## Rebuild\n")
    s.append("""```sh
bash models/recipe/build.sh                 # everything, end to end (resumable; see the script's header)
bash models/recipe/make_demo_session.sh     # only sessions/demo.json, from the committed zoo
```
Pinned versions: `models/recipe/requirements.txt`. Seeds are fixed and `torch.use_deterministic_algorithms(True)`
is on; the training itself is CPU float32 (resnet under bfloat16 autocast), one thread per family.
Checkpoints and batch-1 caches live in `$EDGESCOPE_CKPT` (default `/work/ckpt`), never in the repository.
Stages: `data.py` (fetch, clean, split, assets) -> `train.py` -> `exits.py` -> `export.py` -> `prune.py` ->
`quantize.py` -> `evaluate.py` (batch-1 numbers, latency) -> `make_demo_session.sh` -> `readme.py` (this page).
""")
    # the variants table
    s.append("## Variants\n")
    s.append("Size = ONNX bytes of all segments; parameters = initializer elements of all segments (a quantized "
             "graph keeps float biases and adds scales/zero points); compression = base size / size; loyalty "
             "against the family's base at batch 1. For chains, \"exits\" lists the top-1 accuracy of each exit "
             "taken alone (the last one is the final classifier); the top-1 column is the final exit's.\n")
    s.append("| variant | technique | size (MB) | compression | parameters | top-1 (%) | label loyalty (%) "
             "| prob. loyalty (%) | exits, top-1 (%) |")
    s.append("|---|---|---|---|---|---|---|---|---|")
    for v in r["variants"]:
        fam = v["name"].split("/")[0]
        ex = " / ".join(pct(c / v["total"]) for c in v["exit_correct"]) if len(v["exit_correct"]) > 1 else ""
        base = v["name"].endswith("/base")
        s.append(f"| `{v['name']}` | {technique(v['tags'], v['name'])} | {mb(v['size_bytes'])} | "
                 f"{base_size[fam] / v['size_bytes']:.2f}x | {v['parameters']:,} | {pct(v['accuracy'])} | "
                 f"{'-' if base else pct(v['label_loyalty'])} | {'-' if base else pct(v['prob_loyalty'])} | "
                 f"{ex} |")
    s.append("")
    s.append(f"Total size of `models/` (without the recipe): {total / 1e6:.1f} MB.\n")

    # latency
    s.append("## Batch-1 latency (onnxruntime, CPU, 1 intra-op thread)\n")
    lat = r["latency"]
    s.append("Median of 500 timed runs after 50 warm-up runs, one 28x28 image, Python onnxruntime "
             f"1.31.1 on this {lat.get('_machine', {}).get('cpus', 2)}-core VM (AMD EPYC, shared with other "
             "work, so the 1-minute load average before each measurement is shown).\n")
    s.append("| model | median (ms) | p10 (ms) | p90 (ms) | load avg before |")
    s.append("|---|---|---|---|---|")
    for k, v in lat.items():
        if k.startswith("_"):
            continue
        s.append(f"| `{k}` | {v['median_ms']:.3f} | {v['p10_ms']:.3f} | {v['p90_ms']:.3f} | "
                 f"{v.get('loadavg_before', ['?'])[0]:.2f} |")
    s.append("")

    # families
    s.append("## The two families\n")
    for fam in fams:
        t = r[fam]["train"] or {}
        h = r[fam]["heads"] or {}
        hist = t.get("history", [])
        secs = sum(e.get("seconds", 0) for e in hist)
        s.append(f"### {fam}\n")
        s.append(describe(fam) + "\n")
        s.append(f"Training: {t.get('parameters', '?'):,} parameters, {t.get('epochs', '?')} epochs of "
                 f"{t.get('optimizer', '')}, max LR {t.get('max_lr')}, batch {t.get('batch')}, weight decay "
                 f"{t.get('weight_decay')}, {t.get('augmentation')}; bfloat16 autocast: "
                 f"{t.get('bf16_autocast')}; {secs / 60:.0f} min of training on one core. "
                 f"Per-epoch loss / torch test accuracy: "
                 + ", ".join(f"{e['loss']:.3f}/{pct(e.get('test_acc_torch', 0))}" for e in hist) + ".\n")
        pos = nets.FAMILIES[fam]["exits"]
        head = ("global average pooling + flatten + one fully connected layer" if fam == "resnet" else
                "one inverted-residual block (expansion 2, 64 output channels) + global average pooling + "
                "one fully connected layer")
        s.append(f"Early exits after blocks {', '.join(map(str, pos))} (`ee{pos[0]}` early, `ee{pos[1]}` middle, "
                 f"`ee{pos[2]}` late; the number is the insertion point, i.e. the block the exit follows); head: "
                 f"{head}. Heads trained classifier-wise: backbone frozen (eval mode), one cross-entropy per "
                 f"head, all heads in one pass, {h.get('epochs')} epochs, SGD + OneCycle max LR {h.get('max_lr')}. "
                 "Each position is exported as a two-segment chain (`ee<i>-s1.onnx`: stem + blocks 1..i + head -> "
                 "`exit_logits` and the carried `features<i>`; `ee<i>-s2.onnx`: the rest -> `logits`), plus `ee-all` "
                 "with every exit in one chain. ")
        exp = r[fam].get("export") or {}
        diffs = {k: v["final_max_abs_diff_vs_base"] for k, v in exp.get("chains", {}).items()}
        if diffs:
            s.append("Each chain's final logits equal the base model's up to float noise (max |difference| "
                     + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()) + ").\n")
        s.append("")

    # pruning grid
    s.append("## Pruning grid (study's Table 8)\n")
    s.append("Structured L1-magnitude channel pruning with torch-pruning (`MetaPruner`, `MagnitudeImportance(p=1)`, "
             "local per-layer ratio, final fully connected layer kept); CG = `round_to` (the kept channel count of "
             "every pruned layer is rounded down to a multiple of CG, but never below min(CG, channels): "
             "torch-pruning alone would delete a layer narrower than CG entirely); PR = pruning ratio. Each "
             "configuration was fine-tuned briefly and then evaluated at batch 1. **Bold** = selected and exported "
             "as `<family>/prune`.\n")
    for fam in fams:
        g = r[fam].get("prune")
        if not g:
            continue
        ft = g["grid"][0]["fine_tune"]
        s.append(f"### {fam}\n")
        s.append(f"Fine-tune after pruning: {ft['epochs_fraction']} of one epoch (SGD + OneCycle, max LR "
                 f"{ft['max_lr']}, same augmentation). Selection rule: {g['rule']}.\n")
        s.append("| configuration | size (MB) | compression | parameters | accuracy (%) | label loyalty (%) "
                 "| prob. loyalty (%) |")
        s.append("|---|---|---|---|---|---|---|")
        b = g["base"]
        s.append(f"| BASE | {mb(b['size_bytes'])} | 1.00x | {b['parameters']:,} | {pct(b['accuracy'])} | - | - |")
        for c in sorted(g["grid"], key=lambda c: (c["pr"], c["cg"])):
            row = (f"CG={c['cg']}, PR={c['pr']:.2f} | {mb(c['size_bytes'])} | {c['compression']:.2f}x | "
                   f"{c['parameters']:,} | {pct(c['accuracy'])} | {pct(c['label_loyalty'])} | "
                   f"{pct(c['prob_loyalty'])}")
            if c.get("selected"):
                row = " | ".join(f"**{x.strip()}**" for x in row.split("|"))
            s.append(f"| {row} |")
        s.append("")

    # sensitivity
    s.append("## Quantization sensitivity check\n")
    s.append("The base graph quantized with three op-type sets, each evaluated at batch 1 on the test split. "
             "The chosen set (bold) goes into `dq`, `ptq` and every segment of the `dq-ee*` / `ptq-ee*` chains.\n")
    for fam in fams:
        q = r[fam].get("quant")
        if not q:
            continue
        s.append(f"### {fam}\n")
        s.append(f"Rule: {q['_rule']}. Settings: DQ = `{q['_settings']['dq']}`; PTQ = `{q['_settings']['ptq']}`.\n")
        s.append("| technique | op types | size (MB) | accuracy (%) | label loyalty (%) | prob. loyalty (%) |")
        s.append("|---|---|---|---|---|---|")
        for k, v in q.items():
            if k.startswith("_"):
                continue
            kind, label = k.split(":")
            row = (f"{kind.upper()} | {label} | {mb(v['size_bytes'])} | {pct(v['accuracy'])} | "
                   f"{pct(v['label_loyalty'])} | {pct(v['prob_loyalty'])}")
            if q["_choice"].get(kind) == label:
                row = " | ".join(f"**{x.strip()}**" for x in row.split("|"))
            s.append(f"| {row} |")
        s.append("")

    t2 = table2()
    s.append("## edgescope's Table 2 on the demo session\n")
    if t2:
        s.append("`target/release/edgescope report sessions/demo.json --format md` (session made by "
                 "`models/recipe/make_demo_session.sh`: `edgescope eval` at batch 1 over the whole zoo, "
                 "one intra-op thread):\n")
        s.append(t2 + "\n")
    else:
        s.append("(not generated yet: run `models/recipe/make_demo_session.sh`, then `readme.py`)\n")
    if NOTES_FILE.exists():
        s.append(NOTES_FILE.read_text().strip() + "\n")
    atomic_write(MODELS / "README.md", "\n".join(s))
    log("wrote", MODELS / "README.md")


if __name__ == "__main__":
    main()
