//! "Study on a model…" (issue 10 part 6): pick a float classifier, the test / training / calibration datasets
//! (the session's or files), the devices and an output folder; the study ([`crate::optimize::study`]) runs on a
//! named worker thread with a bounded channel, its progress shown across all steps, with cancel; at the end the
//! session it wrote opens on the study's tables (Compare tab) and Explore.

use std::path::PathBuf;

use crossbeam_channel::{Receiver, Sender, bounded};
use eframe::egui;

use super::world::THIS_MACHINE;
use super::{Command, EdgescopeApp, Tab, World};
use crate::optimize::study::{
    DEFAULT_EPOCHS, DEFAULT_TEST_LIMIT, StudyDevice, StudyEvent, StudyOptions, StudyRequest, run_study,
};
use crate::runtime::{CancelToken, IsolatedRunner, LocalRunner, Runner};

/// Messages kept in flight at most (progress beyond that is dropped; step lines and the result never are).
const CHANNEL_CAPACITY: usize = 64;

/// What the worker reports.
enum WorkerMessage {
    Event(StudyEvent),
    Done(Result<PathBuf, String>),
}

/// The study in progress.
struct Worker {
    messages: Receiver<WorkerMessage>,
    cancel: CancelToken,
}

/// The wizard's state (runtime only, never saved).
pub struct StudyWizard {
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
    worker: Option<Worker>,
    /// Share of the whole study done, and the current line.
    progress: (f32, String),
    /// Step lines so far.
    log: Vec<String>,
    result: Option<Result<String, String>>,
}

impl StudyWizard {
    /// Opens the wizard, `variant` (a single-graph session variant) preselected as the model.
    pub fn open(world: &World, variant: Option<&str>) -> Self {
        let model = variant
            .and_then(|name| world.session.variant(name))
            .and_then(|entry| crate::model::Variant::open(&entry.path).ok())
            .filter(|v| v.segments.len() == 1)
            .and_then(|v| v.segments.first().map(|s| s.path.display().to_string()))
            .unwrap_or_default();
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
            model,
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
            worker: None,
            progress: (0.0, String::new()),
            log: Vec::new(),
            result: None,
        }
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
            Err(e) => return self.result = Some(Err(e)),
        };
        let mut devices = Vec::new();
        for (name, _) in self.devices.iter().filter(|(_, ticked)| *ticked) {
            let runner: Box<dyn Runner + Send> = if name == THIS_MACHINE {
                match &app.child_executable {
                    Some(executable) => Box::new(IsolatedRunner::new(executable.clone())),
                    None => Box::new(LocalRunner::new()),
                }
            } else {
                let Some(config) = app.world.devices.iter().find(|d| &d.name == name) else {
                    return self.result = Some(Err(format!("no device called {name} is configured")));
                };
                match crate::net::protocol::read_token(&config.token_file) {
                    Ok(token) => Box::new(crate::net::RemoteRunner::new(&config.address, token)),
                    Err(e) => return self.result = Some(Err(format!("{name}: {e}"))),
                }
            };
            devices.push(StudyDevice { name: name.clone(), runner });
        }
        if devices.is_empty() {
            return self.result = Some(Err("tick at least one device to measure on".into()));
        }
        let (sender, messages): (Sender<WorkerMessage>, _) = bounded(CHANNEL_CAPACITY);
        let cancel = CancelToken::new();
        let worker_cancel = cancel.clone();
        let repaint = ctx.clone();
        let spawned = std::thread::Builder::new().name("edgescope-study".into()).spawn(move || {
            let mut on_event = |event: StudyEvent| {
                if matches!(event, StudyEvent::Progress { .. }) {
                    let _ = sender.try_send(WorkerMessage::Event(event));
                } else {
                    let _ = sender.send(WorkerMessage::Event(event));
                }
                repaint.request_repaint();
            };
            let result = run_study(&request, &mut devices, &mut on_event, &worker_cancel)
                .map(|outcome| outcome.session)
                .map_err(|e| e.to_string());
            let _ = sender.send(WorkerMessage::Done(result));
            repaint.request_repaint();
        });
        match spawned {
            Ok(_) => {
                self.worker = Some(Worker { messages, cancel });
                self.result = None;
                self.log.clear();
                self.progress = (0.0, "starting".into());
            }
            Err(e) => self.result = Some(Err(format!("cannot start the study thread: {e}"))),
        }
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
pub fn open(world: &mut World, variant: Option<&str>) {
    world.study_wizard = Some(StudyWizard::open(world, variant));
}

/// A path field with a menu of the session's entries (name -> path).
fn path_row_ui(ui: &mut egui::Ui, label: &str, value: &mut String, choices: &[(String, String)], enabled: bool) {
    let label = ui.label(label);
    ui.add_enabled_ui(enabled, |ui| {
        ui.horizontal(|ui| {
            ui.add(egui::TextEdit::singleline(value).desired_width(360.0)).labelled_by(label.id);
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

/// Draws the wizard window, if open.
pub fn window_ui(ctx: &egui::Context, app: &mut EdgescopeApp) {
    let Some(mut wizard) = app.world.study_wizard.take() else { return };
    // Devices: this machine and every configured remote runner.
    for device in &app.world.devices {
        if !wizard.devices.iter().any(|(n, _)| n == &device.name) {
            wizard.devices.push((device.name.clone(), false));
        }
    }
    let world = &app.world;
    let models: Vec<(String, String)> = world
        .session
        .variants
        .iter()
        .filter(|v| v.segments == 1 && !v.has_tag("ptq") && !v.has_tag("dq"))
        .filter_map(|v| {
            let opened = crate::model::Variant::open(&v.path).ok()?;
            Some((v.name.clone(), opened.segments.first()?.path.display().to_string()))
        })
        .collect();
    let datasets: Vec<(String, String)> =
        world.session.datasets.iter().map(|d| (d.name.clone(), d.path.display().to_string())).collect();
    let dirty = world.dirty;
    let mut open = true;
    let mut start = false;
    egui::Window::new("Study on a model").open(&mut open).resizable(true).show(ctx, |ui| {
        let busy = wizard.worker.is_some();
        ui.label(
            "From one float classifier: PTQ and DQ, exits at the early / middle / late cut points (one chain each and \
             one with all), PTQ-EE and DQ-EE, PRUNE-EE for a pruned model; every variant measured, then shown as \
             the study's tables. Running it again on the same folder skips the finished steps.",
        );
        ui.separator();
        egui::Grid::new("study-wizard-inputs").num_columns(2).show(ui, |ui| {
            path_row_ui(ui, "model (float ONNX)", &mut wizard.model, &models, !busy);
            path_row_ui(ui, "test dataset", &mut wizard.test, &datasets, !busy);
            path_row_ui(ui, "training dataset", &mut wizard.train, &datasets, !busy);
            path_row_ui(ui, "calibration dataset", &mut wizard.calibration, &datasets, !busy);
            path_row_ui(ui, "pruned model (optional)", &mut wizard.pruned, &models, !busy);
            path_row_ui(ui, "output folder", &mut wizard.out, &[], !busy);
        });
        ui.add_enabled_ui(!busy, |ui| {
            ui.horizontal_wrapped(|ui| {
                ui.label("measure on:");
                for (name, ticked) in &mut wizard.devices {
                    ui.checkbox(ticked, name.as_str());
                }
            });
            ui.horizontal_wrapped(|ui| {
                let label = ui.label("test samples per variant");
                ui.add_enabled(!wizard.all_samples, egui::DragValue::new(&mut wizard.test_limit).range(1..=1_000_000))
                    .labelled_by(label.id);
                ui.checkbox(&mut wizard.all_samples, "all");
                ui.separator();
                let label = ui.label("epochs (most)");
                ui.add(egui::DragValue::new(&mut wizard.epochs).range(1..=1000)).labelled_by(label.id);
                let label = ui.label("seed");
                ui.add(egui::DragValue::new(&mut wizard.seed)).labelled_by(label.id);
                ui.radio_value(&mut wizard.mlp, false, "linear heads");
                ui.radio_value(&mut wizard.mlp, true, "one hidden layer");
            });
        });
        ui.separator();
        if busy {
            ui.add(egui::ProgressBar::new(wizard.progress.0).text(wizard.progress.1.clone()));
            if ui
                .button("Cancel")
                .on_hover_text("finished steps are kept; the step in progress writes nothing")
                .clicked()
                && let Some(worker) = &wizard.worker
            {
                worker.cancel.cancel();
            }
        } else {
            if dirty {
                ui.weak("the study's session replaces the current one when it is done: save this one first");
            }
            if ui.button("Run the study").clicked() {
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
        match &wizard.result {
            Some(Ok(text)) => {
                ui.label(text);
            }
            Some(Err(text)) => {
                ui.colored_label(ui.visuals().error_fg_color, text);
            }
            None => {}
        }
    });
    if start {
        wizard.start(app, ctx);
    }
    if !open && let Some(worker) = &wizard.worker {
        // Closing the window cancels the study; the finished steps stay on disk.
        worker.cancel.cancel();
    }
    if open || wizard.worker.is_some() {
        app.world.study_wizard = Some(wizard);
    }
}

/// Drains the worker's messages (once per frame, from the app's logic): progress into the wizard; a finished
/// study opens its session on the tables.
pub fn drain(app: &mut EdgescopeApp) {
    let Some(wizard) = app.world.study_wizard.as_mut() else { return };
    let Some(worker) = &wizard.worker else { return };
    let mut finished = None;
    while let Ok(message) = worker.messages.try_recv() {
        match message {
            WorkerMessage::Event(event) => {
                let line = event.line();
                match &event {
                    StudyEvent::Checking(_) => wizard.progress = (0.0, line),
                    StudyEvent::Started { step, steps, .. } => {
                        wizard.progress = ((*step - 1) as f32 / *steps as f32, line.clone());
                        wizard.log.push(line);
                    }
                    StudyEvent::Progress { step, steps, fraction, .. } => {
                        let done = fraction.unwrap_or(0.0).clamp(0.0, 1.0);
                        wizard.progress = ((*step as f32 - 1.0 + done) / *steps as f32, line);
                    }
                    StudyEvent::Skipped { step, steps, .. } | StudyEvent::Finished { step, steps, .. } => {
                        wizard.progress = (*step as f32 / *steps as f32, line.clone());
                        wizard.log.push(line);
                    }
                }
            }
            WorkerMessage::Done(result) => finished = Some(result),
        }
    }
    let Some(result) = finished else { return };
    wizard.worker = None;
    match result {
        Err(e) => wizard.result = Some(Err(e)),
        Ok(session) => {
            wizard.result = Some(Ok(format!("done: opened {}", session.display())));
            app.pending.push(Command::OpenSession(session));
            app.pending.push(Command::SelectTab(Tab::Compare));
        }
    }
}
