//! The arithmetic of ONNX Runtime's histogram calibrators (`calibrate.py`: `HistogramCollector`,
//! `PercentileCalibrater`, `EntropyCalibrater`), ported operation for operation so the ranges are the same floats.
//!
//! What ORT does inside `quantize_static` (no `CalibStridedMinMax`): it runs every calibration batch, stacks all
//! values of a tensor and makes **one** histogram of them with `numpy.histogram`:
//! - percentile, symmetric (ORT's default for percentile): the histogram of `|x|` over `[min |x|, max |x|]`
//!   in `num_bins` (2048) bins; the threshold is the edge where the cumulative share first reaches
//!   `percentile / 100` (99.999 %); the range is `(-edge, edge)` clipped to the data's `(min, max)`;
//! - percentile, asymmetric: the histogram of `x` over `[-t, t]`, `t = max(|min|, |max|)`, and the edges where
//!   the cumulative share reaches `(100 - p) / 200` and `1 - (100 - p) / 200`;
//! - entropy: the histogram of `x` over `[-t, t]` in `num_bins` (128) bins, then the threshold whose
//!   `num_quantized_bins` (128) quantized distribution has the smallest KL divergence from the clipped one
//!   (TensorRT's method, as ORT codes it, with its smoothing and its integer truncations).
//!
//! Histograms are counts, so edgescope fills them batch by batch once the range is known (a first pass finds
//! it): the counts equal numpy's for the stacked array without holding every activation in memory.
//!
//! numpy's float32 semantics are kept: `linspace` and the bin index are computed in float32 (no fused
//! multiply-add), `np.sum` of float32 is numpy's pairwise sum, the cumulative shares are float64. The one thing
//! not reproduced bit for bit is numpy's vectorized float32 `log` (an approximation that differs from the
//! correctly rounded logarithm in the last bit for about one value in eight): the KL divergences can differ in
//! their last bits, which moves the chosen threshold only when two candidates tie to that precision.

/// numpy's `linspace(first, last, num, dtype=float32)` with `endpoint=True`, computed in float32 as numpy 2 does
/// for float32 bounds.
pub fn linspace_f32(first: f32, last: f32, num: usize) -> Vec<f32> {
    if num == 0 {
        return Vec::new();
    }
    if num == 1 {
        return vec![first];
    }
    let div = (num - 1) as f32;
    let delta = last - first;
    let step = delta / div;
    let mut y: Vec<f32> = (0..num)
        .map(|i| {
            let i = i as f32;
            if step == 0.0 { (i / div) * delta } else { i * step }
        })
        .collect();
    for v in &mut y {
        *v += first;
    }
    if let Some(end) = y.last_mut() {
        *end = last;
    }
    y
}

/// numpy's pairwise sum of float32 (`np.sum` of a contiguous 1-D array).
pub fn pairwise_sum_f32(a: &[f32]) -> f32 {
    let n = a.len();
    if n < 8 {
        let mut res = 0.0f32;
        for &x in a {
            res += x;
        }
        res
    } else if n <= 128 {
        let mut r = [0.0f32; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - (n % 8) {
            for j in 0..8 {
                r[j] += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        while i < n {
            res += a[i];
            i += 1;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum_f32(&a[..n2]) + pairwise_sum_f32(&a[n2..])
    }
}

/// A histogram with uniform bins, as `numpy.histogram(a, bins, range)` makes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// Counts per bin.
    pub counts: Vec<i64>,
    /// `counts.len() + 1` edges (float32).
    pub edges: Vec<f32>,
    first: f32,
    last: f32,
}

impl Histogram {
    /// Empty bins over `[first, last]` (an empty range widened by 0.5 each side, as numpy does).
    pub fn new(first: f32, last: f32, bins: usize) -> Result<Self, String> {
        if bins == 0 {
            return Err("a histogram needs at least one bin".into());
        }
        if !(first.is_finite() && last.is_finite()) {
            return Err(format!("the range [{first}, {last}] is not finite"));
        }
        if first > last {
            return Err(format!("the range [{first}, {last}] is reversed"));
        }
        let (first, last) = if first == last { (first - 0.5, last + 0.5) } else { (first, last) };
        let edges = linspace_f32(first, last, bins + 1);
        if edges.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!(
                "too many bins ({bins}) for the range [{first}, {last}]: float32 cannot separate their edges"
            ));
        }
        Ok(Self { counts: vec![0; bins], edges, first, last })
    }

    /// Counts `values` (those outside the range are skipped, as numpy does).
    pub fn add(&mut self, values: &[f32]) {
        for &x in values {
            self.add_one(x);
        }
    }

    /// Counts the magnitudes `|x|` of `values`.
    pub fn add_magnitudes(&mut self, values: &[f32]) {
        for &x in values {
            self.add_one(x.abs());
        }
    }

    /// numpy's bin of one value: `((x - first) / (last - first)) * bins` in float32, truncated, then moved by one
    /// where that disagrees with the float32 edges (the last bin holds the last edge).
    #[inline]
    fn add_one(&mut self, x: f32) {
        if !(x >= self.first && x <= self.last) {
            return;
        }
        let n = self.counts.len();
        let f = ((x - self.first) / (self.last - self.first)) * n as f32;
        let mut index = (f as usize).min(n - 1);
        if index > 0 && x < self.edges[index] {
            index -= 1;
        }
        if index != n - 1 && x >= self.edges[index + 1] {
            index += 1;
        }
        self.counts[index] += 1;
    }
}

/// numpy's `searchsorted(sorted, v, side="left")`.
fn search_left(sorted: &[f64], v: f64) -> usize {
    sorted.partition_point(|&x| x < v)
}

/// `HistogramCollector.compute_percentile` for one tensor: `(lowest, highest)`. `symmetric`: the histogram
/// holds `|x|`. `min` / `max` are the data's (signed) extremes.
pub fn percentile_range(histogram: &Histogram, min: f32, max: f32, percentile: f64, symmetric: bool) -> (f32, f32) {
    let total = histogram.counts.iter().sum::<i64>() as f64;
    let mut running = 0.0f64;
    let cdf: Vec<f64> = histogram
        .counts
        .iter()
        .map(|&c| {
            running += c as f64 / total;
            running
        })
        .collect();
    let edges = &histogram.edges;
    let edge = |i: usize| edges[i.min(edges.len() - 1)];
    let (mut low, mut high) = if symmetric {
        let right = edge(search_left(&cdf, percentile / 100.0));
        (-right, right)
    } else {
        let cut = (100.0 - percentile) / 200.0;
        (edge(search_left(&cdf, cut)), edge(search_left(&cdf, 1.0 - cut)))
    };
    if low < min {
        low = min;
    }
    if high > max {
        high = max;
    }
    (low, high)
}

/// `smooth_distribution` (quant_utils.py): zeros become `eps`, the non-zero bins give that mass back.
fn smooth(p: &[i64]) -> Result<Option<Vec<f32>>, String> {
    const EPS: f64 = 0.0001;
    let zeros = p.iter().filter(|&&v| v == 0).count();
    let nonzeros = p.len() - zeros;
    if nonzeros == 0 {
        return Ok(None);
    }
    let eps1 = EPS * zeros as f64 / nonzeros as f64;
    if eps1 >= 1.0 {
        return Err(format!("smoothing failed: {zeros} empty bins for {nonzeros} filled ones (eps1 = {eps1})"));
    }
    let (add_zero, add_nonzero) = (EPS as f32, -(eps1 as f32));
    Ok(Some(
        p.iter()
            .map(|&v| {
                let is_zero = if v == 0 { 1.0f32 } else { 0.0 };
                let shift = add_zero * is_zero + add_nonzero * (1.0 - is_zero);
                v as f32 + shift
            })
            .collect(),
    ))
}

/// `entropy(p, q)` of calibrate.py in float32: both normalized, `sum(p * log(p / q))`.
fn kl_divergence(p: &[f32], q: &[f32]) -> f32 {
    let (sp, sq) = (pairwise_sum_f32(p), pairwise_sum_f32(q));
    let terms: Vec<f32> = p
        .iter()
        .zip(q)
        .map(|(&a, &b)| {
            let (pk, qk) = (1.0 * a / sp, 1.0 * b / sq);
            // calibrate.py's `rel_entr` sets zero terms first, then every term without pk > 0 and qk > 0
            // to infinity (so pk = 0 counts as infinity; smoothing leaves no zeros anyway).
            if pk > 0.0 && qk > 0.0 { pk * (pk / qk).ln() } else { f32::INFINITY }
        })
        .collect();
    pairwise_sum_f32(&terms)
}

/// `HistogramCollector.get_entropy_threshold` for one tensor: `(lowest, highest)`.
pub fn entropy_range(
    histogram: &Histogram,
    min: f32,
    max: f32,
    num_quantized_bins: usize,
) -> Result<(f32, f32), String> {
    let hist = &histogram.counts;
    let edges = &histogram.edges;
    let num_bins = hist.len();
    let zero_bin = num_bins / 2;
    let half_quantized = num_quantized_bins / 2;
    if num_quantized_bins == 0 || half_quantized > zero_bin {
        return Err(format!(
            "{num_quantized_bins} quantized bins do not fit a histogram of {num_bins} bins (need at most the number \
             of bins, and at least 2)"
        ));
    }
    let mut best: Option<(f64, (f32, f32))> = None;
    for i in half_quantized..=zero_bin {
        let start = zero_bin - i;
        let end = (zero_bin + i + 1).min(num_bins);
        let threshold = (edges[start], edges[end]);
        let sliced = &hist[start..end];
        let mut p = sliced.to_vec();
        let last = p.len() - 1;
        p[0] += hist[..start].iter().sum::<i64>();
        p[last] += hist[end..].iter().sum::<i64>();
        let merged = sliced.len() / num_quantized_bins;
        let mut quantized = vec![0i64; num_quantized_bins];
        for (index, bin) in quantized.iter_mut().enumerate() {
            *bin = sliced[index * merged..index * merged + merged].iter().sum();
        }
        quantized[num_quantized_bins - 1] += sliced[num_quantized_bins * merged..].iter().sum::<i64>();
        let mut q = vec![0i64; p.len()];
        for (index, &bin) in quantized.iter().enumerate() {
            let (s, e) = (index * merged, index * merged + merged);
            let norm = p[s..e].iter().filter(|&&v| v != 0).count() as i64;
            if norm != 0 {
                let value = (bin as f64 / norm as f64) as i64;
                q[s..e].iter_mut().for_each(|v| *v = value);
            }
        }
        let divergence = match (smooth(&p)?, smooth(&q)?) {
            (Some(p), Some(q)) => kl_divergence(&p, &q),
            _ => f32::INFINITY,
        };
        let divergence = f64::from(divergence);
        // numpy's argmin: the first minimum, and the first NaN if there is one.
        let better = match best {
            None => true,
            Some((d, _)) => !d.is_nan() && (divergence.is_nan() || divergence < d),
        };
        if better {
            best = Some((divergence, threshold));
        }
    }
    let (_, (mut low, mut high)) = best.ok_or("no candidate threshold")?;
    if low < min {
        low = min;
    }
    if high > max {
        high = max;
    }
    Ok((low, high))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_ends_exactly_and_is_float32() {
        let e = linspace_f32(-1.5, 1.5, 7);
        assert_eq!(e, vec![-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5]);
        let e = linspace_f32(0.1, 0.7, 4);
        assert_eq!(e[3], 0.7);
        assert_eq!(e[1], 0.1f32 + (0.7f32 - 0.1f32) / 3.0);
    }

    #[test]
    fn histogram_counts_like_numpy() {
        // numpy.histogram([0, 0.25, 0.5, 0.75, 1.0, 1.0, -1], 4, range=(0, 1)) -> [1, 1, 1, 3]
        let mut h = Histogram::new(0.0, 1.0, 4).expect("histogram");
        h.add(&[0.0, 0.25, 0.5, 0.75, 1.0, 1.0, -1.0]);
        assert_eq!(h.counts, vec![1, 1, 1, 3]);
        let h = Histogram::new(2.0, 2.0, 2).expect("empty range widens");
        assert_eq!(h.edges, vec![1.5, 2.0, 2.5]);
    }

    #[test]
    fn pairwise_sum_splits_like_numpy() {
        let a: Vec<f32> = (0..1000).map(|i| 0.1 + i as f32 * 1e-3).collect();
        let naive: f32 = a.iter().sum();
        let pairwise = pairwise_sum_f32(&a);
        let exact: f64 = a.iter().map(|&x| f64::from(x)).sum();
        assert!((f64::from(pairwise) - exact).abs() <= (f64::from(naive) - exact).abs());
    }

    #[test]
    fn percentile_cuts_the_tail_and_clips_to_the_data() {
        let mut h = Histogram::new(0.0, 100.0, 100).expect("histogram");
        h.add(&(0..100_000).map(|i| if i == 0 { 100.0 } else { (i % 50) as f32 }).collect::<Vec<_>>());
        // numpy: cdf = cumsum(h / h.sum()) first reaches 0.9999 at bin 49, whose left edge is 49.0.
        let (low, high) = percentile_range(&h, -3.0, 100.0, 99.99, true);
        assert_eq!((low, high), (-3.0, 49.0));
    }

    #[test]
    fn entropy_with_as_many_quantized_bins_as_bins_is_the_full_range() {
        let mut h = Histogram::new(-4.0, 4.0, 128).expect("histogram");
        h.add(&(0..1000).map(|i| (i as f32 / 1000.0) * 4.0 - 1.0).collect::<Vec<_>>());
        assert_eq!(entropy_range(&h, -1.0, 2.996, 128), Ok((-1.0, 2.996)));
        let wide = entropy_range(&h, -1.0, 2.996, 16).expect("entropy");
        assert!(wide.0 >= -1.0 && wide.1 <= 2.996 && wide.1 > 0.0, "{wide:?}");
    }
}
