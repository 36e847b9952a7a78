//! The per-tensor sensitivity chart (issue 11 part 4 in the app): for a float / QDQ-quantized pair and a dataset,
//! the signal-to-quantization-noise ratio of every quantized activation (as ORT's `qdq_loss_debug` computes it,
//! see [`crate::optimize::quantize::sensitivity`]), measured on a named worker thread with progress and cancel,
//! drawn as horizontal bars with the worst tensors on top.

use std::path::{Path, PathBuf};

use eframe::egui;

use super::World;
use super::worker::{DialogTask, Progress};
use crate::data::Dataset;
use crate::model::proto::read_model;
use crate::optimize::quantize::run::dataset_batch;
use crate::optimize::quantize::sensitivity::{TensorNoise, sensitivity};
/// Samples per ONNX Runtime call.
const BATCH: usize = 50;

/// The chart's state (runtime only).
pub struct SensitivityView {
    /// The float variant and its quantization (ONNX files or manifests; resolved to single graphs on the worker).
    float: PathBuf,
    quantized: PathBuf,
    title: String,
    dataset: Option<String>,
    samples: usize,
    /// The measurement: samples done of all, then the noise per tensor, worst first.
    work: DialogTask<(usize, usize), Vec<TensorNoise>>,
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
    /// on the session's run dataset (else its first). Nothing is read until Measure.
    pub fn open(world: &World, float: &Path, quantized: &Path) -> Self {
        let name = |p: &Path| p.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let dataset = world.run_dataset.clone().or_else(|| world.session.datasets.first().map(|d| d.name.clone()));
        Self {
            title: format!("Sensitivity: {} against {}", name(quantized), name(float)),
            float: float.to_path_buf(),
            quantized: quantized.to_path_buf(),
            dataset,
            samples: 200,
            work: DialogTask::default(),
        }
    }

    /// True while measuring.
    pub fn is_busy(&self) -> bool {
        self.work.is_running()
    }

    /// The measured noise, worst first, once a measurement finished.
    pub fn measured(&self) -> Option<&[TensorNoise]> {
        self.work.output().map(Vec::as_slice)
    }

    fn start(&mut self, world: &World, ctx: &egui::Context) {
        let Some(path) = self
            .dataset
            .as_ref()
            .and_then(|n| world.session.datasets.iter().find(|d| &d.name == n))
            .map(|d| d.path.clone())
        else {
            return self.work.fail("choose a dataset");
        };
        let (float, quantized, samples) = (self.float.clone(), self.quantized.clone(), self.samples.max(1));
        self.work.start("sensitivity", ctx, move |reporter, cancel| {
            let float_model = read_model(&single_graph(&float)?).map_err(|e| e.to_string())?;
            let quantized_model = read_model(&single_graph(&quantized)?).map_err(|e| e.to_string())?;
            let mut dataset = Dataset::open(&path).map_err(|e| e.to_string())?;
            dataset.truncate(samples);
            let total = dataset.len();
            let mut batches = (0..total).step_by(BATCH).map(|start| dataset_batch(&dataset, start, BATCH, total));
            let mut on_batch = |done: usize| reporter.progress((done, total));
            sensitivity(&float_model, &quantized_model, &mut batches, 0, cancel, &mut on_batch)
                .map_err(|e| e.to_string())
        });
    }
}

fn controls_ui(ui: &mut egui::Ui, world: &World, view: &mut SensitivityView) -> bool {
    let mut start = false;
    let busy = view.work.is_running();
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
                .labelled_by(label.id)
                .on_hover_text("the samples both models run on (the first ones of this dataset)");
            let label = ui.label("samples");
            ui.add(egui::DragValue::new(&mut view.samples).range(1..=100_000))
                .labelled_by(label.id)
                .on_hover_text("how many samples to compare over: more is steadier and slower");
            if ui
                .button("Measure")
                .on_hover_text("run both models and compare every quantized activation with its float one")
                .clicked()
            {
                start = true;
            }
        });
    });
    view.work.progress_ui(ui, "stop measuring");
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
            ui.strong("tensor").on_hover_text("a quantized activation");
            ui.strong("producer").on_hover_text("the node that computes it");
            ui.strong("SQNR (dB)")
                .on_hover_text("signal-to-quantization-noise ratio against the float model, decibels: low = sensitive");
            ui.strong("own Q/DQ (dB)")
                .on_hover_text("the same ratio for this tensor's own quantize-dequantize step alone, decibels");
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
            view.work.status_ui(ui);
            match view.work.output() {
                Some(noise) if noise.is_empty() => {
                    ui.label("no quantized activation to compare");
                }
                Some(noise) => {
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
                None => {}
            }
        });
    if start {
        view.start(world, ctx);
    }
    if open {
        world.quantize.sensitivity = Some(view);
    }
}

/// Drains the worker (once per frame).
pub fn drain(world: &mut World) {
    let Some(view) = world.quantize.sensitivity.as_mut() else { return };
    view.work.drain_progress(|&(done, total)| Progress::count(done, total, format!("{done}/{total} samples")));
}
