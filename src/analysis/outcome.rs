//! Outcomes: what an exit policy yields on a trace, measured against the base variant's trace.
//!
//! [`PreparedTrace`] does the per-sample work once (confidence scores, correctness, loyalty against the base,
//! cumulative latency per exit), laid out sample-major, so that evaluating a policy is one linear pass: this is
//! what runs on every frame while a threshold slider moves.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::loyalty::{BoundedJsd, TopKDistribution, jsd_bits_bounded};
use super::policy::{Criterion, Policy};
use super::trace::{ExitTrace, Trace};

const CORRECT: u8 = 1;
const CORRECT_TOP5: u8 = 2;
const AGREES_WITH_BASE: u8 = 4;

/// What one sample would yield if it left at one exit.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SampleAtExit {
    /// Inference latency up to and including this exit's segment, microseconds.
    pub latency_us: f32,
    /// The same plus the sample's preprocessing time, microseconds.
    pub total_us: f32,
    /// Probability loyalty against the base's final output (1 when there is no base).
    pub probability_loyalty: f32,
    /// The most `probability_loyalty` can be off (0 when it is exact).
    pub loyalty_error: f32,
    /// `CORRECT | CORRECT_TOP5 | AGREES_WITH_BASE`.
    pub flags: u8,
}

/// A trace made ready for fast policy evaluation under one criterion.
#[derive(Clone, Debug)]
pub struct PreparedTrace {
    pub(crate) samples: usize,
    pub(crate) exits: usize,
    pub(crate) criterion: Criterion,
    pub(crate) num_classes: usize,
    /// Confidence score per sample and early exit, `[sample * early + exit]`.
    pub(crate) confidence: Vec<f32>,
    /// Per sample and exit (final included), `[sample * exits + exit]`; independent of the criterion, so
    /// shared by every criterion's preparation of the same trace (see [`Self::with_criterion`]).
    pub(crate) at_exit: Arc<Vec<SampleAtExit>>,
    pub(crate) has_base: bool,
    pub(crate) base_mean_latency_us: Option<f64>,
    pub(crate) base_accuracy: Option<f64>,
}

/// Latency statistics over the samples of a run, microseconds. Percentiles use the nearest-rank method.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
}

impl LatencySummary {
    /// Summarizes `values` (reordered in place).
    pub fn from_values(values: &mut [f32]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        let mean_us = values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len() as f64;
        let mut rank = |p: f64| {
            let index = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1;
            let (_, value, _) = values.select_nth_unstable_by(index, f32::total_cmp);
            f64::from(*value)
        };
        // Highest rank first: each selection leaves the lower part partitioned for the next one.
        let p99_us = rank(0.99);
        let p90_us = rank(0.90);
        let p50_us = rank(0.50);
        Self { mean_us, p50_us, p90_us, p99_us }
    }
}

/// What a policy yields on a trace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Samples evaluated.
    pub samples: usize,
    /// Samples whose top-1 prediction (at the exit they left from) is the label.
    pub correct: usize,
    /// Top-1 accuracy in [0, 1].
    pub accuracy: f64,
    /// Top-5 accuracy, when there are more than 5 classes.
    pub top5_accuracy: Option<f64>,
    /// Share of samples whose top-1 label equals the base's, when a base trace was given.
    pub label_loyalty: Option<f64>,
    /// Mean of `1 - sqrt(JSD_bits(p_base, p))`, when a base trace was given.
    pub probability_loyalty: Option<f64>,
    /// The most `probability_loyalty` can be off from the exact value (0 when exact: every class recorded, or
    /// the divergence measured against the base's full distributions during the run).
    #[serde(default)]
    pub probability_loyalty_error: Option<f64>,
    /// Samples leaving at each exit (the last is the final exit).
    pub exit_counts: Vec<usize>,
    /// `exit_counts` as shares of the samples.
    pub exit_rates: Vec<f64>,
    /// Share of samples leaving at any early exit.
    pub early_exit_rate: f64,
    /// Predicted inference latency per sample (segments only).
    pub latency: LatencySummary,
    /// Mean latency per sample including preprocessing, microseconds.
    pub mean_with_preprocessing_us: f64,
    /// Time for the whole dataset including preprocessing, seconds (the study's "total inference time").
    pub total_time_s: f64,
    /// Mean inference latency of the samples that left early.
    pub early_exit_mean_latency_us: Option<f64>,
    /// Mean inference latency of the samples that reached the final exit.
    pub final_exit_mean_latency_us: Option<f64>,
    /// Base mean latency / this mean latency, when a base trace was given.
    pub speedup: Option<f64>,
}

impl PreparedTrace {
    /// Prepares `trace` under `criterion`, comparing with `base` (the base variant's trace on the same dataset).
    ///
    /// Loyalty needs the base to cover the same samples: when its length differs, loyalty is left out.
    pub fn new(trace: &Trace, base: Option<&Trace>, criterion: Criterion) -> Self {
        let samples = trace.len();
        let exits = trace.exits.len();
        let num_classes = trace.num_classes;
        let comparable_base =
            base.filter(|b| b.len() == samples && b.num_classes == num_classes && !b.exits.is_empty());
        let base_final = comparable_base.and_then(|b| b.exits.last());
        // The base compared with itself: its final exit is its own reference, exactly.
        let is_the_base = base.is_some_and(|b| std::ptr::eq(b, trace));
        let measured_divergence: Vec<bool> = trace
            .exits
            .iter()
            .map(|exit| base_final.is_some_and(|b| measured_divergence_agrees(exit, b, num_classes)))
            .collect();

        let mut at_exit = Vec::with_capacity(samples * exits);
        for sample in 0..samples {
            let label = trace.labels[sample];
            let preprocess_us = trace.preprocess_us[sample];
            for (index, exit) in trace.exits.iter().enumerate() {
                let latency_us = trace.latency_to_exit_us(sample, index);
                let flags = judge(exit, sample, label, base_final);
                let jsd = match base_final {
                    _ if measured_divergence[index] => BoundedJsd::exact(f64::from(exit.reference_jsd_bits[sample])),
                    Some(_) if is_the_base && index + 1 == exits => BoundedJsd::exact(0.0),
                    Some(base) => estimated_jsd(exit, base, sample, num_classes),
                    None => BoundedJsd::exact(0.0),
                };
                let (loyalty, error) = jsd.loyalty_and_error();
                at_exit.push(SampleAtExit {
                    latency_us,
                    total_us: latency_us + preprocess_us,
                    probability_loyalty: loyalty as f32,
                    loyalty_error: error as f32,
                    flags,
                });
            }
        }

        let base_mean_latency_us = base.filter(|b| !b.is_empty() && !b.exits.is_empty()).map(|b| {
            let last = b.exits.len() - 1;
            (0..b.len()).map(|s| f64::from(b.latency_to_exit_us(s, last))).sum::<f64>() / b.len() as f64
        });
        let base_accuracy = base.filter(|b| !b.is_empty()).and_then(|b| {
            let last = b.exits.last()?;
            let correct = (0..b.len()).filter(|&s| u32::from(last.predicted(s)) == b.labels[s]).count();
            Some(correct as f64 / b.len() as f64)
        });

        Self {
            samples,
            exits,
            criterion,
            num_classes,
            confidence: confidences(trace, criterion),
            at_exit: Arc::new(at_exit),
            has_base: base_final.is_some(),
            base_mean_latency_us,
            base_accuracy,
        }
    }

    /// The same preparation under another criterion: only the confidence scores are computed again (one value
    /// per sample and early exit), the per-sample outcomes are shared. `trace` must be the trace this was
    /// prepared from.
    pub fn with_criterion(&self, trace: &Trace, criterion: Criterion) -> Self {
        if criterion == self.criterion || trace.len() != self.samples || trace.exits.len() != self.exits {
            return Self { criterion, ..self.clone() };
        }
        Self { criterion, confidence: confidences(trace, criterion), ..self.clone() }
    }

    /// Samples in the trace.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Number of early exits.
    pub fn early_exits(&self) -> usize {
        self.exits - 1
    }

    /// The criterion this preparation scores with.
    pub fn criterion(&self) -> Criterion {
        self.criterion
    }

    /// Top-1 accuracy of the base trace, when one was given.
    pub fn base_accuracy(&self) -> Option<f64> {
        self.base_accuracy
    }

    /// Mean inference latency of the base trace, when one was given.
    pub fn base_mean_latency_us(&self) -> Option<f64> {
        self.base_mean_latency_us
    }

    /// The confidence scores of one early exit, one per sample (for histograms and percentile thresholds).
    pub fn confidences_at(&self, exit: usize) -> impl Iterator<Item = f32> + '_ {
        let early = self.early_exits();
        (0..self.samples).map(move |s| self.confidence[s * early + exit])
    }

    /// The exit every sample takes under `policy` (the final exit is `early_exits()`).
    pub fn exit_of_each_sample(&self, policy: &Policy) -> Vec<u8> {
        let cuts = self.cuts_of(policy);
        (0..self.samples).map(|s| self.exit_of(s, &cuts) as u8).collect()
    }

    fn cuts_of(&self, policy: &Policy) -> Vec<f32> {
        let mut cuts = if policy.criterion == self.criterion {
            policy.cuts()
        } else {
            // A policy of another criterion cannot be applied to these scores: treat as "never exit".
            Vec::new()
        };
        cuts.resize(self.early_exits(), f32::INFINITY);
        cuts
    }

    #[inline]
    fn exit_of(&self, sample: usize, cuts: &[f32]) -> usize {
        let early = cuts.len();
        let scores = &self.confidence[sample * early..(sample + 1) * early];
        scores.iter().zip(cuts).position(|(score, cut)| score >= cut).unwrap_or(early)
    }

    /// The exit and predicted inference latency of every sample under `policy` (for histograms).
    pub fn exits_and_latencies(&self, policy: &Policy) -> Vec<(u8, f32)> {
        let cuts = self.cuts_of(policy);
        (0..self.samples)
            .map(|s| {
                let exit = self.exit_of(s, &cuts);
                (exit as u8, self.at_exit[s * self.exits + exit].latency_us)
            })
            .collect()
    }

    /// Evaluates `policy`; `scratch` is reused between calls to avoid an allocation per frame.
    pub fn evaluate_with(&self, policy: &Policy, scratch: &mut Vec<f32>) -> Outcome {
        let cuts = self.cuts_of(policy);
        let early = cuts.len();
        let mut exit_counts = vec![0usize; self.exits];
        let (mut correct, mut correct_top5, mut agree) = (0usize, 0usize, 0usize);
        let (mut loyalty_sum, mut loyalty_error_sum, mut total_sum) = (0f64, 0f64, 0f64);
        let (mut early_latency_sum, mut final_latency_sum) = (0f64, 0f64);
        scratch.clear();
        scratch.reserve(self.samples);
        for sample in 0..self.samples {
            let exit = self.exit_of(sample, &cuts);
            let at = self.at_exit[sample * self.exits + exit];
            exit_counts[exit] += 1;
            correct += usize::from(at.flags & CORRECT != 0);
            correct_top5 += usize::from(at.flags & CORRECT_TOP5 != 0);
            agree += usize::from(at.flags & AGREES_WITH_BASE != 0);
            loyalty_sum += f64::from(at.probability_loyalty);
            loyalty_error_sum += f64::from(at.loyalty_error);
            total_sum += f64::from(at.total_us);
            if exit < early {
                early_latency_sum += f64::from(at.latency_us);
            } else {
                final_latency_sum += f64::from(at.latency_us);
            }
            scratch.push(at.latency_us);
        }
        let n = self.samples.max(1) as f64;
        let latency = LatencySummary::from_values(scratch);
        let early_count: usize = exit_counts[..early].iter().sum();
        let final_count = exit_counts[early];
        Outcome {
            samples: self.samples,
            correct,
            accuracy: correct as f64 / n,
            top5_accuracy: (self.num_classes > 5).then(|| correct_top5 as f64 / n),
            label_loyalty: self.has_base.then(|| agree as f64 / n),
            probability_loyalty: self.has_base.then(|| loyalty_sum / n),
            probability_loyalty_error: self.has_base.then(|| loyalty_error_sum / n),
            exit_rates: exit_counts.iter().map(|&c| c as f64 / n).collect(),
            early_exit_rate: early_count as f64 / n,
            exit_counts,
            mean_with_preprocessing_us: total_sum / n,
            total_time_s: total_sum / 1e6,
            early_exit_mean_latency_us: (early_count > 0).then(|| early_latency_sum / early_count as f64),
            final_exit_mean_latency_us: (final_count > 0).then(|| final_latency_sum / final_count as f64),
            speedup: self.base_mean_latency_us.filter(|_| latency.mean_us > 0.0).map(|b| b / latency.mean_us),
            latency,
        }
    }

    /// Evaluates `policy`.
    pub fn evaluate(&self, policy: &Policy) -> Outcome {
        self.evaluate_with(policy, &mut Vec::new())
    }
}

/// Confidence scores per sample and early exit, `[sample * early + exit]`.
fn confidences(trace: &Trace, criterion: Criterion) -> Vec<f32> {
    let early = trace.early_exit_count();
    let mut confidence = Vec::with_capacity(trace.len() * early);
    for sample in 0..trace.len() {
        for exit in &trace.exits[..early] {
            confidence.push(criterion.confidence(exit, sample, trace.num_classes));
        }
    }
    confidence
}

/// Tolerance when checking a measured divergence against the interval the top-k records allow, bits: the two
/// runs of the base (the base's own trace and the reference run) may differ by rounding.
const MEASURED_DIVERGENCE_TOLERANCE_BITS: f64 = 1e-4;

/// Samples checked per exit by [`measured_divergence_agrees`], evenly spaced: enough to catch a reference
/// other than this base, cheap enough for the first frame of a 50 000-sample trace.
const MEASURED_DIVERGENCE_CHECKS: usize = 2000;

/// True when `exit` carries divergences measured against a reference and they lie where the top-k records of
/// `exit` and the base's final exit allow (checked on up to [`MEASURED_DIVERGENCE_CHECKS`] samples): a
/// reference other than this base is caught here, and then the top-k estimate (with its bound) is used.
fn measured_divergence_agrees(exit: &ExitTrace, base_final: &ExitTrace, num_classes: usize) -> bool {
    if !exit.has_reference_jsd() || base_final.len() != exit.len() {
        return false;
    }
    let step = exit.len().div_ceil(MEASURED_DIVERGENCE_CHECKS).max(1);
    (0..exit.len()).step_by(step).all(|sample| {
        let bounded = estimated_jsd(exit, base_final, sample, num_classes);
        let measured = f64::from(exit.reference_jsd_bits[sample]);
        bounded.low - MEASURED_DIVERGENCE_TOLERANCE_BITS <= measured
            && measured <= bounded.high + MEASURED_DIVERGENCE_TOLERANCE_BITS
    })
}

/// Correctness flags of one sample at one exit.
fn judge(exit: &ExitTrace, sample: usize, label: u32, base: Option<&ExitTrace>) -> u8 {
    let classes = exit.classes(sample);
    let mut flags = 0;
    if u32::from(classes[0]) == label {
        flags |= CORRECT;
    }
    if classes.iter().take(5).any(|&c| u32::from(c) == label) {
        flags |= CORRECT_TOP5;
    }
    match base {
        Some(base) if base.predicted(sample) != classes[0] => flags,
        _ => flags | AGREES_WITH_BASE,
    }
}

/// The JSD of one sample at one exit against the base, estimated from the two top-k records, with its bound.
fn estimated_jsd(exit: &ExitTrace, base: &ExitTrace, sample: usize, num_classes: usize) -> BoundedJsd {
    jsd_bits_bounded(
        TopKDistribution { classes: base.classes(sample), probs: base.probs(sample), num_classes },
        TopKDistribution { classes: exit.classes(sample), probs: exit.probs(sample), num_classes },
    )
}

/// Compression of a variant against its base: base size / variant size.
pub fn compression_ratio(base_bytes: u64, variant_bytes: u64) -> Option<f64> {
    (variant_bytes > 0).then(|| base_bytes as f64 / variant_bytes as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two-exit trace of 4 samples, 3 classes; hand-checkable numbers.
    pub(crate) fn small_trace() -> Trace {
        let mut t = Trace::new(3, 2, &[0, 1]);
        t.labels = vec![0, 1, 2, 0];
        let early = [[0.9, 0.05, 0.05], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.3, 0.6, 0.1]];
        let last = [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.7, 0.2, 0.1]];
        for s in 0..4 {
            t.exits[0].push_distribution(&early[s]);
            t.exits[1].push_distribution(&last[s]);
        }
        t.segment_latency_us = vec![vec![100.0; 4], vec![300.0; 4]];
        t.preprocess_us = vec![10.0; 4];
        t
    }

    #[test]
    fn never_exiting_equals_the_final_exit() {
        let t = small_trace();
        let p = PreparedTrace::new(&t, Some(&t), Criterion::MaxProbability);
        let o = p.evaluate(&Policy::never_exit(Criterion::MaxProbability, 1));
        assert_eq!(o.exit_counts, vec![0, 4]);
        assert_eq!(o.correct, 4);
        assert_eq!(o.latency.mean_us, 400.0);
        assert_eq!(o.label_loyalty, Some(1.0));
        assert!((o.probability_loyalty.unwrap_or(0.0) - 1.0).abs() < 1e-6);
        assert_eq!(o.speedup, Some(1.0));
        assert!((o.total_time_s - 4.0 * 410.0 / 1e6).abs() < 1e-12);
    }

    #[test]
    fn hand_computed_max_probability_policy() {
        let t = small_trace();
        let p = PreparedTrace::new(&t, Some(&t), Criterion::MaxProbability);
        // Threshold 0.6: samples 0 (0.9), 2 (0.8) and 3 (0.6) exit early; sample 3 is then wrong.
        let o = p.evaluate(&Policy::uniform(Criterion::MaxProbability, 0.6, 1));
        assert_eq!(o.exit_counts, vec![3, 1]);
        assert_eq!(o.correct, 3);
        assert_eq!(o.accuracy, 0.75);
        assert_eq!(o.label_loyalty, Some(0.75));
        assert_eq!(o.early_exit_mean_latency_us, Some(100.0));
        assert_eq!(o.final_exit_mean_latency_us, Some(400.0));
        assert_eq!(o.latency.mean_us, 175.0);
        assert_eq!(o.latency.p50_us, 100.0);
        assert_eq!(o.latency.p99_us, 400.0);
        assert_eq!(o.speedup, Some(400.0 / 175.0));
        assert_eq!(o.top5_accuracy, None);
    }

    #[test]
    fn entropy_policy_uses_less_or_equal() {
        let t = small_trace();
        let p = PreparedTrace::new(&t, None, Criterion::Entropy);
        let h0 = f64::from(t.exits[0].entropy_nats[0]);
        let o = p.evaluate(&Policy::uniform(Criterion::Entropy, h0, 1));
        assert_eq!(o.exit_counts[0], 1, "only the most confident sample has entropy <= its own entropy");
        assert_eq!(o.label_loyalty, None);
    }
}
