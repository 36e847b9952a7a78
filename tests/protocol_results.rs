//! The runner's result messages keep their wire form: `TraceResult`, `Partial` and `DynamicResult` fixtures
//! written by revision 0 of protocol version 2 read back into the same runs, and this build writes them byte for
//! byte as before. The protocol has message types of its own over the shared column codec, so a change to the
//! session file cannot change what runners and clients exchange without failing here.
//!
//! `EDGESCOPE_WRITE_FIXTURES=1 cargo test --test protocol_results` rewrites the fixtures (only on purpose, with a
//! new message revision).

use std::path::PathBuf;

use edgescope::analysis::policy::{Criterion, Policy};
use edgescope::analysis::trace::Trace;
use edgescope::net::protocol::{RunnerMessage, WireDynamicRun, WireTraceRun};
use edgescope::record::{DeviceRecord, DynamicRun, RunInfo, RunSettings, SkippedSample, TraceRun};

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/protocol/revision0").join(name)
}

fn info(variant: &str, samples: usize) -> RunInfo {
    RunInfo {
        variant: variant.into(),
        dataset: "fmnist-test".into(),
        device: DeviceRecord {
            host: "jetson-orin".into(),
            os: "Ubuntu 22.04".into(),
            arch: "aarch64".into(),
            cpu_model: "ARMv8 Processor rev 1 (v8l)".into(),
            logical_cores: 6,
            memory_bytes: 8_000_000_000,
            ort_version: "1.20.0".into(),
            ort_providers: vec!["CUDAExecutionProvider".into(), "CPUExecutionProvider".into()],
            power_mode: Some("15W".into()),
            ..DeviceRecord::default()
        },
        runner: None,
        settings: RunSettings { limit: Some(samples), ..RunSettings::default() },
        provider: "CPUExecutionProvider".into(),
        started_unix_s: 1_790_000_000,
        wall_time_s: 0.25,
        samples_done: samples + 1,
        samples_total: samples + 1,
        dataset_samples: 10_000,
        skipped: vec![SkippedSample { index: 1, source: Some("img/1.png".into()), reason: "not a PNG".into() }],
        complete: true,
        ..RunInfo::default()
    }
}

/// Three samples through a two-segment chain with an exit after each segment, 4 classes.
fn trace_run() -> TraceRun {
    let mut trace = Trace::new(4, 2, &[0, 1]);
    let distributions = [
        [[0.7, 0.1, 0.1, 0.1], [0.9, 0.05, 0.03, 0.02]],
        [[0.2, 0.5, 0.2, 0.1], [0.1, 0.8, 0.05, 0.05]],
        [[0.25, 0.25, 0.3, 0.2], [0.1, 0.1, 0.1, 0.7]],
    ];
    for (sample, exits) in distributions.iter().enumerate() {
        trace.labels.push(sample as u32);
        for (exit, probs) in exits.iter().enumerate() {
            trace.exits[exit].push_distribution(probs);
            trace.segment_latency_us[exit].push(100.0 * (exit + 1) as f32 + sample as f32);
        }
        trace.preprocess_us.push(12.5 + sample as f32);
    }
    TraceRun { info: info("mobilenet/ee-all", 3), trace }
}

fn dynamic_run() -> DynamicRun {
    DynamicRun {
        info: info("mobilenet/ee-all", 3),
        policy: Some(Policy::uniform(Criterion::MaxProbability, 0.9, 1)),
        exit_taken: vec![0, 1, 1],
        latency_us: vec![101.0, 302.5, 303.0],
        preprocess_us: vec![12.5, 13.5, 14.5],
        predicted: vec![0, 1, 3],
        labels: vec![0, 1, 2],
    }
}

/// The messages this build writes for the runs above.
fn messages() -> Vec<(&'static str, RunnerMessage)> {
    let mut partial = trace_run();
    partial.info = RunInfo::default();
    vec![
        ("trace_result.json", RunnerMessage::TraceResult { run: Box::new(WireTraceRun::of(&trace_run())) }),
        ("partial.json", RunnerMessage::Partial { first_sample: 200, samples: Box::new(WireTraceRun::of(&partial)) }),
        ("dynamic_result.json", RunnerMessage::DynamicResult { run: Box::new(WireDynamicRun::of(&dynamic_run())) }),
    ]
}

#[test]
fn result_messages_keep_their_wire_form() {
    for (name, message) in messages() {
        let written = serde_json::to_string_pretty(&message).expect("serialize");
        let path = fixture_path(name);
        if std::env::var_os("EDGESCOPE_WRITE_FIXTURES").is_some() {
            std::fs::write(&path, format!("{written}\n")).expect("write fixture");
        }
        let fixture = std::fs::read_to_string(&path).expect("protocol fixture");
        assert_eq!(written.trim_end(), fixture.trim_end(), "{name}: this build writes a different message");
    }
}

#[test]
fn result_fixtures_read_back_into_the_same_runs() {
    let read = |name: &str| -> RunnerMessage {
        serde_json::from_str(&std::fs::read_to_string(fixture_path(name)).expect("fixture")).expect(name)
    };
    match read("trace_result.json") {
        RunnerMessage::TraceResult { run } => assert_eq!(run.decode().expect("decodes"), trace_run()),
        other => panic!("{other:?}"),
    }
    match read("partial.json") {
        RunnerMessage::Partial { first_sample, samples } => {
            assert_eq!(first_sample, 200);
            assert_eq!(samples.decode().expect("decodes").trace, trace_run().trace);
        }
        other => panic!("{other:?}"),
    }
    match read("dynamic_result.json") {
        RunnerMessage::DynamicResult { run } => assert_eq!(run.decode().expect("decodes"), dynamic_run()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_damaged_result_is_refused_with_what_is_wrong() {
    let text = std::fs::read_to_string(fixture_path("trace_result.json")).expect("fixture");
    let mut message: serde_json::Value = serde_json::from_str(&text).expect("json");
    // One more sample claimed in the labels column than its bytes hold.
    let labels = &mut message["run"]["trace"]["labels"]["len"];
    *labels = serde_json::json!(labels.as_u64().expect("len") + 1);
    let message: RunnerMessage = serde_json::from_value(message).expect("still a message");
    let RunnerMessage::TraceResult { run } = message else { panic!("kind") };
    let error = run.decode().expect_err("a wrong length must not decode");
    assert!(error.contains("mobilenet/ee-all"), "names the run: {error}");
}
