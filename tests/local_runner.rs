//! The local runner against the shared runner contract, plus what only a local, in-process job has.

mod common;
mod runner_contract;

use std::time::Duration;

use edgescope::record::{RunMode, RunOutput};
use edgescope::runtime::{JobMessage, LocalRunner, Runner, spawn_job};

#[test]
fn local_runner_meets_the_runner_contract() {
    runner_contract::check_runner(&|| Box::new(LocalRunner::new()) as Box<dyn Runner>);
}

#[test]
fn isolated_runner_meets_the_runner_contract() {
    // The runner a local `eval` and the app use: each job in a fresh `edgescope measure-job` process.
    runner_contract::check_runner(&|| {
        Box::new(edgescope::runtime::IsolatedRunner::new(env!("CARGO_BIN_EXE_edgescope"))) as Box<dyn Runner>
    });
}

#[test]
fn background_job_reports_progress_and_cancels_on_request() {
    let job = common::job("heavy.onnx", "fmnist500", RunMode::Trace);
    let handle = spawn_job(LocalRunner::new(), job, || {}).expect("spawn");
    let mut progress = 0;
    let result = loop {
        match handle.messages.recv_timeout(Duration::from_secs(120)).expect("a message within two minutes") {
            JobMessage::Event(edgescope::record::RunEvent::Progress { done, total }) => {
                assert_eq!(total, 500);
                progress += 1;
                if done >= 10 {
                    handle.cancel();
                }
            }
            JobMessage::Event(_) => {}
            JobMessage::Finished(result) => break *result,
        }
    };
    assert!(progress > 0);
    let RunOutput::Trace(run) = result.expect("cancelled job still returns its trace") else {
        panic!("trace expected")
    };
    assert!(!run.info.complete && run.trace.len() < 500);
}

#[test]
fn sampler_records_cpu_and_rss_during_a_run() {
    let mut job = common::job("heavy.onnx", "fmnist500", RunMode::Trace);
    job.settings.sample_resources = true;
    job.settings.sampler_interval_ms = 20;
    job.settings.limit = Some(200);
    let run = common::trace(&mut LocalRunner::new(), &job);
    let resources = run.info.resources.expect("sampler on");
    assert!(resources.samples.len() >= 2, "{} readings", resources.samples.len());
    assert!(resources.mean_rss_bytes().unwrap_or(0.0) > 1e6);
    assert!(resources.mean_cpu_percent().is_some());
    assert_eq!(run.trace.len(), 200);
}
