"""The ONNX Runtime side of tests/quantize_calibrate.rs: calibrates models/<family>/base.onnx on the first N images
of assets/fashion-mnist/calib (batches of 50) with ORT's percentile or entropy calibrator and writes what ORT found.

    python3 tests/support/ort_calibrate.py static   MODEL METHOD N OUT_DIR
        quantize_static with the recipe's PTQ settings (models/recipe/quantize.py) and calibrate_method METHOD:
        OUT_DIR/ort.onnx and OUT_DIR/ranges.json (its calibration cache: the ranges it quantized with).
    python3 tests/support/ort_calibrate.py calibrator MODEL METHOD N OUT_DIR NUM_BINS NUM_QUANTIZED_BINS
        create_calibrator(METHOD) with those histogram settings (which quantize_static cannot pass), on the op types
        quantize_static calibrates: OUT_DIR/ranges.json.
"""

import gzip
import sys
from pathlib import Path

import numpy as np
import onnxruntime
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
from onnxruntime.quantization.quant_utils import load_model_with_shape_infer
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

ROOT = Path(__file__).resolve().parent.parent.parent
METHODS = {"percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy,
           "minmax": CalibrationMethod.MinMax}


class ArrayReader(CalibrationDataReader):
    def __init__(self, name, x, batch=50):
        self.batches = [{name: x[i:i + batch]} for i in range(0, x.shape[0], batch)]
        self.i = 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return self.batches[self.i - 1]


def calib(n):
    raw = gzip.open(ROOT / "assets/fashion-mnist/calib/images-idx3-ubyte.gz").read()
    count = int.from_bytes(raw[4:8], "big")
    u8 = np.frombuffer(raw[16:], np.uint8).reshape(count, 28, 28)[:n]
    x = u8.astype(np.float32) * np.float32(1.0 / 255.0)
    x = (x - np.float32(0.2860)) / np.float32(0.3530)
    return np.ascontiguousarray(x[:, None, :, :], dtype=np.float32)


def main():
    mode, model, method, n, out = sys.argv[1], sys.argv[2], METHODS[sys.argv[3]], int(sys.argv[4]), Path(sys.argv[5])
    out.mkdir(parents=True, exist_ok=True)
    x = calib(n)
    name = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"]).get_inputs()[0].name
    if mode == "static":
        quantize_static(model, str(out / "ort.onnx"), ArrayReader(name, x), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=method, calibration_cache_path=str(out / "ranges.json"),
                        extra_options={"OpTypesToExcludeOutputQuantization": ["Gemm"]})
    else:
        bins, quantized = int(sys.argv[6]), int(sys.argv[7])
        ops = list(set(QLinearOpsRegistry.keys()) | set(QDQRegistry.keys()))
        prepared = out / "prepared.onnx"
        import onnx
        onnx.save(load_model_with_shape_infer(Path(model)), str(prepared))
        calibrator = create_calibrator(prepared, ops, augmented_model_path=str(out / "augmented.onnx"),
                                       calibrate_method=method,
                                       extra_options={"num_bins": bins, "num_quantized_bins": quantized})
        calibrator.collect_data(ArrayReader(name, x))
        save_tensors_data(calibrator.compute_data(), out / "ranges.json")


if __name__ == "__main__":
    main()
