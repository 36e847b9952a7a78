//! The per-tensor sensitivity chart (issue 11 part 4 in the app): for a float / QDQ-quantized pair and a dataset,
//! the signal-to-quantization-noise ratio of every quantized activation (as ORT's `qdq_loss_debug` computes it,
//! see [`crate::optimize::quantize::sensitivity`]), measured on a named worker thread with progress and cancel,
//! drawn as horizontal bars with the worst tensors on top.

use std::path::{Path, PathBuf};

use crossbeam_channel::{Receiver, bounded};
use eframe::egui;

use super::World;
use crate::data::Dataset;
use crate::model::proto::read_model;
use crate::optimize::quantize::run::dataset_batch;
use crate::optimize::quantize::sensitivity::{TensorNoise, sensitivity};
use crate::runtime::CancelToken;

/// Progress messages kept in flight at most.
const CHANNEL_CAPACITY: usize = 16;
/// Samples per ONNX Runtime call.
const BATCH: usize = 50;

enum WorkerMessage {
    Progress { done: usize, total: usize },
    Done(Result<Vec<TensorNoise>, String>),
}

struct Worker {
    messages: Receiver<WorkerMessage>,
    cancel: CancelToken,
}

/// The chart's state (runtime only).
pub struct SensitivityView {
    float: PathBuf,
    quantized: PathBuf,
    title: String,
    dataset: Option<String>,
    samples: usize,
    worker: Option<Worker>,
    progress: (f32, String),
    result: Option<Result<Vec<TensorNoise>, String>>,
}

/// The one ONNX file of a single-graph variant (its manifest or the file itself).
fn single_graph(path: &Path) -> Result<PathBuf, String> {
    let variant = crate::model::Variant::open(path).map_err(|e| e.to_string())?;
    match variant.segments.as_slice() {
        [segment] => Ok(segment.path.clone()),
        _ => Err(format!("{}: the sensitivity chart compares single graphs, not chains", path.display())),
    }
}

impl SensitivityView {
    /// A chart for the float variant at `float` and its QDQ quantization at `quantized` (ONNX files or manifests),
    /// on the session's run dataset (else its first).
    pub fn open(world: &World, float: &Path, quantized: &Path) -> Result<Self, String> {
        let (float, quantized) = (single_graph(float)?, single_graph(quantized)?);
        let name = |p: &Path| p.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let dataset = world.run_dataset.clone().or_else(|| world.session.datasets.first().map(|d| d.name.clone()));
        Ok(Self {
            title: format!("Sensitivity: {} against {}", name(&quantized), name(&float)),
            float,
            quantized,
            dataset,
            samples: 200,
            worker: None,
            progress: (0.0, String::new()),
            result: None,
        })
    }

    /// The measured noise, worst first, once a measurement finished.
    pub fn measured(&self) -> Option<&[TensorNoise]> {
        self.result.as_ref().and_then(|r| r.as_ref().ok()).map(Vec::as_slice)
    }

    fn start(&mut self, world: &World, ctx: &egui::Context) {
        let Some(path) = self
            .dataset
            .as_ref()
            .and_then(|n| world.session.datasets.iter().find(|d| &d.name == n))
            .map(|d| d.path.clone())
        else {
            self.result = Some(Err("choose a dataset".into()));
            return;
        };
        let (float, quantized, samples) = (self.float.clone(), self.quantized.clone(), self.samples.max(1));
        let (sender, messages) = bounded(CHANNEL_CAPACITY);
        let cancel = CancelToken::new();
        let worker_cancel = cancel.clone();
        let repaint = ctx.clone();
        let spawned = std::thread::Builder::new().name("edgescope-sensitivity".into()).spawn(move || {
            let result = (|| -> Result<Vec<TensorNoise>, String> {
                let float_model = read_model(&float).map_err(|e| e.to_string())?;
                let quantized_model = read_model(&quantized).map_err(|e| e.to_string())?;
                let mut dataset = Dataset::open(&path).map_err(|e| e.to_string())?;
                dataset.truncate(samples);
                let total = dataset.len();
                let mut batches = (0..total).step_by(BATCH).map(|start| dataset_batch(&dataset, start, BATCH, total));
                let mut on_batch = |done: usize| {
                    let _ = sender.try_send(WorkerMessage::Progress { done, total });
                    repaint.request_repaint();
                };
                sensitivity(&float_model, &quantized_model, &mut batches, 0, &worker_cancel, &mut on_batch)
                    .map_err(|e| e.to_string())
            })();
            let _ = sender.send(WorkerMessage::Done(result));
            repaint.request_repaint();
        });
        match spawned {
            Ok(_) => {
                self.worker = Some(Worker { messages, cancel });
                self.result = None;
                self.progress = (0.0, "starting".into());
            }
            Err(e) => self.result = Some(Err(format!("cannot start the sensitivity thread: {e}"))),
        }
    }
}

fn controls_ui(ui: &mut egui::Ui, world: &World, view: &mut SensitivityView) -> bool {
    let mut start = false;
    let busy = view.worker.is_some();
    ui.add_enabled_ui(!busy, |ui| {
        ui.horizontal(|ui| {
            let label = ui.label("dataset");
            egui::ComboBox::from_id_salt("sensitivity-dataset")
                .selected_text(view.dataset.clone().unwrap_or_else(|| "choose…".into()))
                .show_ui(ui, |ui| {
                    for d in &world.session.datasets {
                        ui.selectable_value(&mut view.dataset, Some(d.name.clone()), &d.name);
                    }
                })
                .response
                .labelled_by(label.id);
            let label = ui.label("samples");
            ui.add(egui::DragValue::new(&mut view.samples).range(1..=100_000)).labelled_by(label.id);
            if ui.button("Measure").clicked() {
                start = true;
            }
        });
    });
    if busy {
        ui.horizontal(|ui| {
            ui.add(egui::ProgressBar::new(view.progress.0).desired_width(260.0).text(view.progress.1.clone()));
            if ui.button("Cancel").clicked()
                && let Some(worker) = &view.worker
            {
                worker.cancel.cancel();
            }
        });
    }
    start
}

/// Horizontal bars, worst (lowest SQNR) on top, painted one row per tensor with its name beside it; hovering a
/// bar names the tensor, its producer and both ratios.
fn chart_ui(ui: &mut egui::Ui, noise: &[TensorNoise]) {
    const LABEL_WIDTH: f32 = 230.0;
    const ROW_HEIGHT: f32 = 16.0;
    let best_db = noise.iter().map(|t| t.sqnr_db).filter(|v| v.is_finite()).fold(1.0f64, f64::max);
    let (worst_db, span_db) = match (noise.first(), noise.last()) {
        (Some(w), Some(b)) => (w.sqnr_db, (b.sqnr_db - w.sqnr_db).max(1e-9)),
        _ => (0.0, 1.0),
    };
    let bar_width = (ui.available_width() - LABEL_WIDTH - 90.0).max(160.0);
    egui::ScrollArea::vertical().id_salt("sensitivity-bars").max_height(460.0).show(ui, |ui| {
        for t in noise {
            ui.horizontal(|ui| {
                ui.add_sized(egui::vec2(LABEL_WIDTH, ROW_HEIGHT), egui::Label::new(&t.tensor).truncate());
                let (rect, response) = ui.allocate_exact_size(egui::vec2(bar_width, ROW_HEIGHT), egui::Sense::hover());
                let share = (t.sqnr_db.max(0.0) / best_db).clamp(0.0, 1.0) as f32;
                // Red for the worst tensor, blue for the best.
                let badness = 1.0 - ((t.sqnr_db - worst_db) / span_db).clamp(0.0, 1.0) as f32;
                let color = egui::Color32::from_rgb(
                    (70.0 + 170.0 * badness) as u8,
                    (110.0 - 40.0 * badness) as u8,
                    (220.0 - 150.0 * badness) as u8,
                );
                let painter = ui.painter();
                painter.rect_filled(rect, 2.0, ui.visuals().extreme_bg_color);
                let bar = egui::Rect::from_min_size(rect.min, egui::vec2(rect.width() * share, rect.height()));
                painter.rect_filled(bar, 2.0, color);
                ui.label(format!("{:.1} dB", t.sqnr_db));
                response.on_hover_text(format!(
                    "{}\nproduced by {}\nSQNR {:.2} dB against the float model (its own Q/DQ: {:.2} dB)",
                    t.tensor, t.producer, t.sqnr_db, t.qdq_sqnr_db
                ));
            });
        }
    });
    ui.weak(format!("bars: SQNR in dB, 0 to {best_db:.1}; low = sensitive"));
    egui::CollapsingHeader::new("as a table").id_salt("sensitivity-table").show(ui, |ui| {
        egui::Grid::new("sensitivity-rows").num_columns(4).striped(true).show(ui, |ui| {
            ui.strong("tensor");
            ui.strong("producer");
            ui.strong("SQNR (dB)");
            ui.strong("own Q/DQ (dB)");
            ui.end_row();
            for t in noise {
                ui.label(&t.tensor);
                ui.label(&t.producer);
                ui.label(format!("{:.2}", t.sqnr_db));
                ui.label(format!("{:.2}", t.qdq_sqnr_db));
                ui.end_row();
            }
        });
    });
}

/// Draws the chart window, if open.
pub fn window_ui(ctx: &egui::Context, world: &mut World) {
    let Some(mut view) = world.quantize.sensitivity.take() else { return };
    let mut open = true;
    let mut start = false;
    egui::Window::new(view.title.clone())
        .open(&mut open)
        .resizable(true)
        .default_pos([600.0, 60.0])
        .default_width(620.0)
        .show(ctx, |ui| {
            ui.weak(
                "signal-to-quantization-noise ratio of every quantized activation against the float model's, over \
                 the samples (ONNX Runtime's qdq_loss_debug measure)",
            );
            start = controls_ui(ui, world, &mut view);
            match &view.result {
                Some(Ok(noise)) if noise.is_empty() => {
                    ui.label("no quantized activation to compare");
                }
                Some(Ok(noise)) => {
                    if let Some(worst) = noise.first() {
                        ui.label(format!(
                            "{} quantized tensors; worst: {} at {:.2} dB",
                            noise.len(),
                            worst.tensor,
                            worst.sqnr_db
                        ));
                    }
                    chart_ui(ui, noise);
                }
                Some(Err(text)) => {
                    ui.colored_label(ui.visuals().error_fg_color, text);
                }
                None => {}
            }
        });
    if start {
        view.start(world, ctx);
    }
    if !open && let Some(worker) = &view.worker {
        worker.cancel.cancel();
    }
    if open || view.worker.is_some() {
        world.quantize.sensitivity = Some(view);
    }
}

/// Drains the worker (once per frame).
pub fn drain(world: &mut World) {
    let Some(view) = world.quantize.sensitivity.as_mut() else { return };
    let Some(worker) = &view.worker else { return };
    let mut finished = None;
    while let Ok(message) = worker.messages.try_recv() {
        match message {
            WorkerMessage::Progress { done, total } => {
                view.progress = (done as f32 / total.max(1) as f32, format!("{done}/{total} samples"));
            }
            WorkerMessage::Done(result) => finished = Some(result),
        }
    }
    if let Some(result) = finished {
        view.worker = None;
        view.result = Some(result);
    }
}
