//! Local runs in a fresh child process, one per job, so each variant's memory is the memory of running that
//! variant alone (the study's RAM column), never what earlier variants or the traces already held left behind.
//!
//! The parent ([`IsolatedRunner`]) starts `EXECUTABLE measure-job`, writes one JSON request line on the
//! child's stdin and reads JSON lines back on its stdout: events as they happen, then the result. Cancel is a
//! `cancel` line; a parent that dies closes the pipe, which the child treats as a cancel. A child that dies
//! mid-run leaves the samples it streamed as an incomplete trace ([`RuntimeError::Interrupted`]), as a remote
//! runner does.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::RuntimeError;
use super::runner::{CancelToken, Job, LocalRunner, Runner, wait_for_measurement_turn};
use crate::analysis::trace::Trace;
use crate::data::Dataset;
use crate::model::{Manifest, Variant};
use crate::record::{DeviceRecord, RunEvent, RunInfo, RunMode, RunOutput, RunSettings, TraceRun};

/// The hidden subcommand a child runs.
pub const CHILD_SUBCOMMAND: &str = "measure-job";

/// Samples between the checkpoints a child streams, so a child that dies keeps what it measured.
const CHILD_CHECKPOINT_SAMPLES: usize = 200;

/// What the parent asks of a child.
#[derive(Debug, Serialize, Deserialize)]
struct ChildRequest {
    manifest: Manifest,
    variant_source: PathBuf,
    dataset: PathBuf,
    settings: RunSettings,
    mode: RunMode,
    /// The reference variant (manifest and where it was read from), when the job names one.
    #[serde(default)]
    reference: Option<(Manifest, PathBuf)>,
}

/// One line from the child.
#[derive(Debug, Serialize, Deserialize)]
enum ChildMessage {
    Event(RunEvent),
    Output(Box<RunOutput>),
    Failed(String),
}

/// Runs jobs on this machine, each in a fresh child process of `executable` (the edgescope binary).
pub struct IsolatedRunner {
    executable: PathBuf,
    /// Describes this machine (the children run here too).
    local: LocalRunner,
}

impl IsolatedRunner {
    /// A runner whose children are `executable measure-job`.
    pub fn new(executable: impl Into<PathBuf>) -> Self {
        Self { executable: executable.into(), local: LocalRunner::new() }
    }

    /// A runner whose children are this very program (the `edgescope` binary).
    pub fn current_exe() -> Result<Self, RuntimeError> {
        let executable = std::env::current_exe()
            .map_err(|e| RuntimeError::Ort(format!("cannot find the edgescope executable to start a run ({e})")))?;
        Ok(Self::new(executable))
    }
}

impl Runner for IsolatedRunner {
    fn device(&mut self) -> Result<DeviceRecord, RuntimeError> {
        self.local.device()
    }

    fn run(
        &mut self,
        job: &Job,
        events: &mut dyn FnMut(RunEvent),
        cancel: &CancelToken,
    ) -> Result<RunOutput, RuntimeError> {
        let device = self.device()?;
        super::runner::check_compatible(&job.variant, &job.dataset)?;
        let _turn = wait_for_measurement_turn(events, cancel)?;
        let mut child = Command::new(&self.executable)
            .arg(CHILD_SUBCOMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| RuntimeError::Ort(format!("cannot start {} for a run ({e})", self.executable.display())))?;
        let result = drive_child(&mut child, job, device, events, cancel);
        if result.is_err() {
            let _ = child.kill();
        }
        let _ = child.wait();
        result
    }
}

fn child_failed(message: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Ort(format!("the measuring process failed: {message}"))
}

fn drive_child(
    child: &mut Child,
    job: &Job,
    device: DeviceRecord,
    events: &mut dyn FnMut(RunEvent),
    cancel: &CancelToken,
) -> Result<RunOutput, RuntimeError> {
    let request = ChildRequest {
        manifest: job.variant.manifest(),
        variant_source: job.variant.source.clone(),
        dataset: job.dataset.source.clone(),
        settings: RunSettings {
            checkpoint_every: job.settings.checkpoint_every.or(Some(CHILD_CHECKPOINT_SAMPLES)),
            ..job.settings.clone()
        },
        mode: job.mode.clone(),
        reference: job.reference.as_ref().map(|r| (r.manifest(), r.source.clone())),
    };
    let mut stdin = child.stdin.take().ok_or_else(|| child_failed("no stdin"))?;
    let stdout = child.stdout.take().ok_or_else(|| child_failed("no stdout"))?;
    let stderr = child.stderr.take();
    let line = serde_json::to_string(&request).map_err(child_failed)?;
    writeln!(stdin, "{line}").and_then(|()| stdin.flush()).map_err(child_failed)?;

    // The child's stderr is read on its own thread so a chatty child never blocks; its tail explains a crash.
    let stderr_tail = std::thread::Builder::new().name("edgescope-child-stderr".into()).spawn(move || {
        let mut text = String::new();
        if let Some(stderr) = stderr {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                text.push_str(&line);
                text.push('\n');
                if text.len() > 16_384 {
                    text.drain(..text.len() - 8_192);
                }
            }
        }
        text
    });
    let cancel_forwarder = CancelForwarder::start(stdin, cancel.clone());

    let mut partial: Option<Trace> = None;
    let mut outcome: Option<Result<RunOutput, RuntimeError>> = None;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let message: ChildMessage = match serde_json::from_str(&line) {
            Ok(m) => m,
            Err(e) => {
                outcome = Some(Err(child_failed(format!("unreadable message ({e})"))));
                break;
            }
        };
        match message {
            ChildMessage::Event(event) => {
                if let RunEvent::Checkpoint { samples, .. } = &event {
                    match partial.as_mut() {
                        Some(trace) => {
                            trace.append(samples);
                        }
                        None => partial = Some((**samples).clone()),
                    }
                }
                events(event);
            }
            ChildMessage::Output(output) => {
                let mut output = *output;
                // The child saw this machine too, but the parent's record is the one every other run carries.
                let info = match &mut output {
                    RunOutput::Trace(t) => &mut t.info,
                    RunOutput::Dynamic(d) => &mut d.info,
                };
                info.device = device.clone();
                info.isolated = true;
                outcome = Some(Ok(output));
                break;
            }
            ChildMessage::Failed(message) => {
                outcome = Some(Err(RuntimeError::Ort(message)));
                break;
            }
        }
    }
    drop(cancel_forwarder);
    if let Some(outcome) = outcome {
        return outcome;
    }
    // The child ended without a result: it crashed or was killed.
    let _ = child.kill();
    let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
    let tail = stderr_tail.ok().and_then(|h| h.join().ok()).unwrap_or_default();
    let message = format!(
        "the measuring process ended without a result ({status}){}",
        tail.lines().last().map_or_else(String::new, |l| format!(": {l}"))
    );
    match partial.filter(|t| !t.is_empty()) {
        Some(trace) => {
            let info = RunInfo {
                variant: job.variant.name.clone(),
                dataset: job.dataset.name.clone(),
                device,
                settings: job.settings.clone(),
                samples_done: trace.len(),
                samples_total: job.settings.limit.map_or(job.dataset.len(), |l| l.min(job.dataset.len())),
                dataset_samples: job.dataset.len(),
                failure: Some(message.clone()),
                ..Default::default()
            };
            Err(RuntimeError::Interrupted { message, partial: Box::new(TraceRun { info, trace }) })
        }
        None => Err(child_failed(message)),
    }
}

/// Writes `cancel` to the child when the token is cancelled; dropping it closes the child's stdin.
struct CancelForwarder {
    done: Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl CancelForwarder {
    fn start(mut stdin: ChildStdin, cancel: CancelToken) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let done = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&done);
        let handle = std::thread::Builder::new()
            .name("edgescope-child-cancel".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    if cancel.is_cancelled() {
                        let _ = writeln!(stdin, "cancel").and_then(|()| stdin.flush());
                        // Keep stdin open until the child answers with its partial result.
                        while !flag.load(Ordering::Relaxed) {
                            std::thread::sleep(std::time::Duration::from_millis(20));
                        }
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            })
            .ok();
        Self { done, handle }
    }
}

impl Drop for CancelForwarder {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// The child's side: reads one request from stdin, runs it in this process with the local runner, and writes
/// events and the result to stdout as JSON lines. A `cancel` line, or stdin closing, cancels the run.
pub fn serve_child_job() -> Result<(), String> {
    let stdin = std::io::stdin();
    let mut first = String::new();
    stdin.lock().read_line(&mut first).map_err(|e| format!("reading the job request: {e}"))?;
    let request: ChildRequest =
        serde_json::from_str(&first).map_err(|e| format!("the job request is not valid ({e})"))?;
    let cancel = CancelToken::new();
    // Ctrl-C reaches the whole process group: the child then stops like a cancel and answers with what it
    // measured, rather than dying with it.
    let signal_cancel = cancel.clone();
    let _ = ctrlc::set_handler(move || signal_cancel.cancel());
    let watcher_cancel = cancel.clone();
    std::thread::Builder::new()
        .name("edgescope-child-stdin".into())
        .spawn(move || {
            let mut line = String::new();
            loop {
                line.clear();
                match std::io::stdin().lock().read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if line.trim() == "cancel" => break,
                    Ok(_) => {}
                }
            }
            watcher_cancel.cancel();
        })
        .map_err(|e| format!("cannot start the stdin watcher: {e}"))?;

    let stdout = std::io::stdout();
    let send = |message: &ChildMessage| {
        let mut out = stdout.lock();
        if let Ok(line) = serde_json::to_string(message) {
            let _ = writeln!(out, "{line}").and_then(|()| out.flush());
        }
    };
    let result = open_job(&request).and_then(|job| {
        let mut runner = LocalRunner::new();
        runner.run(&job, &mut |event| send(&ChildMessage::Event(event)), &cancel).map_err(|e| e.to_string())
    });
    match result {
        Ok(output) => send(&ChildMessage::Output(Box::new(output))),
        Err(message) => send(&ChildMessage::Failed(message)),
    }
    Ok(())
}

fn open_job(request: &ChildRequest) -> Result<Job, String> {
    let variant = Variant::from_manifest(request.manifest.clone(), &request.variant_source, Path::new(""))
        .map_err(|e| e.to_string())?;
    let dataset = Dataset::open(&request.dataset).map_err(|e| e.to_string())?;
    let reference = match &request.reference {
        Some((manifest, source)) => {
            Some(Arc::new(Variant::from_manifest(manifest.clone(), source, Path::new("")).map_err(|e| e.to_string())?))
        }
        None => None,
    };
    Ok(Job {
        variant: Arc::new(variant),
        dataset: Arc::new(dataset),
        settings: request.settings.clone(),
        mode: request.mode.clone(),
        reference,
    })
}
