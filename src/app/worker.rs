//! One pattern for the work a dialog starts (training exits, quantizing, a study, a sensitivity measurement, a
//! profile, reading a model's cut points): [`DialogTask`] runs it on a named thread with a bounded channel, typed
//! progress events, a [`CancelToken`], a repaint after each event, and cancels it when the dialog closes (the task
//! is dropped). The dialog drains it once per frame from the app's logic and draws its state read-only.

use crossbeam_channel::{Receiver, Sender, bounded};
use eframe::egui;

use crate::runtime::CancelToken;

/// Messages kept in flight at most: lossy progress beyond that is dropped; results and must-see events wait.
const CHANNEL_CAPACITY: usize = 64;

/// What a dialog shows of work under way: a count (`done` of `total`, a share when the work is in phases) and a
/// line saying what it is doing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// Units done.
    pub done: usize,
    /// Units in all (0 while unknown: the bar spins).
    pub total: usize,
    /// What the work is doing now.
    pub text: String,
}

/// Units a [`Progress::share`] counts in (per mille), for work whose phases are weighted rather than counted.
const SHARE_UNITS: usize = 1000;

impl Progress {
    /// `done` of `total` units, with a line.
    pub fn count(done: usize, total: usize, text: impl Into<String>) -> Self {
        Self { done, total, text: text.into() }
    }

    /// A share of the whole (0 to 1) of work in weighted phases, with a line.
    pub fn share(fraction: f32, text: impl Into<String>) -> Self {
        let done = (fraction.clamp(0.0, 1.0) * SHARE_UNITS as f32).round() as usize;
        Self { done, total: SHARE_UNITS, text: text.into() }
    }

    /// Share done, 0 to 1; `None` while the total is unknown.
    pub fn fraction(&self) -> Option<f32> {
        (self.total > 0).then(|| (self.done as f32 / self.total as f32).clamp(0.0, 1.0))
    }
}

/// What the thread sends.
enum Message<P, O> {
    Event(P),
    Done(Result<O, String>),
}

/// Handed to the work: sends its progress events and wakes the UI after each.
pub struct Reporter<P, O> {
    sender: Sender<Message<P, O>>,
    ctx: egui::Context,
}

impl<P, O> Reporter<P, O> {
    /// A progress event the dialog may miss when it falls behind (counts: the next one says more).
    pub fn progress(&self, event: P) {
        // A full channel drops this event (the next says more); a closed one means the dialog is gone.
        let _ = self.sender.try_send(Message::Event(event));
        self.ctx.request_repaint();
    }

    /// An event the dialog must see (a step line, a partial result): waits for room in the channel.
    pub fn event(&self, event: P) {
        // A closed channel means the dialog is gone; the work is cancelled then and nothing needs the event.
        let _ = self.sender.send(Message::Event(event));
        self.ctx.request_repaint();
    }
}

/// Work on its thread, as the dialog holds it; dropping it cancels the work.
struct Running<P, O> {
    messages: Receiver<Message<P, O>>,
    cancel: CancelToken,
    progress: Progress,
    /// The thread, to tell a panic (it ended without a result) from work still under way.
    thread: std::thread::JoinHandle<()>,
}

impl<P, O> Drop for Running<P, O> {
    fn drop(&mut self) {
        // Closing the dialog (or starting afresh) stops the work; what it had written stays as its own code says.
        self.cancel.cancel();
    }
}

/// Where a dialog's work stands.
enum State<P, O> {
    Idle,
    Running(Running<P, O>),
    Finished(O),
    Failed(String),
    Cancelled,
}

/// A dialog's background work and its outcome: idle, running (with progress), finished (with its output),
/// failed (with the message to show) or cancelled.
pub struct DialogTask<P, O> {
    state: State<P, O>,
}

impl<P, O> Default for DialogTask<P, O> {
    fn default() -> Self {
        Self { state: State::Idle }
    }
}

/// What one drain of a task brought.
pub struct Drained<P> {
    /// Progress events, oldest first.
    pub events: Vec<P>,
    /// The work ended in this drain (finished, failed or cancelled).
    pub ended: bool,
}

impl<P: Send + 'static, O: Send + 'static> DialogTask<P, O> {
    /// Starts `work` on a thread named `edgescope-{name}` (replacing, and so cancelling, any work under way).
    /// `work` gets a [`Reporter`] for its events and the cancel token it should check; an error it returns is
    /// shown as it is, so it should say what failed and what to do.
    pub fn start(
        &mut self,
        name: &str,
        ctx: &egui::Context,
        work: impl FnOnce(&Reporter<P, O>, &CancelToken) -> Result<O, String> + Send + 'static,
    ) {
        let (sender, messages) = bounded(CHANNEL_CAPACITY);
        let cancel = CancelToken::new();
        let worker_cancel = cancel.clone();
        let reporter = Reporter { sender, ctx: ctx.clone() };
        let spawned = std::thread::Builder::new().name(format!("edgescope-{name}")).spawn(move || {
            let result = work(&reporter, &worker_cancel);
            let _ = reporter.sender.send(Message::Done(result));
            reporter.ctx.request_repaint();
        });
        self.state = match spawned {
            Ok(thread) => {
                State::Running(Running { messages, cancel, progress: Progress::count(0, 0, "starting"), thread })
            }
            Err(e) => State::Failed(format!("cannot start the {name} thread: {e}")),
        };
    }
}

impl<P, O> DialogTask<P, O> {
    /// True while the work runs.
    pub fn is_running(&self) -> bool {
        matches!(self.state, State::Running(_))
    }

    /// Asks the work to stop (it ends as cancelled once it notices).
    pub fn cancel(&self) {
        if let State::Running(running) = &self.state {
            running.cancel.cancel();
        }
    }

    /// Records why the work cannot start (a form left incomplete), shown as a failure.
    pub fn fail(&mut self, message: impl Into<String>) {
        self.state = State::Failed(message.into());
    }

    /// Sets the progress shown while running (a dialog maps its events to it).
    pub fn set_progress(&mut self, progress: Progress) {
        if let State::Running(running) = &mut self.state {
            running.progress = progress;
        }
    }

    /// The output, once finished.
    pub fn output(&self) -> Option<&O> {
        match &self.state {
            State::Finished(output) => Some(output),
            _ => None,
        }
    }

    /// The output to change (take what joins the session), once finished.
    pub fn output_mut(&mut self) -> Option<&mut O> {
        match &mut self.state {
            State::Finished(output) => Some(output),
            _ => None,
        }
    }

    /// Why the work failed, if it did.
    pub fn error(&self) -> Option<&str> {
        match &self.state {
            State::Failed(message) => Some(message),
            _ => None,
        }
    }

    /// True when the work was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.state, State::Cancelled)
    }

    /// Takes what the thread sent since the last drain (once per frame, from the app's logic); the last message
    /// moves the task to finished, failed or cancelled.
    pub fn drain(&mut self) -> Drained<P> {
        let mut drained = Drained { events: Vec::new(), ended: false };
        let State::Running(running) = &mut self.state else { return drained };
        let mut done = None;
        while let Ok(message) = running.messages.try_recv() {
            match message {
                Message::Event(event) => drained.events.push(event),
                Message::Done(result) => done = Some(result),
            }
        }
        if done.is_none() && running.thread.is_finished() {
            // The thread is gone: its result is in the channel by now, or it panicked before sending one.
            while let Ok(message) = running.messages.try_recv() {
                match message {
                    Message::Event(event) => drained.events.push(event),
                    Message::Done(result) => done = Some(result),
                }
            }
            if done.is_none() {
                done = Some(Err("the background work stopped unexpectedly (a bug: please report it)".into()));
            }
        }
        let Some(result) = done else { return drained };
        let cancelled = running.cancel.is_cancelled();
        drained.ended = true;
        self.state = match result {
            Ok(output) => State::Finished(output),
            Err(_) if cancelled => State::Cancelled,
            Err(message) => State::Failed(message),
        };
        drained
    }

    /// Drains (as [`Self::drain`]) work whose events are only progress, showing the latest; true when the work
    /// ended in this drain.
    pub fn drain_progress(&mut self, progress_of: impl Fn(&P) -> Progress) -> bool {
        let drained = self.drain();
        if let Some(event) = drained.events.last() {
            self.set_progress(progress_of(event));
        }
        drained.ended
    }

    /// Draws the progress bar (spinning while the total is unknown) and a Cancel button while running.
    pub fn progress_ui(&self, ui: &mut egui::Ui, cancel_hover: &str) {
        let State::Running(running) = &self.state else { return };
        ui.horizontal(|ui| {
            let progress = &running.progress;
            match progress.fraction() {
                Some(fraction) => {
                    ui.add(egui::ProgressBar::new(fraction).desired_width(320.0).text(progress.text.as_str()));
                }
                None => {
                    ui.spinner();
                    ui.label(progress.text.as_str());
                }
            }
            if ui.button("Cancel").on_hover_text(cancel_hover).clicked() {
                self.cancel();
            }
        });
    }

    /// Draws the failure (in the error colour) or "cancelled"; nothing otherwise.
    pub fn status_ui(&self, ui: &mut egui::Ui) {
        if let Some(message) = self.error() {
            ui.colored_label(ui.visuals().error_fg_color, message);
        } else if self.is_cancelled() {
            ui.weak("cancelled");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Drains `task` until its work ends (or a minute passes), returning every event.
    fn drain_until_ended<P: Send + 'static, O: Send + 'static>(task: &mut DialogTask<P, O>) -> Vec<P> {
        let started = Instant::now();
        let mut events = Vec::new();
        loop {
            let drained = task.drain();
            events.extend(drained.events);
            if drained.ended {
                return events;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "the work did not end");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn work_reports_its_events_in_order_and_finishes_with_its_output() {
        let mut task: DialogTask<usize, String> = DialogTask::default();
        task.start("test-finish", &egui::Context::default(), |reporter, _| {
            for done in 1..=5 {
                reporter.event(done);
            }
            Ok("five".into())
        });
        assert!(task.is_running());
        assert_eq!(drain_until_ended(&mut task), vec![1, 2, 3, 4, 5]);
        assert_eq!(task.output().map(String::as_str), Some("five"));
        assert!(!task.is_running() && task.error().is_none() && !task.is_cancelled());
    }

    #[test]
    fn an_error_is_kept_to_show_and_a_cancelled_error_reads_as_cancelled() {
        let mut failing: DialogTask<(), ()> = DialogTask::default();
        failing.start("test-fail", &egui::Context::default(), |_, _| Err("model.onnx: no graph".into()));
        drain_until_ended(&mut failing);
        assert_eq!(failing.error(), Some("model.onnx: no graph"));

        // Work that runs until cancelled, counting as it goes.
        let mut endless: DialogTask<usize, ()> = DialogTask::default();
        endless.start("test-cancel", &egui::Context::default(), |reporter, cancel| {
            let mut done = 0;
            while !cancel.is_cancelled() {
                done += 1;
                reporter.progress(done);
                std::thread::sleep(Duration::from_millis(1));
            }
            Err("cancelled".into())
        });
        while endless.drain().events.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        endless.cancel();
        drain_until_ended(&mut endless);
        assert!(endless.is_cancelled());
        assert!(endless.error().is_none(), "a cancellation is no failure");
    }

    #[test]
    fn dropping_the_task_cancels_its_work() {
        let token = std::sync::Arc::new(std::sync::Mutex::new(None::<CancelToken>));
        let seen = std::sync::Arc::clone(&token);
        let mut task: DialogTask<(), ()> = DialogTask::default();
        task.start("test-drop", &egui::Context::default(), move |_, cancel| {
            if let Ok(mut slot) = seen.lock() {
                *slot = Some(cancel.clone());
            }
            while !cancel.is_cancelled() {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err("cancelled".into())
        });
        let started = Instant::now();
        let cancel = loop {
            if let Some(cancel) = token.lock().ok().and_then(|slot| slot.clone()) {
                break cancel;
            }
            assert!(started.elapsed() < Duration::from_secs(60));
            std::thread::sleep(Duration::from_millis(1));
        };
        assert!(!cancel.is_cancelled());
        drop(task);
        assert!(cancel.is_cancelled(), "closing the dialog stops its work");
    }

    #[test]
    fn progress_counts_and_shares() {
        assert_eq!(Progress::count(3, 12, "x").fraction(), Some(0.25));
        assert_eq!(Progress::count(0, 0, "reading").fraction(), None);
        assert_eq!(Progress::share(0.5, "half").fraction(), Some(0.5));
        assert_eq!(Progress::share(2.0, "over").fraction(), Some(1.0));
    }
}
