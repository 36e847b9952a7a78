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
use crate::runtime::{DynamicRun, JobHandle, TraceRun};
use crate::session::Session;

/// The device name of the local runner.
pub const THIS_MACHINE: &str = "this machine";

/// What the app knows about a remote runner.
#[derive(Clone, Debug, PartialEq)]
pub enum DeviceState {
    /// A probe is on its way.
    Connecting,
    /// Reachable and authenticated.
    Connected(Box<crate::runtime::DeviceRecord>),
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
}

impl JobSlot {
    /// Samples per second since measuring started.
    pub fn rate(&self) -> Option<f64> {
        let since = self.measuring_since?.elapsed().as_secs_f64();
        (since > 0.2 && self.done > 0).then(|| self.done as f64 / since)
    }

    /// Seconds left at the current rate.
    pub fn eta_s(&self) -> Option<f64> {
        self.rate().map(|r| self.total.saturating_sub(self.done) as f64 / r)
    }
}

/// The result of the last verification, next to what the trace predicted.
pub struct Verification {
    /// Variant.
    pub variant: String,
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
    /// Where to save a captured plot.
    ExportPlot(PathBuf),
    /// The dialog returned nothing (cancelled, or no dialog service).
    Nothing,
}

/// A device probe's answer: the device name and its record or the error.
pub type Probe = (String, Result<crate::runtime::DeviceRecord, String>);

/// A viewport capture on its way to a file: the file, the region to crop (points), the pixels.
pub type Capture = (PathBuf, Option<egui::Rect>, Arc<egui::ColorImage>);

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
    /// Datasets opened for runs and thumbnails, by name.
    datasets: HashMap<String, Arc<Dataset>>,
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
    /// Thumbnails by (dataset, sample).
    pub thumbnails: HashMap<(String, usize), egui::TextureHandle>,
    /// Where the accuracy/latency plot was drawn last frame (for PNG export), in points.
    pub plot_rect: Option<egui::Rect>,
    /// Pending viewport capture: the file to write and the region to crop (points).
    pub capture: Option<(PathBuf, Option<egui::Rect>)>,
    /// Captured images arrive here from the screenshot callback.
    pub captures: (Sender<Capture>, Receiver<Capture>),
    /// The explore view's scratch buffer for latency percentiles.
    pub scratch: Vec<f32>,
    /// Bumped whenever runs or policies change; caches keyed on it go stale.
    pub revision: u64,
    /// The comparison rows for (criterion, budget bits, revision).
    pub rows_cache: Option<(Criterion, u64, u64, Arc<Vec<crate::report::Row>>)>,
    /// Sort of the comparison tables: (table id, column, ascending).
    pub table_sort: Option<(String, usize, bool)>,
    /// The run whose resource timeline is shown.
    pub timeline_run: Option<usize>,
    /// Set when a viewport capture was written (the screenshot script waits for it).
    pub capture_done: bool,
    /// State of each configured remote runner, by name.
    pub device_states: HashMap<String, DeviceState>,
    /// Probe results arrive here: (device name, result).
    pub probes: (Sender<Probe>, Receiver<Probe>),
    /// Devices ticked for running (names; [`THIS_MACHINE`] included).
    pub run_devices: BTreeSet<String>,
    /// The "Add early exits…" dialog, when open.
    pub exits_dialog: Option<super::exits_dialog::ExitsDialog>,
    /// The "Quantize…" dialog and the sensitivity chart, when open.
    pub quantize: super::quantize_dialog::QuantizeWindows,
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
            plot_rect: None,
            capture: None,
            captures: bounded(4),
            scratch: Vec::new(),
            revision: 0,
            rows_cache: None,
            table_sort: None,
            timeline_run: None,
            capture_done: false,
            device_states: HashMap::new(),
            probes: bounded(16),
            run_devices: BTreeSet::from([THIS_MACHINE.to_string()]),
            exits_dialog: None,
            quantize: Default::default(),
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

    /// Forgets every cached analysis (runs changed).
    pub fn runs_changed(&mut self) {
        self.analyses.clear();
        self.dirty = true;
        self.revision += 1;
    }

    /// The comparison rows for the current session, criterion and budget (cached).
    pub fn rows(&mut self, options: &crate::report::ReportOptions) -> Arc<Vec<crate::report::Row>> {
        let budget_bits = options.budget_pp.to_bits();
        if let Some((criterion, budget, revision, rows)) = &self.rows_cache
            && *criterion == options.criterion
            && *budget == budget_bits
            && *revision == self.revision
        {
            return Arc::clone(rows);
        }
        let rows = Arc::new(crate::report::rows(&self.session, options));
        self.rows_cache = Some((options.criterion, budget_bits, self.revision, Arc::clone(&rows)));
        rows
    }

    /// Replaces the session.
    pub fn set_session(&mut self, session: Session, path: Option<PathBuf>) {
        self.session = session;
        self.session_path = path;
        self.dirty = false;
        self.analyses.clear();
        self.datasets.clear();
        self.thumbnails.clear();
        self.verification = None;
        self.revision += 1;
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

    /// The analysis of run `index` under `criterion`, computed on first use.
    pub fn analysis(&mut self, index: usize, criterion: Criterion) -> Option<Arc<Analysis>> {
        if let Some(found) = self.analyses.get(&(index, criterion)) {
            return Some(Arc::clone(found));
        }
        let run = self.session.runs.get(index)?;
        let first = crate::report::prepare(&self.session, run, criterion);
        // Every criterion at once: the others share the per-sample outcomes (loyalty, latency) and only score
        // and sweep again (about 25 ms each on 50 000 samples x 4 exits), so a later criterion switch is a
        // plain frame instead of a stall.
        for other in Criterion::ALL {
            let prepared = if other == criterion { first.clone() } else { first.with_criterion(&run.trace, other) };
            let sweep = prepared.sweep(&ThresholdGrid::Quantiles(APP_SWEEP_POINTS), crate::analysis::DEFAULT_BUDGET_PP);
            self.analyses.insert((index, other), Arc::new(Analysis { prepared, sweep }));
        }
        self.analyses.get(&(index, criterion)).cloned()
    }

    /// Opens (once) the dataset the session knows by `name`.
    pub fn dataset(&mut self, name: &str) -> Result<Arc<Dataset>, String> {
        if let Some(found) = self.datasets.get(name) {
            return Ok(Arc::clone(found));
        }
        let entry = self
            .session
            .datasets
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| format!("the session does not list dataset {name:?}"))?;
        let dataset = Arc::new(Dataset::open(&entry.path).map_err(|e| e.to_string())?);
        self.datasets.insert(name.to_string(), Arc::clone(&dataset));
        Ok(dataset)
    }

    /// Adds an opened dataset.
    pub fn add_dataset(&mut self, dataset: Dataset) {
        let name = dataset.name.clone();
        self.session.upsert_dataset(crate::session::DatasetEntry::of(&dataset));
        self.datasets.insert(name.clone(), Arc::new(dataset));
        if self.run_dataset.is_none() {
            self.run_dataset = Some(name);
        }
        self.dirty = true;
    }

    /// The policy for `variant`: the session's if it fits the criterion and exit count, else the sweep's acc-opt.
    pub fn policy_for(&mut self, variant: &str, criterion: Criterion) -> Option<Policy> {
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
        let analysis = self.analysis(index, criterion)?;
        let point = analysis.sweep.acc_opt.map(|i| &analysis.sweep.points[i])?;
        Some(analysis.prepared.policy_at(point))
    }
}
