"""The Python side of benches/quantize.rs: ONNX Runtime's quantize_static on models/resnet/base.onnx with the
recipe's PTQ settings (models/recipe/quantize.py), calibrated on assets/fashion-mnist/calib in batches of 50.
Prints the seconds of each quantize_static call (data loading excluded), one per line.

    python3 benches/quantize_ort.py RUNS OUT_DIR
"""

import gzip
import sys
import time
from pathlib import Path

import numpy as np
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)

ROOT = Path(__file__).resolve().parent.parent


class ArrayReader(CalibrationDataReader):
    def __init__(self, name, x, batch=50):
        self.batches = [{name: x[i:i + batch]} for i in range(0, x.shape[0], batch)]
        self.i = 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return self.batches[self.i - 1]


def calib():
    raw = gzip.open(ROOT / "assets/fashion-mnist/calib/images-idx3-ubyte.gz").read()
    n = int.from_bytes(raw[4:8], "big")
    u8 = np.frombuffer(raw[16:], np.uint8).reshape(n, 28, 28)
    x = u8.astype(np.float32) * np.float32(1.0 / 255.0)
    x = (x - np.float32(0.2860)) / np.float32(0.3530)
    return np.ascontiguousarray(x[:, None, :, :], dtype=np.float32)


def main():
    runs, out = int(sys.argv[1]), Path(sys.argv[2])
    x = calib()
    for run in range(runs):
        dst = out / f"ort-{run}.onnx"
        started = time.perf_counter()
        quantize_static(str(ROOT / "models/resnet/base.onnx"), str(dst), ArrayReader("image", x),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"OpTypesToExcludeOutputQuantization": ["Gemm"]})
        print(f"{time.perf_counter() - started:.4f}", flush=True)


if __name__ == "__main__":
    main()
