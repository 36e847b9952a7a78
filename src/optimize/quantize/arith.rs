//! The arithmetic of ONNX Runtime's quantizer (`onnxruntime/quantization/quant_utils.py`), operation for
//! operation, so scales, zero points and integer tensors come out bit for bit as ORT's Python computes them:
//!
//! - `compute_scale_zp`: the range is widened to hold 0; a symmetric range is `[-absmax, absmax]`; the scale is
//!   `(rmax - rmin) / (qmax - qmin)` in **f64**, then rounded to f32; the zero point is `round(qmin - rmin /
//!   scale)` on the f64 scale (symmetric: `round((qmin + qmax) / 2)`), NumPy's round, half to even; a scale
//!   below f32's smallest normal number becomes 1 with zero point 0.
//! - `quantize_nparray`: `round(x / scale) + zero_point` in **f32** (an f32 array divided by an f32 scale),
//!   clipped to the type's full range.
//! - The int32 bias: `round(b / (s_in * s_w))` in f64 on the f32 product of the scales, clipped to int32.

use serde::{Deserialize, Serialize};

/// An 8-bit integer type to quantize to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuantType {
    /// `QUInt8`: 0..255.
    U8,
    /// `QInt8`: -128..127.
    I8,
}

impl QuantType {
    /// ONNX `TensorProto.DataType` (UINT8 = 2, INT8 = 3).
    pub fn onnx(self) -> i32 {
        match self {
            QuantType::U8 => 2,
            QuantType::I8 => 3,
        }
    }

    /// Name on the command line (`u8`, `i8`).
    pub fn name(self) -> &'static str {
        match self {
            QuantType::U8 => "u8",
            QuantType::I8 => "i8",
        }
    }

    /// Parses [`Self::name`] (also ORT's `QUInt8` / `QInt8`, any case).
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "u8" | "uint8" | "quint8" => Some(QuantType::U8),
            "i8" | "int8" | "qint8" => Some(QuantType::I8),
            _ => None,
        }
    }

    /// True for the signed type (ORT quantizes signed weights symmetrically by default).
    pub fn is_signed(self) -> bool {
        self == QuantType::I8
    }

    /// The type's whole range: where `quantize_nparray` clips.
    pub fn full_range(self) -> (i32, i32) {
        match self {
            QuantType::U8 => (0, 255),
            QuantType::I8 => (-128, 127),
        }
    }

    /// `get_qmin_qmax_for_qType`: the reduced range (7 bits) wins over the symmetric one (-127..127, signed only).
    pub fn qrange(self, reduce_range: bool, symmetric: bool) -> (i32, i32) {
        match (self, reduce_range, symmetric) {
            (QuantType::U8, true, _) => (0, 127),
            (QuantType::I8, true, _) => (-64, 64),
            (QuantType::I8, false, true) => (-127, 127),
            (t, false, _) => t.full_range(),
        }
    }
}

/// Scale and zero point of one tensor or channel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScaleZp {
    /// The f32 scale.
    pub scale: f32,
    /// The zero point (in the quantized type's range).
    pub zero_point: i32,
}

/// `compute_scale_zp(rmin, rmax, qmin, qmax, symmetric, min_real_range)` on f32 range ends, as ORT computes it.
/// Non-finite ends give `None` (ORT would write NaN or infinite scales).
pub fn compute_scale_zp(
    rmin: f32,
    rmax: f32,
    (qmin, qmax): (i32, i32),
    symmetric: bool,
    min_real_range: Option<f32>,
) -> Option<ScaleZp> {
    if !rmin.is_finite() || !rmax.is_finite() {
        return None;
    }
    // numpy.minimum / numpy.maximum with 0 of the same dtype.
    let mut rmin = if rmin <= 0.0 { rmin } else { 0.0 };
    let mut rmax = if rmax >= 0.0 { rmax } else { 0.0 };
    if let Some(range) = min_real_range {
        let floor = rmin + range;
        if floor > rmax {
            rmax = floor;
        }
    }
    if symmetric {
        let absmax = rmin.abs().max(rmax.abs());
        rmin = -absmax;
        rmax = absmax;
    }
    let dr = f64::from(rmax) - f64::from(rmin);
    let dq = f64::from(qmax) - f64::from(qmin);
    let scale = dr / dq;
    if !scale.is_finite() {
        return None;
    }
    if scale < f64::from(f32::MIN_POSITIVE) {
        return Some(ScaleZp { scale: 1.0, zero_point: 0 });
    }
    let zero_point = if symmetric {
        (f64::from(qmin + qmax) / 2.0).round_ties_even()
    } else {
        (f64::from(qmin) - f64::from(rmin) / scale).round_ties_even()
    };
    Some(ScaleZp { scale: scale as f32, zero_point: zero_point as i32 })
}

/// `compute_data_quant_params`: the range of `data` (empty: scale 1, zero point 0).
pub fn data_quant_params(
    data: &[f32],
    qtype: QuantType,
    symmetric: bool,
    reduce_range: bool,
    min_real_range: Option<f32>,
) -> Option<ScaleZp> {
    if data.is_empty() {
        return Some(ScaleZp { scale: 1.0, zero_point: 0 });
    }
    let (rmin, rmax) = min_max(data)?;
    compute_scale_zp(rmin, rmax, qtype.qrange(reduce_range, symmetric), symmetric, min_real_range)
}

/// Smallest and largest value; `None` when a value is NaN or infinite.
pub fn min_max(data: &[f32]) -> Option<(f32, f32)> {
    let mut lo = f32::INFINITY;
    let mut hi = f32::NEG_INFINITY;
    for &v in data {
        if !v.is_finite() {
            return None;
        }
        lo = lo.min(v);
        hi = hi.max(v);
    }
    Some((lo, hi))
}

/// `quantize_nparray`: `clip(round(x / scale) + zero_point)` in f32, NumPy's rounding (half to even).
pub fn quantize_value(x: f32, params: ScaleZp, qtype: QuantType) -> i32 {
    let (lo, hi) = qtype.full_range();
    let q = (x / params.scale).round_ties_even() + params.zero_point as f32;
    q.clamp(lo as f32, hi as f32) as i32
}

/// [`quantize_value`] over a slice, as the bytes of the 8-bit type.
pub fn quantize_to_bytes(data: &[f32], params: ScaleZp, qtype: QuantType, out: &mut Vec<u8>) {
    out.extend(data.iter().map(|&x| {
        let q = quantize_value(x, params, qtype);
        match qtype {
            QuantType::U8 => q as u8,
            QuantType::I8 => (q as i8) as u8,
        }
    }));
}

/// The int32 bias: `clip(round(f64(b) / f64(scale)))`; the scale is already the f32 `s_in * s_w * beta`.
pub fn quantize_bias_value(b: f32, scale: f32) -> i32 {
    let q = (f64::from(b) / f64::from(scale)).round_ties_even();
    q.clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
}

/// ORT's check that a bias scale `s_in * s_w` is large enough for the bias to fit in int32 (QDQ quantizer,
/// `_adjust_weight_scale_for_int32_bias`): returns the enlarged weight scale when it is not. `bias_absmax` is
/// computed as ORT does for the per-tensor (f64) and per-channel (f32 arithmetic) cases by the caller.
pub fn adjusted_weight_scale(smallest_valid: f64, input_scale: f32, weight_scale: f32) -> Option<f32> {
    let candidate = f64::from(input_scale) * f64::from(weight_scale);
    if candidate < smallest_valid && candidate > 0.0 {
        let ratio = smallest_valid / candidate;
        Some((f64::from(weight_scale) * ratio) as f32)
    } else {
        None
    }
}

/// `(int32 max) - (int32 min + 1)` as ORT writes it: the range a symmetric int32 bias spans.
pub const INT32_QRANGE: f64 = 4_294_967_294.0;
/// ORT's `multiplicative_epsilon` for the bias-scale check.
pub const BIAS_EPSILON: f64 = 1.0001;

/// Smallest valid bias scale for a per-tensor weight: `1.0001 * (2 * absmax) / qrange` in f64, with
/// `absmax = max(|min(b, 0)|, |max(b, 0)|)`.
pub fn smallest_bias_scale_per_tensor(bias: &[f32]) -> f64 {
    let lo = bias.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = bias.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let rmin = f64::from(lo).min(0.0);
    let rmax = f64::from(hi).max(0.0);
    let absmax = rmin.abs().max(rmax.abs());
    BIAS_EPSILON * (2.0 * absmax) / INT32_QRANGE
}

/// The same for one channel: NumPy evaluates `1.0001 * (2.0 * |b|)` in f32 there (Python floats are weak
/// scalars next to an f32), then divides by the f64 range.
pub fn smallest_bias_scale_per_channel(b: f32) -> f64 {
    let doubled = 2.0f32 * b.abs();
    let scaled = (BIAS_EPSILON as f32) * doubled;
    f64::from(scaled) / INT32_QRANGE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asymmetric_u8_range_holds_zero() {
        let p = compute_scale_zp(0.5, 2.0, QuantType::U8.qrange(false, false), false, None).expect("finite range");
        assert_eq!(p.zero_point, 0);
        assert_eq!(p.scale, (2.0f64 / 255.0) as f32);
        let p = compute_scale_zp(-1.0, 3.0, (0, 255), false, None).expect("finite range");
        // round(0 - (-1) / (4/255)) = round(63.75) = 64
        assert_eq!(p.zero_point, 64);
    }

    #[test]
    fn symmetric_i8_and_u8_zero_points() {
        let p = compute_scale_zp(-0.3, 0.5, QuantType::I8.qrange(false, true), true, None).expect("finite range");
        assert_eq!(p.zero_point, 0);
        assert_eq!(p.scale, (1.0f64 / 254.0) as f32);
        // uint8 symmetric: round(255 / 2) = 128 (half to even); reduced: round(127 / 2) = 64
        assert_eq!(compute_scale_zp(-1.0, 1.0, (0, 255), true, None).expect("finite range").zero_point, 128);
        assert_eq!(
            compute_scale_zp(-1.0, 1.0, QuantType::U8.qrange(true, true), true, None).expect("finite range").zero_point,
            64
        );
        assert_eq!(QuantType::I8.qrange(true, true), (-64, 64));
    }

    #[test]
    fn degenerate_range_gives_unit_scale() {
        assert_eq!(compute_scale_zp(0.0, 0.0, (0, 255), false, None), Some(ScaleZp { scale: 1.0, zero_point: 0 }));
        assert_eq!(compute_scale_zp(f32::NAN, 1.0, (0, 255), false, None), None);
    }

    #[test]
    fn rounding_is_half_to_even_and_clipped() {
        let p = ScaleZp { scale: 1.0, zero_point: 0 };
        assert_eq!(quantize_value(2.5, p, QuantType::I8), 2);
        assert_eq!(quantize_value(3.5, p, QuantType::I8), 4);
        assert_eq!(quantize_value(-2.5, p, QuantType::I8), -2);
        assert_eq!(quantize_value(300.0, p, QuantType::I8), 127);
        assert_eq!(quantize_value(-300.0, p, QuantType::U8), 0);
        assert_eq!(quantize_bias_value(5.0, 2.0), 2);
        assert_eq!(quantize_bias_value(1e30, 1e-10), i32::MAX);
    }
}
