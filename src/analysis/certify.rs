//! Certified early-exit thresholds: Learn then Test (Angelopoulos et al., 2021) with fixed-sequence testing,
//! as Confident Adaptive Language Modeling (Schuster et al., 2022) applies it to early exits.
//!
//! **The guarantee.** Given `n` calibration samples drawn i.i.d. from a distribution, a risk whose per-sample
//! loss lies in `[0, 1]`, and levels `epsilon` and `delta`, every threshold point this module certifies has a
//! risk on new data from the same distribution of at most `epsilon`, simultaneously for all certified points,
//! with probability at least `1 - delta` over the draw of the calibration samples.
//!
//! **The risks** (losses are 0/1 per sample, so each is bounded in `[0, 1]` and i.i.d. when the samples are):
//! - [`Risk::Loyalty`]: `1[top-1 of the chain != top-1 of the reference]`. Its mean is `1 - label loyalty`
//!   against the reference, so a certificate reads "label loyalty >= 1 - epsilon".
//! - [`Risk::Accuracy`]: `1[reference right and chain wrong]`. The top-1 drop against the reference is
//!   `E[1[ref right]] - E[1[chain right]] = E[1[ref right, chain wrong]] - E[1[ref wrong, chain right]]`,
//!   which is at most the mean of this loss: certifying the loss at `epsilon` certifies "top-1 drop <=
//!   epsilon" (conservatively: a chain that fixes some of the reference's errors gets no credit for it, which
//!   is what keeps the loss non-negative and the test exact).
//!
//! **The reference** ([`Reference`]) is the base variant's prediction on the same sample when a base trace is
//! given, otherwise the chain's own final exit (for a float early-exit chain cut from the base network the two
//! are the same prediction).
//!
//! **The path** ([`ThresholdPath`]) is fixed before the calibration data is seen: step 0 is "no early exit",
//! and along the path every exit's threshold only loosens, so samples only move to earlier exits. Two paths:
//! - [`ThresholdPath::shared`] (the default): one threshold shared by every early exit (the convention of the
//!   sweeps, acc-opt and inf-opt), on a grid that depends only on the criterion and the class count: the
//!   criterion's "doubt" (entropy, normalized entropy, `1 - max-probability`, `1 - margin`) from 0 up to its
//!   largest value, log-spaced over eight decades.
//! - [`ThresholdPath::quantiles`]: the same confidence quantile at every exit, the quantiles taken from a
//!   *pilot* set that must be disjoint from the calibration samples (for example a seeded part of the
//!   calibration run, [`CalibrationSet::split`]); taking them from the calibration samples themselves would
//!   make the hypotheses depend on the data and void the guarantee.
//!
//! **The test.** For step `j` the null hypothesis is "risk at step j > epsilon"; its exact p-value with `k`
//! losses among `n` samples is the binomial tail `P(Bin(n, epsilon) <= k)` (a 0/1 loss is Bernoulli, and the
//! tail is largest at risk = epsilon). Steps are tested in path order at level `delta` each, and testing stops
//! at the first step that is not rejected (fixed-sequence testing controls the family-wise error at `delta`
//! without a multiplicity correction). Equivalently a step passes when its one-sided Clopper-Pearson upper
//! bound at level `delta` is at most `epsilon`. The certified point is the last step that passed (the most
//! early exits); when even step 0 cannot pass, nothing is certified: with no loss at all it needs
//! `n >= ln(delta) / ln(1 - epsilon)` samples ([`min_samples`]).
//!
//! The module reads traces only through their per-sample accessors (top-1 per exit, confidence per exit,
//! label, latency to an exit), once, in [`CalibrationSet::new`].

pub use super::random::SplitMix64;
use serde::{Deserialize, Serialize};

use super::policy::{Criterion, Policy};
use super::trace::Trace;

/// Steps of the default shared-threshold path after "no early exit".
pub const DEFAULT_PATH_STEPS: usize = 1000;

/// Decades the shared path's doubt grid spans below its largest value.
const PATH_DECADES: f64 = 8.0;

/// Which risk is certified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Risk {
    /// Label-loyalty drop: `1[chain's top-1 != reference's top-1]` per sample.
    Loyalty,
    /// Top-1 drop: `1[reference right and chain wrong]` per sample (an upper bound of the drop).
    Accuracy,
}

impl Risk {
    /// Name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Risk::Loyalty => "loyalty",
            Risk::Accuracy => "accuracy",
        }
    }

    /// Parses [`Self::name`].
    pub fn parse(text: &str) -> Option<Self> {
        [Risk::Loyalty, Risk::Accuracy].into_iter().find(|r| r.name() == text)
    }

    /// What a certificate at `epsilon` states, e.g. "label loyalty >= 99 %".
    pub fn statement(self, epsilon: f64) -> String {
        match self {
            Risk::Loyalty => format!("label loyalty >= {} %", trim_percent(100.0 * (1.0 - epsilon))),
            Risk::Accuracy => format!("top-1 drop <= {} pp", trim_percent(100.0 * epsilon)),
        }
    }
}

/// Formats a percentage with as few decimals as it needs (99, 99.5, 99.95).
fn trim_percent(value: f64) -> String {
    let text = format!("{value:.4}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// What the chain's predictions are compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reference {
    /// The base variant's final prediction on the same sample.
    Base,
    /// The chain's own final exit.
    FinalExit,
}

/// Why no certificate could be computed (an answer "not certifiable at these levels" is not an error: see
/// [`Certificate::certified`]).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CertifyError {
    /// epsilon or delta outside (0, 1).
    #[error("{name} must be strictly between 0 and 1, not {value}")]
    LevelOutOfRange {
        /// "epsilon" or "delta".
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// The variant has no early exit.
    #[error("the trace has no early exit: there is no threshold to certify")]
    NoEarlyExit,
    /// Fewer samples than the smallest number that can pass any test at these levels.
    #[error(
        "{n} calibration samples cannot certify anything at epsilon = {epsilon} and delta = {delta}: even with no \
         error at all at least {needed} are needed (ln(delta) / ln(1 - epsilon))"
    )]
    TooFewSamples {
        /// Samples given.
        n: usize,
        /// Samples needed.
        needed: usize,
        /// epsilon.
        epsilon: f64,
        /// delta.
        delta: f64,
    },
    /// The calibration data does not fit the trace it should certify (another variant or dataset).
    #[error("{0}")]
    Mismatch(String),
}

/// Per-sample facts a certificate needs, read once from a trace (and its base) under one criterion.
#[derive(Clone, Debug, PartialEq)]
pub struct CalibrationSet {
    criterion: Criterion,
    num_classes: usize,
    exits: usize,
    reference: Reference,
    /// Confidence score per sample and early exit, `[sample * early + exit]` (larger = more confident).
    confidence: Vec<f32>,
    /// Top-1 per sample and exit (final included), `[sample * exits + exit]`.
    predicted: Vec<u16>,
    /// Inference latency up to each exit, `[sample * exits + exit]`, microseconds.
    latency_us: Vec<f32>,
    labels: Vec<u32>,
    /// The reference's top-1 per sample.
    reference_predicted: Vec<u16>,
    /// The base's inference latency per sample, when a base trace was given.
    base_latency_us: Option<Vec<f32>>,
}

impl CalibrationSet {
    /// Reads `trace` under `criterion`. `base` (the base variant's trace over the same samples) gives the
    /// reference predictions when `reference` is [`Reference::Base`], and the base latency for speed-ups.
    pub fn new(
        trace: &Trace,
        base: Option<&Trace>,
        criterion: Criterion,
        reference: Reference,
    ) -> Result<Self, CertifyError> {
        let samples = trace.len();
        let exits = trace.exits.len();
        let num_classes = trace.num_classes;
        if exits < 2 {
            return Err(CertifyError::NoEarlyExit);
        }
        let base = match base {
            Some(b) if b.len() != samples => {
                return Err(CertifyError::Mismatch(format!(
                    "the base trace has {} samples and the variant's {samples}: they are not runs on the same data",
                    b.len()
                )));
            }
            Some(b) if b.num_classes != num_classes || b.exits.is_empty() => {
                return Err(CertifyError::Mismatch(format!(
                    "the base trace has {} classes and the variant's {num_classes}",
                    b.num_classes
                )));
            }
            other => other,
        };
        if reference == Reference::Base && base.is_none() {
            return Err(CertifyError::Mismatch("the reference is the base, but no base trace was given".into()));
        }
        let early = exits - 1;
        let mut set = Self {
            criterion,
            num_classes,
            exits,
            reference,
            confidence: Vec::with_capacity(samples * early),
            predicted: Vec::with_capacity(samples * exits),
            latency_us: Vec::with_capacity(samples * exits),
            labels: Vec::with_capacity(samples),
            reference_predicted: Vec::with_capacity(samples),
            base_latency_us: base.map(|_| Vec::with_capacity(samples)),
        };
        for sample in 0..samples {
            for exit in &trace.exits[..early] {
                set.confidence.push(criterion.confidence(exit, sample, num_classes));
            }
            for (index, exit) in trace.exits.iter().enumerate() {
                set.predicted.push(exit.predicted(sample));
                set.latency_us.push(trace.latency_to_exit_us(sample, index));
            }
            set.labels.push(trace.labels[sample]);
            let final_exit = &trace.exits[early];
            set.reference_predicted.push(match (reference, base) {
                (Reference::Base, Some(b)) => b.exits[b.exits.len() - 1].predicted(sample),
                _ => final_exit.predicted(sample),
            });
            if let (Some(latencies), Some(b)) = (set.base_latency_us.as_mut(), base) {
                latencies.push(b.latency_to_exit_us(sample, b.exits.len() - 1));
            }
        }
        Ok(set)
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there is no sample.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of early exits.
    pub fn early_exits(&self) -> usize {
        self.exits - 1
    }

    /// The criterion the confidences were scored with.
    pub fn criterion(&self) -> Criterion {
        self.criterion
    }

    /// What predictions are compared with.
    pub fn reference(&self) -> Reference {
        self.reference
    }

    /// Class count.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The samples at `indices` (repeats allowed: a bootstrap draw) as a set of their own.
    pub fn subset(&self, indices: &[usize]) -> Self {
        let early = self.exits - 1;
        let mut out = Self {
            confidence: Vec::with_capacity(indices.len() * early),
            predicted: Vec::with_capacity(indices.len() * self.exits),
            latency_us: Vec::with_capacity(indices.len() * self.exits),
            labels: Vec::with_capacity(indices.len()),
            reference_predicted: Vec::with_capacity(indices.len()),
            base_latency_us: self.base_latency_us.as_ref().map(|_| Vec::with_capacity(indices.len())),
            ..self.clone_shape()
        };
        for &s in indices {
            out.confidence.extend_from_slice(&self.confidence[s * early..(s + 1) * early]);
            out.predicted.extend_from_slice(&self.predicted[s * self.exits..(s + 1) * self.exits]);
            out.latency_us.extend_from_slice(&self.latency_us[s * self.exits..(s + 1) * self.exits]);
            out.labels.push(self.labels[s]);
            out.reference_predicted.push(self.reference_predicted[s]);
            if let (Some(to), Some(from)) = (out.base_latency_us.as_mut(), self.base_latency_us.as_ref()) {
                to.push(from[s]);
            }
        }
        out
    }

    fn clone_shape(&self) -> Self {
        Self {
            criterion: self.criterion,
            num_classes: self.num_classes,
            exits: self.exits,
            reference: self.reference,
            confidence: Vec::new(),
            predicted: Vec::new(),
            latency_us: Vec::new(),
            labels: Vec::new(),
            reference_predicted: Vec::new(),
            base_latency_us: None,
        }
    }

    /// A seeded random split: `(part, rest)` with `round(fraction * len)` samples in `part`. The same seed
    /// gives the same split on every machine (SplitMix64 and a Fisher-Yates shuffle).
    pub fn split(&self, fraction: f64, seed: u64) -> (Self, Self) {
        let order = shuffled(self.len(), seed);
        let take = ((fraction.clamp(0.0, 1.0) * self.len() as f64).round() as usize).min(self.len());
        let (mut part, mut rest) = (order[..take].to_vec(), order[take..].to_vec());
        part.sort_unstable();
        rest.sort_unstable();
        (self.subset(&part), self.subset(&rest))
    }

    /// Checks that `other` (calibration data) can certify thresholds for this set (test data).
    pub fn check_compatible(&self, other: &CalibrationSet) -> Result<(), CertifyError> {
        if self.num_classes != other.num_classes {
            return Err(CertifyError::Mismatch(format!(
                "the calibration trace has {} classes and the trace to certify {}: another dataset",
                other.num_classes, self.num_classes
            )));
        }
        if self.exits != other.exits {
            return Err(CertifyError::Mismatch(format!(
                "the calibration trace has {} exits and the trace to certify {}: another variant",
                other.exits, self.exits
            )));
        }
        if self.criterion != other.criterion || self.reference != other.reference {
            return Err(CertifyError::Mismatch(
                "the calibration and the trace to certify were read under different criteria or references".into(),
            ));
        }
        Ok(())
    }

    /// The loss of `sample` when it leaves at `exit`.
    #[inline]
    fn loss(&self, sample: usize, exit: usize, risk: Risk) -> bool {
        let predicted = self.predicted[sample * self.exits + exit];
        let reference = self.reference_predicted[sample];
        match risk {
            Risk::Loyalty => predicted != reference,
            Risk::Accuracy => {
                let label = self.labels[sample];
                u32::from(reference) == label && u32::from(predicted) != label
            }
        }
    }

    /// The exit `sample` takes at the confidence cuts `cuts` (as [`super::PreparedTrace`] decides).
    #[inline]
    fn exit_at(&self, sample: usize, cuts: &[f32]) -> usize {
        let early = self.exits - 1;
        let scores = &self.confidence[sample * early..(sample + 1) * early];
        scores.iter().zip(cuts).position(|(score, cut)| score >= cut).unwrap_or(early)
    }

    /// The number of samples with loss 1 at every step of `path`.
    pub fn losses_along(&self, path: &ThresholdPath, risk: Risk) -> Vec<usize> {
        self.along(path, risk).0
    }

    /// Loss counts and mean inference latency (microseconds) at every step of `path`, in one pass: a sample's
    /// exit changes at most once per early exit along a path, so both are built from change events.
    pub fn along(&self, path: &ThresholdPath, risk: Risk) -> (Vec<usize>, Vec<f64>) {
        let steps = path.len();
        let early = self.exits - 1;
        let mut loss_change = vec![0i64; steps];
        let mut latency_change = vec![0f64; steps];
        let mut events: Vec<(usize, usize)> = Vec::with_capacity(early);
        for sample in 0..self.len() {
            events.clear();
            for exit in 0..early {
                let score = self.confidence[sample * early + exit];
                // The first step whose cut at this exit is <= the score (cuts never rise along the path).
                let first = path.cuts_at_exit(exit).partition_point(|&cut| cut > score || score.is_nan());
                if first < steps {
                    events.push((first, exit));
                }
            }
            // At each step the sample takes the earliest exit that qualifies by then.
            events.sort_unstable();
            let mut current = early;
            let mut loss = i64::from(self.loss(sample, current, risk));
            let mut latency = f64::from(self.latency_us[sample * self.exits + current]);
            loss_change[0] += loss;
            latency_change[0] += latency;
            for &(step, exit) in &events {
                if exit < current {
                    let new_loss = i64::from(self.loss(sample, exit, risk));
                    let new_latency = f64::from(self.latency_us[sample * self.exits + exit]);
                    loss_change[step] += new_loss - loss;
                    latency_change[step] += new_latency - latency;
                    (current, loss, latency) = (exit, new_loss, new_latency);
                }
            }
        }
        let n = self.len().max(1) as f64;
        let (mut losses, mut latency) = (0i64, 0f64);
        loss_change
            .iter()
            .zip(&latency_change)
            .map(|(&l, &t)| {
                losses += l;
                latency += t;
                (losses.max(0) as usize, latency / n)
            })
            .unzip()
    }

    /// What the thresholds at `cuts` (confidence cuts, one per early exit) yield on these samples.
    fn evaluate_cuts(&self, cuts: &[f32], risk: Risk) -> Evaluation {
        let n = self.len();
        let early = self.exits - 1;
        let (mut losses, mut disagree, mut correct, mut reference_correct, mut left_early) = (0, 0, 0, 0, 0);
        let (mut latency, mut base_latency) = (0f64, 0f64);
        for s in 0..n {
            let exit = self.exit_at(s, cuts);
            let predicted = self.predicted[s * self.exits + exit];
            losses += usize::from(self.loss(s, exit, risk));
            disagree += usize::from(predicted != self.reference_predicted[s]);
            correct += usize::from(u32::from(predicted) == self.labels[s]);
            reference_correct += usize::from(u32::from(self.reference_predicted[s]) == self.labels[s]);
            left_early += usize::from(exit < early);
            latency += f64::from(self.latency_us[s * self.exits + exit]);
            if let Some(b) = &self.base_latency_us {
                base_latency += f64::from(b[s]);
            }
        }
        let denominator = n.max(1) as f64;
        let mean_latency_us = latency / denominator;
        Evaluation {
            samples: n,
            losses,
            risk: losses as f64 / denominator,
            label_loyalty: 1.0 - disagree as f64 / denominator,
            accuracy: correct as f64 / denominator,
            reference_accuracy: reference_correct as f64 / denominator,
            early_exit_rate: left_early as f64 / denominator,
            mean_latency_us,
            speedup: self
                .base_latency_us
                .as_ref()
                .filter(|_| mean_latency_us > 0.0 && n > 0)
                .map(|_| base_latency / denominator / mean_latency_us),
        }
    }

    /// What `policy` (of this set's criterion) yields on these samples.
    pub fn evaluate_policy(&self, policy: &Policy, risk: Risk) -> Evaluation {
        let mut cuts = if policy.criterion == self.criterion { policy.cuts() } else { Vec::new() };
        cuts.resize(self.exits - 1, f32::INFINITY);
        self.evaluate_cuts(&cuts, risk)
    }

    /// What step `step` of `path` yields on these samples.
    pub fn evaluate_step(&self, path: &ThresholdPath, step: usize, risk: Risk) -> Evaluation {
        let cuts: Vec<f32> = (0..self.exits - 1).map(|e| path.cuts_at_exit(e)[step]).collect();
        self.evaluate_cuts(&cuts, risk)
    }

    /// The fastest step of `path` whose *empirical* risk on these samples is at most `epsilon`: what one picks
    /// without a certificate (for comparison; it carries no guarantee on new data).
    pub fn uncertified_step(&self, path: &ThresholdPath, risk: Risk, epsilon: f64) -> usize {
        let (losses, latency) = self.along(path, risk);
        let n = self.len().max(1) as f64;
        (0..path.len())
            .filter(|&j| losses[j] as f64 / n <= epsilon)
            .min_by(|&a, &b| latency[a].total_cmp(&latency[b]).then(a.cmp(&b)))
            .unwrap_or(0)
    }
}

/// What a threshold point yields on a set of samples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Samples evaluated.
    pub samples: usize,
    /// Samples with loss 1.
    pub losses: usize,
    /// Mean loss.
    pub risk: f64,
    /// Share of samples whose top-1 equals the reference's.
    pub label_loyalty: f64,
    /// Top-1 accuracy.
    pub accuracy: f64,
    /// The reference's top-1 accuracy on the same samples.
    pub reference_accuracy: f64,
    /// Share of samples leaving at an early exit.
    pub early_exit_rate: f64,
    /// Predicted mean inference latency, microseconds.
    pub mean_latency_us: f64,
    /// Base mean latency / this mean latency, when the base latency is known.
    pub speedup: Option<f64>,
}

/// A one-dimensional path of thresholds fixed before the calibration data is seen; see the module
/// documentation. Step 0 is "no early exit"; along the path every exit's cut only falls (more exits).
#[derive(Clone, Debug, PartialEq)]
pub struct ThresholdPath {
    criterion: Criterion,
    early_exits: usize,
    /// Confidence cuts `[exit][step]`, non-increasing in `step`; `+inf` at step 0.
    cuts: Vec<Vec<f32>>,
    /// What the path is, in words.
    description: String,
}

impl ThresholdPath {
    /// One threshold shared by every early exit, on a grid that depends only on the criterion and the class
    /// count: the "doubt" (entropy, normalized entropy, 1 - max-probability, 1 - margin) at 0, then
    /// log-spaced over eight decades up to its largest value, `steps` values in all after "no early exit".
    pub fn shared(criterion: Criterion, num_classes: usize, early_exits: usize, steps: usize) -> Self {
        let (low, high) = criterion.threshold_range(num_classes);
        let max_doubt = high - low;
        let steps = steps.max(2);
        let mut thresholds = Vec::with_capacity(steps);
        for i in 0..steps {
            let doubt = if i == 0 {
                0.0
            } else {
                let fraction = (i - 1) as f64 / (steps - 2).max(1) as f64;
                max_doubt * 10f64.powf(-PATH_DECADES * (1.0 - fraction))
            };
            thresholds.push(if criterion.exits_below() { low + doubt } else { high - doubt });
        }
        let mut exit_cuts = vec![f32::INFINITY];
        exit_cuts.extend(thresholds.iter().map(|&t| criterion.to_cut(t) as f32));
        // Rounding to f32 keeps the order; equal neighbours are harmless.
        let description = format!(
            "one {} threshold shared by every early exit, {} steps after \"no early exit\" ({})",
            criterion.name(),
            steps,
            if criterion.exits_below() {
                format!("T from 0, then 1e-8 x {max_doubt:.4} up to {max_doubt:.4}, log-spaced")
            } else {
                format!("1 - T from 0, then 1e-8 x {max_doubt:.4} up to {max_doubt:.4}, log-spaced")
            }
        );
        Self { criterion, early_exits, cuts: vec![exit_cuts; early_exits], description }
    }

    /// The same confidence quantile at every exit: at step `j` (1..=steps) each exit's cut is the quantile
    /// `1 - j / steps` of the *pilot* samples' confidence at that exit, so about `j / steps` of them would
    /// pass it. The pilot must not contain the calibration samples.
    pub fn quantiles(pilot: &CalibrationSet, steps: usize) -> Self {
        let early = pilot.early_exits();
        let steps = steps.max(1);
        let mut cuts = Vec::with_capacity(early);
        for exit in 0..early {
            let mut scores: Vec<f32> = (0..pilot.len()).map(|s| pilot.confidence[s * early + exit]).collect();
            scores.sort_unstable_by(|a, b| b.total_cmp(a));
            let mut exit_cuts = vec![f32::INFINITY];
            for j in 1..=steps {
                let cut = if scores.is_empty() {
                    f32::INFINITY
                } else {
                    let index = ((j as f64 / steps as f64) * scores.len() as f64).ceil() as usize;
                    scores[index.clamp(1, scores.len()) - 1]
                };
                exit_cuts.push(cut);
            }
            cuts.push(exit_cuts);
        }
        let description = format!(
            "the same {} confidence quantile at every early exit, {steps} steps after \"no early exit\", from a \
             pilot set of {} samples",
            pilot.criterion.name(),
            pilot.len()
        );
        Self { criterion: pilot.criterion, early_exits: early, cuts, description }
    }

    /// Steps, "no early exit" included.
    pub fn len(&self) -> usize {
        self.cuts.first().map_or(1, Vec::len)
    }

    /// Always false: a path has at least its "no early exit" step.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The path in words.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The criterion.
    pub fn criterion(&self) -> Criterion {
        self.criterion
    }

    fn cuts_at_exit(&self, exit: usize) -> &[f32] {
        &self.cuts[exit]
    }

    /// The policy at `step`; `None` at step 0 ("no early exit", whose thresholds are infinite).
    pub fn policy(&self, step: usize) -> Option<Policy> {
        (step > 0).then(|| Policy {
            criterion: self.criterion,
            thresholds: self.cuts.iter().map(|c| self.criterion.to_cut(f64::from(c[step]))).collect(),
        })
    }
}

/// Levels of a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Levels {
    /// Risk level: the risk on new data is at most this.
    pub epsilon: f64,
    /// Error level: the statement fails with probability at most this over the calibration draw.
    pub delta: f64,
}

impl Levels {
    /// Checks both levels are in (0, 1).
    pub fn new(epsilon: f64, delta: f64) -> Result<Self, CertifyError> {
        for (name, value) in [("epsilon", epsilon), ("delta", delta)] {
            if !(value > 0.0 && value < 1.0) {
                return Err(CertifyError::LevelOutOfRange { name, value });
            }
        }
        Ok(Self { epsilon, delta })
    }
}

/// The certified point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CertifiedPoint {
    /// Index on the path (0 = no early exit).
    pub step: usize,
    /// The thresholds, `None` at step 0 (no early exit).
    pub policy: Option<Policy>,
    /// Calibration samples with loss 1 at this step.
    pub losses: usize,
    /// `losses / n`.
    pub empirical_risk: f64,
    /// One-sided Clopper-Pearson upper bound at level delta (at most epsilon).
    pub upper_bound: f64,
    /// The binomial p-value (at most delta).
    pub p_value: f64,
}

/// The first step that did not pass.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailedStep {
    /// Index on the path.
    pub step: usize,
    /// Calibration samples with loss 1 there.
    pub losses: usize,
    /// Its p-value (above delta).
    pub p_value: f64,
}

/// The outcome of Learn then Test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Certificate {
    /// The risk.
    pub risk: Risk,
    /// What predictions were compared with.
    pub reference: Reference,
    /// The levels.
    pub levels: Levels,
    /// Calibration samples.
    pub n: usize,
    /// The fewest samples that could pass any step at these levels.
    pub min_samples: usize,
    /// Steps on the path, "no early exit" included.
    pub path_steps: usize,
    /// The path in words.
    pub path: String,
    /// The last step that passed; `None`: not certifiable at these levels (even "no early exit" failed).
    pub certified: Option<CertifiedPoint>,
    /// The step where testing stopped; `None` when every step passed.
    pub first_failure: Option<FailedStep>,
}

impl Certificate {
    /// True when some early exit is certified (a point beyond "no early exit").
    pub fn exits_early(&self) -> bool {
        self.certified.as_ref().is_some_and(|c| c.step > 0)
    }

    /// "certified: label loyalty >= 99 % with probability >= 95 % (n = 1000)", or why not.
    pub fn summary(&self) -> String {
        let levels = format!(
            "{} with probability >= {} %",
            self.risk.statement(self.levels.epsilon),
            trim_percent(100.0 * (1.0 - self.levels.delta))
        );
        match &self.certified {
            Some(point) if point.step > 0 => format!("certified: {levels} (n = {})", self.n),
            Some(_) => format!("not certifiable beyond \"no early exit\": {levels} (n = {})", self.n),
            None => format!("not certifiable at these levels: {levels} (n = {})", self.n),
        }
    }
}

/// The fewest samples with which a step with no loss at all passes: the smallest `n` with
/// `(1 - epsilon)^n <= delta`.
pub fn min_samples(levels: Levels) -> usize {
    let estimate = (levels.delta.ln() / (-levels.epsilon).ln_1p()).ceil().max(1.0) as usize;
    // Settle the rounding with the test itself.
    let mut n = estimate.saturating_sub(2).max(1);
    while binomial_cdf(0, n, levels.epsilon) > levels.delta {
        n += 1;
    }
    n
}

/// Learn then Test with fixed-sequence testing along `path` on `calibration`; see the module documentation.
pub fn certify(
    calibration: &CalibrationSet,
    path: &ThresholdPath,
    risk: Risk,
    levels: Levels,
) -> Result<Certificate, CertifyError> {
    let levels = Levels::new(levels.epsilon, levels.delta)?;
    if calibration.early_exits() == 0 {
        return Err(CertifyError::NoEarlyExit);
    }
    if path.early_exits != calibration.early_exits() || path.criterion != calibration.criterion {
        return Err(CertifyError::Mismatch(format!(
            "the threshold path is for {} early exits under {}, the calibration trace has {} under {}",
            path.early_exits,
            path.criterion.name(),
            calibration.early_exits(),
            calibration.criterion.name()
        )));
    }
    let n = calibration.len();
    let needed = min_samples(levels);
    if n < needed {
        return Err(CertifyError::TooFewSamples { n, needed, epsilon: levels.epsilon, delta: levels.delta });
    }
    let losses = calibration.losses_along(path, risk);
    let mut certified = None;
    let mut first_failure = None;
    for (step, &k) in losses.iter().enumerate() {
        let p_value = binomial_cdf(k, n, levels.epsilon);
        if p_value > levels.delta {
            first_failure = Some(FailedStep { step, losses: k, p_value });
            break;
        }
        certified = Some((step, k, p_value));
    }
    let certified = certified.map(|(step, k, p_value)| CertifiedPoint {
        step,
        policy: path.policy(step),
        losses: k,
        empirical_risk: k as f64 / n as f64,
        upper_bound: clopper_pearson_upper(k, n, levels.delta),
        p_value,
    });
    Ok(Certificate {
        risk,
        reference: calibration.reference,
        levels,
        n,
        min_samples: needed,
        path_steps: path.len(),
        path: path.description.clone(),
        certified,
        first_failure,
    })
}

/// `P(Bin(n, p) <= k)`, exact up to floating-point rounding (the terms are summed in log space, so it does
/// not underflow for large `n`).
pub fn binomial_cdf(k: usize, n: usize, p: f64) -> f64 {
    if k >= n || p <= 0.0 {
        return 1.0;
    }
    if p >= 1.0 {
        return 0.0;
    }
    let log_odds = p.ln() - (-p).ln_1p();
    let mut log_term = n as f64 * (-p).ln_1p();
    let mut log_sum = log_term;
    for i in 1..=k {
        log_term += ((n - i + 1) as f64 / i as f64).ln() + log_odds;
        let (high, low) = if log_sum > log_term { (log_sum, log_term) } else { (log_term, log_sum) };
        log_sum = high + (low - high).exp().ln_1p();
    }
    log_sum.exp().min(1.0)
}

/// The one-sided Clopper-Pearson upper confidence bound at level `delta` for a proportion with `k`
/// successes in `n` trials: the `p` with `P(Bin(n, p) <= k) = delta` (1 when `k = n`).
pub fn clopper_pearson_upper(k: usize, n: usize, delta: f64) -> f64 {
    if k >= n {
        return 1.0;
    }
    let (mut low, mut high) = (k as f64 / n as f64, 1.0);
    for _ in 0..200 {
        let middle = 0.5 * (low + high);
        if binomial_cdf(k, n, middle) > delta {
            low = middle;
        } else {
            high = middle;
        }
        if high - low < 1e-15 {
            break;
        }
    }
    high
}

/// `0..len` in a random order fixed by `seed` (SplitMix64 driving a Fisher-Yates shuffle).
pub fn shuffled(len: usize, seed: u64) -> Vec<usize> {
    let mut rng = SplitMix64(seed);
    let mut order: Vec<usize> = (0..len).collect();
    for i in (1..len).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::outcome::PreparedTrace;

    /// A trace of `n` samples, 3 classes, 2 early exits + final, with confidence that predicts agreement.
    fn synthetic(n: usize, seed: u64) -> Trace {
        let mut rng = SplitMix64(seed);
        let mut uniform = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let mut t = Trace::new(3, 3, &[0, 1, 2]);
        for _ in 0..n {
            let label = (uniform() * 3.0) as u32 % 3;
            t.labels.push(label);
            t.preprocess_us.push(5.0);
            for exit in 0..3 {
                let confidence = 0.34 + 0.66 * uniform();
                // More confident and deeper exits agree with the label more often.
                let right = uniform() < 0.5 + 0.5 * confidence.powf(3.0 - exit as f64);
                let top = if right { label } else { (label + 1) % 3 };
                let mut probs = [(1.0 - confidence) / 2.0; 3];
                probs[top as usize] = confidence;
                t.exits[exit].push_distribution(&probs.map(|p| p as f32));
            }
            t.segment_latency_us[0].push(100.0);
            t.segment_latency_us[1].push(100.0);
            t.segment_latency_us[2].push(200.0);
        }
        t
    }

    #[test]
    fn binomial_cdf_matches_exact_fractions() {
        // P(Bin(10, 1/2) <= 3) = 176 / 1024.
        assert!((binomial_cdf(3, 10, 0.5) - 176.0 / 1024.0).abs() < 1e-14);
        // P(Bin(5, 0.1) <= 1) = 0.9^5 + 5 * 0.1 * 0.9^4.
        let exact = 0.9f64.powi(5) + 5.0 * 0.1 * 0.9f64.powi(4);
        assert!((binomial_cdf(1, 5, 0.1) - exact).abs() < 1e-14);
        assert_eq!(binomial_cdf(5, 5, 0.3), 1.0);
        // No underflow for large n: P(Bin(100000, 0.01) <= 1000) is about one half.
        let half = binomial_cdf(1000, 100_000, 0.01);
        assert!(half > 0.45 && half < 0.56, "{half}");
        // Monotone in k and decreasing in p.
        assert!(binomial_cdf(2, 50, 0.05) < binomial_cdf(3, 50, 0.05));
        assert!(binomial_cdf(2, 50, 0.06) < binomial_cdf(2, 50, 0.05));
    }

    #[test]
    fn clopper_pearson_has_the_closed_form_at_zero() {
        for (n, delta) in [(10, 0.05), (1000, 0.1), (299, 0.05)] {
            let expected = 1.0 - f64::powf(delta, 1.0 / n as f64);
            assert!((clopper_pearson_upper(0, n, delta) - expected).abs() < 1e-12);
        }
        // At the bound the tail equals delta.
        let u = clopper_pearson_upper(7, 500, 0.05);
        assert!((binomial_cdf(7, 500, u) - 0.05).abs() < 1e-9);
        assert_eq!(clopper_pearson_upper(4, 4, 0.05), 1.0);
    }

    #[test]
    fn min_samples_is_the_zero_loss_test() {
        let levels = Levels::new(0.01, 0.05).expect("levels");
        // ln(0.05) / ln(0.99) = 298.07.
        assert_eq!(min_samples(levels), 299);
        assert!(binomial_cdf(0, 298, 0.01) > 0.05 && binomial_cdf(0, 299, 0.01) <= 0.05);
        assert_eq!(min_samples(Levels::new(0.1, 0.1).expect("levels")), 22);
    }

    #[test]
    fn levels_out_of_range_are_refused() {
        for (e, d) in [(0.0, 0.05), (1.0, 0.05), (0.01, 0.0), (0.01, 1.5), (f64::NAN, 0.1), (-0.1, 0.1)] {
            assert!(matches!(Levels::new(e, d), Err(CertifyError::LevelOutOfRange { .. })), "{e} {d}");
        }
    }

    #[test]
    fn losses_along_the_path_match_direct_evaluation() {
        let t = synthetic(400, 3);
        for criterion in Criterion::ALL {
            for reference in [Reference::FinalExit, Reference::Base] {
                let base = synthetic(400, 4);
                let set = CalibrationSet::new(&t, Some(&base), criterion, reference).expect("set");
                let paths = [ThresholdPath::shared(criterion, 3, 2, 60), ThresholdPath::quantiles(&set, 40)];
                for path in &paths {
                    for risk in [Risk::Loyalty, Risk::Accuracy] {
                        let (losses, latency) = set.along(path, risk);
                        for (step, &k) in losses.iter().enumerate() {
                            let direct = set.evaluate_step(path, step, risk);
                            assert_eq!(direct.losses, k, "{criterion:?} step {step}");
                            assert!((direct.mean_latency_us - latency[step]).abs() < 1e-6);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_certified_policy_evaluates_as_the_prepared_trace_does() {
        let t = synthetic(2000, 5);
        let set = CalibrationSet::new(&t, None, Criterion::MaxProbability, Reference::FinalExit).expect("set");
        let path = ThresholdPath::shared(Criterion::MaxProbability, 3, 2, 500);
        let levels = Levels::new(0.05, 0.1).expect("levels");
        let certificate = certify(&set, &path, Risk::Loyalty, levels).expect("certify");
        let point = certificate.certified.as_ref().expect("certified");
        assert!(point.step > 0 && point.upper_bound <= 0.05 && point.p_value <= 0.1);
        let policy = point.policy.as_ref().expect("a policy beyond no-exit");
        let outcome = PreparedTrace::new(&t, Some(&t), Criterion::MaxProbability).evaluate(policy);
        let mine = set.evaluate_step(&path, point.step, Risk::Loyalty);
        assert_eq!(outcome.label_loyalty, Some(mine.label_loyalty));
        assert_eq!(outcome.early_exit_rate, mine.early_exit_rate);
        assert!((outcome.latency.mean_us - mine.mean_latency_us).abs() < 1e-6);
        // The step after the certified one failed, and every step up to it passed.
        let failure = certificate.first_failure.as_ref().expect("stops somewhere");
        assert_eq!(failure.step, point.step + 1);
        assert!(failure.p_value > 0.1);
        assert!(certificate.summary().starts_with("certified: label loyalty >= 95 % with probability >= 90 %"));
    }

    #[test]
    fn too_few_samples_and_no_exit_are_errors_not_answers() {
        let t = synthetic(100, 6);
        let set = CalibrationSet::new(&t, None, Criterion::Entropy, Reference::FinalExit).expect("set");
        let path = ThresholdPath::shared(Criterion::Entropy, 3, 2, 100);
        let error =
            certify(&set, &path, Risk::Loyalty, Levels::new(0.01, 0.05).expect("levels")).expect_err("100 < 299");
        assert!(matches!(error, CertifyError::TooFewSamples { n: 100, needed: 299, .. }));
        assert!(error.to_string().contains("at least 299"));
        let mut single = Trace::new(3, 1, &[0]);
        single.labels.push(0);
        single.preprocess_us.push(0.0);
        single.segment_latency_us[0].push(1.0);
        single.exits[0].push_distribution(&[0.5, 0.3, 0.2]);
        assert_eq!(
            CalibrationSet::new(&single, None, Criterion::Entropy, Reference::FinalExit),
            Err(CertifyError::NoEarlyExit)
        );
    }

    #[test]
    fn not_certifiable_is_an_answer() {
        // The base disagrees with the final exit on far more than epsilon: not even "no early exit" passes.
        let t = synthetic(1000, 7);
        let base = synthetic(1000, 8);
        let set = CalibrationSet::new(&t, Some(&base), Criterion::Entropy, Reference::Base).expect("set");
        let path = ThresholdPath::shared(Criterion::Entropy, 3, 2, 100);
        let certificate =
            certify(&set, &path, Risk::Loyalty, Levels::new(0.01, 0.05).expect("levels")).expect("an answer");
        assert_eq!(certificate.certified, None);
        assert_eq!(certificate.first_failure.as_ref().map(|f| f.step), Some(0));
        assert!(certificate.summary().starts_with("not certifiable at these levels"));
    }

    #[test]
    fn splits_are_seeded_and_disjoint() {
        let t = synthetic(101, 9);
        let set = CalibrationSet::new(&t, None, Criterion::Entropy, Reference::FinalExit).expect("set");
        let (a, b) = set.split(0.3, 42);
        assert_eq!((a.len(), b.len()), (30, 71));
        assert_eq!(set.split(0.3, 42), (a.clone(), b));
        assert_ne!(set.split(0.3, 43).0, a);
        let order = shuffled(101, 42);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..101).collect::<Vec<_>>());
    }

    #[test]
    fn the_shared_path_starts_with_no_exit_and_only_loosens() {
        for criterion in Criterion::ALL {
            let path = ThresholdPath::shared(criterion, 10, 3, 1000);
            assert_eq!(path.len(), 1001);
            assert_eq!(path.policy(0), None);
            for exit in 0..3 {
                assert!(path.cuts_at_exit(exit).windows(2).all(|w| w[1] <= w[0]), "{criterion:?}");
            }
            let last = path.policy(1000).expect("policy");
            let (low, high) = criterion.threshold_range(10);
            let end = if criterion.exits_below() { high } else { low };
            assert!((last.thresholds[0] - end).abs() < 1e-6, "{criterion:?}: {}", last.thresholds[0]);
        }
    }
}
