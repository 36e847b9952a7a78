//! "Add early exits…" on a single-graph variant (issue 10 part 4): the model's cut points with compute bars, the
//! positions and datasets to pick, head training on a named worker thread with progress and cancel; the chain it
//! writes joins the session and starts a trace run on this machine at once.

use std::path::PathBuf;

use eframe::egui;

use super::worker::{DialogTask, Progress};
use super::{EdgescopeApp, World};
use crate::model::cuts::CutAnalysis;
use crate::optimize::exits_add::{AddExitsEvent, AddExitsRequest, add_exits};
use crate::optimize::heads::{HeadKind, TrainConfig};

/// The model's cut points, read on a worker when the dialog opens.
struct Inspection {
    /// The one ONNX file of the variant.
    model: PathBuf,
    analysis: CutAnalysis,
    /// A new output folder beside the session file (else beside the model).
    out: String,
}

/// What a finished training reports.
struct Trained {
    manifest: PathBuf,
    /// Validation accuracy per exit, 0 to 1.
    accuracies: Vec<f64>,
    /// The new chain, opened on the worker so the UI thread only adds it (taken when it joins the session).
    variant: Option<Box<crate::model::Variant>>,
}

/// The dialog's state (runtime only, never saved).
pub struct ExitsDialog {
    variant: String,
    inspection: DialogTask<(), Inspection>,
    chosen: Vec<bool>,
    train: Option<String>,
    val: Option<String>,
    mlp: bool,
    epochs: usize,
    seed: u64,
    out: String,
    training: DialogTask<AddExitsEvent, Trained>,
}

/// Reads the cut points of the variant at `path` (a manifest or an ONNX file) and picks a new output folder
/// beside `session_folder` (else beside the model). Runs on the inspection worker.
fn inspect(path: &std::path::Path, session_folder: Option<PathBuf>) -> Result<Inspection, String> {
    // A manifest names its one segment's ONNX file.
    let opened = crate::model::Variant::open(path).map_err(|e| e.to_string())?;
    let model = opened.segments.first().map(|s| s.path.clone()).ok_or("the variant has no segment")?;
    let analysis = crate::optimize::cut_candidates(&model).map_err(|e| e.to_string())?;
    let stem = model.file_stem().map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    let folder = session_folder.or_else(|| model.parent().map(PathBuf::from)).unwrap_or_default();
    let mut out = folder.join(format!("{stem}-exits"));
    let mut k = 2;
    while out.exists() {
        out = folder.join(format!("{stem}-exits-{k}"));
        k += 1;
    }
    Ok(Inspection { model, analysis, out: out.display().to_string() })
}

impl ExitsDialog {
    /// Opens the dialog for a session variant; its cut points are read on a worker (the window shows a spinner).
    pub fn open(world: &World, variant: &str, ctx: &egui::Context) -> Result<Self, String> {
        let entry = world.session.variant(variant).ok_or_else(|| format!("no variant {variant:?} in the session"))?;
        if entry.segments != 1 {
            return Err(format!("{variant} is already an early-exit chain; add exits to a single-graph variant"));
        }
        let path = entry.path.clone();
        let session_folder = world.session_path.as_ref().and_then(|p| p.parent()).map(PathBuf::from);
        let mut inspection = DialogTask::default();
        inspection.start("exits-inspect", ctx, move |_, _| inspect(&path, session_folder));
        inspection.set_progress(Progress::count(0, 0, "reading the model's cut points…"));
        let train = world.session.datasets.iter().map(|d| d.name.clone()).find(|n| n.contains("train"));
        Ok(Self {
            variant: variant.to_string(),
            inspection,
            chosen: Vec::new(),
            train: train.or_else(|| world.session.datasets.first().map(|d| d.name.clone())),
            val: None,
            mlp: false,
            epochs: TrainConfig::default().epochs,
            seed: 0,
            out: String::new(),
            training: DialogTask::default(),
        })
    }

    /// True while the cut points are read or heads are trained.
    pub fn is_busy(&self) -> bool {
        self.inspection.is_running() || self.training.is_running()
    }

    fn start(&mut self, world: &World, ctx: &egui::Context) {
        let Some(inspection) = self.inspection.output() else { return };
        let dataset_path = |name: &Option<String>| {
            name.as_ref().and_then(|n| world.session.datasets.iter().find(|d| &d.name == n)).map(|d| d.path.clone())
        };
        let Some(train) = dataset_path(&self.train) else {
            return self.training.fail("choose a training dataset (add one with \"Add files…\")");
        };
        let at: Vec<String> = inspection
            .analysis
            .cuts
            .iter()
            .zip(&self.chosen)
            .filter(|(_, c)| **c)
            .map(|(cut, _)| cut.tensor.clone())
            .collect();
        if at.is_empty() {
            return self.training.fail("tick at least one exit position");
        }
        let mut request = AddExitsRequest::new(inspection.model.clone(), at, train, PathBuf::from(self.out.trim()));
        request.val = dataset_path(&self.val);
        request.config = TrainConfig {
            kind: if self.mlp { HeadKind::Mlp { hidden: HeadKind::DEFAULT_HIDDEN } } else { HeadKind::Linear },
            epochs: self.epochs.max(1),
            seed: self.seed,
            ..TrainConfig::default()
        };
        request.base = Some(world.session.base_of(&self.variant).unwrap_or_else(|| self.variant.clone()));
        self.training.start("exits-add", ctx, move |reporter, cancel| {
            let mut on_event = |event: AddExitsEvent| reporter.progress(event);
            let outcome = add_exits(&request, &mut on_event, cancel).map_err(|e| e.to_string())?;
            // The new chain is opened here too, so the UI thread only adds it.
            let accuracies = outcome.exits.iter().map(|e| e.val_accuracy).collect();
            let manifest = outcome.chain.manifest;
            let variant = crate::model::Variant::open(&manifest).map_err(|e| e.to_string())?;
            Ok(Trained { manifest, accuracies, variant: Some(Box::new(variant)) })
        });
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

/// Opens the dialog on `variant` (its model's cut points are read on a worker), or shows why it cannot.
pub fn open(world: &mut World, variant: &str, ctx: &egui::Context) {
    // Opening another would close this one, and closing cancels: a running training is not replaced.
    if world.exits_dialog.as_ref().is_some_and(|d| d.training.is_running()) {
        return world.error("exit heads are being trained; wait for them or cancel them in their window");
    }
    match ExitsDialog::open(world, variant, ctx) {
        Ok(dialog) => world.exits_dialog = Some(dialog),
        Err(e) => world.error(e),
    }
}

/// The cut points to tick, each with its share of the compute.
fn cuts_ui(ui: &mut egui::Ui, analysis: &CutAnalysis, chosen: &mut [bool], enabled: bool) {
    ui.label(format!(
        "{} cut point(s); {:.1} M multiply-accumulates per sample in all. Tick where exits go:",
        analysis.cuts.len(),
        analysis.total_macs as f64 / 1e6
    ))
    .on_hover_text("a cut point is a tensor every path from the image to the output passes through");
    egui::ScrollArea::vertical().max_height(260.0).show(ui, |ui| {
        for ((index, cut), chosen) in analysis.cuts.iter().enumerate().zip(chosen.iter_mut()) {
            ui.horizontal(|ui| {
                ui.add_enabled(enabled, egui::Checkbox::new(chosen, &cut.tensor))
                    .on_hover_text("put an exit (a small classifier head) on this tensor");
                ui.add(
                    egui::ProgressBar::new(cut.mac_share as f32)
                        .desired_width(120.0)
                        .text(format!("{:.1} % MACs", 100.0 * cut.mac_share)),
                )
                .on_hover_text("share of the model's multiply-accumulates computed before this point");
                let suggested = analysis.suggested.iter().find(|(_, i)| *i == index);
                if let Some((depth, _)) = suggested {
                    ui.strong(depth.name()).on_hover_text("suggested: early, middle and late by compute share");
                }
                let shape = cut.shape.as_deref().map_or_else(|| "?".into(), crate::model::format_shape);
                ui.label(format!("{shape}  after {}", cut.operator)).on_hover_text("tensor shape and its producer");
            });
        }
    });
}

/// The training settings: datasets, head, epochs, seed, output folder.
fn settings_ui(ui: &mut egui::Ui, world: &World, dialog: &mut ExitsDialog) {
    let names: Vec<String> = world.session.datasets.iter().map(|d| d.name.clone()).collect();
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
            .labelled_by(label.id)
            .on_hover_text("the heads learn from the backbone's features on these samples (labels needed)");
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
            .labelled_by(label.id)
            .on_hover_text("stops training when its accuracy stops improving; its top-1 is reported per exit");
        ui.end_row();
        ui.label("head");
        ui.horizontal(|ui| {
            ui.radio_value(&mut dialog.mlp, false, "linear").on_hover_text("pooling and one linear layer: cheapest");
            ui.radio_value(&mut dialog.mlp, true, "one hidden layer")
                .on_hover_text("pooling, a hidden layer and a linear layer: more accurate, more compute per exit");
        });
        ui.end_row();
        let label = ui.label("epochs (most)");
        ui.add(egui::DragValue::new(&mut dialog.epochs).range(1..=1000))
            .labelled_by(label.id)
            .on_hover_text("passes over the training set at most (training stops early when validation stalls)");
        ui.end_row();
        let label = ui.label("seed");
        ui.add(egui::DragValue::new(&mut dialog.seed))
            .labelled_by(label.id)
            .on_hover_text("seeds initialisation and shuffling: the same seed trains the same heads");
        ui.end_row();
        let label = ui.label("output folder");
        ui.text_edit_singleline(&mut dialog.out)
            .labelled_by(label.id)
            .on_hover_text("a new folder for the chain's segments, heads and manifest");
        ui.end_row();
    });
}

/// Draws the dialog window, if open. Closing it drops the dialog, which cancels its work (nothing is written).
pub fn window_ui(ctx: &egui::Context, world: &mut World) {
    let Some(mut dialog) = world.exits_dialog.take() else { return };
    let mut open = true;
    let mut start = false;
    egui::Window::new(format!("Add early exits to {}", dialog.variant)).open(&mut open).resizable(true).show(
        ctx,
        |ui| {
            let busy = dialog.training.is_running();
            dialog.inspection.progress_ui(ui, "stop reading the model");
            dialog.inspection.status_ui(ui);
            let Some(inspection) = dialog.inspection.output() else { return };
            cuts_ui(ui, &inspection.analysis, &mut dialog.chosen, !busy);
            ui.separator();
            ui.add_enabled_ui(!busy, |ui| settings_ui(ui, world, &mut dialog));
            ui.separator();
            dialog.training.progress_ui(ui, "stop training; nothing is written");
            if !busy
                && ui
                    .button("Train and add")
                    .on_hover_text("train a head per ticked exit, write the chain, add it and measure it here")
                    .clicked()
            {
                start = true;
            }
            if let Some(trained) = dialog.training.output() {
                let accuracies: Vec<String> =
                    trained.accuracies.iter().map(|a| format!("{:.2} %", 100.0 * a)).collect();
                ui.label(format!(
                    "wrote {}; validation accuracy {}",
                    trained.manifest.display(),
                    accuracies.join(" / ")
                ));
            }
            dialog.training.status_ui(ui);
        },
    );
    if start {
        dialog.start(world, ctx);
    }
    if open {
        world.exits_dialog = Some(dialog);
    }
}

/// The progress line of a training event.
fn progress_of(event: &AddExitsEvent) -> Progress {
    match event {
        AddExitsEvent::Placed { tensors } => Progress::share(0.0, format!("{} exit(s) placed", tensors.len())),
        AddExitsEvent::Features { set, done, total } => {
            Progress::share(0.5 * *done as f32 / (*total).max(1) as f32, format!("{set} features {done}/{total}"))
        }
        AddExitsEvent::Epoch { exit, report } => Progress::share(
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
            Progress::share(1.0, format!("exit {} trained: {:.2} %", exit + 1, 100.0 * val_accuracy))
        }
        AddExitsEvent::Writing => Progress::share(1.0, "writing the chain"),
    }
}

/// Drains the workers (once per frame, from the app's logic): the cut points into the form (suggested ones
/// ticked), progress into the dialog; a finished chain joins the session and its trace run starts on this machine
/// with the run dataset.
pub fn drain(app: &mut EdgescopeApp) {
    let Some(dialog) = app.world.exits_dialog.as_mut() else { return };
    if dialog.inspection.drain().ended
        && let Some(inspection) = dialog.inspection.output()
    {
        dialog.chosen = vec![false; inspection.analysis.cuts.len()];
        for (_, index) in &inspection.analysis.suggested {
            if let Some(chosen) = dialog.chosen.get_mut(*index) {
                *chosen = true;
            }
        }
        dialog.out = inspection.out.clone();
    }
    if !dialog.training.drain_progress(progress_of) {
        return;
    }
    let Some(trained) = dialog.training.output_mut() else { return };
    let manifest = trained.manifest.clone();
    let Some(variant) = trained.variant.take() else { return };
    app.add_and_measure(&manifest, variant);
}
