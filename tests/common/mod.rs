//! Helpers shared by the integration tests: fixture paths and running a job on a runner.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use edgescope::data::Dataset;
use edgescope::model::Variant;
use edgescope::record::{RunMode, RunOutput, RunSettings, TraceRun};
use edgescope::runtime::{CancelToken, Job, Runner};

/// A file under tests/fixtures.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The expected results the fixture recipe measured with Python onnxruntime.
pub fn expected() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("expected.json")).expect("tests/fixtures/expected.json");
    serde_json::from_str(&text).expect("valid expected.json")
}

/// Integers of a JSON array.
pub fn ints(value: &serde_json::Value) -> Vec<i64> {
    value.as_array().expect("array").iter().map(|v| v.as_i64().expect("integer")).collect()
}

/// Quick settings: one thread, two warm-up runs, no sampler.
pub fn quick_settings() -> RunSettings {
    RunSettings { intra_threads: 1, warmup_runs: 2, sample_resources: false, ..RunSettings::default() }
}

/// A job for a fixture variant over a fixture dataset.
pub fn job(variant: &str, dataset: &str, mode: RunMode) -> Job {
    Job {
        variant: Arc::new(Variant::open(&fixture(variant)).expect("fixture variant opens")),
        dataset: Arc::new(Dataset::open(&fixture(dataset)).expect("fixture dataset opens")),
        settings: quick_settings(),
        mode,
        reference: None,
    }
}

/// Runs a trace job to completion.
pub fn trace(runner: &mut dyn Runner, job: &Job) -> TraceRun {
    match runner.run(job, &mut |_| {}, &CancelToken::new()).expect("run succeeds") {
        RunOutput::Trace(run) => run,
        RunOutput::Dynamic(_) => panic!("trace job returned a dynamic run"),
    }
}

/// Starts the real `edgescope-runner` binary on a free loopback port; returns the process and its address.
pub fn spawn_runner_process(cache: &std::path::Path, token_file: &std::path::Path) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let address = format!("127.0.0.1:{port}");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_edgescope-runner"))
        .args(["--listen", &address, "--token-file"])
        .arg(token_file)
        .arg("--cache-dir")
        .arg(cache)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start edgescope-runner");
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(&address).is_err() {
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "runner did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (child, address)
}

#[cfg(feature = "gui")]
mod app_harness;
#[cfg(feature = "gui")]
#[allow(unused_imports)]
pub use app_harness::settle;

/// A copy of the v1 fixture session in `dir` (it names the fixtures by absolute path), so a test can save and
/// write beside it without touching the fixture.
pub fn session_copy(dir: &tempfile::TempDir) -> PathBuf {
    let text = std::fs::read_to_string(fixture("sessions/v1.json")).expect("fixture session");
    let session = edgescope::session::Session::from_json(&text, &fixture("sessions/v1.json")).expect("parses");
    let path = dir.path().join("session.json");
    session.save(&path).expect("save copy");
    path
}
