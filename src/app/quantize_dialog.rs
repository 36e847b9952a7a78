//! "Quantize…" on a variant (issue 11 part 2): the options of `edgescope quantize` — PTQ or DQ, per-channel, op
//! types, activation and weight types, calibration method and dataset, an optional accuracy budget — run on a
//! named worker thread with progress and cancel; the variant it writes joins the session (and its trace run
//! starts on this machine when a run dataset is chosen), and the dialog lists the operators left in float and why.

use std::path::PathBuf;

use eframe::egui;

use super::worker::{DialogTask, Progress};
use super::{EdgescopeApp, World};
use crate::optimize::quantize::{
    Budget, CalibrationMethod, Method, QuantType, QuantizeEvent, QuantizeOptions, QuantizeRequest, quantize_to_disk,
    run::default_name,
};

/// What a finished quantization reports to the dialog.
struct Finished {
    manifest: PathBuf,
    /// The float ONNX file and the quantized one (single-graph PTQ only: what the sensitivity view compares).
    pair: Option<(PathBuf, PathBuf)>,
    /// The new variant, opened on the worker so the UI thread only adds it (taken when it joins the session).
    variant: Option<Box<crate::model::Variant>>,
    float_nodes: Vec<(String, String)>,
    quantized_nodes: usize,
    summary: String,
}

/// The quantization windows' state (runtime only, never saved): the dialog and the sensitivity chart.
#[derive(Default)]
pub struct QuantizeWindows {
    /// The "Quantize…" dialog, when open.
    pub dialog: Option<QuantizeDialog>,
    /// The sensitivity chart, when open.
    pub sensitivity: Option<super::sensitivity_view::SensitivityView>,
}

/// The dialog's state.
pub struct QuantizeDialog {
    variant: String,
    model: PathBuf,
    segments: usize,
    method: Method,
    per_channel: bool,
    op_types: String,
    /// Node names left float (`--exclude`), comma-separated.
    exclude: String,
    /// Op types whose outputs stay float (`--keep-output-float`), comma-separated.
    keep_output_float: String,
    activation_type: QuantType,
    weight_type: QuantType,
    calibrate: &'static str,
    calibration: Option<String>,
    calibration_limit: usize,
    budget: bool,
    max_drop_pp: f64,
    validation: Option<String>,
    validation_limit: usize,
    name: String,
    /// The name is the default (follows the method) until the user edits it.
    auto_name: bool,
    out: String,
    /// The folder new outputs go in, and the source's file stem.
    out_parent: PathBuf,
    stem: String,
    /// The output folder is the default (a new one per run) until the user edits it.
    auto_out: bool,
    work: DialogTask<QuantizeEvent, Finished>,
}

/// A name no session variant has: `wanted`, else `wanted-2`, `wanted-3`, ...
fn unused_name(world: &World, wanted: &str) -> String {
    let mut name = wanted.to_string();
    let mut k = 2;
    while world.session.variant(&name).is_some() {
        name = format!("{wanted}-{k}");
        k += 1;
    }
    name
}

impl QuantizeDialog {
    /// Opens the dialog for a session variant with ORT's PTQ defaults (the study's uint8 activations).
    pub fn open(world: &World, variant: &str) -> Result<Self, String> {
        let entry = world.session.variant(variant).ok_or_else(|| format!("no variant {variant:?} in the session"))?;
        if entry.tags.iter().any(|t| t == "ptq" || t == "dq") {
            return Err(format!("{variant} is quantized already; quantize the float variant it was made from"));
        }
        let stem = entry.path.file_stem().map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
        // New folders beside the session file (else beside the model).
        let folder = world.session_path.as_ref().and_then(|p| p.parent()).or_else(|| entry.path.parent());
        let out_parent = folder.map(PathBuf::from).unwrap_or_default();
        let calibration = world
            .session
            .datasets
            .iter()
            .map(|d| d.name.clone())
            .find(|n| world.is_calibration(n) || n.contains("calib"))
            .or_else(|| world.session.datasets.first().map(|d| d.name.clone()));
        let options = QuantizeOptions::ptq();
        let mut dialog = Self {
            variant: variant.to_string(),
            model: entry.path.clone(),
            segments: entry.segments,
            method: Method::Ptq,
            per_channel: true,
            op_types: String::new(),
            exclude: String::new(),
            keep_output_float: String::new(),
            activation_type: options.activation_type,
            weight_type: options.weight_type,
            calibrate: "minmax",
            calibration,
            calibration_limit: 0,
            budget: false,
            max_drop_pp: 1.0,
            validation: None,
            validation_limit: 0,
            name: String::new(),
            auto_name: true,
            out: String::new(),
            out_parent,
            stem,
            auto_out: true,
            work: DialogTask::default(),
        };
        dialog.refresh_defaults(world);
        Ok(dialog)
    }

    /// True while quantizing.
    pub fn is_busy(&self) -> bool {
        self.work.is_running()
    }

    /// Sets the default name and output folder (unused ones), where the user has not typed their own.
    fn refresh_defaults(&mut self, world: &World) {
        if self.auto_name {
            self.name = unused_name(world, &default_name(&self.variant, self.method));
        }
        if self.auto_out {
            let mut out = self.out_parent.join(format!("{}-{}", self.stem, self.method.name()));
            let mut k = 2;
            while out.exists() {
                out = self.out_parent.join(format!("{}-{}-{k}", self.stem, self.method.name()));
                k += 1;
            }
            self.out = out.display().to_string();
        }
    }

    fn set_method(&mut self, world: &World, method: Method) {
        if self.method == method {
            return;
        }
        self.method = method;
        let defaults = if method == Method::Ptq { QuantizeOptions::ptq() } else { QuantizeOptions::dq() };
        self.weight_type = defaults.weight_type;
        self.activation_type = defaults.activation_type;
        self.per_channel = method == Method::Ptq;
        self.refresh_defaults(world);
    }

    fn request(&self, world: &World) -> Result<QuantizeRequest, String> {
        let dataset_path = |name: &Option<String>| {
            name.as_ref().and_then(|n| world.session.datasets.iter().find(|d| &d.name == n)).map(|d| d.path.clone())
        };
        let mut options = if self.method == Method::Ptq { QuantizeOptions::ptq() } else { QuantizeOptions::dq() };
        options.per_channel = self.per_channel;
        let list = |text: &str| -> Vec<String> {
            text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
        };
        let ops = list(&self.op_types);
        options.op_types = (!ops.is_empty()).then_some(ops);
        options.exclude = list(&self.exclude);
        if self.method == Method::Ptq {
            options.keep_output_float = list(&self.keep_output_float);
        }
        options.activation_type = self.activation_type;
        options.weight_type = self.weight_type;
        options.calibrate = CalibrationMethod::parse(self.calibrate)?;
        let calibration = dataset_path(&self.calibration);
        if self.method == Method::Ptq && calibration.is_none() {
            return Err("choose a calibration dataset (add one with \"Add files…\")".into());
        }
        let budget = if self.budget && self.method == Method::Ptq {
            let validation = dataset_path(&self.validation)
                .ok_or("choose a validation dataset for the accuracy budget (or untick it)")?;
            Some(Budget {
                max_drop_pp: self.max_drop_pp,
                validation,
                limit: (self.validation_limit > 0).then_some(self.validation_limit),
                max_nodes: 20,
            })
        } else {
            None
        };
        let name = self.name.trim();
        if name.is_empty() {
            return Err("name the new variant".into());
        }
        if world.session.variant(name).is_some() {
            return Err(format!("the session has a variant called {name} already; choose another name"));
        }
        Ok(QuantizeRequest {
            model: self.model.clone(),
            options,
            calibration,
            calibration_limit: (self.calibration_limit > 0).then_some(self.calibration_limit),
            out: PathBuf::from(self.out.trim()),
            name: Some(name.to_string()),
            threads: 0,
            budget,
        })
    }

    fn start(&mut self, world: &World, ctx: &egui::Context) {
        let request = match self.request(world) {
            Ok(r) => r,
            Err(e) => return self.work.fail(e),
        };
        self.work.start("quantize", ctx, move |reporter, cancel| {
            let mut on_event = |event: QuantizeEvent| reporter.progress(event);
            let outcome = quantize_to_disk(&request, &mut on_event, cancel).map_err(|e| e.to_string())?;
            let single = outcome.segments.len() == 1 && request.options.method == Method::Ptq;
            let pair = single.then(|| outcome.segments.first().map(|s| (s.source.clone(), s.file.clone()))).flatten();
            let mut float_nodes = Vec::new();
            for (k, segment) in outcome.segments.iter().enumerate() {
                for (node, why) in &segment.float_nodes {
                    let label =
                        if outcome.segments.len() > 1 { format!("segment {}: {node}", k + 1) } else { node.clone() };
                    float_nodes.push((label, why.clone()));
                }
            }
            let quantized_nodes = outcome.segments.iter().map(|s| s.quantized_nodes.len()).sum();
            let budget = outcome.budget.as_ref().and_then(|b| Some((b, b.steps.last()?))).map_or_else(
                String::new,
                |(b, last)| {
                    format!(
                        "; accuracy budget: float top-1 {:.2} %, quantized {:.2} %{}",
                        b.float_top1_percent,
                        last.top1_percent,
                        if b.within_budget { "" } else { " (budget not reached)" }
                    )
                },
            );
            Ok(Finished {
                summary: format!(
                    "wrote {} ({} node(s) quantized, {} left in float{}){budget}",
                    outcome.manifest.display(),
                    quantized_nodes,
                    float_nodes.len(),
                    if outcome.calibration_samples > 0 {
                        format!(", {} calibration samples", outcome.calibration_samples)
                    } else {
                        String::new()
                    }
                ),
                manifest: outcome.manifest,
                variant: Some(Box::new(outcome.variant)),
                pair,
                float_nodes,
                quantized_nodes,
            })
        });
    }
}

/// The "Quantize…" button of a float variant in the Models tab (and "Sensitivity…" on a single-graph PTQ variant
/// whose base is in the session).
pub fn open_button_ui(ui: &mut egui::Ui, world: &World, variant: &str, commands: &mut super::Commands<'_>) {
    let Some(entry) = world.session.variant(variant) else { return };
    let quantized = entry.tags.iter().any(|t| t == "ptq" || t == "dq");
    if !quantized {
        if ui.button("Quantize…").on_hover_text("PTQ or DQ with ONNX Runtime's arithmetic, in edgescope").clicked() {
            commands.send(super::Command::OpenQuantizeDialog(variant.to_string()));
        }
        return;
    }
    if entry.tags.iter().any(|t| t == "ptq") && entry.segments == 1 {
        let base = world.session.base_of(variant);
        let pair = base.as_deref().and_then(|b| world.session.variant(b)).filter(|b| b.segments == 1);
        if pair.is_some()
            && ui.button("Sensitivity…").on_hover_text("quantization noise per tensor, worst first").clicked()
        {
            commands.send(super::Command::OpenSensitivity(variant.to_string()));
        }
    }
}

/// Opens the "Quantize…" dialog on a variant, or shows why it cannot.
pub fn open(world: &mut World, variant: &str) {
    // Opening another would close this one, and closing cancels: a running quantization is not replaced.
    if world.quantize.dialog.as_ref().is_some_and(QuantizeDialog::is_busy) {
        return world.error("a quantization is running; wait for it or cancel it in its window");
    }
    match QuantizeDialog::open(world, variant) {
        Ok(dialog) => world.quantize.dialog = Some(dialog),
        Err(e) => world.error(e),
    }
}

/// Opens the sensitivity chart of a single-graph PTQ variant against its float base.
pub fn open_sensitivity(world: &mut World, variant: &str) {
    if world.quantize.sensitivity.as_ref().is_some_and(super::sensitivity_view::SensitivityView::is_busy) {
        return world.error("a sensitivity measurement is running; wait for it or cancel it in its window");
    }
    let Some(entry) = world.session.variant(variant) else { return };
    let base = world.session.base_of(variant);
    let Some(base) = base.as_deref().and_then(|b| world.session.variant(b)) else {
        return world.error(format!("{variant} has no float base in the session to compare with"));
    };
    let (float, quantized) = (base.path.clone(), entry.path.clone());
    world.quantize.sensitivity = Some(super::sensitivity_view::SensitivityView::open(world, &float, &quantized));
}

fn dataset_combo_ui(ui: &mut egui::Ui, id: &str, label: &str, names: &[String], chosen: &mut Option<String>) {
    let hover = if label.starts_with("calibration") {
        "samples the activation ranges are measured on (no labels needed)"
    } else {
        "labelled samples the top-1 drop is measured on"
    };
    let label = ui.label(label).on_hover_text(hover);
    egui::ComboBox::from_id_salt(id)
        .selected_text(chosen.clone().unwrap_or_else(|| "choose…".into()))
        .show_ui(ui, |ui| {
            for name in names {
                ui.selectable_value(chosen, Some(name.clone()), name);
            }
        })
        .response
        .labelled_by(label.id);
    ui.end_row();
}

fn options_ui(ui: &mut egui::Ui, world: &World, dialog: &mut QuantizeDialog) {
    let names: Vec<String> = world.session.datasets.iter().map(|d| d.name.clone()).collect();
    egui::Grid::new("quantize-settings").num_columns(2).show(ui, |ui| {
        ui.label("method");
        ui.horizontal(|ui| {
            let mut method = dialog.method;
            ui.radio_value(&mut method, Method::Ptq, "PTQ (static, QDQ)")
                .on_hover_text("weights and activations in 8 bits; activation ranges fixed from a calibration set");
            ui.radio_value(&mut method, Method::Dq, "DQ (dynamic)")
                .on_hover_text("weights in 8 bits; activation ranges computed per inference, no calibration");
            dialog.set_method(world, method);
        });
        ui.end_row();
        ui.label("weights");
        ui.horizontal(|ui| {
            ui.checkbox(&mut dialog.per_channel, "per channel")
                .on_hover_text("one scale per output channel instead of one per tensor: usually more accurate");
            for t in [QuantType::I8, QuantType::U8] {
                ui.radio_value(&mut dialog.weight_type, t, t.name()).on_hover_text("8-bit type of the weights");
            }
        });
        ui.end_row();
        if dialog.method == Method::Ptq {
            ui.label("activations");
            ui.horizontal(|ui| {
                for t in [QuantType::U8, QuantType::I8] {
                    ui.radio_value(&mut dialog.activation_type, t, t.name())
                        .on_hover_text("8-bit type of the activations");
                }
            });
            ui.end_row();
        }
        let label = ui.label("op types");
        ui.add(egui::TextEdit::singleline(&mut dialog.op_types).hint_text("all that ONNX Runtime quantizes"))
            .on_hover_text("comma-separated, e.g. Conv,Gemm,MatMul")
            .labelled_by(label.id);
        ui.end_row();
        let label = ui.label("nodes left float");
        ui.add(egui::TextEdit::singleline(&mut dialog.exclude).hint_text("none"))
            .on_hover_text("comma-separated node names (--exclude)")
            .labelled_by(label.id);
        ui.end_row();
        if dialog.method == Method::Ptq {
            let label = ui.label("outputs kept float");
            ui.add(egui::TextEdit::singleline(&mut dialog.keep_output_float).hint_text("e.g. Gemm, for float logits"))
                .on_hover_text("op types whose outputs stay float (--keep-output-float; the zoo recipe keeps Gemm)")
                .labelled_by(label.id);
            ui.end_row();
        }
        if dialog.method == Method::Ptq {
            ui.label("calibration");
            ui.horizontal(|ui| {
                for (name, text) in
                    [("minmax", "MinMax"), ("percentile", "Percentile 99.999 %"), ("entropy", "Entropy")]
                {
                    let hover = match name {
                        "minmax" => "ranges from the smallest and largest value seen",
                        "percentile" => "ranges clipped at the 99.999th percentile: outliers cost less",
                        _ => "ranges that keep the distribution's entropy (KL divergence): slowest",
                    };
                    ui.radio_value(&mut dialog.calibrate, name, text).on_hover_text(hover);
                }
            });
            ui.end_row();
            dataset_combo_ui(ui, "quantize-calibration", "calibration set", &names, &mut dialog.calibration);
            let label = ui.label("calibration samples");
            ui.add(
                egui::DragValue::new(&mut dialog.calibration_limit)
                    .range(0..=1_000_000)
                    .custom_formatter(|v, _| if v == 0.0 { "all".into() } else { format!("{v:.0}") }),
            )
            .labelled_by(label.id)
            .on_hover_text("how many calibration samples set the ranges; all = every one");
            ui.end_row();
            ui.label("accuracy budget");
            ui.horizontal(|ui| {
                ui.checkbox(&mut dialog.budget, "keep sensitive nodes float until the top-1 drop is at most")
                    .on_hover_text(
                        "measures top-1 on a validation set and leaves the noisiest nodes float (20 at most)",
                    );
                ui.add_enabled(
                    dialog.budget,
                    egui::DragValue::new(&mut dialog.max_drop_pp).range(0.0..=100.0).speed(0.05).suffix(" pp"),
                )
                .on_hover_text("the largest top-1 accuracy drop allowed, in percentage points");
            });
            ui.end_row();
            if dialog.budget {
                dataset_combo_ui(ui, "quantize-validation", "validation set", &names, &mut dialog.validation);
                let label = ui.label("validation samples");
                ui.add(
                    egui::DragValue::new(&mut dialog.validation_limit)
                        .range(0..=1_000_000)
                        .custom_formatter(|v, _| if v == 0.0 { "all".into() } else { format!("{v:.0}") }),
                )
                .labelled_by(label.id)
                .on_hover_text("how many validation samples measure the drop; all = every one");
                ui.end_row();
            }
        }
        let label = ui.label("variant name");
        if ui
            .text_edit_singleline(&mut dialog.name)
            .labelled_by(label.id)
            .on_hover_text("the new variant's name in the session (must be new)")
            .changed()
        {
            dialog.auto_name = false;
        }
        ui.end_row();
        let label = ui.label("output folder");
        if ui
            .text_edit_singleline(&mut dialog.out)
            .labelled_by(label.id)
            .on_hover_text("a new folder for the quantized model and its manifest")
            .changed()
        {
            dialog.auto_out = false;
        }
        ui.end_row();
    });
}

/// What a finished quantization shows: the summary, the Sensitivity button, the operators left in float.
fn finished_ui(ui: &mut egui::Ui, done: &Finished, sensitivity: &mut Option<(PathBuf, PathBuf)>) {
    ui.label(&done.summary);
    if let Some(pair) = &done.pair
        && ui.button("Sensitivity…").on_hover_text("quantization noise per tensor, worst first").clicked()
    {
        *sensitivity = Some(pair.clone());
    }
    if done.float_nodes.is_empty() {
        ui.label(format!("every one of the {} quantizable node(s) computes quantized", done.quantized_nodes));
        return;
    }
    ui.label(format!("left in float ({}):", done.float_nodes.len()))
        .on_hover_text("nodes ONNX Runtime computes in float in the written model, with the reason");
    egui::ScrollArea::vertical().id_salt("quantize-float-nodes").max_height(200.0).show(ui, |ui| {
        egui::Grid::new("quantize-float-list").num_columns(2).striped(true).show(ui, |ui| {
            for (node, why) in &done.float_nodes {
                ui.label(node);
                ui.weak(why);
                ui.end_row();
            }
        });
    });
}

/// Draws the dialog and the sensitivity chart, if open. Closing the dialog drops it, which cancels a running
/// quantization (nothing is written).
pub fn window_ui(ctx: &egui::Context, world: &mut World) {
    super::sensitivity_view::window_ui(ctx, world);
    let Some(mut dialog) = world.quantize.dialog.take() else { return };
    let mut open = true;
    let mut start = false;
    let mut sensitivity = None;
    egui::Window::new(format!("Quantize {}", dialog.variant)).open(&mut open).resizable(true).show(ctx, |ui| {
        let busy = dialog.work.is_running();
        if dialog.segments > 1 {
            ui.label(format!(
                "an early-exit chain of {} segments: each is quantized in turn, calibrated on what the quantized \
                 segments before it carry",
                dialog.segments
            ));
        }
        ui.add_enabled_ui(!busy, |ui| options_ui(ui, world, &mut dialog));
        ui.separator();
        dialog.work.progress_ui(ui, "stop quantizing; nothing is written");
        if !busy
            && ui
                .button("Quantize")
                .on_hover_text("write the quantized variant, add it to the session and measure it on this machine")
                .clicked()
        {
            start = true;
        }
        if let Some(done) = dialog.work.output() {
            finished_ui(ui, done, &mut sensitivity);
        }
        dialog.work.status_ui(ui);
    });
    if start {
        dialog.start(world, ctx);
    }
    if let Some((float, quantized)) = sensitivity {
        if world.quantize.sensitivity.as_ref().is_some_and(super::sensitivity_view::SensitivityView::is_busy) {
            world.error("a sensitivity measurement is running; wait for it or cancel it in its window");
        } else {
            let view = super::sensitivity_view::SensitivityView::open(world, &float, &quantized);
            world.quantize.sensitivity = Some(view);
        }
    }
    if open {
        world.quantize.dialog = Some(dialog);
    }
}

/// The progress line of a quantization event.
fn progress_of(event: &QuantizeEvent) -> Progress {
    match event {
        QuantizeEvent::Segment { index, count } => Progress::count(0, 0, format!("segment {}/{count}", index + 1)),
        QuantizeEvent::Calibrating { done, total } => {
            Progress::count(*done, *total, format!("calibrating {done}/{total}"))
        }
        QuantizeEvent::Budget { excluded, top1_percent, float_top1_percent } => Progress::count(
            0,
            0,
            format!("budget: {excluded} node(s) float, top-1 {top1_percent:.2} % (float {float_top1_percent:.2} %)"),
        ),
        QuantizeEvent::Writing => Progress::count(0, 0, "writing"),
    }
}

/// Drains the workers (once per frame, from the app's logic): progress into the dialog; a finished variant joins
/// the session and its trace run starts on this machine with the run dataset. Also drains the sensitivity worker.
pub fn drain(app: &mut EdgescopeApp) {
    super::sensitivity_view::drain(&mut app.world);
    let Some(dialog) = app.world.quantize.dialog.as_mut() else { return };
    if !dialog.work.drain_progress(progress_of) {
        return;
    }
    let Some(finished) = dialog.work.output_mut() else { return };
    let manifest = finished.manifest.clone();
    let Some(variant) = finished.variant.take() else { return };
    app.add_and_measure(&manifest, variant);
    // The next run gets a fresh default name and folder.
    if let Some(mut dialog) = app.world.quantize.dialog.take() {
        dialog.refresh_defaults(&app.world);
        app.world.quantize.dialog = Some(dialog);
    }
}
