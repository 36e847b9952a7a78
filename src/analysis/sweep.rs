//! Sweeps: outcomes over a grid of thresholds (one threshold shared by every early exit), the Pareto front of
//! accuracy against mean latency, and the study's two operating points, acc-opt and inf-opt.
//!
//! A sample's exit only changes when the cut passes one of its confidence scores, so the sweep sorts those
//! change events once and walks the grid, updating running sums: `O(N·E log(N·E) + grid)` instead of
//! `O(N·E·grid)`. Additive metrics (accuracy, loyalties, exit rates, mean latency) are exact at every point;
//! latency percentiles are left to [`PreparedTrace::evaluate`] at the chosen points.

use serde::{Deserialize, Serialize};

use super::outcome::{PreparedTrace, SampleAtExit};
use super::policy::Policy;

/// One point of a sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// The threshold, in the criterion's user units, applied at every early exit.
    pub threshold: f64,
    /// Samples predicted correctly.
    pub correct: usize,
    /// Top-1 accuracy.
    pub accuracy: f64,
    /// Top-1 label agreement with the base (1 without a base).
    pub label_loyalty: f64,
    /// Mean probability loyalty (1 without a base).
    pub probability_loyalty: f64,
    /// The most `probability_loyalty` can be off from the exact value (0 when exact).
    #[serde(default)]
    pub probability_loyalty_error: f64,
    /// Share of samples per exit (final last).
    pub exit_rates: Vec<f64>,
    /// Share of samples leaving early.
    pub early_exit_rate: f64,
    /// Predicted mean inference latency, microseconds.
    pub mean_latency_us: f64,
}

/// Which thresholds to sweep.
#[derive(Clone, Debug, PartialEq)]
pub enum ThresholdGrid {
    /// These thresholds, in user units.
    Explicit(Vec<f64>),
    /// `count` thresholds at evenly spaced quantiles of the observed confidences (every step moves samples),
    /// plus the two ends (no sample exits / every sample exits at the first exit).
    Quantiles(usize),
}

/// A sweep with its Pareto front and operating points.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sweep {
    /// Points ordered by threshold from "no early exit" to "everything exits early".
    pub points: Vec<SweepPoint>,
    /// Indices into `points` of the Pareto front (accuracy up, latency down), ordered by latency.
    pub pareto: Vec<usize>,
    /// Highest accuracy, fastest among ties.
    pub acc_opt: Option<usize>,
    /// Fastest point whose accuracy is within the budget of the base's accuracy.
    pub inf_opt: Option<usize>,
    /// The accuracy budget used for inf-opt, in percentage points.
    pub budget_pp: f64,
    /// Whether loyalty was measured against a base trace (without one the loyalty columns are meaningless).
    pub has_base: bool,
}

/// Sorts `items` by `key`, largest first, in the order of `f32::total_cmp`; stable.
///
/// An LSD radix sort on the order-preserving integer form of the key (3 passes of 11 bits): a criterion switch
/// re-sorts every sample's scores (150 000 of them for 50 000 samples x 3 early exits), and this takes a
/// fraction of the time a comparison sort does, which keeps the switch within a frame.
pub(crate) fn sort_descending<T: Copy>(items: &mut Vec<T>, key: impl Fn(&T) -> f32) {
    const BITS: u32 = 11;
    const BUCKETS: usize = 1 << BITS;
    if items.len() < 256 {
        items.sort_by(|a, b| key(b).total_cmp(&key(a)));
        return;
    }
    // Ascending total order as u32, then inverted: ascending in the result is descending in the key.
    let descending_key = |item: &T| {
        let bits = key(item).to_bits();
        let ascending = if bits & 0x8000_0000 != 0 { !bits } else { bits | 0x8000_0000 };
        !ascending
    };
    let mut keys: Vec<u32> = items.iter().map(descending_key).collect();
    let mut scratch_items = items.clone();
    let mut scratch_keys = keys.clone();
    for pass in 0..3 {
        let shift = pass * BITS;
        let mut counts = vec![0usize; BUCKETS + 1];
        for &k in &keys {
            counts[((k >> shift) as usize & (BUCKETS - 1)) + 1] += 1;
        }
        for b in 0..BUCKETS {
            counts[b + 1] += counts[b];
        }
        for (item, &k) in items.iter().zip(&keys) {
            let bucket = (k >> shift) as usize & (BUCKETS - 1);
            scratch_items[counts[bucket]] = *item;
            scratch_keys[counts[bucket]] = k;
            counts[bucket] += 1;
        }
        std::mem::swap(items, &mut scratch_items);
        std::mem::swap(&mut keys, &mut scratch_keys);
    }
}

/// Default accuracy budget for inf-opt: one percentage point below the base.
pub const DEFAULT_BUDGET_PP: f64 = 1.0;

#[derive(Clone, Copy)]
struct Event {
    cut: f32,
    sample: u32,
    from: u8,
    to: u8,
}

#[derive(Default, Clone)]
struct Totals {
    correct: i64,
    agree: i64,
    loyalty: f64,
    loyalty_error: f64,
    latency_us: f64,
    exit_counts: Vec<i64>,
}

impl Totals {
    fn apply(&mut self, at: &SampleAtExit, exit: usize, sign: i64) {
        self.correct += sign * i64::from(at.flags & 1);
        self.agree += sign * i64::from((at.flags >> 2) & 1);
        self.loyalty += sign as f64 * f64::from(at.probability_loyalty);
        self.loyalty_error += sign as f64 * f64::from(at.loyalty_error);
        self.latency_us += sign as f64 * f64::from(at.latency_us);
        self.exit_counts[exit] += sign;
    }
}

impl PreparedTrace {
    /// Sweeps one threshold shared by every early exit over `grid`; see the module documentation.
    pub fn sweep(&self, grid: &ThresholdGrid, budget_pp: f64) -> Sweep {
        let early = self.early_exits();
        let criterion = self.criterion;

        // Exit e becomes a sample's exit once the cut drops to its score, if that score beats every earlier one.
        let mut events = Vec::with_capacity(self.samples * early);
        for sample in 0..self.samples {
            let scores = &self.confidence[sample * early..(sample + 1) * early];
            let mut records: Vec<(usize, f32)> = Vec::with_capacity(early);
            let mut best = f32::NEG_INFINITY;
            for (exit, &score) in scores.iter().enumerate() {
                if score > best {
                    records.push((exit, score));
                    best = score;
                }
            }
            let mut current = early;
            for &(exit, score) in records.iter().rev() {
                events.push(Event { cut: score, sample: sample as u32, from: current as u8, to: exit as u8 });
                current = exit;
            }
        }
        sort_descending(&mut events, |e| e.cut);

        let cuts = self.grid_cuts(grid);
        let mut totals = Totals { exit_counts: vec![0; self.exits], ..Totals::default() };
        for sample in 0..self.samples {
            totals.apply(&self.at_exit[sample * self.exits + early], early, 1);
        }
        let n = self.samples.max(1) as f64;
        let mut next_event = 0;
        let mut points = Vec::with_capacity(cuts.len());
        for cut in cuts {
            while next_event < events.len() && events[next_event].cut >= cut {
                let e = events[next_event];
                let base = e.sample as usize * self.exits;
                totals.apply(&self.at_exit[base + usize::from(e.from)], usize::from(e.from), -1);
                totals.apply(&self.at_exit[base + usize::from(e.to)], usize::from(e.to), 1);
                next_event += 1;
            }
            let exit_rates: Vec<f64> = totals.exit_counts.iter().map(|&c| c as f64 / n).collect();
            points.push(SweepPoint {
                threshold: criterion.to_cut(f64::from(cut)),
                correct: totals.correct.max(0) as usize,
                accuracy: totals.correct as f64 / n,
                label_loyalty: totals.agree as f64 / n,
                probability_loyalty: totals.loyalty / n,
                probability_loyalty_error: (totals.loyalty_error / n).max(0.0),
                early_exit_rate: exit_rates[..early].iter().sum(),
                exit_rates,
                mean_latency_us: totals.latency_us / n,
            });
        }
        let pareto = pareto_front(&points.iter().map(|p| (p.mean_latency_us, p.accuracy)).collect::<Vec<_>>());
        let acc_opt = acc_opt(&points);
        let inf_opt = self.base_accuracy.and_then(|base| inf_opt(&points, base, budget_pp));
        Sweep { points, pareto, acc_opt, inf_opt, budget_pp, has_base: self.has_base }
    }

    /// Grid cuts in descending order (from "nobody exits" to "everybody exits").
    fn grid_cuts(&self, grid: &ThresholdGrid) -> Vec<f32> {
        let mut cuts: Vec<f32> = match grid {
            ThresholdGrid::Explicit(thresholds) => {
                thresholds.iter().map(|&t| self.criterion.to_cut(t) as f32).collect()
            }
            ThresholdGrid::Quantiles(count) => {
                let mut scores: Vec<f32> = self.confidence.clone();
                sort_descending(&mut scores, |&s| s);
                scores.dedup();
                // Just above the highest score: the "nobody exits" end, still a finite threshold.
                let mut cuts = vec![scores.first().map_or(f32::MAX, |s| s.next_up())];
                if !scores.is_empty() {
                    let count = (*count).max(2);
                    for i in 0..count {
                        let index = (i * (scores.len() - 1)) / (count - 1);
                        cuts.push(scores[index]);
                    }
                }
                cuts
            }
        };
        cuts.sort_unstable_by(|a, b| b.total_cmp(a));
        cuts.dedup();
        cuts
    }

    /// The policy of a sweep point (its threshold at every early exit).
    pub fn policy_at(&self, point: &SweepPoint) -> Policy {
        Policy::uniform(self.criterion, point.threshold, self.early_exits())
    }
}

/// Indices of the Pareto-optimal points among `(latency, accuracy)` pairs (lower latency, higher accuracy),
/// ordered by latency. Of equal points only the first is kept.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len()).filter(|&i| points[i].0.is_finite()).collect();
    order.sort_by(|&a, &b| points[a].0.total_cmp(&points[b].0).then(points[b].1.total_cmp(&points[a].1)));
    let mut front = Vec::new();
    let mut best_accuracy = f64::NEG_INFINITY;
    for i in order {
        if points[i].1 > best_accuracy {
            best_accuracy = points[i].1;
            front.push(i);
        }
    }
    front
}

/// Highest accuracy; among equal accuracies, lowest mean latency.
pub fn acc_opt(points: &[SweepPoint]) -> Option<usize> {
    (0..points.len()).min_by(|&a, &b| {
        points[b].correct.cmp(&points[a].correct).then(points[a].mean_latency_us.total_cmp(&points[b].mean_latency_us))
    })
}

/// Lowest mean latency among points whose accuracy is at least `base_accuracy - budget_pp / 100`.
pub fn inf_opt(points: &[SweepPoint], base_accuracy: f64, budget_pp: f64) -> Option<usize> {
    let floor = base_accuracy - budget_pp / 100.0 - 1e-12;
    (0..points.len()).filter(|&i| points[i].accuracy >= floor).min_by(|&a, &b| {
        points[a].mean_latency_us.total_cmp(&points[b].mean_latency_us).then(points[b].correct.cmp(&points[a].correct))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radix_sort_matches_a_stable_comparison_sort() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut values: Vec<(f32, u32)> = (0..5000)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let v = match i % 7 {
                    0 => -((state % 1000) as f32) / 7.0,
                    1 => 0.0,
                    2 => -0.0,
                    3 => f32::INFINITY,
                    4 => f32::NEG_INFINITY,
                    _ => (state % 100_000) as f32 / 3.0,
                };
                (v, i)
            })
            .collect();
        let mut expected = values.clone();
        expected.sort_by(|a, b| b.0.total_cmp(&a.0));
        sort_descending(&mut values, |v| v.0);
        assert_eq!(
            values.iter().map(|v| (v.0.to_bits(), v.1)).collect::<Vec<_>>(),
            expected.iter().map(|v| (v.0.to_bits(), v.1)).collect::<Vec<_>>()
        );
    }
    use crate::analysis::policy::Criterion;
    use crate::analysis::trace::Trace;

    #[test]
    fn pareto_front_keeps_only_non_dominated_points() {
        let points = [(1.0, 0.5), (2.0, 0.4), (2.0, 0.7), (3.0, 0.7), (4.0, 0.9)];
        assert_eq!(pareto_front(&points), vec![0, 2, 4]);
    }

    #[test]
    fn sweep_matches_direct_evaluation() {
        let mut t = Trace::new(3, 3, &[0, 1, 2]);
        t.labels = vec![0, 1, 2, 0, 1];
        let d = [
            [[0.9, 0.05, 0.05], [0.2, 0.5, 0.3], [0.7, 0.2, 0.1]],
            [[0.3, 0.4, 0.3], [0.1, 0.85, 0.05], [0.1, 0.8, 0.1]],
            [[0.2, 0.2, 0.6], [0.3, 0.3, 0.4], [0.1, 0.1, 0.8]],
            [[0.1, 0.7, 0.2], [0.5, 0.4, 0.1], [0.6, 0.3, 0.1]],
            [[0.34, 0.33, 0.33], [0.2, 0.6, 0.2], [0.2, 0.7, 0.1]],
        ];
        for sample in d {
            for (e, probs) in sample.iter().enumerate() {
                t.exits[e].push_distribution(probs);
            }
        }
        t.segment_latency_us = vec![vec![10.0, 11.0, 12.0, 13.0, 14.0], vec![20.0; 5], vec![40.0; 5]];
        t.preprocess_us = vec![1.0; 5];
        for criterion in Criterion::ALL {
            let p = PreparedTrace::new(&t, Some(&t), criterion);
            let sweep = p.sweep(&ThresholdGrid::Quantiles(50), 1.0);
            for point in &sweep.points {
                let o = p.evaluate(&p.policy_at(point));
                assert_eq!(o.correct, point.correct, "{criterion:?} at {}", point.threshold);
                assert!((o.latency.mean_us - point.mean_latency_us).abs() < 1e-9);
                for (a, b) in o.exit_rates.iter().zip(&point.exit_rates) {
                    assert!((a - b).abs() < 1e-12);
                }
                assert!((o.probability_loyalty.unwrap_or(0.0) - point.probability_loyalty).abs() < 1e-6);
            }
            assert_eq!(sweep.points[0].early_exit_rate, 0.0);
            assert_eq!(sweep.points.last().map(|p| p.exit_rates[0]), Some(1.0));
        }
    }
}
