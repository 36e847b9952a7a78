//! The models & data view: each variant's tags, size, parameters, compression, segments and operator
//! histogram; each dataset with a grid of samples and their labels.

use eframe::egui;

use super::world::World;
use super::{Command, Commands};

/// Samples shown per dataset.
const GRID_SAMPLES: usize = 32;

/// Draws the models & data tab.
pub fn models_ui(ui: &mut egui::Ui, world: &World, commands: &mut Commands<'_>) {
    ui.horizontal(|ui| {
        if ui.button("Add files…").on_hover_text("ONNX models, manifests (.toml) and datasets to add").clicked() {
            commands.send(Command::PickFilesToAdd);
        }
        ui.weak(
            "or drop ONNX files, manifests (.toml) and datasets (dataset.toml, IDX, NPY, image folders) on the window",
        );
    });
    egui::ScrollArea::vertical().show(ui, |ui| {
        ui.heading("Variants");
        if world.session.variants.is_empty() {
            ui.label("none yet");
        }
        let variants = world.session.variants.clone();
        for (position, variant) in variants.iter().enumerate() {
            let base_size =
                world.session.base_of(&variant.name).and_then(|b| world.session.variant(&b)).map(|b| b.size_bytes);
            let compression = base_size.and_then(|b| crate::analysis::compression_ratio(b, variant.size_bytes));
            let header = format!(
                "{}   [{}]   {:.2} MB   {} parameters{}",
                variant.name,
                variant.tags.join(", "),
                variant.size_bytes as f64 / 1e6,
                variant.parameter_count,
                compression.map_or(String::new(), |c| format!("   compression {c:.2}x"))
            );
            egui::CollapsingHeader::new(header)
                .id_salt(("variant", &variant.name))
                .default_open(position == 0)
                .show(ui, |ui| {
                    ui.label(format!("file: {}", variant.path.display()))
                        .on_hover_text("the ONNX file, or the manifest listing an early-exit chain's segments");
                    ui.label(format!(
                        "{} segment(s), {} early exit(s), {} classes, base: {}",
                        variant.segments,
                        variant.early_exits,
                        variant.num_classes,
                        variant.base.as_deref().unwrap_or("-")
                    ))
                    .on_hover_text(
                        "segments: ONNX graphs run in turn; early exits: classifier heads before the last; base: the \
                         float variant it is compared with (speed-up, accuracy drop, compression)",
                    );
                    if !variant.outputs.is_empty() {
                        ui.label(format!("exit outputs: {}", variant.outputs))
                            .on_hover_text("the graph outputs read as each exit's logits");
                    }
                    ui.horizontal(|ui| {
                        super::exits_dialog::open_button_ui(ui, &variant.name, variant.segments, commands);
                        super::profile_view::open_button_ui(ui, &variant.name, commands);
                        super::quantize_dialog::open_button_ui(ui, world, &variant.name, commands);
                        if variant.segments == 1 && !variant.has_tag("ptq") && !variant.has_tag("dq") {
                            super::study_wizard::open_button_ui(ui, Some(&variant.name), commands);
                        }
                    });
                    ui.label("operators:")
                        .on_hover_text("ONNX operator types and how many nodes of each; quantized ones in bold");
                    ui.horizontal_wrapped(|ui| {
                        for (op, count) in &variant.op_histogram {
                            let quantized = op.contains("Quant") || op.contains("Integer") || op.starts_with("QLinear");
                            let text = egui::RichText::new(format!("{op} x{count}"));
                            ui.label(if quantized { text.strong() } else { text });
                        }
                    });
                })
                .header_response
                .on_hover_text(
                    "name, tags (ptq / dq = quantized, ee = early exits), file size in MB (10^6 bytes), parameters, \
                     and compression = base size / this size",
                );
        }
        ui.separator();
        ui.heading("Datasets");
        let datasets = world.session.datasets.clone();
        for (position, entry) in datasets.iter().enumerate() {
            let role = if world.is_calibration(&entry.name) { " (calibration)" } else { "" };
            egui::CollapsingHeader::new(format!(
                "{}{role}   {} samples, {} classes",
                entry.name,
                entry.samples,
                entry.classes.len()
            ))
            .id_salt(("dataset", &entry.name))
            .default_open(position == 0)
            .show(ui, |ui| {
                ui.label(format!("source: {}", entry.path.display()))
                    .on_hover_text("dataset.toml, an image folder (one folder per class), IDX or NPY files");
                match world.loaded_dataset(&entry.name) {
                    None => {
                        commands.send(Command::NeedDataset(entry.name.clone()));
                        ui.horizontal(|ui| {
                            ui.spinner();
                            ui.label("opening…");
                        });
                    }
                    Some(Err(e)) => {
                        ui.colored_label(ui.visuals().error_fg_color, e);
                    }
                    Some(Ok(dataset)) => {
                        ui.label(format!("input {:?}; {}", dataset.input_shape(), dataset.preprocess.describe()))
                            .on_hover_text("the tensor shape one sample becomes, and the preprocessing that makes it");
                        let mut missing = Vec::new();
                        ui.horizontal_wrapped(|ui| {
                            for sample in 0..dataset.len().min(GRID_SAMPLES) {
                                ui.vertical(|ui| {
                                    super::explore::thumbnail_ui(ui, world, &entry.name, sample, 48.0, &mut missing);
                                    let label = dataset.labels[sample] as usize;
                                    ui.small(dataset.classes.get(label).cloned().unwrap_or_else(|| label.to_string()))
                                        .on_hover_text(format!("sample {sample}: its label"));
                                });
                            }
                        });
                        super::explore::request_thumbnails(world, commands, &entry.name, missing);
                    }
                }
            })
            .header_response
            .on_hover_text(
                "name, samples, classes; the calibration set tunes thresholds and PTQ, not measured in Compare",
            );
        }
    });
}
