//! "Add early exits…" on a single-graph variant (issue 10 part 4): the model's cut points with compute bars, the
//! positions and datasets to pick, head training on a named worker thread with progress and cancel; the chain it
//! writes joins the session and starts a trace run on this machine at once.

use std::path::PathBuf;

use crossbeam_channel::{Receiver, bounded};
use eframe::egui;

use super::world::THIS_MACHINE;
use super::{EdgescopeApp, World};
use crate::model::cuts::CutAnalysis;
use crate::optimize::exits_add::{AddExitsEvent, AddExitsRequest, add_exits};
use crate::optimize::heads::{HeadKind, TrainConfig};
use crate::runtime::CancelToken;

/// Progress messages kept in flight at most (older progress is dropped, the result never is).
const CHANNEL_CAPACITY: usize = 64;

/// What the worker reports.
enum WorkerMessage {
    Event(AddExitsEvent),
    Done(Result<(PathBuf, Vec<f64>, Box<crate::model::Variant>), String>),
}

/// Training in progress.
struct Worker {
    messages: Receiver<WorkerMessage>,
    cancel: CancelToken,
}

/// The dialog's state (runtime only, never saved).
pub struct ExitsDialog {
    variant: String,
    model: PathBuf,
    analysis: CutAnalysis,
    chosen: Vec<bool>,
    train: Option<String>,
    val: Option<String>,
    mlp: bool,
    epochs: usize,
    seed: u64,
    out: String,
    worker: Option<Worker>,
    progress: (f32, String),
    result: Option<Result<String, String>>,
}

impl ExitsDialog {
    /// Opens the dialog for a session variant: its cut points, the suggested ones ticked.
    pub fn open(world: &World, variant: &str) -> Result<Self, String> {
        let entry = world.session.variant(variant).ok_or_else(|| format!("no variant {variant:?} in the session"))?;
        if entry.segments != 1 {
            return Err(format!("{variant} is already an early-exit chain; add exits to a single-graph variant"));
        }
        // A manifest names its one segment's ONNX file.
        let opened = crate::model::Variant::open(&entry.path).map_err(|e| e.to_string())?;
        let model = opened.segments.first().map(|s| s.path.clone()).ok_or("the variant has no segment")?;
        let analysis = crate::optimize::cut_candidates(&model).map_err(|e| e.to_string())?;
        let mut chosen = vec![false; analysis.cuts.len()];
        for (_, index) in &analysis.suggested {
            chosen[*index] = true;
        }
        // A new folder beside the session file (else beside the model).
        let stem = model.file_stem().map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
        let folder = world.session_path.as_ref().and_then(|p| p.parent()).or_else(|| model.parent());
        let folder = folder.map(PathBuf::from).unwrap_or_default();
        let mut out = folder.join(format!("{stem}-exits"));
        let mut k = 2;
        while out.exists() {
            out = folder.join(format!("{stem}-exits-{k}"));
            k += 1;
        }
        let train = world.session.datasets.iter().map(|d| d.name.clone()).find(|n| n.contains("train"));
        Ok(Self {
            variant: variant.to_string(),
            model,
            analysis,
            chosen,
            train: train.or_else(|| world.session.datasets.first().map(|d| d.name.clone())),
            val: None,
            mlp: false,
            epochs: TrainConfig::default().epochs,
            seed: 0,
            out: out.display().to_string(),
            worker: None,
            progress: (0.0, String::new()),
            result: None,
        })
    }

    fn start(&mut self, world: &mut World, ctx: &egui::Context) {
        let dataset_path = |name: &Option<String>| {
            name.as_ref().and_then(|n| world.session.datasets.iter().find(|d| &d.name == n)).map(|d| d.path.clone())
        };
        let Some(train) = dataset_path(&self.train) else {
            self.result = Some(Err("choose a training dataset (add one with \"Add files…\")".into()));
            return;
        };
        let at: Vec<String> = self
            .analysis
            .cuts
            .iter()
            .zip(&self.chosen)
            .filter(|(_, c)| **c)
            .map(|(cut, _)| cut.tensor.clone())
            .collect();
        if at.is_empty() {
            self.result = Some(Err("tick at least one exit position".into()));
            return;
        }
        let mut request = AddExitsRequest::new(self.model.clone(), at, train, PathBuf::from(self.out.trim()));
        request.val = dataset_path(&self.val);
        request.config = TrainConfig {
            kind: if self.mlp { HeadKind::Mlp { hidden: HeadKind::DEFAULT_HIDDEN } } else { HeadKind::Linear },
            epochs: self.epochs.max(1),
            seed: self.seed,
            ..TrainConfig::default()
        };
        request.base = Some(world.session.base_of(&self.variant).unwrap_or_else(|| self.variant.clone()));
        let (sender, messages) = bounded(CHANNEL_CAPACITY);
        let cancel = CancelToken::new();
        let worker_cancel = cancel.clone();
        let repaint = ctx.clone();
        let spawned = std::thread::Builder::new().name("edgescope-exits-add".into()).spawn(move || {
            let mut on_event = |event: AddExitsEvent| {
                let _ = sender.try_send(WorkerMessage::Event(event));
                repaint.request_repaint();
            };
            // The new chain is opened here too, so the UI thread only adds it.
            let result =
                add_exits(&request, &mut on_event, &worker_cancel).map_err(|e| e.to_string()).and_then(|outcome| {
                    let accuracies = outcome.exits.iter().map(|e| e.val_accuracy).collect();
                    let manifest = outcome.chain.manifest;
                    let variant = crate::model::Variant::open(&manifest).map_err(|e| e.to_string())?;
                    Ok((manifest, accuracies, Box::new(variant)))
                });
            let _ = sender.send(WorkerMessage::Done(result));
            repaint.request_repaint();
        });
        match spawned {
            Ok(_) => {
                self.worker = Some(Worker { messages, cancel });
                self.result = None;
                self.progress = (0.0, "starting".into());
            }
            Err(e) => self.result = Some(Err(format!("cannot start the training thread: {e}"))),
        }
    }
}

/// The "Add early exits…" button of a variant in the Models tab (single-graph variants only).
pub fn open_button_ui(ui: &mut egui::Ui, variant: &str, segments: usize, commands: &mut super::Commands<'_>) {
    if segments != 1 {
        return;
    }
    if ui.button("Add early exits…").on_hover_text("insert exits at cut points and train their heads").clicked() {
        commands.send(super::Command::OpenExitsDialog(variant.to_string()));
    }
}

/// Opens the dialog on `variant` (reads its model's cut points), or shows why it cannot.
pub fn open(world: &mut World, variant: &str) {
    match ExitsDialog::open(world, variant) {
        Ok(dialog) => world.exits_dialog = Some(dialog),
        Err(e) => world.error(e),
    }
}

/// Draws the dialog window, if open.
pub fn window_ui(ctx: &egui::Context, world: &mut World) {
    let Some(mut dialog) = world.exits_dialog.take() else { return };
    let mut open = true;
    let mut start = false;
    egui::Window::new(format!("Add early exits to {}", dialog.variant)).open(&mut open).resizable(true).show(
        ctx,
        |ui| {
            let busy = dialog.worker.is_some();
            ui.label(format!(
                "{} cut point(s); {:.1} M multiply-accumulates per sample in all. Tick where exits go:",
                dialog.analysis.cuts.len(),
                dialog.analysis.total_macs as f64 / 1e6
            ));
            egui::ScrollArea::vertical().max_height(260.0).show(ui, |ui| {
                for (index, cut) in dialog.analysis.cuts.iter().enumerate() {
                    ui.horizontal(|ui| {
                        ui.add_enabled(!busy, egui::Checkbox::new(&mut dialog.chosen[index], &cut.tensor));
                        ui.add(
                            egui::ProgressBar::new(cut.mac_share as f32)
                                .desired_width(120.0)
                                .text(format!("{:.1} % MACs", 100.0 * cut.mac_share)),
                        );
                        let suggested = dialog.analysis.suggested.iter().find(|(_, i)| *i == index);
                        if let Some((depth, _)) = suggested {
                            ui.strong(depth.name());
                        }
                        let shape = cut.shape.as_deref().map_or_else(|| "?".into(), crate::model::format_shape);
                        ui.label(format!("{shape}  after {}", cut.operator));
                    });
                }
            });
            ui.separator();
            let names: Vec<String> = world.session.datasets.iter().map(|d| d.name.clone()).collect();
            ui.add_enabled_ui(!busy, |ui| {
                egui::Grid::new("exits-add-settings").num_columns(2).show(ui, |ui| {
                    let label = ui.label("training set");
                    egui::ComboBox::from_id_salt("exits-add-train")
                        .selected_text(dialog.train.clone().unwrap_or_else(|| "choose…".into()))
                        .show_ui(ui, |ui| {
                            for name in &names {
                                ui.selectable_value(&mut dialog.train, Some(name.clone()), name);
                            }
                        })
                        .response
                        .labelled_by(label.id);
                    ui.end_row();
                    let label = ui.label("validation set");
                    egui::ComboBox::from_id_salt("exits-add-val")
                        .selected_text(dialog.val.clone().unwrap_or_else(|| "10 % of the training set".into()))
                        .show_ui(ui, |ui| {
                            ui.selectable_value(&mut dialog.val, None, "10 % of the training set");
                            for name in &names {
                                ui.selectable_value(&mut dialog.val, Some(name.clone()), name);
                            }
                        })
                        .response
                        .labelled_by(label.id);
                    ui.end_row();
                    ui.label("head");
                    ui.horizontal(|ui| {
                        ui.radio_value(&mut dialog.mlp, false, "linear");
                        ui.radio_value(&mut dialog.mlp, true, "one hidden layer");
                    });
                    ui.end_row();
                    let label = ui.label("epochs (most)");
                    ui.add(egui::DragValue::new(&mut dialog.epochs).range(1..=1000)).labelled_by(label.id);
                    ui.end_row();
                    let label = ui.label("seed");
                    ui.add(egui::DragValue::new(&mut dialog.seed)).labelled_by(label.id);
                    ui.end_row();
                    let label = ui.label("output folder");
                    ui.text_edit_singleline(&mut dialog.out).labelled_by(label.id);
                    ui.end_row();
                });
            });
            ui.separator();
            if busy {
                ui.add(egui::ProgressBar::new(dialog.progress.0).text(dialog.progress.1.clone()));
                if ui.button("Cancel").clicked()
                    && let Some(worker) = &dialog.worker
                {
                    worker.cancel.cancel();
                }
            } else if ui.button("Train and add").clicked() {
                start = true;
            }
            match &dialog.result {
                Some(Ok(text)) => {
                    ui.label(text);
                }
                Some(Err(text)) => {
                    ui.colored_label(ui.visuals().error_fg_color, text);
                }
                None => {}
            }
        },
    );
    if start {
        dialog.start(world, ctx);
    }
    if !open && let Some(worker) = &dialog.worker {
        // Closing the window cancels the training; nothing is written.
        worker.cancel.cancel();
    }
    if open || dialog.worker.is_some() {
        world.exits_dialog = Some(dialog);
    }
}

/// Drains the worker's messages (once per frame, from the app's logic): progress into the dialog; a finished chain
/// joins the session and its trace run starts on this machine with the run dataset.
pub fn drain(app: &mut EdgescopeApp) {
    let Some(dialog) = app.world.exits_dialog.as_mut() else { return };
    let Some(worker) = &dialog.worker else { return };
    let mut finished = None;
    while let Ok(message) = worker.messages.try_recv() {
        match message {
            WorkerMessage::Event(event) => {
                dialog.progress = match event {
                    AddExitsEvent::Placed { tensors } => (0.0, format!("{} exit(s) placed", tensors.len())),
                    AddExitsEvent::Features { set, done, total } => {
                        (0.5 * done as f32 / total.max(1) as f32, format!("{set} features {done}/{total}"))
                    }
                    AddExitsEvent::Epoch { exit, report } => (
                        0.5 + 0.5 * report.epoch as f32 / report.epochs.max(1) as f32,
                        format!(
                            "exit {}: epoch {}/{}, validation {:.2} %",
                            exit + 1,
                            report.epoch,
                            report.epochs,
                            100.0 * report.val_accuracy
                        ),
                    ),
                    AddExitsEvent::HeadTrained { exit, val_accuracy } => {
                        (1.0, format!("exit {} trained: {:.2} %", exit + 1, 100.0 * val_accuracy))
                    }
                    AddExitsEvent::Writing => (1.0, "writing the chain".into()),
                }
            }
            WorkerMessage::Done(result) => finished = Some(result),
        }
    }
    let Some(result) = finished else { return };
    dialog.worker = None;
    match result {
        Err(e) => dialog.result = Some(Err(e)),
        Ok((manifest, accuracies, variant)) => {
            let accuracies: Vec<String> = accuracies.iter().map(|a| format!("{:.2} %", 100.0 * a)).collect();
            dialog.result =
                Some(Ok(format!("wrote {}; validation accuracy {}", manifest.display(), accuracies.join(" / "))));
            app.add_opened(&manifest, super::loader::OpenedFile::Variant(variant));
            let name = app.world.session.variants.iter().find(|v| v.path == manifest).map(|v| v.name.clone());
            match (name, app.world.run_dataset.clone()) {
                (Some(variant), Some(dataset)) => {
                    app.apply(super::Command::RunVariant { variant, dataset, device: THIS_MACHINE.into() })
                }
                (Some(name), None) => {
                    app.world.notice = Some(format!("added {name}; choose a dataset in Runs to measure it"));
                }
                (None, _) => {}
            }
        }
    }
}
