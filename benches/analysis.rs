//! Analysis speed: one policy evaluation on 50 000 samples x 4 exits (target < 1 ms) and a 1 000-threshold
//! sweep on the same trace (target < 100 ms). Prints medians; run with `cargo bench --bench analysis`.

use std::time::Instant;

use edgescope::analysis::{Criterion, Policy, PreparedTrace, ThresholdGrid};

#[path = "support/synthetic.rs"]
mod synthetic;
use synthetic::synthetic_trace;

fn median_ms(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let (samples, exits, classes) = (50_000, 4, 10);
    let started = Instant::now();
    let trace = synthetic_trace(samples, exits, classes, 100.0);
    let base = synthetic_trace(samples, 1, classes, 100.0);
    println!(
        "synthetic trace: {samples} samples x {exits} exits x {classes} classes (built in {:.1} s)",
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let prepared = PreparedTrace::new(&trace, Some(&base), Criterion::Entropy);
    println!("prepare (once per trace and criterion): {:.1} ms", started.elapsed().as_secs_f64() * 1e3);

    let policy = Policy { criterion: Criterion::Entropy, thresholds: vec![0.2, 0.4, 0.6] };
    let mut scratch = Vec::new();
    let mut times = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let outcome = prepared.evaluate_with(&policy, &mut scratch);
        times.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(outcome);
    }
    println!("policy evaluation, 50 000 x 4 exits: median {:.3} ms (target < 1 ms)", median_ms(times));

    let mut times = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        let sweep = prepared.sweep(&ThresholdGrid::Quantiles(1000), 1.0);
        times.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(sweep);
    }
    println!("1000-threshold sweep, 50 000 x 4 exits: median {:.1} ms (target < 100 ms)", median_ms(times));

    // The naive sweep (one full evaluation per threshold), for comparison.
    let t = Instant::now();
    for i in 0..1000 {
        let threshold = i as f64 / 1000.0 * (classes as f64).ln();
        std::hint::black_box(
            prepared.evaluate_with(&Policy::uniform(Criterion::Entropy, threshold, exits - 1), &mut scratch),
        );
    }
    println!("baseline: 1000 separate evaluations: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
}
