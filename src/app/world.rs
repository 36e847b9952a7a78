//! Runtime state of the app: the open session, analysis caches, background jobs, dialogs, errors. Nothing here
//! is saved with the layout; the session itself is saved to its own file.

use eframe::egui;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::analysis::{Criterion, Outcome, Policy, PreparedTrace, Sweep, ThresholdGrid};
use crate::data::Dataset;
use crate::record::{DynamicRun, TraceRun};
use crate::runtime::JobHandle;
use crate::session::Session;

/// The device name of the local runner.
pub const THIS_MACHINE: &str = "this machine";

/// What the app knows about a remote runner.
#[derive(Clone, Debug, PartialEq)]
pub enum DeviceState {
    /// A probe is on its way.
    Connecting,
    /// Reachable and authenticated.
    Connected(Box<crate::record::DeviceRecord>),
    /// Unreachable or refused; retried after `retry_at` with a growing backoff.
    Failed {
        /// Why.
        error: String,
        /// When to try again.
        retry_at: Instant,
        /// The backoff used, seconds.
        backoff_s: u64,
    },
}

/// Thresholds per sweep in the app: fine enough for smooth curves, cheap enough to recompute on a click.
pub const APP_SWEEP_POINTS: usize = 400;

/// A trace prepared under one criterion, with its sweep.
pub struct Analysis {
    /// Ready for per-frame evaluation.
    pub prepared: PreparedTrace,
    /// The curve with its operating points.
    pub sweep: Sweep,
}

impl Analysis {
    /// The inf-opt point under `budget_pp` (the sweep itself was made with the default budget; inf-opt is a
    /// scan of its points, so the budget box takes effect at once without sweeping again).
    pub fn inf_opt(&self, budget_pp: f64) -> Option<usize> {
        let base_accuracy = self.prepared.base_accuracy()?;
        crate::analysis::sweep::inf_opt(&self.sweep.points, base_accuracy, budget_pp)
    }
}

/// What a background job is doing.
#[derive(Clone, Debug, PartialEq)]
pub enum JobKind {
    /// Recording a trace.
    Trace,
    /// A dynamic run at a policy over the dataset samples the trace covers.
    Verify(Policy, usize),
}

/// One running or finished job, shown with a progress bar.
pub struct JobSlot {
    /// Unique id.
    pub id: u64,
    /// Variant name.
    pub variant: String,
    /// Dataset name.
    pub dataset: String,
    /// Where it runs: [`THIS_MACHINE`] or a configured device's name.
    pub device: String,
    /// Trace or verify.
    pub kind: JobKind,
    /// The job failed (for the retry button).
    pub failed: bool,
    /// The worker; `None` once finished.
    pub handle: Option<JobHandle>,
    /// Samples done.
    pub done: usize,
    /// Samples in the job.
    pub total: usize,
    /// What it is doing now.
    pub phase: String,
    /// When it started.
    pub started: Instant,
    /// When measuring started (for rate and ETA).
    pub measuring_since: Option<Instant>,
    /// When the job ended (finished, failed, cancelled or its worker died): its rate stops there.
    pub ended: Option<Instant>,
}

impl JobSlot {
    /// Samples per second since measuring started.
    pub fn rate(&self) -> Option<f64> {
        let start = self.measuring_since?;
        let since = self.ended.unwrap_or_else(Instant::now).saturating_duration_since(start).as_secs_f64();
        (since > 0.2 && self.done > 0).then(|| self.done as f64 / since)
    }

    /// Seconds left at the current rate (none once the job ended).
    pub fn eta_s(&self) -> Option<f64> {
        if self.ended.is_some() {
            return None;
        }
        self.rate().map(|r| self.total.saturating_sub(self.done) as f64 / r)
    }
}

/// The result of the last verification, next to what the trace predicted.
pub struct Verification {
    /// Variant.
    pub variant: String,
    /// Where it ran: [`THIS_MACHINE`] or a configured device's name (the device that measured the trace).
    pub device: String,
    /// The thresholds it ran at.
    pub policy: Policy,
    /// The dynamic run.
    pub run: DynamicRun,
    /// The trace's prediction at the same policy.
    pub predicted: Outcome,
    /// Samples whose exit matched the prediction.
    pub same_exit: usize,
}

/// What a file dialog returned.
pub enum DialogResult {
    /// Files to add (variants or datasets).
    Add(Vec<PathBuf>),
    /// A session to open.
    Open(PathBuf),
    /// Where to save the session.
    SaveAs(PathBuf),
    /// Where to export the tables.
    ExportTables(PathBuf, crate::report::Format),
    /// Where to export the annotated figure.
    ExportFigure(PathBuf),
    /// The dialog returned nothing (cancelled, or no dialog service).
    Nothing,
}

/// A device probe's answer: the device name and its record or the error.
pub type Probe = (String, Result<crate::record::DeviceRecord, String>);

/// A viewport capture on its way to a file: the file and the pixels.
pub type Capture = (PathBuf, Arc<egui::ColorImage>);

/// Runtime state.
pub struct World {
    /// The open session.
    pub session: Session,
    /// Its file, if it has one.
    pub session_path: Option<PathBuf>,
    /// Unsaved changes.
    pub dirty: bool,
    /// Prepared traces per (run index, criterion); cleared when runs change.
    analyses: HashMap<(usize, Criterion), Arc<Analysis>>,
    /// Datasets opened for runs and thumbnails, by name: opened on a worker, or why they could not be.
    datasets: HashMap<String, Result<Arc<Dataset>, String>>,
    /// Commands waiting for a dataset to finish loading, by dataset name; applied when it arrives.
    pub deferred: Vec<(String, super::Command)>,
    /// Background file and analysis work.
    pub loader: super::loader::Loader,
    /// Bumped when runs change (analyses go stale); `revision` also moves with policies.
    pub runs_revision: u64,
    /// The session as workers see it, for the revision it was copied at.
    snapshot: Option<(u64, Arc<Session>)>,
    /// The session file being opened, shown while it loads.
    pub opening: Option<PathBuf>,
    /// What to do once the session is saved (open another, quit), when the user chose "save" in the unsaved-changes
    /// prompt.
    pub after_save: Option<super::Command>,
    /// A command that would discard unsaved changes (open, new, quit), waiting for the user's answer.
    pub unsaved_prompt: Option<super::Command>,
    /// The user chose to quit (the window may close even with unsaved changes).
    pub quitting: bool,
    /// The presentation setting the theme was last set for (`None` before the first frame).
    pub presentation_applied: Option<bool>,
    /// Errors to show, each once until dismissed.
    pub errors: Vec<String>,
    /// A short informational message.
    pub notice: Option<String>,
    /// Background jobs.
    pub jobs: Vec<JobSlot>,
    /// Next job id.
    pub next_job_id: u64,
    /// Dialog results arrive here.
    pub dialog_results: Receiver<DialogResult>,
    /// Dialog threads send here.
    pub dialog_sender: Sender<DialogResult>,
    /// A dialog is open (only one at a time).
    pub dialog_open: bool,
    /// Variants ticked for running.
    pub run_selection: BTreeSet<String>,
    /// Dataset chosen for running.
    pub run_dataset: Option<String>,
    /// The last verification.
    pub verification: Option<Verification>,
    /// Thumbnails by (dataset, sample); `None` when the sample could not be decoded.
    pub thumbnails: HashMap<(String, usize), Option<egui::TextureHandle>>,
    /// Captured images arrive here from the screenshot callback.
    pub captures: (Sender<Capture>, Receiver<Capture>),
    /// Bumped whenever runs or policies change; caches keyed on it go stale.
    pub revision: u64,
    /// The comparison rows for (criterion, budget bits, revision).
    pub rows_cache: Option<(Criterion, u64, u64, Arc<Vec<crate::report::Row>>)>,
    /// Sort of the comparison tables: the view and the table export both apply it.
    pub table_sort: Option<crate::report::TableSort>,
    /// The run whose resource timeline is shown.
    pub timeline_run: Option<usize>,
    /// Set when a viewport capture was written (the screenshot script waits for it).
    pub capture_done: bool,
    /// State of each configured remote runner, by name.
    pub device_states: HashMap<String, DeviceState>,
    /// Probe results arrive here: (device name, result).
    pub probes: (Sender<Probe>, Receiver<Probe>),
    /// Remote runners: the devices list shared with the CLI (`net::devices`), as last read or written.
    pub devices: Vec<crate::net::DeviceConfig>,
    /// The devices list changed while a save was under way: save again when it ends.
    pub devices_dirty: bool,
    /// Devices ticked for running (names; [`THIS_MACHINE`] included).
    pub run_devices: BTreeSet<String>,
    /// The "Add early exits…" dialog, when open.
    pub exits_dialog: Option<super::exits_dialog::ExitsDialog>,
    /// The per-operator latency window, when open.
    pub profile_view: Option<super::profile_view::ProfileView>,
    /// The "Study on a model…" wizard, when open.
    pub study_wizard: Option<super::study_wizard::StudyWizard>,
    /// The "Quantize…" dialog and the sensitivity chart, when open.
    pub quantize: super::quantize_dialog::QuantizeWindows,
    /// The last certificate of the explored variant's thresholds, with its inputs (computed on a worker).
    pub certified: Option<super::certify::Certified>,
}

impl Default for World {
    fn default() -> Self {
        let (dialog_sender, dialog_results) = bounded(8);
        Self {
            session: Session::default(),
            session_path: None,
            dirty: false,
            analyses: HashMap::new(),
            datasets: HashMap::new(),
            deferred: Vec::new(),
            loader: super::loader::Loader::default(),
            runs_revision: 0,
            snapshot: None,
            opening: None,
            after_save: None,
            unsaved_prompt: None,
            quitting: false,
            presentation_applied: None,
            errors: Vec::new(),
            notice: None,
            jobs: Vec::new(),
            next_job_id: 1,
            dialog_results,
            dialog_sender,
            dialog_open: false,
            run_selection: BTreeSet::new(),
            run_dataset: None,
            verification: None,
            thumbnails: HashMap::new(),
            captures: bounded(4),
            revision: 0,
            rows_cache: None,
            table_sort: None,
            timeline_run: None,
            capture_done: false,
            device_states: HashMap::new(),
            probes: bounded(16),
            devices: Vec::new(),
            devices_dirty: false,
            run_devices: BTreeSet::from([THIS_MACHINE.to_string()]),
            exits_dialog: None,
            profile_view: None,
            study_wizard: None,
            quantize: Default::default(),
            certified: None,
        }
    }
}

impl World {
    /// Records an error to show (once: an identical message already shown is not repeated).
    pub fn error(&mut self, message: impl Into<String>) {
        let message = message.into();
        if !self.errors.contains(&message) {
            self.errors.push(message);
        }
    }

    /// True while a dialog's background work runs (reading a model, training, quantizing, profiling, a study).
    pub fn dialogs_busy(&self) -> bool {
        self.exits_dialog.as_ref().is_some_and(|d| d.is_busy())
            || self.profile_view.as_ref().is_some_and(|v| v.is_busy())
            || self.study_wizard.as_ref().is_some_and(|w| w.is_busy())
            || self.quantize.dialog.as_ref().is_some_and(|d| d.is_busy())
            || self.quantize.sensitivity.as_ref().is_some_and(|v| v.is_busy())
    }

    /// Forgets every cached analysis (runs changed).
    pub fn runs_changed(&mut self) {
        self.analyses.clear();
        self.dirty = true;
        self.revision += 1;
        self.runs_revision += 1;
    }

    /// The session as background workers see it: copied once per revision, shared after that.
    pub fn snapshot(&mut self) -> Arc<Session> {
        match &self.snapshot {
            Some((revision, session)) if *revision == self.revision => Arc::clone(session),
            _ => {
                let session = Arc::new(self.session.clone());
                self.snapshot = Some((self.revision, Arc::clone(&session)));
                session
            }
        }
    }

    /// The comparison rows for the current session, criterion and budget, when computed (read-only).
    pub fn cached_rows(&self, options: &crate::report::ReportOptions) -> Option<Arc<Vec<crate::report::Row>>> {
        let (criterion, budget, revision, rows) = self.rows_cache.as_ref()?;
        (*criterion == options.criterion && *budget == options.budget_pp.to_bits() && *revision == self.revision)
            .then(|| Arc::clone(rows))
    }

    /// Computes the comparison rows on a worker unless they are cached or on their way.
    pub fn request_rows(&mut self, options: &crate::report::ReportOptions) {
        if self.cached_rows(options).is_some() {
            return;
        }
        let session = self.snapshot();
        let (options, revision) = (options.clone(), self.revision);
        let spawned = self.loader.spawn(super::loader::key::ROWS.into(), move || {
            let rows = Arc::new(crate::report::rows(&session, &options));
            super::loader::Loaded::Rows(options.criterion, options.budget_pp.to_bits(), revision, rows)
        });
        if let Err(e) = spawned {
            self.error(e);
        }
    }

    /// Replaces the session.
    pub fn set_session(&mut self, session: Session, path: Option<PathBuf>) {
        self.session = session;
        self.session_path = path;
        self.dirty = false;
        self.analyses.clear();
        self.datasets.clear();
        self.deferred.clear();
        self.thumbnails.clear();
        self.verification = None;
        self.rows_cache = None;
        self.revision += 1;
        self.runs_revision += 1;
        self.timeline_run = (!self.session.runs.is_empty()).then_some(0);
        self.run_dataset = self.session.datasets.iter().find(|d| !self.is_calibration(&d.name)).map(|d| d.name.clone());
    }

    /// True for the session's calibration dataset.
    pub fn is_calibration(&self, dataset: &str) -> bool {
        self.session.calibration_dataset.as_deref() == Some(dataset)
    }

    /// Index of the run of `variant` to explore: on the run dataset if it has one there, else its first
    /// non-calibration run.
    pub fn run_index(&self, variant: &str) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.session.runs.len())
            .filter(|&i| {
                let run = &self.session.runs[i];
                run.info.variant == variant && !self.session.is_calibration_run(run)
            })
            .collect();
        // On the dataset in use when there is one; a full, complete trace before a limited or partial one.
        let rank = |&i: &usize| {
            let info = &self.session.runs[i].info;
            (Some(&info.dataset) != self.run_dataset.as_ref(), info.sample_limit().is_some(), !info.complete)
        };
        candidates.iter().copied().min_by_key(rank)
    }

    /// The run at `index`.
    pub fn run(&self, index: usize) -> Option<&TraceRun> {
        self.session.runs.get(index)
    }

    /// The analysis of run `index` under `criterion`, if computed (read-only; drawing uses this).
    pub fn cached_analysis(&self, index: usize, criterion: Criterion) -> Option<Arc<Analysis>> {
        self.analyses.get(&(index, criterion)).cloned()
    }

    /// Analyses run `index` on a worker unless it is cached or on its way.
    pub fn request_analysis(&mut self, index: usize) {
        if self.analyses.keys().any(|(i, _)| *i == index) || index >= self.session.runs.len() {
            return;
        }
        let session = self.snapshot();
        let runs_revision = self.runs_revision;
        let spawned = self.loader.spawn(super::loader::key::analysis(index), move || {
            super::loader::Loaded::Analyses(index, runs_revision, analyse(&session, index))
        });
        if let Err(e) = spawned {
            self.error(e);
        }
    }

    /// Stores analyses a worker made, unless the runs changed since.
    pub fn store_analyses(&mut self, index: usize, runs_revision: u64, analyses: Vec<(Criterion, Arc<Analysis>)>) {
        if runs_revision == self.runs_revision {
            for (criterion, analysis) in analyses {
                self.analyses.insert((index, criterion), analysis);
            }
        }
    }

    /// The analysis of run `index` under `criterion`, computed here if no worker made it yet (command handling
    /// and tests; drawing uses [`World::cached_analysis`]).
    pub fn analysis(&mut self, index: usize, criterion: Criterion) -> Option<Arc<Analysis>> {
        if let Some(found) = self.analyses.get(&(index, criterion)) {
            return Some(Arc::clone(found));
        }
        self.session.runs.get(index)?;
        let computed = analyse(&self.session, index);
        let runs_revision = self.runs_revision;
        self.store_analyses(index, runs_revision, computed);
        self.analyses.get(&(index, criterion)).cloned()
    }

    /// The dataset the session knows by `name`, when opened; requests it otherwise. `Err` holds why it could not be
    /// opened; `Ok(None)` means it is on its way.
    pub fn dataset_if_ready(&mut self, name: &str) -> Result<Option<Arc<Dataset>>, String> {
        match self.datasets.get(name) {
            Some(Ok(dataset)) => Ok(Some(Arc::clone(dataset))),
            Some(Err(e)) => Err(e.clone()),
            None => {
                self.request_dataset(name);
                Ok(None)
            }
        }
    }

    /// The dataset the session knows by `name`, when opened (read-only; drawing uses this).
    pub fn loaded_dataset(&self, name: &str) -> Option<&Result<Arc<Dataset>, String>> {
        self.datasets.get(name)
    }

    /// Opens a session dataset on a worker unless it is open or on its way.
    pub fn request_dataset(&mut self, name: &str) {
        if self.datasets.contains_key(name) {
            return;
        }
        let Some(entry) = self.session.datasets.iter().find(|d| d.name == name) else {
            self.datasets.insert(name.to_string(), Err(format!("the session does not list dataset {name:?}")));
            return;
        };
        let (path, name) = (entry.path.clone(), name.to_string());
        let spawned = self.loader.spawn(super::loader::key::dataset(&name), move || {
            let opened = Dataset::open(&path).map(Arc::new).map_err(|e| e.to_string());
            super::loader::Loaded::Dataset(name, opened)
        });
        if let Err(e) = spawned {
            self.error(e);
        }
    }

    /// Stores a dataset a worker opened and hands back the commands that waited for it.
    pub fn store_dataset(&mut self, name: String, opened: Result<Arc<Dataset>, String>) -> Vec<super::Command> {
        let failed = opened.as_ref().err().cloned();
        self.datasets.insert(name.clone(), opened);
        let (ready, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.deferred).into_iter().partition(|(n, _)| *n == name);
        self.deferred = waiting;
        if let (Some(e), false) = (failed, ready.is_empty()) {
            self.error(e);
            return Vec::new();
        }
        ready.into_iter().map(|(_, command)| command).collect()
    }

    /// The dataset for a command: ready now, or `None` after queueing `command` to run again once it is opened
    /// (and showing an error if it cannot be).
    pub fn dataset_for(&mut self, name: &str, command: super::Command) -> Option<Arc<Dataset>> {
        match self.dataset_if_ready(name) {
            Ok(Some(dataset)) => Some(dataset),
            Ok(None) => {
                self.notice = Some(format!("opening dataset {name}…"));
                self.deferred.push((name.to_string(), command));
                None
            }
            Err(e) => {
                self.error(e);
                None
            }
        }
    }

    /// Adds an opened dataset.
    pub fn add_dataset(&mut self, dataset: Dataset) {
        let name = dataset.name.clone();
        self.session.upsert_dataset(crate::session::DatasetEntry::of(&dataset));
        self.datasets.insert(name.clone(), Ok(Arc::new(dataset)));
        if self.run_dataset.is_none() {
            self.run_dataset = Some(name);
        }
        self.dirty = true;
    }

    /// The policy for `variant`: the session's if it fits the criterion and exit count, else the sweep's acc-opt
    /// (`None` until the run's analysis is ready).
    pub fn policy_for(&self, variant: &str, criterion: Criterion) -> Option<Policy> {
        let index = self.run_index(variant)?;
        let early = self.session.runs[index].trace.early_exit_count();
        if early == 0 {
            return None;
        }
        if let Some(policy) =
            self.session.policies.get(variant).filter(|p| p.criterion == criterion && p.thresholds.len() == early)
        {
            return Some(policy.clone());
        }
        let analysis = self.cached_analysis(index, criterion)?;
        let point = analysis.sweep.acc_opt.map(|i| &analysis.sweep.points[i])?;
        Some(analysis.prepared.policy_at(point))
    }
}

/// Prepares run `index` of `session` under every criterion, with its sweep. The criteria share the per-sample
/// outcomes (loyalty, latency) and only score and sweep again (about 25 ms each on 50 000 samples x 4 exits), so a
/// later criterion switch is a plain frame.
pub fn analyse(session: &Session, index: usize) -> Vec<(Criterion, Arc<Analysis>)> {
    let Some(run) = session.runs.get(index) else { return Vec::new() };
    let first = crate::report::prepare(session, run, Criterion::ALL[0]);
    Criterion::ALL
        .into_iter()
        .map(|criterion| {
            let prepared = if criterion == Criterion::ALL[0] {
                first.clone()
            } else {
                first.with_criterion(&run.trace, criterion)
            };
            let sweep = prepared.sweep(&ThresholdGrid::Quantiles(APP_SWEEP_POINTS), crate::analysis::DEFAULT_BUDGET_PP);
            (criterion, Arc::new(Analysis { prepared, sweep }))
        })
        .collect()
}

/// The early-exit variant that shows the most on opening, and its inf-opt policy: the largest speed-up over its
/// own no-exit latency at inf-opt (default budget) among complete early-exit traces compared with a base. Runs on
/// the worker that opens the session.
pub fn most_telling(session: &Session, criterion: Criterion) -> Option<(String, Policy)> {
    let mut best: Option<(f64, String, Policy)> = None;
    for run in &session.runs {
        if run.trace.early_exit_count() == 0 || !run.info.complete || session.is_calibration_run(run) {
            continue;
        }
        let prepared = crate::report::prepare(session, run, criterion);
        let sweep = &prepared.sweep(&ThresholdGrid::Quantiles(APP_SWEEP_POINTS), crate::analysis::DEFAULT_BUDGET_PP);
        let Some(point) = sweep.inf_opt.map(|i| &sweep.points[i]) else { continue };
        let slowest = sweep.points.iter().map(|p| p.mean_latency_us).fold(0.0, f64::max);
        if !sweep.has_base || point.mean_latency_us <= 0.0 || point.early_exit_rate < 0.2 {
            continue;
        }
        let speedup = slowest / point.mean_latency_us;
        if best.as_ref().is_none_or(|(b, _, _)| speedup > *b) {
            best = Some((speedup, run.info.variant.clone(), prepared.policy_at(point)));
        }
    }
    best.map(|(_, variant, policy)| (variant, policy))
}
