//! Runner overhead per inference against a bare `Session::run` loop on the same model, session options and
//! input (target: <= 1 % of kernel time on a model of >= 1 ms). Prints both; run with
//! `cargo bench --bench runner_overhead`. Needs tests/fixtures (heavy.onnx, fmnist500).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use edgescope::data::Dataset;
use edgescope::model::Variant;
use edgescope::record::{RunMode, RunOutput, RunSettings};
use edgescope::runtime::{CancelToken, Job, LocalRunner, Runner, ort_environment};
use ort::session::Session;
use ort::value::TensorRef;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let variant = Arc::new(Variant::open(&fixture("heavy.onnx"))?);
    let dataset = Arc::new(Dataset::open(&fixture("fmnist500"))?);
    let samples = dataset.len();
    let environment = ort_environment()?;
    let mut session = Session::builder(environment)?.with_intra_threads(1)?.commit_from_file(fixture("heavy.onnx"))?;
    let mut input = Vec::new();
    dataset.load_input(0, &mut input)?;
    let shape = dataset.input_shape();
    let mut runner = LocalRunner::new();
    let settings = RunSettings { intra_threads: 1, warmup_runs: 20, sample_resources: false, ..RunSettings::default() };
    let job = Job { variant, dataset, settings, mode: RunMode::Trace, reference: None };

    for _ in 0..20 {
        session.run(ort::inputs!["image" => TensorRef::from_array_view((shape, input.as_slice()))?])?;
    }
    let mut ratios = Vec::new();
    println!("heavy.onnx, {samples} samples per round, 1 intra-op thread, batch 1");
    for round in 0..5 {
        // Bare loop: the same input every time, nothing but Session::run.
        let t = Instant::now();
        for _ in 0..samples {
            let outputs =
                session.run(ort::inputs!["image" => TensorRef::from_array_view((shape, input.as_slice()))?])?;
            std::hint::black_box(&outputs);
        }
        let bare_us = t.elapsed().as_secs_f64() * 1e6 / samples as f64;

        // The runner: preprocessing, timing, softmax, top-k and trace recording around every run.
        let RunOutput::Trace(run) = runner.run(&job, &mut |_| {}, &CancelToken::new())? else {
            unreachable!("trace job")
        };
        let preprocess_us: f64 = run.trace.preprocess_us.iter().map(|&v| f64::from(v)).sum::<f64>() / samples as f64;
        let kernel_us: f64 =
            run.trace.segment_latency_us[0].iter().map(|&v| f64::from(v)).sum::<f64>() / samples as f64;
        let runner_us = run.info.wall_time_s * 1e6 / samples as f64;
        let overhead_us = runner_us - preprocess_us - bare_us;
        let ratio = overhead_us / bare_us * 100.0;
        ratios.push(ratio);
        println!(
            "round {round}: bare {bare_us:.1} us, runner {runner_us:.1} us/sample (preprocessing {preprocess_us:.1} us, timed kernel {kernel_us:.1} us), overhead {overhead_us:+.1} us = {ratio:+.2} % of kernel time"
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!("median runner overhead: {:+.2} % of kernel time (target <= 1 %)", ratios[ratios.len() / 2]);
    Ok(())
}
