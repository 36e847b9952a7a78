//! Invariants of the analysis layer on random traces.

use edgescope::analysis::{Criterion, Policy, PreparedTrace, ThresholdGrid, Trace, pareto_front};
use proptest::prelude::*;

/// A random trace: `samples` x (`early` + 1) exits over `classes` classes.
fn trace_strategy() -> impl Strategy<Value = Trace> {
    (1usize..60, 0usize..4, 2usize..24, any::<u64>()).prop_map(|(samples, early, classes, seed)| {
        let mut state = seed | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let exit_segments: Vec<usize> = (0..=early).collect();
        let mut trace = Trace::new(classes, early + 1, &exit_segments);
        let mut probs = vec![0f32; classes];
        for _ in 0..samples {
            trace.labels.push((next() * classes as f64) as u32 % classes as u32);
            trace.preprocess_us.push((next() * 50.0) as f32);
            for exit in 0..=early {
                // Peaked distributions of varying sharpness.
                let sharpness = 1.0 + next() * 8.0;
                for p in probs.iter_mut() {
                    *p = (next() * sharpness).exp() as f32;
                }
                let sum: f32 = probs.iter().sum();
                probs.iter_mut().for_each(|p| *p /= sum);
                trace.exits[exit].push_distribution(&probs);
                trace.segment_latency_us[exit].push(10.0 + (next() * 100.0) as f32);
            }
        }
        trace
    })
}

fn criterion_strategy() -> impl Strategy<Value = Criterion> {
    prop::sample::select(Criterion::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn exit_rate_is_monotone_in_the_threshold(trace in trace_strategy(), criterion in criterion_strategy(), a in 0.0f64..1.0, b in 0.0f64..1.0) {
        let prepared = PreparedTrace::new(&trace, None, criterion);
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        let (min, max) = criterion.threshold_range(trace.num_classes);
        let scale = |t: f64| min + t * (max - min);
        let early = trace.early_exit_count();
        let at_low = prepared.evaluate(&Policy::uniform(criterion, scale(low), early)).early_exit_rate;
        let at_high = prepared.evaluate(&Policy::uniform(criterion, scale(high), early)).early_exit_rate;
        if criterion.exits_below() {
            prop_assert!(at_low <= at_high, "entropy: larger T, more exits");
        } else {
            prop_assert!(at_low >= at_high, "confidence: larger T, fewer exits");
        }
    }

    #[test]
    fn without_early_exits_the_outcome_is_the_final_exit(trace in trace_strategy(), criterion in criterion_strategy()) {
        let prepared = PreparedTrace::new(&trace, Some(&trace), criterion);
        let outcome = prepared.evaluate(&Policy::never_exit(criterion, trace.early_exit_count()));
        let last = trace.exits.len() - 1;
        let correct = (0..trace.len()).filter(|&s| u32::from(trace.exits[last].predicted(s)) == trace.labels[s]).count();
        prop_assert_eq!(outcome.correct, correct);
        prop_assert_eq!(outcome.exit_counts[last], trace.len());
        let mean: f64 = (0..trace.len()).map(|s| f64::from(trace.latency_to_exit_us(s, last))).sum::<f64>() / trace.len() as f64;
        prop_assert!((outcome.latency.mean_us - mean).abs() < 1e-6 * mean.max(1.0));
        // The base against itself is perfectly loyal.
        prop_assert_eq!(outcome.label_loyalty, Some(1.0));
        prop_assert!((outcome.probability_loyalty.unwrap_or(0.0) - 1.0).abs() < 1e-5);
        prop_assert!((outcome.speedup.unwrap_or(0.0) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn sweep_points_equal_direct_evaluation(trace in trace_strategy(), criterion in criterion_strategy()) {
        let prepared = PreparedTrace::new(&trace, Some(&trace), criterion);
        let sweep = prepared.sweep(&ThresholdGrid::Quantiles(17), 1.0);
        for point in &sweep.points {
            let outcome = prepared.evaluate(&prepared.policy_at(point));
            prop_assert_eq!(outcome.correct, point.correct);
            prop_assert!((outcome.latency.mean_us - point.mean_latency_us).abs() < 1e-6 * point.mean_latency_us.max(1.0));
            prop_assert!((outcome.early_exit_rate - point.early_exit_rate).abs() < 1e-9);
            prop_assert!((outcome.label_loyalty.unwrap_or(0.0) - point.label_loyalty).abs() < 1e-9);
        }
        // Rates sum to one; acc-opt has the best accuracy; no point dominates a front point.
        for point in &sweep.points {
            prop_assert!((point.exit_rates.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        }
        if let Some(best) = sweep.acc_opt {
            prop_assert!(sweep.points.iter().all(|p| p.correct <= sweep.points[best].correct));
        }
        let pairs: Vec<(f64, f64)> = sweep.points.iter().map(|p| (p.mean_latency_us, p.accuracy)).collect();
        for &f in &pareto_front(&pairs) {
            prop_assert!(!pairs.iter().any(|&(l, a)| l <= pairs[f].0 && a >= pairs[f].1 && (l < pairs[f].0 || a > pairs[f].1)));
        }
        if let (Some(index), Some(base)) = (sweep.inf_opt, prepared.base_accuracy()) {
            prop_assert!(sweep.points[index].accuracy >= base - 0.01 - 1e-12);
        }
    }
}
