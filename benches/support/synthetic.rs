//! A synthetic trace for the benchmarks: peaked random distributions, per-segment latencies, seeded.

use edgescope::analysis::Trace;

/// `samples` x `exits` x `classes`, with segment latencies of `base_latency_us` plus up to 50 % jitter.
pub fn synthetic_trace(samples: usize, exits: usize, classes: usize, base_latency_us: f32) -> Trace {
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let segments: Vec<usize> = (0..exits).collect();
    let mut trace = Trace::new(classes, exits, &segments);
    let mut probs = vec![0f32; classes];
    for _ in 0..samples {
        trace.labels.push((next() * classes as f64) as u32 % classes as u32);
        trace.preprocess_us.push(20.0);
        for exit in 0..exits {
            let sharpness = 1.0 + next() * 10.0;
            probs.iter_mut().for_each(|p| *p = (next() * sharpness).exp() as f32);
            let sum: f32 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= sum);
            trace.exits[exit].push_distribution(&probs);
            trace.segment_latency_us[exit].push(base_latency_us * (1.0 + 0.5 * next() as f32));
        }
    }
    trace
}
