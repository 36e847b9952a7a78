//! The runner contract: one test body that every `Runner` implementation must pass (the local runner
//! now, the remote runner over TCP with the same body).

use std::time::Duration;

use edgescope::analysis::{Criterion, Policy, PreparedTrace};
use edgescope::record::{RunEvent, RunMode, RunOutput};
use edgescope::runtime::{CancelToken, Runner};

use crate::common::{expected, ints, job, trace};

/// Runs every check against runners made by `make`.
pub fn check_runner(make: &dyn Fn() -> Box<dyn Runner>) {
    single_graphs_match_python_onnxruntime(&mut *make());
    chains_record_every_exit_and_policies_match_python(&mut *make());
    dynamic_runs_take_the_exits_the_trace_predicts(&mut *make());
    cancel_stops_a_run_and_keeps_what_was_measured(&mut *make());
    device_record_names_onnx_runtime(&mut *make());
    wide_models_are_compared_with_their_reference(&mut *make());
}

/// Beyond the trace's top-k classes the runner compares every sample with the reference (base) model: the
/// divergences arrive with the trace and give Python's exact probability loyalty (tests/fixtures/wide).
fn wide_models_are_compared_with_their_reference(runner: &mut dyn Runner) {
    let text = std::fs::read_to_string(crate::common::fixture("wide/expected.json")).expect("wide/expected.json");
    let expected: serde_json::Value = serde_json::from_str(&text).expect("json");
    let base = trace(runner, &job("wide/wide_base.toml", "wide/dataset.toml", RunMode::Trace));
    let mut dq = job("wide/wide_dq.toml", "wide/dataset.toml", RunMode::Trace);
    dq.settings.limit = Some(200);
    dq.reference = Some(std::sync::Arc::new(
        edgescope::model::Variant::open(&crate::common::fixture("wide/wide_base.toml")).expect("base opens"),
    ));
    let mut comparing = 0;
    let run = match runner
        .run(
            &dq,
            &mut |event| {
                if let RunEvent::ComparingWithReference { done, total } = event {
                    assert!(done <= total && total == 200);
                    comparing += 1;
                }
            },
            &CancelToken::new(),
        )
        .expect("run")
    {
        RunOutput::Trace(run) => run,
        RunOutput::Dynamic(_) => panic!("trace job returned a dynamic run"),
    };
    assert!(comparing > 0, "no progress while comparing");
    assert_eq!(run.trace.reference.as_deref(), Some("wide/base"));
    assert!(run.trace.exits[0].has_reference_jsd() && run.trace.len() == 200);
    let outcome = PreparedTrace::new(&run.trace, Some(&base.trace.head(200)), Criterion::Entropy)
        .evaluate(&Policy::never_exit(Criterion::Entropy, 0));
    assert_eq!(outcome.probability_loyalty_error, Some(0.0));
    // The fixture's reference is over 500 samples; over the first 200 the loyalty is the mean of the same
    // per-sample values, so it only has to be close, and exact figures are checked in engine_fidelity.
    let full = expected["variants"]["wide/dq"]["probability_loyalty"].as_f64().expect("number");
    assert!((outcome.probability_loyalty.expect("loyalty") - full).abs() < 0.01);
}

fn single_graphs_match_python_onnxruntime(runner: &mut dyn Runner) {
    let expected = expected();
    for (name, manifest) in
        [("tiny_base", "tiny_base.toml"), ("tiny_dq", "tiny_dq.toml"), ("tiny_ptq", "tiny_ptq.toml")]
    {
        let run = trace(runner, &job(manifest, "fmnist500", RunMode::Trace));
        assert!(run.info.complete);
        let want = ints(&expected["models"][name]["argmax"]);
        let got: Vec<i64> = (0..run.trace.len()).map(|s| i64::from(run.trace.exits[0].predicted(s))).collect();
        assert_eq!(got, want, "{name}: per-sample predictions differ from Python onnxruntime");
        let correct =
            (0..run.trace.len()).filter(|&s| u32::from(run.trace.exits[0].predicted(s)) == run.trace.labels[s]).count();
        assert_eq!(correct as i64, expected["models"][name]["correct"].as_i64().expect("correct"), "{name}");
        assert_eq!(run.trace.labels.iter().map(|&l| i64::from(l)).collect::<Vec<_>>(), ints(&expected["labels"]));
        assert!(run.trace.segment_latency_us[0].iter().all(|&t| t > 0.0));
        assert!(run.trace.preprocess_us.iter().all(|&t| t >= 0.0));
    }
}

fn chains_record_every_exit_and_policies_match_python(runner: &mut dyn Runner) {
    let expected = expected();
    let base = trace(runner, &job("tiny_base.toml", "fmnist500", RunMode::Trace));
    for (name, manifest) in [("tiny_ee", "tiny_ee.toml"), ("tiny_ee2", "tiny_ee2.toml")] {
        let run = trace(runner, &job(manifest, "fmnist500", RunMode::Trace));
        let chain = &expected["chains"][name];
        let exits = chain["exits"].as_array().expect("exits");
        assert_eq!(run.trace.exits.len(), exits.len());
        for (index, want) in exits.iter().enumerate() {
            let got: Vec<i64> = (0..run.trace.len()).map(|s| i64::from(run.trace.exits[index].predicted(s))).collect();
            assert_eq!(got, ints(&want["argmax"]), "{name} exit {index}");
            for (s, h) in want["entropy_nats"].as_array().expect("entropies").iter().enumerate() {
                let h = h.as_f64().expect("entropy");
                assert!(
                    (f64::from(run.trace.exits[index].entropy_nats[s]) - h).abs() < 1e-5,
                    "{name} exit {index} sample {s}"
                );
            }
        }
        // The final exit reproduces the base, so its loyalty to the base is exactly 1.
        let prepared = PreparedTrace::new(&run.trace, Some(&base.trace), Criterion::Entropy);
        let never = prepared.evaluate(&Policy::never_exit(Criterion::Entropy, run.trace.early_exit_count()));
        assert_eq!(never.label_loyalty, Some(1.0));
        // The policy "exit when entropy <= 0.5 nats" gives what numpy computed.
        let policy = &chain["policy"];
        let threshold = policy["entropy_threshold_nats"].as_f64().expect("threshold");
        let outcome = prepared.evaluate(&Policy::uniform(Criterion::Entropy, threshold, run.trace.early_exit_count()));
        let counts: Vec<i64> = outcome.exit_counts.iter().map(|&c| c as i64).collect();
        assert_eq!(counts, ints(&policy["exit_counts"]), "{name} exit counts");
        assert_eq!(outcome.correct as i64, policy["correct"].as_i64().expect("correct"), "{name} correct");
        let loyal = (outcome.label_loyalty.expect("base given") * run.trace.len() as f64).round() as i64;
        assert_eq!(loyal, policy["loyal"].as_i64().expect("loyal"), "{name} label loyalty");
        let exit_of_each =
            prepared.exit_of_each_sample(&Policy::uniform(Criterion::Entropy, threshold, run.trace.early_exit_count()));
        assert_eq!(exit_of_each.iter().map(|&e| i64::from(e)).collect::<Vec<_>>(), ints(&policy["exit_index"]));
    }
}

fn dynamic_runs_take_the_exits_the_trace_predicts(runner: &mut dyn Runner) {
    let traced = trace(runner, &job("tiny_ee2.toml", "fmnist500", RunMode::Trace));
    for criterion in [Criterion::Entropy, Criterion::MaxProbability, Criterion::Margin] {
        let prepared = PreparedTrace::new(&traced.trace, None, criterion);
        let sweep = prepared.sweep(&edgescope::analysis::ThresholdGrid::Quantiles(5), 1.0);
        let policy = prepared.policy_at(&sweep.points[sweep.points.len() / 2]);
        let output = runner.run(
            &job("tiny_ee2.toml", "fmnist500", RunMode::Dynamic(policy.clone())),
            &mut |_| {},
            &CancelToken::new(),
        );
        let RunOutput::Dynamic(dynamic) = output.expect("dynamic run") else { panic!("expected a dynamic run") };
        assert!(dynamic.info.complete);
        assert_eq!(dynamic.exit_taken, prepared.exit_of_each_sample(&policy), "{criterion:?}");
        let predicted = prepared.evaluate(&policy);
        let correct = dynamic.predicted.iter().zip(&dynamic.labels).filter(|(p, l)| u32::from(**p) == **l).count();
        assert_eq!(correct, predicted.correct, "{criterion:?}");
        // Samples that left at the first exit ran one segment of three.
        let early: Vec<f32> =
            dynamic.latency_us.iter().zip(&dynamic.exit_taken).filter(|(_, e)| **e == 0).map(|(l, _)| *l).collect();
        assert!(!early.is_empty());
    }
}

fn cancel_stops_a_run_and_keeps_what_was_measured(runner: &mut dyn Runner) {
    let job = job("heavy.onnx", "fmnist500", RunMode::Trace);
    let token = CancelToken::new();
    let canceller = token.clone();
    let mut events = Vec::new();
    let output = runner.run(
        &job,
        &mut |event| {
            if let RunEvent::Progress { done, .. } = event
                && done >= 20
            {
                canceller.cancel();
            }
            events.push(event);
        },
        &token,
    );
    let RunOutput::Trace(run) = output.expect("a cancelled run returns what it measured") else {
        panic!("trace expected")
    };
    assert!(!run.info.complete);
    assert!(run.trace.len() >= 20 && run.trace.len() < 500, "{} samples", run.trace.len());
    assert!(run.trace.validate().is_ok());
    assert!(events.contains(&RunEvent::Loading));
    // A token cancelled before the start stops at once.
    let early = CancelToken::new();
    early.cancel();
    let started = std::time::Instant::now();
    let output = runner.run(&job, &mut |_| {}, &early).expect("cancelled run");
    assert!(!output.info().complete);
    assert!(started.elapsed() < Duration::from_secs(30));
}

fn device_record_names_onnx_runtime(runner: &mut dyn Runner) {
    let device = runner.device().expect("device record");
    assert!(device.ort_version.starts_with("1.31"), "{}", device.ort_version);
    assert!(device.logical_cores >= 1);
    assert!(device.ort_providers.iter().any(|p| p == "CPUExecutionProvider"));
}
