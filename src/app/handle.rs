//! Command handling: [`EdgescopeApp::apply`] is the one place the world changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use eframe::egui;

use super::commands::UnsavedChoice;
use super::loader::{self, Loaded, OpenedFile, key};
use super::world::{self, DialogResult, JobKind, JobSlot, Verification};
use super::{Command, EdgescopeApp, first_early_exit_variant};
use crate::analysis::Policy;
use crate::data::Dataset;
use crate::record::{RunMode, RunSettings};
use crate::report::Format;
use crate::runtime::{IsolatedRunner, Job, LocalRunner, spawn_job};
use crate::session::{Session, VariantEntry, write_atomically};

impl EdgescopeApp {
    /// Applies a command: the one place the world changes.
    pub fn apply(&mut self, command: Command) {
        // Opening, starting afresh and quitting would lose unsaved work: ask first.
        let discards = matches!(command, Command::OpenSession(_) | Command::NewSession | Command::Quit);
        if discards && self.world.dirty && !self.world.quitting {
            self.world.unsaved_prompt = Some(command);
            return;
        }
        let world = &mut self.world;
        match command {
            Command::OpenSession(path) => {
                world.opening = Some(path.clone());
                let key = key::session(&path);
                let criterion = self.saved.criterion;
                let spawned = world.loader.spawn(key, move || {
                    let loaded = Session::load(&path).map_err(|e| e.to_string()).map(|session| {
                        let telling = world::most_telling(&session, criterion);
                        (Box::new(session), telling)
                    });
                    Loaded::Session(path, loaded)
                });
                if let Err(e) = spawned {
                    world.opening = None;
                    world.error(e);
                }
            }
            Command::NewSession => world.set_session(Session::default(), None),
            Command::SaveSession => match world.session_path.clone() {
                // The bundled demo stays as shipped: saving it asks for a new name.
                Some(path) if !super::is_demo_session(&path) => self.apply(Command::SaveSessionAs(path)),
                Some(_) => {
                    world.notice = Some("the demo session stays as shipped: save your changes under a new name".into());
                    self.apply(Command::PickSessionToSave);
                }
                None => self.apply(Command::PickSessionToSave),
            },
            Command::SetPresentation(on) => self.saved.presentation = on,
            Command::SetLogLatency(on) => self.saved.log_latency = on,
            Command::CopyText(text) => {
                self.ctx.copy_text(text);
                world.notice = Some("copied to the clipboard".into());
            }
            Command::PickFigureExport => self.dialog(|| {
                rfd::FileDialog::new()
                    .set_title("Export the figure (SVG, or PNG at 2x)")
                    .add_filter("SVG", &["svg"])
                    .add_filter("PNG", &["png"])
                    .set_file_name("edgescope-figure.svg")
                    .save_file()
                    .map_or(DialogResult::Nothing, DialogResult::ExportFigure)
            }),
            Command::ExportFigure(path) => match super::capture::last_figure(&self.ctx) {
                None => world.error("no figure to export on this tab; open Explore or Compare first"),
                Some(figure) => {
                    let fonts = super::capture::figure_fonts();
                    let spawned = world.loader.spawn(key::written(&path), move || {
                        let written = super::capture::write_figure(&path, &figure, &fonts)
                            .map_err(|e| format!("cannot export {}: {e}", path.display()));
                        Loaded::Written(path, written)
                    });
                    if let Err(e) = spawned {
                        world.error(e);
                    }
                }
            },
            Command::ResolveUnsaved(choice) => {
                let Some(then) = world.unsaved_prompt.take() else { return };
                match choice {
                    UnsavedChoice::Save => {
                        world.after_save = Some(then);
                        self.apply(Command::SaveSession);
                    }
                    UnsavedChoice::Discard => {
                        world.dirty = false;
                        if then == Command::Quit {
                            world.quitting = true;
                        }
                        self.pending.push(then);
                    }
                    UnsavedChoice::Cancel => {}
                }
            }
            Command::Quit => {
                world.quitting = true;
                self.ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            }
            Command::SaveSessionAs(path) => {
                let (session, revision) = (world.snapshot(), world.revision);
                world.notice = Some(format!("saving {}…", path.display()));
                let spawned = world.loader.spawn(key::SAVE.into(), move || {
                    let saved = session.save(&path).map_err(|e| e.to_string());
                    Loaded::Saved(path, revision, saved)
                });
                if let Err(e) = spawned {
                    world.error(e);
                }
            }
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
                let key =
                    format!("{} {}", key::FILES, paths.first().map(|p| p.display().to_string()).unwrap_or_default());
                let spawned = world.loader.spawn(key, move || loader::open_files(paths));
                if let Err(e) = spawned {
                    world.error(e);
                }
            }
            Command::RunVariant { variant, dataset, device } => {
                let again =
                    Command::RunVariant { variant: variant.clone(), dataset: dataset.clone(), device: device.clone() };
                if let Some(opened) = world.dataset_for(&dataset, again) {
                    self.start_job(&variant, &opened, JobKind::Trace, &device);
                }
            }
            Command::NeedAnalysis(index) => world.request_analysis(index),
            Command::OpenExitsDialog(variant) => super::exits_dialog::open(world, &variant, &self.ctx),
            Command::OpenProfileView(variant) => super::profile_view::open(world, &variant),
            Command::OpenQuantizeDialog(variant) => super::quantize_dialog::open(world, &variant),
            Command::OpenSensitivity(variant) => super::quantize_dialog::open_sensitivity(world, &variant),
            Command::OpenStudyWizard(variant) => super::study_wizard::open(world, variant.as_deref(), &self.ctx),
            Command::NeedDataset(name) => world.request_dataset(&name),
            Command::NeedCertificate(key) => super::certify::request(world, key),
            Command::ApplyPercentile(variant, run, criterion, percentile) => {
                let (revision, session) = (world.revision, world.snapshot());
                let spawned = world.loader.spawn(super::loader::key::PERCENTILE.into(), move || {
                    let policy = session
                        .runs
                        .get(run)
                        .and_then(|r| crate::report::percentile_policy(&session, r, criterion, &[percentile]))
                        .ok_or_else(|| format!("{variant} has no calibration run to take a percentile from"));
                    super::loader::Loaded::Percentile(variant, revision, policy)
                });
                if let Err(e) = spawned {
                    world.error(e);
                }
            }
            Command::NeedThumbnails(name, samples) => self.request_thumbnails(&name, samples),
            Command::NeedRows => {
                let options = self.report_options();
                self.world.request_rows(&options);
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
                    Some(sort) if sort.table == table && sort.column == column => !sort.ascending,
                    _ => false,
                };
                world.table_sort = Some(crate::report::TableSort { table, column, ascending });
            }
            Command::ShowTimeline(index) => world.timeline_run = Some(index),
            Command::AddDevice(device) => self.add_device(device),
            Command::RemoveDevice(name) => self.remove_device(&name),
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
                if let Some((variant, dataset, device)) = retry {
                    self.apply(Command::RunVariant { variant, dataset, device });
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
                let extension = match format {
                    Format::Markdown => "md",
                    Format::Json => "json",
                    Format::Csv => "csv",
                    Format::Text => "txt",
                };
                self.dialog(move || {
                    rfd::FileDialog::new()
                        .set_title("Export the tables")
                        .set_file_name(format!("edgescope-tables.{extension}"))
                        .save_file()
                        .map_or(DialogResult::Nothing, |p| DialogResult::ExportTables(p, format))
                })
            }
            Command::ExportTables(path, format) => {
                let options = self.report_options();
                let world = &mut self.world;
                let session = world.snapshot();
                // The file holds the tables in the order on screen.
                let sort = world.table_sort.clone();
                let spawned = world.loader.spawn(key::written(&path), move || {
                    let rows = crate::report::rows(&session, &options);
                    let tables = crate::report::all_tables(&session, &rows, &options);
                    let tables = crate::report::apply_sort(tables, sort.as_ref());
                    let text = crate::report::render(&tables, &rows, format);
                    let written = write_atomically(&path, text.as_bytes())
                        .map_err(|e| format!("cannot write {}: {e}", path.display()));
                    Loaded::Written(path, written)
                });
                if let Err(e) = spawned {
                    world.error(e);
                }
            }
            Command::CaptureViewport(path) => {
                let sender = world.captures.0.clone();
                let ctx = self.ctx.clone();
                self.ctx.request_screenshot(move |image| {
                    let _ = sender.try_send((path, image));
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
    pub(super) fn dialog(&mut self, show: impl FnOnce() -> DialogResult + Send + 'static) {
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

    /// Adds a variant a dialog's worker wrote and opened, and starts its trace run on this machine with the run
    /// dataset (or says to choose one).
    pub(super) fn add_and_measure(&mut self, manifest: &Path, variant: Box<crate::model::Variant>) {
        self.add_opened(manifest, OpenedFile::Variant(variant));
        let name = self.world.session.variants.iter().find(|v| v.path == manifest).map(|v| v.name.clone());
        match (name, self.world.run_dataset.clone()) {
            (Some(variant), Some(dataset)) => {
                self.apply(Command::RunVariant { variant, dataset, device: super::world::THIS_MACHINE.into() })
            }
            (Some(name), None) => {
                self.world.notice = Some(format!("added {name}; choose a dataset in Runs to measure it"));
            }
            (None, _) => {}
        }
    }

    /// Adds a file a worker opened: a variant, or a dataset.
    pub(super) fn add_opened(&mut self, path: &Path, opened: OpenedFile) {
        match opened {
            OpenedFile::Variant(variant) => {
                let mut variant = *variant;
                let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
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
                self.world.revision += 1;
            }
            OpenedFile::Dataset(dataset) => {
                self.world.notice = Some(format!("added dataset {} ({} samples)", dataset.name, dataset.len()));
                self.world.add_dataset(*dataset);
                self.world.revision += 1;
            }
        }
    }

    /// Decodes thumbnails of `samples` on a worker (those not cached yet).
    fn request_thumbnails(&mut self, name: &str, samples: Vec<usize>) {
        let wanted: Vec<usize> =
            samples.into_iter().filter(|&s| !self.world.thumbnails.contains_key(&(name.to_string(), s))).collect();
        if wanted.is_empty() {
            return;
        }
        let Ok(Some(dataset)) = self.world.dataset_if_ready(name) else { return };
        let spawned =
            self.world.loader.spawn(key::thumbnails(name), move || loader::decode_thumbnails(&dataset, &wanted));
        if let Err(e) = spawned {
            self.world.error(e);
        }
    }

    /// Installs a session a worker read.
    pub(super) fn session_opened(&mut self, path: PathBuf, session: Session, telling: Option<(String, Policy)>) {
        let world = &mut self.world;
        world.set_session(session, Some(path.clone()));
        self.saved.remember_session(path);
        let selected_ok = self.saved.selected_variant.as_ref().is_some_and(|v| world.run_index(v).is_some());
        if !selected_ok {
            // A fresh start opens on the variant and operating point that show the most (the session's own
            // thresholds win when it has them); the choice is a view, not a change to save.
            match telling {
                Some((variant, policy)) => {
                    world.session.policies.entry(variant.clone()).or_insert(policy);
                    self.saved.selected_variant = Some(variant);
                }
                None => self.saved.selected_variant = first_early_exit_variant(world),
            }
        }
    }

    pub(super) fn run_settings(&self) -> RunSettings {
        RunSettings {
            intra_threads: self.saved.run_threads,
            warmup_runs: self.saved.run_warmup,
            limit: (self.saved.run_limit > 0).then_some(self.saved.run_limit),
            ..RunSettings::default()
        }
    }

    /// Starts one trace job per ticked variant on the chosen dataset.
    pub(super) fn start_runs(&mut self) {
        let Some(dataset_name) = self.world.run_dataset.clone() else {
            self.world.error("choose a dataset to run on first (add one with \"Add files\")");
            return;
        };
        let Some(dataset) = self.world.dataset_for(&dataset_name, Command::StartRuns) else { return };
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

    pub(super) fn start_job(&mut self, variant_name: &str, dataset: &Arc<Dataset>, kind: JobKind, device: &str) {
        let mut settings = self.run_settings();
        let remote = if device == world::THIS_MACHINE {
            None
        } else {
            let Some(config) = self.world.devices.iter().find(|d| d.name == device) else {
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
                    ended: None,
                });
            }
            Err(e) => world.error(format!("cannot start a worker thread: {e}")),
        }
    }

    /// Verifies the explored variant at its current policy with a dynamic run over the trace's samples, on the
    /// device that measured the trace (a prediction from a Jetson's trace is checked on that Jetson).
    pub(super) fn start_verify(&mut self) {
        let Some(variant) = self.saved.selected_variant.clone() else { return };
        let Some(index) = self.world.run_index(&variant) else { return };
        let Some(policy) = self.world.policy_for(&variant, self.saved.criterion) else {
            self.world.error(format!("{variant} has no early exit to verify"));
            return;
        };
        let run = &self.world.session.runs[index];
        let device = match trace_device(&self.world.devices, run.info.runner.as_deref()) {
            Ok(device) => device,
            Err(e) => return self.world.error(format!("cannot verify {variant}: {e}")),
        };
        let dataset_name = run.info.dataset.clone();
        // The dataset samples the trace covers (measured and skipped); the dynamic run covers the same ones.
        let covered = run.info.samples_done.max(run.trace.len() + run.info.skipped.len());
        let Some(dataset) = self.world.dataset_for(&dataset_name, Command::Verify) else { return };
        self.start_job(&variant, &dataset, JobKind::Verify(policy, covered), &device);
    }

    pub(super) fn finish_verification(
        &mut self,
        variant: String,
        device: String,
        run: crate::record::DynamicRun,
        policy: &Policy,
    ) {
        let Some(index) = self.world.run_index(&variant) else { return };
        let Some(analysis) = self.world.analysis(index, policy.criterion) else { return };
        let predicted = analysis.prepared.evaluate(policy);
        let exits = analysis.prepared.exit_of_each_sample(policy);
        let same_exit = exits.iter().zip(&run.exit_taken).filter(|(a, b)| a == b).count();
        self.world.session.verifications.retain(|v| v.info.variant != variant);
        self.world.session.verifications.push(run.clone());
        self.world.dirty = true;
        self.world.verification =
            Some(Verification { variant, device, policy: policy.clone(), run, predicted, same_exit });
    }

    /// Applies queued commands.
    pub(super) fn apply_pending(&mut self) {
        let commands = std::mem::take(&mut self.pending);
        for command in commands {
            self.apply(command);
        }
    }
}

/// The configured device that measured a trace: [`world::THIS_MACHINE`] for a local trace, else the remote runner
/// whose address the trace records.
pub(super) fn trace_device(devices: &[crate::net::DeviceConfig], runner: Option<&str>) -> Result<String, String> {
    let Some(runner) = runner else { return Ok(world::THIS_MACHINE.to_string()) };
    let bare = |address: &str| crate::net::client::parse_address(address.trim());
    devices.iter().find(|d| bare(&d.address) == bare(runner)).map(|d| d.name.clone()).ok_or_else(|| {
        format!(
            "its trace was measured on the runner at {runner}, which is not among the devices; add it in Runs \
             (Devices) to check the prediction on the device that made it"
        )
    })
}
