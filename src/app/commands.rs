//! What widgets can ask for: [`Command`]s, queued through a [`Commands`] sink and applied in `logic`.

use std::path::PathBuf;

use super::state::{self, Tab};
use crate::analysis::{Criterion, Policy};
use crate::report::Format;

/// Everything a widget can ask for.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Open a session file.
    OpenSession(PathBuf),
    /// Start an empty session.
    NewSession,
    /// Save to the current file (or ask where).
    SaveSession,
    /// Save to this file.
    SaveSessionAs(PathBuf),
    /// Ask for a session to open.
    PickSessionToOpen,
    /// Ask where to save.
    PickSessionToSave,
    /// Ask for variant or dataset files to add.
    PickFilesToAdd,
    /// Add variants (ONNX, manifests) and datasets (spec, folder, IDX, NPY).
    AddFiles(Vec<PathBuf>),
    /// Start a trace job of a variant on a dataset and device (once the dataset is open).
    RunVariant {
        /// Variant name.
        variant: String,
        /// Dataset name.
        dataset: String,
        /// [`super::world::THIS_MACHINE`] or a configured device.
        device: String,
    },
    /// Drawing needs the analysis of run `index` (computed on a worker).
    NeedAnalysis(usize),
    /// Drawing needs a session dataset opened (on a worker).
    NeedDataset(String),
    /// Drawing needs thumbnails of these samples of a dataset (decoded on a worker).
    NeedThumbnails(String, Vec<usize>),
    /// Drawing needs the certificate of these inputs (computed on a worker).
    NeedCertificate(super::certify::CertifyKey),
    /// Drawing needs the comparison rows for the current criterion and budget (computed on a worker).
    NeedRows,
    /// Open the "Study on a model…" wizard (on a variant when given).
    OpenStudyWizard(Option<String>),
    /// Open the "Quantize…" dialog on a variant.
    OpenQuantizeDialog(String),
    /// Open the per-tensor sensitivity chart of a PTQ variant against its base.
    OpenSensitivity(String),
    /// Open the per-operator profile window on a variant.
    OpenProfileView(String),
    /// Open the "Add early exits…" dialog on a variant.
    OpenExitsDialog(String),
    /// Turn presentation mode on or off.
    SetPresentation(bool),
    /// Latency axes logarithmic or linear.
    SetLogLatency(bool),
    /// Put text on the clipboard (the headline card's "Copy").
    CopyText(String),
    /// Ask where to export the figure of the current tab (SVG or PNG).
    PickFigureExport,
    /// Write the figure last drawn by the current tab: SVG, or PNG at twice its size, by the file's extension.
    ExportFigure(PathBuf),
    /// Answer the unsaved-changes prompt.
    ResolveUnsaved(UnsavedChoice),
    /// Close the window (after the unsaved-changes prompt, if any).
    Quit,
    /// Show a tab.
    SelectTab(Tab),
    /// Explore a variant.
    SelectVariant(String),
    /// Change the exit criterion.
    SetCriterion(Criterion),
    /// Change the inf-opt budget.
    SetBudget(f64),
    /// Set a variant's thresholds.
    SetPolicy(String, Policy),
    /// Set the thresholds of run `.1` (variant `.0`) to percentile `.3` of the confidence its calibration run saw
    /// under criterion `.2` (computed on a worker).
    ApplyPercentile(String, usize, crate::analysis::Criterion, f64),
    /// Tick or untick a variant for running.
    ToggleRunSelection(String),
    /// Choose the dataset to run on.
    SetRunDataset(String),
    /// Change run settings.
    SetRunSettings {
        /// Intra-op threads.
        threads: usize,
        /// Warm-up runs.
        warmup: usize,
        /// Sample limit (0 = all).
        limit: usize,
    },
    /// Run the ticked variants.
    StartRuns,
    /// Cancel a job.
    CancelJob(u64),
    /// Run the explored variant dynamically at its current policy.
    Verify,
    /// Ask where to export the tables.
    PickTableExport(Format),
    /// Write the tables.
    ExportTables(PathBuf, Format),
    /// Capture the whole viewport into a PNG (the README's screenshots).
    CaptureViewport(PathBuf),
    /// Add (or replace) a remote runner.
    AddDevice(state::DeviceConfig),
    /// Forget a remote runner.
    RemoveDevice(String),
    /// Tick or untick a device for running.
    ToggleRunDevice(String),
    /// Run a failed trace job again.
    RetryJob(u64),
    /// Sort a comparison table by a column (again: reverse).
    SortTable(String, usize),
    /// Show the resource timeline of a run.
    ShowTimeline(usize),
    /// Hide an error.
    DismissError(usize),
    /// Hide the first-start hint.
    DismissHint,
}

/// The answers to "save changes before …?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnsavedChoice {
    /// Save, then go on.
    Save,
    /// Go on without saving.
    Discard,
    /// Stay.
    Cancel,
}

/// A command sink handed to drawing code.
pub struct Commands<'a>(pub(super) &'a mut Vec<Command>);

impl Commands<'_> {
    /// Queues a command.
    pub fn send(&mut self, command: Command) {
        self.0.push(command);
    }
}
