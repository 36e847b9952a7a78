//! The trace: what one run of a variant over a dataset recorded, sample by sample and exit by exit.
//!
//! Every segment runs for every sample, so any exit policy can be evaluated afterwards. Per exit we keep
//! what the metrics need and nothing more: the top-k classes and their probabilities (k = all classes up to
//! [`MAX_TOP_K`]), the entropy of the full distribution, and per segment the measured latency.
//!
//! Beyond [`MAX_TOP_K`] classes the top-k record cannot give probability loyalty exactly (on ImageNet photos a
//! quarter or more of the mass lies outside the top 16). Such runs also record, per sample and exit, the
//! Jensen-Shannon divergence against the reference (base) model's full distribution, computed while both full
//! distributions were at hand: 4 bytes per sample and exit, exact, whatever the class count. See
//! [`ExitTrace::reference_jsd_bits`] and [`crate::analysis::loyalty`] for the bound used when it is absent.

use serde::{Deserialize, Serialize};

/// Classes kept per sample and exit. Up to this many classes the distribution is stored exactly; beyond it
/// the tail mass is kept and spread uniformly when probability loyalty is computed (an approximation whose
/// error is bounded by the tail mass, which is small for a confident classifier).
pub const MAX_TOP_K: usize = 16;

/// The recorded output of one exit for every sample.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExitTrace {
    /// Index of the segment that produces this exit.
    pub segment: usize,
    /// Classes kept per sample: `min(num_classes, MAX_TOP_K)`.
    pub top_k: usize,
    /// `top_k` class indices per sample, most probable first (`sample * top_k + rank`).
    pub top_classes: Vec<u16>,
    /// The probabilities of `top_classes`.
    pub top_probs: Vec<f32>,
    /// Shannon entropy of the full distribution in nats.
    pub entropy_nats: Vec<f32>,
    /// Jensen-Shannon divergence in bits between this exit's full distribution and the reference model's, per
    /// sample; empty when it was not measured (then probability loyalty comes from the top-k record, with an
    /// error bound). Measured only when the classes do not all fit in the top-k record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reference_jsd_bits: Vec<f32>,
}

impl ExitTrace {
    /// An empty exit record for `num_classes` classes.
    pub fn new(segment: usize, num_classes: usize) -> Self {
        Self { segment, top_k: num_classes.clamp(1, MAX_TOP_K), ..Self::default() }
    }

    /// Number of samples recorded.
    pub fn len(&self) -> usize {
        self.entropy_nats.len()
    }

    /// True when no sample has been recorded.
    pub fn is_empty(&self) -> bool {
        self.entropy_nats.is_empty()
    }

    /// Appends one sample's probability distribution (already normalized).
    pub fn push_distribution(&mut self, probs: &[f32]) {
        let k = self.top_k.min(probs.len());
        let mut order: Vec<usize> = (0..probs.len()).collect();
        // Partial selection then a sort of the k best: O(C + k log k).
        if k < order.len() {
            order.select_nth_unstable_by(k, |&a, &b| probs[b].total_cmp(&probs[a]));
        }
        order.truncate(k);
        order.sort_unstable_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        for rank in 0..self.top_k {
            let class = order.get(rank).copied().unwrap_or(0);
            self.top_classes.push(class as u16);
            self.top_probs.push(if rank < k { probs[class] } else { 0.0 });
        }
        self.entropy_nats.push(entropy_nats(probs) as f32);
    }

    /// The top-1 class of a sample.
    pub fn predicted(&self, sample: usize) -> u16 {
        self.top_classes[sample * self.top_k]
    }

    /// The classes of a sample, most probable first.
    pub fn classes(&self, sample: usize) -> &[u16] {
        &self.top_classes[sample * self.top_k..(sample + 1) * self.top_k]
    }

    /// The probabilities of [`Self::classes`].
    pub fn probs(&self, sample: usize) -> &[f32] {
        &self.top_probs[sample * self.top_k..(sample + 1) * self.top_k]
    }

    /// Highest class probability of a sample.
    pub fn max_probability(&self, sample: usize) -> f32 {
        self.top_probs[sample * self.top_k]
    }

    /// Difference between the two highest class probabilities.
    pub fn margin(&self, sample: usize) -> f32 {
        let probs = self.probs(sample);
        probs[0] - probs.get(1).copied().unwrap_or(0.0)
    }

    /// True when every sample has its divergence against the reference model.
    pub fn has_reference_jsd(&self) -> bool {
        !self.is_empty() && self.reference_jsd_bits.len() == self.len()
    }
}

/// Everything one run recorded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// Number of classes of the classifier's output.
    pub num_classes: usize,
    /// The true label of every recorded sample (dataset order).
    pub labels: Vec<u32>,
    /// Exits in depth order; the last one is the final exit.
    pub exits: Vec<ExitTrace>,
    /// Measured latency of every segment for every sample, `[segment][sample]`, microseconds.
    pub segment_latency_us: Vec<Vec<f32>>,
    /// Preprocessing time of every sample (decode, resize, normalize), microseconds.
    pub preprocess_us: Vec<f32>,
    /// The variant whose full distributions [`ExitTrace::reference_jsd_bits`] compares with (the base).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

impl Trace {
    /// An empty trace for a chain of `num_segments` segments whose exits come from `exit_segments`.
    pub fn new(num_classes: usize, num_segments: usize, exit_segments: &[usize]) -> Self {
        Self {
            num_classes,
            labels: Vec::new(),
            exits: exit_segments.iter().map(|&segment| ExitTrace::new(segment, num_classes)).collect(),
            segment_latency_us: vec![Vec::new(); num_segments],
            preprocess_us: Vec::new(),
            reference: None,
        }
    }

    /// Number of recorded samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when no sample was recorded.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of early exits (all exits but the final one).
    pub fn early_exit_count(&self) -> usize {
        self.exits.len().saturating_sub(1)
    }

    /// Checks the internal consistency of a trace (lengths, indices, segments); the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.labels.len();
        if self.exits.is_empty() {
            return Err("trace has no exit".into());
        }
        if self.num_classes == 0 || self.num_classes > usize::from(u16::MAX) {
            return Err(format!("trace has an invalid class count {}", self.num_classes));
        }
        if let Some(label) = self.labels.iter().find(|&&l| l as usize >= self.num_classes) {
            return Err(format!("label {label} is out of range for {} classes", self.num_classes));
        }
        if self.preprocess_us.len() != n {
            return Err("preprocessing times do not match the sample count".into());
        }
        if self.segment_latency_us.iter().any(|s| s.len() != n) {
            return Err("segment latencies do not match the sample count".into());
        }
        let mut last_segment = 0;
        for (index, exit) in self.exits.iter().enumerate() {
            // `n * top_k` is checked: both come from files and peers.
            let values = n.checked_mul(exit.top_k);
            if exit.top_k == 0
                || exit.top_k > MAX_TOP_K
                || exit.len() != n
                || values != Some(exit.top_classes.len())
                || values != Some(exit.top_probs.len())
            {
                return Err(format!("exit {index} does not match the sample count"));
            }
            if exit.segment >= self.segment_latency_us.len() || exit.segment < last_segment {
                return Err(format!("exit {index} names segment {} out of order", exit.segment));
            }
            if exit.top_classes.iter().any(|&c| usize::from(c) >= self.num_classes) {
                return Err(format!("exit {index} holds a class index out of range"));
            }
            if !exit.reference_jsd_bits.is_empty()
                && (exit.reference_jsd_bits.len() != n
                    || exit.reference_jsd_bits.iter().any(|d| !(0.0..=1.0 + 1e-6).contains(d)))
            {
                return Err(format!(
                    "exit {index}'s divergences against the reference do not match the sample count or lie outside \
                     [0, 1] bit"
                ));
            }
            last_segment = exit.segment;
        }
        Ok(())
    }

    /// Samples `from..self.len()` as a trace of their own (for streaming checkpoints).
    pub fn tail(&self, from: usize) -> Trace {
        self.samples(from..self.len())
    }

    /// The first `count` samples (all of them when the trace is shorter).
    pub fn head(&self, count: usize) -> Trace {
        self.samples(0..count)
    }

    /// Samples `range` (clamped to the trace) as a trace of their own.
    fn samples(&self, range: std::ops::Range<usize>) -> Trace {
        let end = range.end.min(self.len());
        let start = range.start.min(end);
        Trace {
            num_classes: self.num_classes,
            labels: self.labels[start..end].to_vec(),
            exits: self
                .exits
                .iter()
                .map(|e| ExitTrace {
                    segment: e.segment,
                    top_k: e.top_k,
                    top_classes: e.top_classes[start * e.top_k..end * e.top_k].to_vec(),
                    top_probs: e.top_probs[start * e.top_k..end * e.top_k].to_vec(),
                    entropy_nats: e.entropy_nats[start..end].to_vec(),
                    reference_jsd_bits: if e.has_reference_jsd() {
                        e.reference_jsd_bits[start..end].to_vec()
                    } else {
                        Vec::new()
                    },
                })
                .collect(),
            segment_latency_us: self.segment_latency_us.iter().map(|s| s[start..end].to_vec()).collect(),
            preprocess_us: self.preprocess_us[start..end].to_vec(),
            reference: self.reference.clone(),
        }
    }

    /// Appends the samples of `more`, which must have the same exits; returns false (and changes nothing) if
    /// the shapes differ. Divergences against the reference survive only when both parts have them against the
    /// same reference.
    pub fn append(&mut self, more: &Trace) -> bool {
        let same_shape = self.num_classes == more.num_classes
            && self.exits.len() == more.exits.len()
            && self.segment_latency_us.len() == more.segment_latency_us.len()
            && self.exits.iter().zip(&more.exits).all(|(a, b)| a.segment == b.segment && a.top_k == b.top_k);
        if !same_shape {
            return false;
        }
        self.labels.extend_from_slice(&more.labels);
        self.preprocess_us.extend_from_slice(&more.preprocess_us);
        for (a, b) in self.segment_latency_us.iter_mut().zip(&more.segment_latency_us) {
            a.extend_from_slice(b);
        }
        let was_empty = self.is_empty();
        let keep_reference = (was_empty || self.reference == more.reference)
            && self
                .exits
                .iter()
                .zip(&more.exits)
                .all(|(a, b)| (a.has_reference_jsd() || a.is_empty()) && (b.has_reference_jsd() || b.is_empty()));
        for (a, b) in self.exits.iter_mut().zip(&more.exits) {
            a.top_classes.extend_from_slice(&b.top_classes);
            a.top_probs.extend_from_slice(&b.top_probs);
            a.entropy_nats.extend_from_slice(&b.entropy_nats);
            if keep_reference {
                a.reference_jsd_bits.extend_from_slice(&b.reference_jsd_bits);
            } else {
                a.reference_jsd_bits.clear();
            }
        }
        if !keep_reference {
            self.reference = None;
        } else if was_empty {
            self.reference.clone_from(&more.reference);
        }
        true
    }

    /// Inference latency of a sample that leaves at `exit`: the sum of the segments up to that exit's segment.
    pub fn latency_to_exit_us(&self, sample: usize, exit: usize) -> f32 {
        let last = self.exits[exit].segment;
        self.segment_latency_us[..=last].iter().map(|segment| segment[sample]).sum()
    }
}

/// Numerically stable softmax of `logits` into `probs` (computed in f64).
pub fn softmax(logits: &[f32], probs: &mut Vec<f32>) {
    probs.clear();
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.iter().map(|&l| (f64::from(l) - f64::from(max)).exp()).collect();
    let sum: f64 = exps.iter().sum();
    probs.extend(exps.iter().map(|e| (e / sum) as f32));
}

/// Shannon entropy in nats (terms with p = 0 contribute 0).
pub fn entropy_nats(probs: &[f32]) -> f64 {
    probs.iter().filter(|&&p| p > 0.0).map(|&p| -f64::from(p) * f64::from(p).ln()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_the_most_probable_classes_in_order() {
        let mut exit = ExitTrace::new(0, 4);
        exit.push_distribution(&[0.1, 0.6, 0.05, 0.25]);
        assert_eq!(exit.classes(0), &[1, 3, 0, 2]);
        assert_eq!(exit.predicted(0), 1);
        assert!((exit.margin(0) - 0.35).abs() < 1e-6);
        let expected = -(0.1f64 * 0.1f64.ln() + 0.6 * 0.6f64.ln() + 0.05 * 0.05f64.ln() + 0.25 * 0.25f64.ln());
        assert!((f64::from(exit.entropy_nats[0]) - expected).abs() < 1e-6);
    }

    #[test]
    fn tails_append_back_to_the_whole() {
        let mut whole = Trace::new(3, 1, &[0]);
        for (i, p) in [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]].iter().enumerate() {
            whole.labels.push(i as u32);
            whole.preprocess_us.push(1.0);
            whole.segment_latency_us[0].push(i as f32);
            whole.exits[0].push_distribution(p);
        }
        let mut rebuilt = whole.tail(3);
        assert!(rebuilt.is_empty());
        let mut first = whole.clone();
        first.labels.truncate(1);
        first.preprocess_us.truncate(1);
        first.segment_latency_us[0].truncate(1);
        first.exits[0].top_classes.truncate(3);
        first.exits[0].top_probs.truncate(3);
        first.exits[0].entropy_nats.truncate(1);
        assert!(rebuilt.append(&first));
        assert!(rebuilt.append(&whole.tail(1)));
        assert_eq!(rebuilt, whole);
        assert!(!Trace::new(4, 1, &[0]).append(&whole), "shapes must match");
    }

    #[test]
    fn softmax_is_stable_for_large_logits() {
        let mut probs = Vec::new();
        softmax(&[1000.0, 1000.0, -1000.0], &mut probs);
        assert!((probs[0] - 0.5).abs() < 1e-6 && probs[2] == 0.0);
    }
}
