//! "Study on a model…" (issue 10 part 6): pick a float classifier, the test / training / calibration datasets
//! (the session's or files), the devices and an output folder; the study ([`crate::optimize::study`]) runs on a
//! named worker thread with a bounded channel, its progress shown across all steps, with cancel; at the end the
//! session it wrote opens on the study's tables (Compare tab) and Explore.

use std::path::PathBuf;

use eframe::egui;

use super::state::DeviceConfig;
use super::worker::{DialogTask, Progress};
use super::world::THIS_MACHINE;
use super::{Command, EdgescopeApp, Tab, World};
use crate::optimize::study::{
    DEFAULT_EPOCHS, DEFAULT_TEST_LIMIT, StudyDevice, StudyEvent, StudyOptions, StudyRequest, run_study,
};
use crate::runtime::{IsolatedRunner, LocalRunner, Runner};

/// A session variant the study can start from: its name and its one ONNX file.
type ModelChoice = (String, String);

/// The wizard's state (runtime only, never saved).
pub struct StudyWizard {
    /// The session variant the wizard was opened on, preselected once the models are read.
    preselect: Option<String>,
    /// The session's single-graph float variants with their ONNX files, read on a worker when the wizard opens.
    models: DialogTask<(), Vec<ModelChoice>>,
    model: String,
    test: String,
    train: String,
    calibration: String,
    pruned: String,
    out: String,
    devices: Vec<(String, bool)>,
    all_samples: bool,
    test_limit: usize,
    epochs: usize,
    seed: u64,
    mlp: bool,
    /// The study: its events, then the session it wrote.
    work: DialogTask<StudyEvent, PathBuf>,
    /// Step lines so far.
    log: Vec<String>,
}

/// The ONNX file of each single-graph float variant (reads the manifests; runs on a worker).
fn model_choices(variants: Vec<(String, PathBuf)>) -> Vec<ModelChoice> {
    variants
        .into_iter()
        .filter_map(|(name, path)| {
            let opened = crate::model::Variant::open(&path).ok()?;
            Some((name, opened.segments.first()?.path.display().to_string()))
        })
        .collect()
}

/// The runner for each ticked device (reads remote runners' token files; runs on the study's worker).
fn study_devices(
    ticked: Vec<String>,
    configs: Vec<DeviceConfig>,
    child_executable: Option<PathBuf>,
) -> Result<Vec<StudyDevice>, String> {
    let mut devices = Vec::new();
    for name in ticked {
        let runner: Box<dyn Runner + Send> = if name == THIS_MACHINE {
            match &child_executable {
                Some(executable) => Box::new(IsolatedRunner::new(executable.clone())),
                None => Box::new(LocalRunner::new()),
            }
        } else {
            let Some(config) = configs.iter().find(|d| d.name == name) else {
                return Err(format!("no device called {name} is configured"));
            };
            let token = crate::net::protocol::read_token(&config.token_file).map_err(|e| format!("{name}: {e}"))?;
            Box::new(crate::net::RemoteRunner::new(&config.address, token))
        };
        devices.push(StudyDevice { name, runner });
    }
    Ok(devices)
}

impl StudyWizard {
    /// Opens the wizard, `variant` (a single-graph session variant) to be preselected as the model once the
    /// session's models are read (on a worker).
    pub fn open(world: &World, variant: Option<&str>, ctx: &egui::Context) -> Self {
        let candidates: Vec<(String, PathBuf)> = world
            .session
            .variants
            .iter()
            .filter(|v| v.segments == 1 && !v.has_tag("ptq") && !v.has_tag("dq"))
            .map(|v| (v.name.clone(), v.path.clone()))
            .collect();
        let mut models = DialogTask::default();
        models.start("study-models", ctx, move |_, _| Ok(model_choices(candidates)));
        models.set_progress(Progress::count(0, 0, "reading the session's models…"));
        let dataset = |hint: &str| {
            world.session.datasets.iter().find(|d| d.name.contains(hint)).map(|d| d.path.display().to_string())
        };
        // Named for their role, else the session's first dataset (the user changes what does not fit).
        let first = world.session.datasets.first().map(|d| d.path.display().to_string()).unwrap_or_default();
        let role = |hint: &str| dataset(hint).unwrap_or_else(|| first.clone());
        let folder = world.session_path.as_ref().and_then(|p| p.parent()).map(PathBuf::from).unwrap_or_default();
        let stem = variant.map_or_else(|| "model".to_string(), |v| v.replace(['/', '\\', ' '], "-"));
        let mut out = folder.join(format!("{stem}-study"));
        let mut k = 2;
        while out.exists() {
            out = folder.join(format!("{stem}-study-{k}"));
            k += 1;
        }
        Self {
            preselect: variant.map(str::to_string),
            models,
            model: String::new(),
            test: role("test"),
            train: role("train"),
            calibration: role("calib"),
            pruned: String::new(),
            out: out.display().to_string(),
            devices: vec![(THIS_MACHINE.to_string(), true)],
            all_samples: false,
            test_limit: DEFAULT_TEST_LIMIT,
            epochs: DEFAULT_EPOCHS,
            seed: 0,
            mlp: false,
            work: DialogTask::default(),
            log: Vec::new(),
        }
    }

    /// True while the models are read or the study runs.
    pub fn is_busy(&self) -> bool {
        self.models.is_running() || self.work.is_running()
    }

    /// The request the form describes, or what is missing.
    fn request(&self) -> Result<StudyRequest, String> {
        let path = |text: &str, what: &str| {
            let text = text.trim();
            if text.is_empty() { Err(format!("choose the {what}")) } else { Ok(PathBuf::from(text)) }
        };
        Ok(StudyRequest {
            model: path(&self.model, "model (a float ONNX file)")?,
            test: path(&self.test, "test dataset")?,
            train: path(&self.train, "training dataset")?,
            calibration: path(&self.calibration, "calibration dataset")?,
            pruned: if self.pruned.trim().is_empty() { Vec::new() } else { vec![PathBuf::from(self.pruned.trim())] },
            out: path(&self.out, "output folder")?,
            options: StudyOptions {
                test_limit: (!self.all_samples).then_some(self.test_limit.max(1)),
                head: if self.mlp { "mlp".into() } else { "linear".into() },
                epochs: self.epochs.max(1),
                seed: self.seed,
                ..StudyOptions::default()
            },
        })
    }

    fn start(&mut self, app: &EdgescopeApp, ctx: &egui::Context) {
        let request = match self.request() {
            Ok(request) => request,
            Err(e) => return self.work.fail(e),
        };
        let ticked: Vec<String> =
            self.devices.iter().filter(|(_, ticked)| *ticked).map(|(name, _)| name.clone()).collect();
        if ticked.is_empty() {
            return self.work.fail("tick at least one device to measure on");
        }
        let (configs, child_executable) = (app.world.devices.clone(), app.child_executable.clone());
        self.log.clear();
        self.work.start("study", ctx, move |reporter, cancel| {
            let mut devices = study_devices(ticked, configs, child_executable)?;
            let mut on_event = |event: StudyEvent| {
                if matches!(event, StudyEvent::Progress { .. }) {
                    reporter.progress(event);
                } else {
                    // Step lines go to the log: none is dropped.
                    reporter.event(event);
                }
            };
            run_study(&request, &mut devices, &mut on_event, cancel)
                .map(|outcome| outcome.session)
                .map_err(|e| e.to_string())
        });
    }
}

/// The "Study on a model…" button: `variant` preselects a single-graph session variant as the model.
pub fn open_button_ui(ui: &mut egui::Ui, variant: Option<&str>, commands: &mut super::Commands<'_>) {
    if ui
        .button("Study on a model…")
        .on_hover_text(
            "PTQ, DQ, early exits, PTQ-EE and DQ-EE made from one float model, measured, and shown as tables",
        )
        .clicked()
    {
        commands.send(super::Command::OpenStudyWizard(variant.map(str::to_string)));
    }
}

/// Opens the wizard (on `variant` when given).
pub fn open(world: &mut World, variant: Option<&str>, ctx: &egui::Context) {
    // Opening it again would close it, and closing cancels: a running study is not replaced.
    if world.study_wizard.as_ref().is_some_and(|w| w.work.is_running()) {
        return world.error("a study is running; wait for it or cancel it in its window");
    }
    world.study_wizard = Some(StudyWizard::open(world, variant, ctx));
}

/// A path field with a menu of the session's entries (name -> path).
fn path_row_ui(
    ui: &mut egui::Ui,
    label: &str,
    hover: &str,
    value: &mut String,
    choices: &[ModelChoice],
    enabled: bool,
) {
    let label = ui.label(label).on_hover_text(hover);
    ui.add_enabled_ui(enabled, |ui| {
        ui.horizontal(|ui| {
            ui.add(egui::TextEdit::singleline(value).desired_width(360.0)).labelled_by(label.id).on_hover_text(hover);
            if !choices.is_empty() {
                ui.menu_button("session…", |ui| {
                    for (name, path) in choices {
                        if ui.button(name).on_hover_text(path).clicked() {
                            *value = path.clone();
                            ui.close();
                        }
                    }
                });
            }
        });
    });
    ui.end_row();
}

/// Draws the wizard window, if open. Closing it drops the wizard, which cancels the study (the finished steps stay
/// on disk).
pub fn window_ui(ctx: &egui::Context, app: &mut EdgescopeApp) {
    let Some(mut wizard) = app.world.study_wizard.take() else { return };
    // Devices: this machine and every configured remote runner.
    for device in &app.world.devices {
        if !wizard.devices.iter().any(|(n, _)| n == &device.name) {
            wizard.devices.push((device.name.clone(), false));
        }
    }
    let world = &app.world;
    let models: Vec<ModelChoice> = wizard.models.output().cloned().unwrap_or_default();
    let datasets: Vec<(String, String)> =
        world.session.datasets.iter().map(|d| (d.name.clone(), d.path.display().to_string())).collect();
    let dirty = world.dirty;
    let mut open = true;
    let mut start = false;
    egui::Window::new("Study on a model").open(&mut open).resizable(true).show(ctx, |ui| {
        let busy = wizard.work.is_running();
        ui.label(
            "From one float classifier: PTQ and DQ, exits at the early / middle / late cut points (one chain each and \
             one with all), PTQ-EE and DQ-EE, PRUNE-EE for a pruned model; every variant measured, then shown as \
             the study's tables. Running it again on the same folder skips the finished steps.",
        );
        wizard.models.progress_ui(ui, "stop reading the models (type a path instead)");
        ui.separator();
        egui::Grid::new("study-wizard-inputs").num_columns(2).show(ui, |ui| {
            path_row_ui(
                ui,
                "model (float ONNX)",
                "the float classifier every variant is made from",
                &mut wizard.model,
                &models,
                !busy,
            );
            path_row_ui(
                ui,
                "test dataset",
                "every variant is measured on it (accuracy, latency, exits)",
                &mut wizard.test,
                &datasets,
                !busy,
            );
            path_row_ui(
                ui,
                "training dataset",
                "the exit heads are trained on it",
                &mut wizard.train,
                &datasets,
                !busy,
            );
            path_row_ui(
                ui,
                "calibration dataset",
                "PTQ's activation ranges and the certified thresholds come from it",
                &mut wizard.calibration,
                &datasets,
                !busy,
            );
            path_row_ui(
                ui,
                "pruned model (optional)",
                "a pruned ONNX model of the same classifier, for PRUNE-EE",
                &mut wizard.pruned,
                &models,
                !busy,
            );
            path_row_ui(
                ui,
                "output folder",
                "variants, traces and the study's session are written here",
                &mut wizard.out,
                &[],
                !busy,
            );
        });
        ui.add_enabled_ui(!busy, |ui| {
            ui.horizontal_wrapped(|ui| {
                ui.label("measure on:");
                for (name, ticked) in &mut wizard.devices {
                    ui.checkbox(ticked, name.as_str()).on_hover_text("measure every variant on this device too");
                }
            });
            ui.horizontal_wrapped(|ui| {
                let label = ui.label("test samples per variant");
                ui.add_enabled(!wizard.all_samples, egui::DragValue::new(&mut wizard.test_limit).range(1..=1_000_000))
                    .labelled_by(label.id)
                    .on_hover_text("the first samples of the test dataset each variant runs on");
                ui.checkbox(&mut wizard.all_samples, "all").on_hover_text("every sample of the test dataset");
                ui.separator();
                let label = ui.label("epochs (most)");
                ui.add(egui::DragValue::new(&mut wizard.epochs).range(1..=1000))
                    .labelled_by(label.id)
                    .on_hover_text("passes over the training set per exit head at most");
                let label = ui.label("seed");
                ui.add(egui::DragValue::new(&mut wizard.seed))
                    .labelled_by(label.id)
                    .on_hover_text("seeds head training: the same seed trains the same heads");
                ui.radio_value(&mut wizard.mlp, false, "linear heads").on_hover_text("pooling and one linear layer");
                ui.radio_value(&mut wizard.mlp, true, "one hidden layer")
                    .on_hover_text("pooling, a hidden layer and a linear layer");
            });
        });
        ui.separator();
        wizard.work.progress_ui(ui, "finished steps are kept; the step in progress writes nothing");
        if !busy {
            if dirty {
                ui.weak("the study's session replaces the current one when it is done: save this one first");
            }
            if ui
                .button("Run the study")
                .on_hover_text("make, measure and tabulate every variant; can take minutes per variant")
                .clicked()
            {
                start = true;
            }
        }
        if !wizard.log.is_empty() {
            egui::ScrollArea::vertical().max_height(160.0).stick_to_bottom(true).show(ui, |ui| {
                for line in &wizard.log {
                    ui.small(line);
                }
            });
        }
        if let Some(session) = wizard.work.output() {
            ui.label(format!("done: opened {}", session.display()));
        }
        wizard.work.status_ui(ui);
    });
    if start {
        wizard.start(app, ctx);
    }
    if open {
        app.world.study_wizard = Some(wizard);
    }
}

/// Drains the workers (once per frame, from the app's logic): the session's models into the form (the wizard's
/// variant preselected), progress into the wizard; a finished study opens its session on the tables.
pub fn drain(app: &mut EdgescopeApp) {
    let Some(wizard) = app.world.study_wizard.as_mut() else { return };
    if wizard.models.drain().ended
        && wizard.model.is_empty()
        && let Some(models) = wizard.models.output()
        && let Some((_, path)) = models.iter().find(|(name, _)| Some(name) == wizard.preselect.as_ref())
    {
        wizard.model = path.clone();
    }
    let drained = wizard.work.drain();
    for event in drained.events {
        let line = event.line();
        let progress = match &event {
            StudyEvent::Checking(_) => Progress::share(0.0, line),
            StudyEvent::Started { step, steps, .. } => {
                wizard.log.push(line.clone());
                Progress::share((*step - 1) as f32 / *steps as f32, line)
            }
            StudyEvent::Progress { step, steps, fraction, .. } => {
                let done = fraction.unwrap_or(0.0).clamp(0.0, 1.0);
                Progress::share((*step as f32 - 1.0 + done) / *steps as f32, line)
            }
            StudyEvent::Skipped { step, steps, .. } | StudyEvent::Finished { step, steps, .. } => {
                wizard.log.push(line.clone());
                Progress::share(*step as f32 / *steps as f32, line)
            }
        };
        wizard.work.set_progress(progress);
    }
    if drained.ended
        && let Some(session) = wizard.work.output()
    {
        app.pending.push(Command::OpenSession(session.clone()));
        app.pending.push(Command::SelectTab(Tab::Compare));
    }
}
