//! Runs a job on a named background thread, reporting through a bounded channel, cancellable at any time.

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use super::RuntimeError;
use super::runner::{CancelToken, Job, Runner};
use crate::record::{RunEvent, RunOutput};

/// What a background job sends.
#[derive(Debug)]
pub enum JobMessage {
    /// Progress of the job.
    Event(RunEvent),
    /// The job ended (the last message).
    Finished(Box<Result<RunOutput, RuntimeError>>),
}

/// A job running in the background. Dropping the handle cancels the job.
pub struct JobHandle {
    /// Messages from the job; progress may be dropped when the receiver lags, `Finished` never is.
    pub messages: Receiver<JobMessage>,
    cancel: CancelToken,
}

impl JobHandle {
    /// Asks the job to stop (an ONNX Runtime call in flight is terminated).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }
}

impl Drop for JobHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Starts `job` on `runner` in a thread named `edgescope-job-<variant>`. `notify` runs after every message
/// (a GUI passes `request_repaint` here).
pub fn spawn_job<R>(mut runner: R, job: Job, notify: impl Fn() + Send + 'static) -> std::io::Result<JobHandle>
where
    R: Runner + Send + 'static,
{
    let (sender, messages): (Sender<JobMessage>, _) = bounded(64);
    let cancel = CancelToken::new();
    let token = cancel.clone();
    let name = format!("edgescope-job-{}", job.variant.name);
    std::thread::Builder::new().name(name).spawn(move || {
        let progress_sender = sender.clone();
        let mut on_event = |event: RunEvent| {
            // Never block the measuring thread on a slow consumer: progress is dropped instead.
            match progress_sender.try_send(JobMessage::Event(event)) {
                Ok(()) | Err(TrySendError::Full(_)) => notify(),
                Err(TrySendError::Disconnected(_)) => token.cancel(),
            }
        };
        let result = runner.run(&job, &mut on_event, &token);
        let _ = sender.send(JobMessage::Finished(Box::new(result)));
        notify();
    })?;
    Ok(JobHandle { messages, cancel })
}
