//! The desktop app (feature `gui`): load variants and datasets, run them in the background, and explore
//! early-exit thresholds with live outcomes, Pareto plots and the study's tables.
//!
//! Shape: [`SavedState`] is what persists between starts; [`World`] is runtime state. Drawing code never
//! mutates the world: widgets push [`Command`]s, and [`EdgescopeApp::apply`] — the one place that changes
//! anything — runs them in `logic`, after the worker channels are drained.

use eframe::egui;

mod certify;
mod compare;
mod exits_dialog;
mod explore;
mod models;
mod quantize_dialog;
mod runs;
mod sensitivity_view;
pub mod state;
pub mod world;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::analysis::{Criterion, Policy};
use crate::data::Dataset;
use crate::model::Variant;
use crate::report::Format;
use crate::runtime::{
    IsolatedRunner, Job, JobMessage, LocalRunner, RunEvent, RunMode, RunOutput, RunSettings, spawn_job,
};
use crate::session::{Session, VariantEntry, write_atomically};
pub use state::{SavedState, Tab};
use world::{DialogResult, JobKind, JobSlot, Verification, World};

/// Key of the saved state in eframe's storage.
const STORAGE_KEY: &str = "edgescope-app";

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
    /// Ask where to save the accuracy/latency plot as PNG.
    PickPlotExport,
    /// Capture the viewport (cropped to the plot when `crop` is set) into a PNG.
    CaptureViewport(PathBuf, bool),
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

/// The app.
pub struct EdgescopeApp {
    /// Saved between starts.
    pub saved: SavedState,
    /// Runtime state.
    pub world: World,
    /// Commands emitted while drawing, applied in the next `logic`.
    pending: Vec<Command>,
    ctx: egui::Context,
    /// Scripted screenshots for the README, if requested.
    script: Option<ScreenshotScript>,
    /// The edgescope executable local runs start a fresh process of (one per variant, so its memory is its
    /// own); `None` runs them in this process (tests, where the executable is the test harness).
    child_executable: Option<PathBuf>,
}

/// Takes the README's screenshots: shows each tab, waits for it to settle, captures the window, then closes.
pub struct ScreenshotScript {
    directory: PathBuf,
    steps: Vec<(Tab, &'static str)>,
    frames_on_step: u32,
    waiting_for_capture: bool,
}

impl ScreenshotScript {
    /// Screenshots of the explore, compare, models and runs tabs into `directory`.
    pub fn new(directory: PathBuf) -> Self {
        Self {
            directory,
            steps: vec![
                (Tab::Explore, "explore.png"),
                (Tab::Compare, "compare.png"),
                (Tab::Models, "models.png"),
                (Tab::Runs, "runs.png"),
            ],
            frames_on_step: 0,
            waiting_for_capture: false,
        }
    }
}

/// A command sink handed to drawing code.
pub struct Commands<'a>(&'a mut Vec<Command>);

impl Commands<'_> {
    /// Queues a command.
    pub fn send(&mut self, command: Command) {
        self.0.push(command);
    }
}

/// The demo session shipped with the repository, if present.
pub fn demo_session_path() -> Option<PathBuf> {
    let candidates =
        [PathBuf::from("sessions/demo.json"), PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sessions/demo.json")];
    candidates.into_iter().find(|p| p.is_file())
}

impl EdgescopeApp {
    /// Creates the app; opens `session` if given, else the last session, else the demo.
    pub fn new(cc: &eframe::CreationContext<'_>, session: Option<PathBuf>) -> Self {
        let saved: SavedState = cc.storage.and_then(|s| eframe::get_value(s, STORAGE_KEY)).unwrap_or_default();
        let mut app = Self::with_state(cc.egui_ctx.clone(), saved, session);
        app.child_executable = std::env::current_exe().ok();
        app
    }

    /// Creates the app from a saved state (used by tests).
    pub fn with_state(ctx: egui::Context, saved: SavedState, session: Option<PathBuf>) -> Self {
        let mut app =
            Self { saved, world: World::default(), pending: Vec::new(), ctx, script: None, child_executable: None };
        let start =
            session.or_else(|| app.saved.session_path.clone().filter(|p| p.is_file())).or_else(demo_session_path);
        if let Some(path) = start {
            app.apply(Command::OpenSession(path));
        }
        app
    }

    /// Runs `script` (the README's screenshots) and closes the window when it is done.
    pub fn with_script(mut self, script: ScreenshotScript) -> Self {
        self.saved.hint_dismissed = true;
        self.saved.tab = Tab::Explore;
        self.script = Some(script);
        self
    }

    /// Advances the screenshot script by one frame.
    fn drive_script(&mut self, ctx: &egui::Context) {
        let Some(script) = self.script.as_mut() else { return };
        if script.waiting_for_capture {
            if self.world.capture_done {
                self.world.capture_done = false;
                script.waiting_for_capture = false;
                script.steps.remove(0);
                script.frames_on_step = 0;
            }
            ctx.request_repaint();
            return;
        }
        self.world.notice = None;
        let Some(&(tab, file)) = script.steps.first() else {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            return;
        };
        if self.saved.tab != tab {
            self.saved.tab = tab;
        }
        script.frames_on_step += 1;
        // A few frames let plots lay out and textures upload before the capture.
        if script.frames_on_step >= 10 {
            script.waiting_for_capture = true;
            let path = script.directory.join(file);
            self.pending.push(Command::CaptureViewport(path, false));
        }
        ctx.request_repaint();
    }

    /// Queues a command (tests use this as a user would use a widget).
    pub fn send(&mut self, command: Command) {
        self.pending.push(command);
        self.ctx.request_repaint();
    }

    /// Applies a command: the one place the world changes.
    pub fn apply(&mut self, command: Command) {
        let world = &mut self.world;
        match command {
            Command::OpenSession(path) => match Session::load(&path) {
                Ok(session) => {
                    world.set_session(session, Some(path.clone()));
                    self.saved.remember_session(path);
                    let selected_ok =
                        self.saved.selected_variant.as_ref().is_some_and(|v| world.run_index(v).is_some());
                    if !selected_ok {
                        self.saved.selected_variant = first_early_exit_variant(world);
                    }
                }
                Err(e) => world.error(e.to_string()),
            },
            Command::NewSession => world.set_session(Session::default(), None),
            Command::SaveSession => match world.session_path.clone() {
                Some(path) => self.apply(Command::SaveSessionAs(path)),
                None => self.apply(Command::PickSessionToSave),
            },
            Command::SaveSessionAs(path) => match world.session.save(&path) {
                Ok(()) => {
                    world.session_path = Some(path.clone());
                    world.dirty = false;
                    world.notice = Some(format!("saved {}", path.display()));
                    self.saved.remember_session(path);
                }
                Err(e) => world.error(e.to_string()),
            },
            Command::PickSessionToOpen => self.dialog(|| {
                rfd::FileDialog::new()
                    .set_title("Open an edgescope session")
                    .add_filter("edgescope session", &["json"])
                    .pick_file()
                    .map_or(DialogResult::Nothing, DialogResult::Open)
            }),
            Command::PickSessionToSave => self.dialog(|| {
                rfd::FileDialog::new()
                    .set_title("Save the session")
                    .set_file_name("session.json")
                    .save_file()
                    .map_or(DialogResult::Nothing, DialogResult::SaveAs)
            }),
            Command::PickFilesToAdd => self.dialog(|| {
                rfd::FileDialog::new()
                    .set_title("Add variants (ONNX, manifest) or datasets (dataset.toml, IDX, NPY)")
                    .add_filter("models and datasets", &["onnx", "toml", "gz", "npy", "idx3-ubyte"])
                    .pick_files()
                    .map_or(DialogResult::Nothing, DialogResult::Add)
            }),
            Command::AddFiles(paths) => {
                for path in paths {
                    self.add_file(&path);
                }
            }
            Command::SelectTab(tab) => self.saved.tab = tab,
            Command::SelectVariant(name) => self.saved.selected_variant = Some(name),
            Command::SetCriterion(criterion) => self.saved.criterion = criterion,
            Command::SetBudget(budget) => self.saved.budget_pp = budget.clamp(0.0, 100.0),
            Command::SetPolicy(variant, policy) => {
                world.session.policies.insert(variant, policy);
                world.dirty = true;
                world.revision += 1;
            }
            Command::SortTable(table, column) => {
                let ascending = match &world.table_sort {
                    Some((t, c, ascending)) if *t == table && *c == column => !ascending,
                    _ => false,
                };
                world.table_sort = Some((table, column, ascending));
            }
            Command::ShowTimeline(index) => world.timeline_run = Some(index),
            Command::AddDevice(device) => {
                if device.name.trim().is_empty() || device.address.trim().is_empty() {
                    world.error("a device needs a name and an address (tcp://HOST:PORT)");
                } else {
                    world.device_states.remove(&device.name);
                    world.run_devices.insert(device.name.clone());
                    self.saved.devices.retain(|d| d.name != device.name);
                    self.saved.devices.push(device);
                }
            }
            Command::RemoveDevice(name) => {
                self.saved.devices.retain(|d| d.name != name);
                world.device_states.remove(&name);
                world.run_devices.remove(&name);
            }
            Command::ToggleRunDevice(name) => {
                if !world.run_devices.remove(&name) {
                    world.run_devices.insert(name);
                }
            }
            Command::RetryJob(id) => {
                let retry = world
                    .jobs
                    .iter()
                    .find(|j| j.id == id && j.failed && j.kind == JobKind::Trace)
                    .map(|j| (j.variant.clone(), j.dataset.clone(), j.device.clone()));
                if let Some((variant, dataset_name, device)) = retry {
                    match world.dataset(&dataset_name) {
                        Ok(dataset) => self.start_job(&variant, &dataset, JobKind::Trace, &device),
                        Err(e) => world.error(e),
                    }
                }
            }
            Command::ToggleRunSelection(name) => {
                if !world.run_selection.remove(&name) {
                    world.run_selection.insert(name);
                }
            }
            Command::SetRunDataset(name) => world.run_dataset = Some(name),
            Command::SetRunSettings { threads, warmup, limit } => {
                self.saved.run_threads = threads;
                self.saved.run_warmup = warmup;
                self.saved.run_limit = limit;
            }
            Command::StartRuns => self.start_runs(),
            Command::CancelJob(id) => {
                if let Some(handle) = world.jobs.iter().find(|j| j.id == id).and_then(|j| j.handle.as_ref()) {
                    handle.cancel();
                }
            }
            Command::Verify => self.start_verify(),
            Command::PickTableExport(format) => {
                let extension = if format == Format::Markdown { "md" } else { "csv" };
                self.dialog(move || {
                    rfd::FileDialog::new()
                        .set_title("Export the tables")
                        .set_file_name(format!("edgescope-tables.{extension}"))
                        .save_file()
                        .map_or(DialogResult::Nothing, |p| DialogResult::ExportTables(p, format))
                })
            }
            Command::ExportTables(path, format) => {
                let options = crate::report::ReportOptions {
                    criterion: self.saved.criterion,
                    budget_pp: self.saved.budget_pp,
                    ..crate::report::ReportOptions::default()
                };
                let rows = crate::report::rows(&world.session, &options);
                let mut tables = crate::report::tables(&rows, &options);
                tables.push(crate::report::runs_table(&world.session));
                let text = crate::report::render(&tables, &rows, format);
                match write_atomically(&path, text.as_bytes()) {
                    Ok(()) => world.notice = Some(format!("exported {}", path.display())),
                    Err(e) => world.error(format!("cannot write {}: {e}", path.display())),
                }
            }
            Command::PickPlotExport => self.dialog(|| {
                rfd::FileDialog::new()
                    .set_title("Save the plot as PNG")
                    .set_file_name("edgescope-plot.png")
                    .save_file()
                    .map_or(DialogResult::Nothing, DialogResult::ExportPlot)
            }),
            Command::CaptureViewport(path, crop) => {
                let region = if crop { world.plot_rect } else { None };
                let sender = world.captures.0.clone();
                let ctx = self.ctx.clone();
                self.ctx.request_screenshot(move |image| {
                    let _ = sender.try_send((path, region, image));
                    ctx.request_repaint();
                });
            }
            Command::DismissError(index) => {
                if index < world.errors.len() {
                    world.errors.remove(index);
                }
            }
            Command::DismissHint => self.saved.hint_dismissed = true,
        }
    }

    /// Runs a blocking file dialog on its own thread; its answer arrives through the dialog channel.
    fn dialog(&mut self, show: impl FnOnce() -> DialogResult + Send + 'static) {
        if self.world.dialog_open {
            self.world.notice = Some("a file dialog is already open".into());
            return;
        }
        let sender = self.world.dialog_sender.clone();
        let ctx = self.ctx.clone();
        let spawned = std::thread::Builder::new().name("edgescope-dialog".into()).spawn(move || {
            let _ = sender.send(show());
            ctx.request_repaint();
        });
        match spawned {
            Ok(_) => self.world.dialog_open = true,
            Err(e) => self.world.error(format!("cannot open a file dialog: {e}")),
        }
    }

    /// Adds one dropped or picked file: a variant if it is a model or manifest, else a dataset.
    fn add_file(&mut self, path: &Path) {
        let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
        let is_variant = name.ends_with(".onnx")
            || (name.ends_with(".toml")
                && std::fs::read_to_string(path).is_ok_and(|t| t.contains(crate::model::variant::MANIFEST_FORMAT)));
        if is_variant {
            match Variant::open(path) {
                Ok(mut variant) => {
                    self.world.notice = Some(format!("added variant {}", variant.name));
                    // A bare float ONNX file: the first becomes the session's base (loyalty and compression are
                    // measured against it), later ones are compared with it rather than with themselves.
                    let bare_float = name.ends_with(".onnx") && variant.has_tag("base");
                    let session = &mut self.world.session;
                    if bare_float && session.base.is_none() && !session.variants.iter().any(|v| v.has_tag("base")) {
                        session.base = Some(variant.name.clone());
                        self.world.notice =
                            Some(format!("added variant {}, the base (the first float model)", variant.name));
                    } else if bare_float && session.base.is_some() {
                        variant.tags = vec!["float".into()];
                    }
                    self.world.run_selection.insert(variant.name.clone());
                    self.world.session.upsert_variant(VariantEntry::of(&variant));
                    self.world.dirty = true;
                }
                Err(e) => self.world.error(e.to_string()),
            }
        } else {
            match Dataset::open(path) {
                Ok(dataset) => {
                    self.world.notice = Some(format!("added dataset {} ({} samples)", dataset.name, dataset.len()));
                    self.world.add_dataset(dataset);
                }
                Err(e) => self.world.error(e.to_string()),
            }
        }
    }

    fn run_settings(&self) -> RunSettings {
        RunSettings {
            intra_threads: self.saved.run_threads,
            warmup_runs: self.saved.run_warmup,
            limit: (self.saved.run_limit > 0).then_some(self.saved.run_limit),
            ..RunSettings::default()
        }
    }

    /// Starts one trace job per ticked variant on the chosen dataset.
    fn start_runs(&mut self) {
        let Some(dataset_name) = self.world.run_dataset.clone() else {
            self.world.error("choose a dataset to run on first (add one with \"Add files\")");
            return;
        };
        let dataset = match self.world.dataset(&dataset_name) {
            Ok(d) => d,
            Err(e) => return self.world.error(e),
        };
        let names: Vec<String> = self.world.run_selection.iter().cloned().collect();
        if names.is_empty() {
            self.world.error("tick at least one variant to run");
            return;
        }
        let devices: Vec<String> = self.world.run_devices.iter().cloned().collect();
        if devices.is_empty() {
            self.world.error("tick at least one device to run on");
            return;
        }
        for device in &devices {
            for name in &names {
                self.start_job(name, &dataset, JobKind::Trace, device);
            }
        }
    }

    /// Probes remote runners that have no state yet, or whose retry time has come (backoff up to a minute).
    fn probe_devices(&mut self) {
        let now = std::time::Instant::now();
        for device in &self.saved.devices {
            let due = match self.world.device_states.get(&device.name) {
                None => true,
                Some(world::DeviceState::Failed { retry_at, .. }) => now >= *retry_at,
                Some(_) => false,
            };
            if !due {
                continue;
            }
            self.world.device_states.insert(device.name.clone(), world::DeviceState::Connecting);
            let sender = self.world.probes.0.clone();
            let ctx = self.ctx.clone();
            let device = device.clone();
            let spawned =
                std::thread::Builder::new().name(format!("edgescope-probe-{}", device.name)).spawn(move || {
                    let result = crate::net::protocol::read_token(&device.token_file).and_then(|token| {
                        use crate::runtime::Runner;
                        crate::net::RemoteRunner::new(&device.address, token).device().map_err(|e| e.to_string())
                    });
                    let _ = sender.send((device.name, result));
                    ctx.request_repaint();
                });
            if let Err(e) = spawned {
                self.world.error(format!("cannot probe a device: {e}"));
            }
        }
        while let Ok((name, result)) = self.world.probes.1.try_recv() {
            let previous_backoff = match self.world.device_states.get(&name) {
                Some(world::DeviceState::Failed { backoff_s, .. }) => *backoff_s,
                _ => 0,
            };
            let state = match result {
                Ok(record) => world::DeviceState::Connected(Box::new(record)),
                Err(error) => {
                    let backoff_s = (previous_backoff * 2).clamp(5, 60);
                    world::DeviceState::Failed {
                        error,
                        retry_at: std::time::Instant::now() + std::time::Duration::from_secs(backoff_s),
                        backoff_s,
                    }
                }
            };
            self.world.device_states.insert(name, state);
        }
        if self.world.device_states.values().any(|s| matches!(s, world::DeviceState::Failed { .. })) {
            self.ctx.request_repaint_after(std::time::Duration::from_secs(1));
        }
    }

    fn start_job(&mut self, variant_name: &str, dataset: &Arc<Dataset>, kind: JobKind, device: &str) {
        let mut settings = self.run_settings();
        let remote = if device == world::THIS_MACHINE {
            None
        } else {
            let Some(config) = self.saved.devices.iter().find(|d| d.name == device) else {
                self.world.error(format!("no device called {device} is configured"));
                return;
            };
            match crate::net::protocol::read_token(&config.token_file) {
                Ok(token) => Some(crate::net::RemoteRunner::new(&config.address, token)),
                Err(e) => return self.world.error(format!("{device}: {e}")),
            }
        };
        let world = &mut self.world;
        if world
            .jobs
            .iter()
            .any(|j| j.handle.is_some() && j.variant == variant_name && j.dataset == dataset.name && j.device == device)
        {
            world.error(format!("{variant_name} is already running on {} ({device}); wait or cancel it", dataset.name));
            return;
        }
        let Some(entry) = world.session.variant(variant_name) else {
            world.error(format!("the session does not list variant {variant_name}"));
            return;
        };
        let variant = match entry.open() {
            Ok(v) => Arc::new(v),
            Err(e) => return world.error(e.to_string()),
        };
        if let Err(e) = crate::runtime::check_compatible(&variant, dataset) {
            return world.error(e.to_string());
        }
        let mode = match &kind {
            JobKind::Trace => RunMode::Trace,
            JobKind::Verify(policy, covered) => {
                settings.sample_resources = false;
                settings.limit = Some((*covered).max(1));
                RunMode::Dynamic(policy.clone())
            }
        };
        let total = settings.limit.map_or(dataset.len(), |l| l.min(dataset.len()));
        let reference = match &mode {
            RunMode::Trace => world.session.reference_for(&variant).unwrap_or_else(|warning| {
                world.error(warning);
                None
            }),
            RunMode::Dynamic(_) => None,
        };
        let job = Job { variant, dataset: Arc::clone(dataset), settings, mode, reference };
        let ctx = self.ctx.clone();
        let notify = move || ctx.request_repaint();
        let spawned = match (remote, &self.child_executable) {
            (None, Some(executable)) => spawn_job(IsolatedRunner::new(executable.clone()), job, notify),
            (None, None) => spawn_job(LocalRunner::new(), job, notify),
            (Some(runner), _) => spawn_job(runner, job, notify),
        };
        match spawned {
            Ok(handle) => {
                let id = world.next_job_id;
                world.next_job_id += 1;
                world.jobs.push(JobSlot {
                    id,
                    variant: variant_name.to_string(),
                    dataset: dataset.name.clone(),
                    device: device.to_string(),
                    kind,
                    failed: false,
                    handle: Some(handle),
                    done: 0,
                    total,
                    phase: "starting".into(),
                    started: std::time::Instant::now(),
                    measuring_since: None,
                });
            }
            Err(e) => world.error(format!("cannot start a worker thread: {e}")),
        }
    }

    /// Verifies the explored variant at its current policy with a dynamic run over the trace's samples.
    fn start_verify(&mut self) {
        let Some(variant) = self.saved.selected_variant.clone() else { return };
        let Some(index) = self.world.run_index(&variant) else { return };
        let Some(policy) = self.world.policy_for(&variant, self.saved.criterion) else {
            self.world.error(format!("{variant} has no early exit to verify"));
            return;
        };
        let run = &self.world.session.runs[index];
        let dataset_name = run.info.dataset.clone();
        // The dataset samples the trace covers (measured and skipped); the dynamic run covers the same ones.
        let covered = run.info.samples_done.max(run.trace.len() + run.info.skipped.len());
        let dataset = match self.world.dataset(&dataset_name) {
            Ok(d) => d,
            Err(e) => return self.world.error(e),
        };
        self.start_job(&variant, &dataset, JobKind::Verify(policy, covered), world::THIS_MACHINE);
    }

    /// Report options from the saved state.
    pub fn report_options(&self) -> crate::report::ReportOptions {
        crate::report::ReportOptions {
            criterion: self.saved.criterion,
            budget_pp: self.saved.budget_pp,
            ..crate::report::ReportOptions::default()
        }
    }

    /// Drains worker, dialog and capture channels, and turns dropped files into commands.
    fn drain(&mut self, ctx: &egui::Context) {
        let dropped: Vec<PathBuf> = ctx.input(|i| i.raw.dropped_files.iter().map(|f| f.path().to_path_buf()).collect());
        if !dropped.is_empty() {
            self.pending.push(Command::AddFiles(dropped));
        }
        while let Ok(result) = self.world.dialog_results.try_recv() {
            self.world.dialog_open = false;
            match result {
                DialogResult::Add(paths) => self.pending.push(Command::AddFiles(paths)),
                DialogResult::Open(path) => self.pending.push(Command::OpenSession(path)),
                DialogResult::SaveAs(path) => self.pending.push(Command::SaveSessionAs(path)),
                DialogResult::ExportTables(path, format) => self.pending.push(Command::ExportTables(path, format)),
                DialogResult::ExportPlot(path) => self.pending.push(Command::CaptureViewport(path, true)),
                DialogResult::Nothing => {
                    self.world.notice = Some(
                        "no file chosen — if no dialog appeared, install xdg-desktop-portal (with a GTK or KDE \
                         backend) or zenity, or drag files onto the window"
                            .into(),
                    );
                }
            }
        }
        while let Ok((path, region, image)) = self.world.captures.1.try_recv() {
            match save_capture(&path, region, ctx.pixels_per_point(), &image) {
                Ok(()) => self.world.notice = Some(format!("saved {}", path.display())),
                Err(e) => self.world.error(format!("cannot save {}: {e}", path.display())),
            }
            self.world.capture_done = true;
        }
        self.drain_jobs();
        exits_dialog::drain(self);
        quantize_dialog::drain(self);
    }

    fn drain_jobs(&mut self) {
        let mut finished = Vec::new();
        for (slot_index, slot) in self.world.jobs.iter_mut().enumerate() {
            let Some(handle) = &slot.handle else { continue };
            while let Ok(message) = handle.messages.try_recv() {
                match message {
                    JobMessage::Event(RunEvent::Queued) => slot.phase = "queued behind another run".into(),
                    JobMessage::Event(RunEvent::Loading) => slot.phase = "loading".into(),
                    JobMessage::Event(RunEvent::WarmingUp) => slot.phase = "warming up".into(),
                    JobMessage::Event(RunEvent::Checkpoint { .. }) => {}
                    JobMessage::Event(RunEvent::ComparingWithReference { done, total }) => {
                        slot.phase = format!("comparing with the base for exact loyalty ({done}/{total})");
                    }
                    JobMessage::Event(RunEvent::Progress { done, total }) => {
                        slot.measuring_since.get_or_insert_with(std::time::Instant::now);
                        slot.phase = "measuring".into();
                        slot.done = done;
                        slot.total = total;
                    }
                    JobMessage::Finished(result) => {
                        finished.push((slot_index, *result));
                        break;
                    }
                }
            }
        }
        for (slot_index, result) in finished {
            let slot = &mut self.world.jobs[slot_index];
            slot.handle = None;
            let variant = slot.variant.clone();
            let kind = slot.kind.clone();
            match result {
                Err(crate::runtime::RuntimeError::Cancelled) => slot.phase = "cancelled before it started".into(),
                Err(e) => {
                    slot.phase = "failed".into();
                    slot.failed = true;
                    let device = slot.device.clone();
                    if let crate::runtime::RuntimeError::Interrupted { partial, .. } = &e
                        && self.world.session.keep_partial((**partial).clone())
                    {
                        self.world.runs_changed();
                    }
                    self.world.error(format!("{variant} on {device}: {e}"));
                }
                Ok(RunOutput::Trace(run)) if run.info.complete => {
                    slot.phase = "done".into();
                    if !run.info.skipped.is_empty() || run.info.resources.as_ref().is_some_and(|r| r.is_noisy()) {
                        let notes = crate::report::run_notes(&run.info);
                        self.world.notice = Some(format!("{variant}: {}", notes.join("; ")));
                    }
                    self.world.session.upsert_run(run);
                    self.world.runs_changed();
                    if self.saved.selected_variant.is_none() {
                        self.saved.selected_variant = Some(variant);
                    }
                }
                Ok(RunOutput::Trace(run)) => {
                    let measured = run.trace.len();
                    let failure = run.info.failure.clone();
                    match &failure {
                        Some(_) => {
                            slot.phase = "failed".into();
                            slot.failed = true;
                        }
                        None => slot.phase = format!("cancelled after {measured} samples"),
                    }
                    let kept = measured > 0 && self.world.session.keep_partial(run);
                    if kept {
                        self.world.runs_changed();
                    }
                    let what = if kept {
                        format!("its {measured} measured samples are kept, marked incomplete")
                    } else {
                        "the complete trace already there is kept".into()
                    };
                    match failure {
                        Some(failure) => self.world.error(format!("{variant}: {failure}; {what}")),
                        None => self.world.notice = Some(format!("{variant}: cancelled; {what}")),
                    }
                }
                Ok(RunOutput::Dynamic(run)) => {
                    slot.phase = if run.info.complete { "done".into() } else { "cancelled".into() };
                    if let (true, JobKind::Verify(policy, _)) = (run.info.complete, kind) {
                        self.finish_verification(variant, run, &policy);
                    }
                }
            }
        }
    }

    fn finish_verification(&mut self, variant: String, run: crate::runtime::DynamicRun, policy: &Policy) {
        let Some(index) = self.world.run_index(&variant) else { return };
        let Some(analysis) = self.world.analysis(index, policy.criterion) else { return };
        let predicted = analysis.prepared.evaluate(policy);
        let exits = analysis.prepared.exit_of_each_sample(policy);
        let same_exit = exits.iter().zip(&run.exit_taken).filter(|(a, b)| a == b).count();
        self.world.session.verifications.retain(|v| v.info.variant != variant);
        self.world.session.verifications.push(run.clone());
        self.world.dirty = true;
        self.world.verification = Some(Verification { variant, run, predicted, same_exit });
    }

    /// Applies queued commands.
    fn apply_pending(&mut self) {
        let commands = std::mem::take(&mut self.pending);
        for command in commands {
            self.apply(command);
        }
    }

    fn top_bar_ui(&mut self, ui: &mut egui::Ui, commands: &mut Commands<'_>) {
        ui.horizontal_wrapped(|ui| {
            ui.strong("edgescope");
            ui.separator();
            if ui.button("Open…").clicked() {
                commands.send(Command::PickSessionToOpen);
            }
            let save_label = if self.world.dirty { "Save*" } else { "Save" };
            if ui.button(save_label).clicked() {
                commands.send(Command::SaveSession);
            }
            if ui.button("Save as…").clicked() {
                commands.send(Command::PickSessionToSave);
            }
            ui.menu_button("Recent", |ui| {
                if self.saved.recent_sessions.is_empty() {
                    ui.label("no recent sessions");
                }
                for path in &self.saved.recent_sessions {
                    if ui.button(path.display().to_string()).clicked() {
                        commands.send(Command::OpenSession(path.clone()));
                        ui.close();
                    }
                }
                if let Some(demo) = demo_session_path()
                    && ui.button("Demo session").clicked()
                {
                    commands.send(Command::OpenSession(demo));
                    ui.close();
                }
                if ui.button("New empty session").clicked() {
                    commands.send(Command::NewSession);
                    ui.close();
                }
            });
            if ui
                .button("Add files…")
                .on_hover_text("ONNX models, manifests, datasets; or drop them on the window")
                .clicked()
            {
                commands.send(Command::PickFilesToAdd);
            }
            ui.separator();
            for tab in Tab::ALL {
                if ui.selectable_label(self.saved.tab == tab, tab.title()).clicked() {
                    commands.send(Command::SelectTab(tab));
                }
            }
            ui.separator();
            let name = self.world.session_path.as_ref().map_or("unsaved session".into(), |p| p.display().to_string());
            ui.weak(name);
        });
    }

    fn messages_ui(&mut self, ui: &mut egui::Ui, commands: &mut Commands<'_>) {
        for (index, error) in self.world.errors.iter().enumerate() {
            ui.horizontal(|ui| {
                ui.colored_label(ui.visuals().error_fg_color, format!("Error: {error}"));
                if ui.small_button("dismiss").clicked() {
                    commands.send(Command::DismissError(index));
                }
            });
        }
        if let Some(notice) = &self.world.notice {
            ui.weak(notice);
        }
        if !self.saved.hint_dismissed {
            ui.horizontal(|ui| {
                ui.label(
                    "Start here: pick an early-exit variant in Explore and drag its exit threshold — accuracy, exit \
                     rate and latency follow live. Compare shows the study's tables; drop ONNX files or datasets on \
                     the window to add your own, then run them in Runs.",
                );
                if ui.small_button("got it").clicked() {
                    commands.send(Command::DismissHint);
                }
            });
        }
    }
}

/// The variant the app first shows: a plain early-exit chain if there is one (the slider is the point of the
/// app), else any early-exit variant, else the first run.
fn first_early_exit_variant(world: &World) -> Option<String> {
    let runs: Vec<&crate::runtime::TraceRun> =
        world.session.runs.iter().filter(|r| !world.session.is_calibration_run(r)).collect();
    let plain_ee = |r: &&&crate::runtime::TraceRun| {
        r.trace.early_exit_count() == 1
            && world.session.variant(&r.info.variant).is_some_and(|v| v.tags.iter().all(|t| t == "ee"))
    };
    runs.iter()
        .find(plain_ee)
        .or_else(|| runs.iter().find(|r| r.trace.early_exit_count() > 0))
        .or_else(|| runs.first())
        .map(|r| r.info.variant.clone())
}

/// Saves a viewport capture (optionally cropped to `region`, in points) as PNG.
fn save_capture(
    path: &Path,
    region: Option<egui::Rect>,
    pixels_per_point: f32,
    image: &egui::ColorImage,
) -> Result<(), String> {
    let [width, height] = image.size;
    let (x0, y0, x1, y1) = match region {
        Some(r) => (
            ((r.min.x * pixels_per_point) as usize).min(width),
            ((r.min.y * pixels_per_point) as usize).min(height),
            ((r.max.x * pixels_per_point).ceil() as usize).min(width),
            ((r.max.y * pixels_per_point).ceil() as usize).min(height),
        ),
        None => (0, 0, width, height),
    };
    if x1 <= x0 || y1 <= y0 {
        return Err("the region to capture is empty".into());
    }
    let mut rgba = Vec::with_capacity((x1 - x0) * (y1 - y0) * 4);
    for y in y0..y1 {
        for x in x0..x1 {
            rgba.extend_from_slice(&image.pixels[y * width + x].to_array());
        }
    }
    let buffer = image::RgbaImage::from_raw((x1 - x0) as u32, (y1 - y0) as u32, rgba).ok_or("bad image size")?;
    let mut png = Vec::new();
    buffer.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).map_err(|e| e.to_string())?;
    write_atomically(path, &png).map_err(|e| e.to_string())
}

impl eframe::App for EdgescopeApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.drain(ctx);
        self.probe_devices();
        self.drive_script(ctx);
        self.apply_pending();
        if self.world.jobs.iter().any(|j| j.handle.is_some()) {
            // Keep the progress bars moving even when the worker's own repaints are rate-limited.
            ctx.request_repaint_after(std::time::Duration::from_millis(100));
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let mut queue = Vec::new();
        {
            let mut commands = Commands(&mut queue);
            egui::Panel::top("top_bar").show(ui, |ui| {
                self.top_bar_ui(ui, &mut commands);
                self.messages_ui(ui, &mut commands);
            });
            egui::CentralPanel::default().show(ui, |ui| match self.saved.tab {
                Tab::Explore => explore::explore_ui(ui, &self.saved, &mut self.world, &mut commands),
                Tab::Compare => compare::compare_ui(ui, &self.saved, &mut self.world, &mut commands),
                Tab::Models => models::models_ui(ui, &mut self.world, &mut commands),
                Tab::Runs => runs::runs_ui(ui, &self.saved, &mut self.world, &mut commands),
            });
        }
        if !queue.is_empty() {
            self.pending.extend(queue);
            ui.ctx().request_repaint();
        }
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        // A scripted screenshot run leaves the user's saved layout alone.
        if self.script.is_none() {
            eframe::set_value(storage, STORAGE_KEY, &self.saved);
        }
    }
}

/// Opens the app window (blocking until it closes). With `screenshots`, takes the README's screenshots into
/// that folder and closes.
pub fn run_app(session: Option<PathBuf>, screenshots: Option<PathBuf>) -> Result<(), String> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("edgescope")
            .with_inner_size([1400.0, 900.0])
            .with_min_inner_size([900.0, 600.0]),
        ..Default::default()
    };
    eframe::run_native(
        "edgescope",
        options,
        Box::new(move |cc| {
            Ok(Box::new(match screenshots {
                // Screenshots start from a fresh layout, not the user's saved one, so they are reproducible.
                Some(directory) => EdgescopeApp::with_state(cc.egui_ctx.clone(), SavedState::default(), session)
                    .with_script(ScreenshotScript::new(directory)),
                None => EdgescopeApp::new(cc, session),
            }))
        }),
    )
    .map_err(|e| format!("cannot open the window: {e}; on Linux a display (X11 or Wayland) and OpenGL are needed"))
}
