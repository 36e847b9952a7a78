"""Stage 6: quantization with onnxruntime.quantization.

    python quantize.py resnet
1. sensitivity check on the base graph: DQ (quantize_dynamic) and PTQ (quantize_static, QDQ,
   MinMax calibration on the calibration subset) with three op-type sets -- the full graph,
   Conv only, Conv+Gemm+MatMul -- each evaluated at batch 1 on the test split;
2. the chosen op-type set per technique -> models/<family>/dq.onnx, ptq.onnx (+ manifests);
3. PTQ-EE / DQ-EE: every segment of the middle-exit chain quantized independently with the same
   settings (PTQ: segment k is calibrated on what the quantized segment k-1 carries).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quantize_dynamic, quantize_static)

from common import CKPT, MODELS, atomic_write, b1_exits, fidelity, load_json, load_split, log, \
    onnx_params, ort_session, preprocess, save_json, variant_toml
from export import chain_segments, quant_chains

OP_SETS = {"full": None, "conv": ["Conv"], "conv+gemm+matmul": ["Conv", "Gemm", "MatMul"]}
# prefer the widest quantization whose accuracy is this close to the best candidate's
TOLERANCE_PP = 0.3


class ArrayReader(CalibrationDataReader):
    def __init__(self, name, x, batch=50):
        self.batches = [{name: x[i:i + batch]} for i in range(0, x.shape[0], batch)]
        self.i = 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return self.batches[self.i - 1]

    def rewind(self):
        self.i = 0


def save_model(src: Path, dst: Path):
    m = onnx.load(str(src))
    onnx.checker.check_model(m)
    atomic_write(dst, m.SerializeToString(deterministic=True))


def quantize(kind, ops, src: Path, dst: Path, calib=None):
    """kind 'dq' or 'ptq'; calib: float32 array fed to the graph's single input (PTQ only)."""
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td) / "q.onnx"
        if kind == "dq":
            quantize_dynamic(str(src), str(tmp), op_types_to_quantize=ops, per_channel=False,
                             weight_type=QuantType.QUInt8)
        else:
            name = ort_session(src).get_inputs()[0].name
            quantize_static(str(src), str(tmp), ArrayReader(name, calib), op_types_to_quantize=ops,
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax,
                            # logits stay float: a quantized Gemm output makes exact argmax ties
                            extra_options={"OpTypesToExcludeOutputQuantization": ["Gemm"]})
        save_model(tmp, dst)


QUANT_KW = {
    "dq": "quantize_dynamic(per_channel=False, weight_type=QUInt8)",
    "ptq": "quantize_static(QDQ, per_channel=True, activations QUInt8, weights QInt8, MinMax "
           "calibration on the 1000-image calibration subset in batches of 50, "
           "OpTypesToExcludeOutputQuantization=[Gemm])",
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("family")
    a = ap.parse_args()
    fam = a.family
    out = MODELS / fam
    d = CKPT / fam / "quant"
    d.mkdir(parents=True, exist_ok=True)
    _, (tx, ty), (cx, _) = load_split()
    xt, xc = preprocess(tx), preprocess(cx)
    base = out / "base.onnx"
    (base_logits,) = b1_exits([{"path": base, "exit": "logits"}], xt, f"{fam}/base")

    # 1. sensitivity check
    sens_path = CKPT / fam / "quant_sensitivity.json"
    sens = load_json(sens_path, {})
    for kind in ("dq", "ptq"):
        for label, ops in OP_SETS.items():
            key = f"{kind}:{label}"
            f = d / f"{kind}-{label}.onnx"
            if key in sens and f.exists():
                continue
            quantize(kind, ops, base, f, xc)
            (lg,) = b1_exits([{"path": f, "exit": "logits"}], xt, f"{fam}/{kind}-{label}")
            sens[key] = {"technique": kind, "op_types": ops or "all supported",
                         "size_bytes": f.stat().st_size, **fidelity(base_logits, lg, ty)}
            log(f"{fam} {key}: acc {sens[key]['accuracy']:.4f} LL {sens[key]['label_loyalty']:.4f}")
            save_json(sens_path, sens)

    # 2. choice per technique
    choice = {}
    for kind in ("dq", "ptq"):
        cands = {label: sens[f"{kind}:{label}"] for label in OP_SETS}
        best = max(c["accuracy"] for c in cands.values())
        # order of preference: widest first
        for label in ("full", "conv+gemm+matmul", "conv"):
            if 100 * (best - cands[label]["accuracy"]) <= TOLERANCE_PP:
                choice[kind] = label
                break
        shutil.copyfile(d / f"{kind}-{choice[kind]}.onnx", out / f"{kind}.onnx")
        atomic_write(out / f"{kind}.toml", variant_toml(f"{fam}/{kind}", [kind], f"{fam}/base",
                                                        [{"file": f"{kind}.onnx",
                                                          "exit": "logits"}]))
        log(f"{fam}: {kind} uses op set {choice[kind]}")
    sens["_choice"] = choice
    sens["_rule"] = (f"widest op set (full > conv+gemm+matmul > conv) whose batch-1 accuracy is "
                     f"within {TOLERANCE_PP} pp of the best of the three")
    sens["_settings"] = QUANT_KW
    save_json(sens_path, sens)

    # 3. quantized early-exit chains, segment by segment
    for kind in ("dq", "ptq"):
        ops = OP_SETS[choice[kind]]
        for chain in quant_chains(fam):
            fsegs = chain_segments(fam, chain)
            qsegs = chain_segments(fam, chain, prefix=f"{kind}-")
            feed = xc
            for fs, qs in zip(fsegs, qsegs):
                dst = out / qs["file"]
                if not dst.exists():
                    quantize(kind, ops, out / fs["file"], dst, feed)
                if "carry" in qs and kind == "ptq":
                    s = ort_session(dst, threads=2)
                    name = s.get_inputs()[0].name
                    feed = np.concatenate([s.run([qs["carry"]], {name: feed[i:i + 100]})[0]
                                           for i in range(0, len(feed), 100)])
            atomic_write(out / f"{kind}-{chain}.toml",
                         variant_toml(f"{fam}/{kind}-{chain}", [kind, "ee"], f"{fam}/base", qsegs))
            log(f"{fam}: {kind}-{chain} written")


if __name__ == "__main__":
    main()
