//! The compare view: the study's tables (2, 3-6, 7), sortable and exportable, and scatter plots of accuracy
//! against latency and size with the Pareto front highlighted.

use eframe::egui;

use super::state::SavedState;
use super::world::World;
use super::{Command, Commands};
use crate::report::figure::{self, Figure, Mark, Series};
use crate::report::{Format, Row, Table};

/// Draws the compare tab.
pub fn compare_ui(ui: &mut egui::Ui, saved: &SavedState, world: &World, commands: &mut Commands<'_>) {
    let options = crate::report::ReportOptions {
        criterion: saved.criterion,
        budget_pp: saved.budget_pp,
        ..crate::report::ReportOptions::default()
    };
    let Some(rows) = world.cached_rows(&options) else {
        commands.send(Command::NeedRows);
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label("computing the tables…");
        });
        return;
    };
    if rows.is_empty() {
        ui.heading("Nothing to compare yet");
        ui.label("Run some variants (Runs tab) or open a session with traces.");
        return;
    }
    ui.horizontal(|ui| {
        ui.label(format!(
            "criterion {}, inf-opt budget {:.2} pp (change both in Explore); early-exit variants at their chosen, acc-opt and inf-opt points",
            saved.criterion.name(),
            saved.budget_pp
        ));
        if ui.button("Export CSV…").clicked() {
            commands.send(Command::PickTableExport(Format::Csv));
        }
        if ui.button("Export Markdown…").clicked() {
            commands.send(Command::PickTableExport(Format::Markdown));
        }
        if ui
            .button("Export figure…")
            .on_hover_text("Accuracy vs latency with title, axes and legend: SVG, or PNG at 2x")
            .clicked()
        {
            commands.send(Command::PickFigureExport);
        }
        let mut log = saved.log_latency;
        if ui.checkbox(&mut log, "log latency").on_hover_text("Latency axis on a logarithmic scale").changed() {
            commands.send(Command::SetLogLatency(log));
        }
    });
    let mut tables = crate::report::tables(&rows, &options);
    tables.push(crate::report::runs_table(&world.session));
    egui::ScrollArea::vertical().show(ui, |ui| {
        scatter_ui(ui, saved, &rows);
        for table in &tables {
            ui.add_space(8.0);
            table_ui(ui, table, world.table_sort.as_ref(), commands);
        }
    });
}

/// Numeric value of a cell for sorting ("89.40", "2.37x", "0.011/0.019" -> first number); text otherwise.
fn sort_key(cell: &str) -> Result<f64, String> {
    let number: String =
        cell.chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '-' || *c == '+').collect();
    number.parse::<f64>().map_err(|_| cell.to_string())
}

/// The family of a row (the part of the variant name before '/'): "mobilenet/ptq" -> "mobilenet".
fn family_of(name: &str) -> &str {
    name.split_once('/').map_or("", |(family, _)| family)
}

/// Whether a higher value of a column is better (`Some(true)`), a lower one (`Some(false)`), or neither.
fn better_direction(title: &str) -> Option<bool> {
    let t = title.to_lowercase();
    let lower = ["ms", "latency", "size", "mb", "time", "memory", "rss", "energy", "mj", "cpu", "power", "params"];
    let higher = ["accuracy", "top-1", "top-5", "loyalty", "speed", "compression"];
    if t.contains("exit") || t.contains("sample") || t.contains("threshold") || t.contains("point") {
        return None;
    }
    if higher.iter().any(|h| t.contains(h)) {
        Some(true)
    } else if lower.iter().any(|l| t.contains(l)) {
        Some(false)
    } else {
        None
    }
}

/// The best value of each numeric column with a clear direction (highlighted on screen).
fn best_per_column(table: &Table) -> Vec<Option<f64>> {
    (0..table.columns.len())
        .map(|column| {
            let higher = better_direction(&table.columns[column])?;
            let values = table.rows.iter().filter_map(|r| r.get(column)).filter_map(|c| sort_key(c).ok());
            if higher { values.reduce(f64::max) } else { values.reduce(f64::min) }
        })
        .collect()
}

fn table_ui(ui: &mut egui::Ui, table: &Table, sort: Option<&(String, usize, bool)>, commands: &mut Commands<'_>) {
    ui.strong(&table.title);
    let mut order: Vec<usize> = (0..table.rows.len()).collect();
    if let Some((id, column, ascending)) = sort.filter(|(id, _, _)| *id == table.id) {
        let _ = id;
        order.sort_by(|&a, &b| {
            let (x, y) = (sort_key(&table.rows[a][*column]), sort_key(&table.rows[b][*column]));
            let ordering = match (&x, &y) {
                (Ok(p), Ok(q)) => p.total_cmp(q),
                (Ok(_), Err(_)) => std::cmp::Ordering::Less,
                (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
                (Err(p), Err(q)) => p.cmp(q),
            };
            if *ascending { ordering } else { ordering.reverse() }
        });
    }
    egui::ScrollArea::horizontal().id_salt(&table.id).show(ui, |ui| {
        egui::Grid::new(&table.id).striped(true).spacing([12.0, 4.0]).show(ui, |ui| {
            for (column, title) in table.columns.iter().enumerate() {
                let arrow = match sort {
                    Some((id, c, ascending)) if *id == table.id && *c == column => {
                        if *ascending {
                            " (ascending)"
                        } else {
                            " (descending)"
                        }
                    }
                    _ => "",
                };
                if ui.button(format!("{title}{arrow}")).on_hover_text("sort by this column").clicked() {
                    commands.send(Command::SortTable(table.id.clone(), column));
                }
            }
            ui.end_row();
            let best = best_per_column(table);
            let best_colour = if ui.visuals().dark_mode {
                egui::Color32::from_rgb(120, 220, 120)
            } else {
                egui::Color32::from_rgb(0, 120, 0)
            };
            let mut family_shown: Option<&str> = None;
            let model_column = table.columns.iter().position(|c| c == "Model" || c == "Variant").unwrap_or(0);
            for &row in &order {
                let cells = &table.rows[row];
                // Unsorted, rows come grouped by family (the study's tables): a header row starts each family.
                let model = cells.get(model_column).map_or("", String::as_str);
                let family = family_of(model);
                if sort.is_none_or(|(id, _, _)| *id != table.id) && family_shown != Some(family) && !family.is_empty() {
                    ui.label(egui::RichText::new(family).strong().underline());
                    ui.end_row();
                    family_shown = Some(family);
                }
                let is_base = model.ends_with("/base") || model == "base";
                for (column, cell) in cells.iter().enumerate() {
                    let mut text = egui::RichText::new(cell);
                    if is_base {
                        text = text.strong();
                    }
                    if best.get(column).copied().flatten().is_some_and(|b| sort_key(cell).is_ok_and(|v| v == b)) {
                        text = text.color(best_colour).strong();
                    }
                    ui.label(text);
                }
                ui.end_row();
            }
        });
    });
}

/// Accuracy against a cost (latency or size) for every row, one series per technique (coloured as everywhere),
/// with the Pareto front; hovering a point names its variant.
fn scatter_figure(rows: &[Row], cost: impl Fn(&Row) -> f64, x_label: &str, log_x: bool, options: &str) -> Figure {
    let several_devices = rows.iter().any(|r| r.device != rows[0].device);
    let name = |r: &Row| {
        let variant = match r.point {
            crate::report::PointKind::Static => r.variant.clone(),
            kind => format!("{} ({})", r.variant, kind.label()),
        };
        if several_devices { format!("{variant} @ {}", r.device) } else { variant }
    };
    let pairs: Vec<(f64, f64)> = rows.iter().map(|r| (cost(r), r.outcome.accuracy * 100.0)).collect();
    let front: Vec<(f64, f64)> = crate::analysis::pareto_front(&pairs).into_iter().map(|i| pairs[i]).collect();
    let mut series = vec![Series {
        name: "Pareto front".into(),
        colour: figure::FRONT_COLOUR,
        mark: Mark::Dashed,
        points: front,
        labels: Vec::new(),
    }];
    for (row, &pair) in rows.iter().zip(&pairs) {
        let technique = figure::technique_label(&row.tags);
        match series.iter_mut().find(|s| s.name == technique) {
            Some(existing) => {
                existing.points.push(pair);
                existing.labels.push(name(row));
            }
            None => series.push(Series {
                name: technique.into(),
                colour: figure::technique_colour(&row.tags),
                mark: Mark::Dots,
                points: vec![pair],
                labels: vec![name(row)],
            }),
        }
    }
    Figure {
        title: format!("Accuracy vs {x_label}"),
        x_label: x_label.into(),
        y_label: "accuracy (%)".into(),
        log_x,
        series,
        headline: options.into(),
    }
}

fn scatter_ui(ui: &mut egui::Ui, saved: &SavedState, rows: &[Row]) {
    let options = format!(
        "criterion {}, inf-opt budget {:.2} pp; early-exit variants at their chosen, acc-opt and inf-opt points",
        saved.criterion.name(),
        saved.budget_pp
    );
    let latency =
        scatter_figure(rows, |r| r.outcome.latency.mean_us / 1000.0, "mean latency (ms)", saved.log_latency, &options);
    let size = scatter_figure(rows, |r| r.size_bytes as f64 / 1e6, "size (MB)", false, &options);
    let height = 300.0;
    ui.columns(2, |columns| {
        for (column, (figure, id)) in [(&latency, "scatter_latency"), (&size, "scatter_size")].into_iter().enumerate() {
            let ui = &mut columns[column];
            ui.strong(&figure.title);
            super::figure_view::plot_figure_ui(ui, id, figure, height);
        }
    });
    super::capture::remember_figure(ui.ctx(), latency);
}
