//! Exit policies: a confidence criterion and one threshold per early exit.
//!
//! Internally every criterion becomes a *confidence score* where larger means more confident, and a sample
//! leaves at the first early exit whose score is `>=` that exit's cut. Entropy (as in the study: exit when
//! entropy `<= T`) becomes the score `-entropy` with cut `-T`.

use serde::{Deserialize, Serialize};

use super::trace::ExitTrace;

/// The confidence measure an exit decision is based on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Criterion {
    /// Exit when the entropy in nats is `<= T` (the study's rule).
    #[default]
    Entropy,
    /// Exit when entropy / ln(C) is `<= T`, a threshold in [0, 1] comparable across class counts.
    NormalizedEntropy,
    /// Exit when the highest class probability is `>= T`.
    MaxProbability,
    /// Exit when the gap between the two highest probabilities is `>= T`.
    Margin,
}

impl Criterion {
    /// All criteria, for menus and loops.
    pub const ALL: [Criterion; 4] =
        [Criterion::Entropy, Criterion::NormalizedEntropy, Criterion::MaxProbability, Criterion::Margin];

    /// Short name used in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Criterion::Entropy => "entropy",
            Criterion::NormalizedEntropy => "normalized-entropy",
            Criterion::MaxProbability => "max-probability",
            Criterion::Margin => "margin",
        }
    }

    /// Parses [`Self::name`].
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == text)
    }

    /// True when a sample exits for *small* values of the measure (entropies).
    pub fn exits_below(self) -> bool {
        matches!(self, Criterion::Entropy | Criterion::NormalizedEntropy)
    }

    /// The range a threshold in user units can usefully take for `num_classes` classes.
    pub fn threshold_range(self, num_classes: usize) -> (f64, f64) {
        match self {
            Criterion::Entropy => (0.0, (num_classes.max(2) as f64).ln()),
            Criterion::NormalizedEntropy | Criterion::Margin => (0.0, 1.0),
            Criterion::MaxProbability => (1.0 / num_classes.max(1) as f64, 1.0),
        }
    }

    /// The measure itself, in user units, for one sample at one exit.
    pub fn measure(self, exit: &ExitTrace, sample: usize, num_classes: usize) -> f64 {
        match self {
            Criterion::Entropy => f64::from(exit.entropy_nats[sample]),
            Criterion::NormalizedEntropy => f64::from(exit.entropy_nats[sample]) / (num_classes.max(2) as f64).ln(),
            Criterion::MaxProbability => f64::from(exit.max_probability(sample)),
            Criterion::Margin => f64::from(exit.margin(sample)),
        }
    }

    /// The confidence score (larger = more confident) of one sample at one exit.
    pub fn confidence(self, exit: &ExitTrace, sample: usize, num_classes: usize) -> f32 {
        self.to_cut(self.measure(exit, sample, num_classes)) as f32
    }

    /// The confidence score of a full probability distribution, rounded exactly as a trace stores it, so a
    /// dynamic run takes the same decisions the trace predicts.
    pub fn confidence_of_distribution(self, probs: &[f32]) -> f32 {
        let entropy = || f64::from(super::trace::entropy_nats(probs) as f32);
        let measure = match self {
            Criterion::Entropy => entropy(),
            Criterion::NormalizedEntropy => entropy() / (probs.len().max(2) as f64).ln(),
            Criterion::MaxProbability | Criterion::Margin => {
                let (mut first, mut second) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
                for &p in probs {
                    if p > first {
                        second = first;
                        first = p;
                    } else if p > second {
                        second = p;
                    }
                }
                if self == Criterion::MaxProbability { f64::from(first) } else { f64::from(first - second.max(0.0)) }
            }
        };
        self.to_cut(measure) as f32
    }

    /// Converts a threshold in user units to a cut on the confidence score (and back: it is an involution).
    pub fn to_cut(self, threshold: f64) -> f64 {
        if self.exits_below() { -threshold } else { threshold }
    }
}

/// An exit rule: a criterion and one threshold per early exit, in the criterion's user units.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// The confidence measure.
    pub criterion: Criterion,
    /// One threshold per early exit, in depth order.
    pub thresholds: Vec<f64>,
}

impl Policy {
    /// The same threshold at every one of `early_exits` exits.
    pub fn uniform(criterion: Criterion, threshold: f64, early_exits: usize) -> Self {
        Self { criterion, thresholds: vec![threshold; early_exits] }
    }

    /// A policy that never exits early.
    pub fn never_exit(criterion: Criterion, early_exits: usize) -> Self {
        let threshold = if criterion.exits_below() { f64::NEG_INFINITY } else { f64::INFINITY };
        Self::uniform(criterion, threshold, early_exits)
    }

    /// The confidence cuts of this policy (sample exits at exit e when its confidence is `>= cuts[e]`).
    pub fn cuts(&self) -> Vec<f32> {
        self.thresholds.iter().map(|&t| self.criterion.to_cut(t) as f32).collect()
    }
}

/// Thresholds set as percentiles of the confidence observed on a calibration trace (seed 003): at percentile
/// `p`, a sample exits when its confidence is in the top `100 - p` % of the calibration samples' confidences
/// at that exit. Returns one threshold per early exit in user units; `None` if the trace is empty.
pub fn thresholds_from_percentiles(
    calibration: &[ExitTrace],
    num_classes: usize,
    criterion: Criterion,
    percentiles: &[f64],
) -> Option<Vec<f64>> {
    let early = calibration.len().saturating_sub(1);
    let mut thresholds = Vec::with_capacity(early);
    for (index, exit) in calibration.iter().take(early).enumerate() {
        if exit.is_empty() {
            return None;
        }
        let mut scores: Vec<f64> =
            (0..exit.len()).map(|s| f64::from(criterion.confidence(exit, s, num_classes))).collect();
        scores.sort_unstable_by(f64::total_cmp);
        let p = percentiles.get(index).or(percentiles.last()).copied().unwrap_or(50.0).clamp(0.0, 100.0);
        thresholds.push(criterion.to_cut(percentile_sorted(&scores, p)));
    }
    Some(thresholds)
}

/// Linear-interpolated percentile (0..=100) of an ascending slice (the "linear" method of NumPy).
pub fn percentile_sorted(sorted: &[f64], percentile: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let rank = percentile.clamp(0.0, 100.0) / 100.0 * (n - 1) as f64;
            let low = rank.floor() as usize;
            let high = (low + 1).min(n - 1);
            sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criterion_names_round_trip() {
        for c in Criterion::ALL {
            assert_eq!(Criterion::parse(c.name()), Some(c));
        }
    }

    #[test]
    fn percentile_matches_numpy_linear() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile_sorted(&v, 50.0), 2.5);
        assert_eq!(percentile_sorted(&v, 75.0), 3.25);
        assert_eq!(percentile_sorted(&v, 0.0), 1.0);
        assert_eq!(percentile_sorted(&v, 100.0), 4.0);
    }

    #[test]
    fn percentile_thresholds_exit_the_top_quarter_at_p75() {
        let mut exit = ExitTrace::new(0, 2);
        for p in [0.6, 0.7, 0.8, 0.9, 0.95] {
            exit.push_distribution(&[p, 1.0 - p]);
        }
        let final_exit = exit.clone();
        let t = thresholds_from_percentiles(&[exit, final_exit], 2, Criterion::MaxProbability, &[75.0])
            .expect("non-empty calibration");
        assert!((t[0] - 0.9).abs() < 1e-6);
        // Entropy: confident = low entropy, so p75 keeps the lowest quarter of entropies.
        let mut exit = ExitTrace::new(0, 2);
        for p in [0.6, 0.7, 0.8, 0.9, 0.95] {
            exit.push_distribution(&[p, 1.0 - p]);
        }
        let t = thresholds_from_percentiles(&[exit.clone(), exit.clone()], 2, Criterion::Entropy, &[75.0])
            .expect("non-empty calibration");
        let below = exit.entropy_nats.iter().filter(|&&h| f64::from(h) <= t[0] + 1e-9).count();
        assert_eq!(below, 2);
    }
}
