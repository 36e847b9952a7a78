//! The compare view: the study's tables (2, 3-6, 7), sortable and exportable, and scatter plots of accuracy
//! against latency and size with the Pareto front highlighted.

use eframe::egui;

use super::state::SavedState;
use super::world::World;
use super::{Command, Commands};
use crate::report::figure::{self, Figure, Mark, Series};
use crate::report::{Cell, Format, Row, Table, TableSort};

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
        let order = "in the order shown (a sorted table stays sorted)";
        let exports = [
            (
                "Export CSV…",
                Format::Csv,
                format!(
                    "Every table below as CSV {order}: plain numbers without % or x, units in the headers, empty \
                     fields for missing values"
                ),
            ),
            (
                "Export Markdown…",
                Format::Markdown,
                format!("Every table below as Markdown {order}, formatted as on screen"),
            ),
            (
                "Export JSON…",
                Format::Json,
                format!(
                    "Every table below as JSON {order} (numbers as numbers, null for missing), with the rows \
                     behind them"
                ),
            ),
        ];
        for (label, format, tooltip) in exports {
            if ui.button(label).on_hover_text(tooltip).clicked() {
                commands.send(Command::PickTableExport(format));
            }
        }
        if ui
            .button("Export figure…")
            .on_hover_text("Accuracy vs latency with title, axes and legend: SVG, or PNG at 2x")
            .clicked()
        {
            commands.send(Command::PickFigureExport);
        }
        let mut log = saved.log_latency;
        if ui.checkbox(&mut log, "log latency").on_hover_text(
                "Latency axis of the left plot on a logarithmic scale: spreads out fast variants that a linear axis \
                 crowds together",
            ).changed() {
            commands.send(Command::SetLogLatency(log));
        }
    });
    let tables = crate::report::all_tables(&world.session, &rows, &options);
    egui::ScrollArea::vertical().show(ui, |ui| {
        scatter_ui(ui, saved, &rows);
        for table in &tables {
            ui.add_space(8.0);
            table_ui(ui, table, world.table_sort.as_ref(), commands);
        }
    });
}

/// The family of a row (the part of the variant name before '/'): "mobilenet/ptq" -> "mobilenet".
fn family_of(name: &str) -> &str {
    name.split_once('/').map_or("", |(family, _)| family)
}

/// How to read a table's header buttons, added to every column's tooltip.
const SORT_HINT: &str = "Click to sort by this column (descending first); click again to reverse. Exports keep \
                         the order shown.";

fn table_ui(ui: &mut egui::Ui, table: &Table, sort: Option<&TableSort>, commands: &mut Commands<'_>) {
    ui.strong(&table.title);
    let sort = sort.filter(|s| s.table == table.id);
    let order = match sort {
        Some(sort) => table.order(sort.column, sort.ascending),
        None => (0..table.rows.len()).collect(),
    };
    egui::ScrollArea::horizontal().id_salt(&table.id).show(ui, |ui| {
        egui::Grid::new(&table.id).striped(true).spacing([12.0, 4.0]).show(ui, |ui| {
            for (index, column) in table.columns.iter().enumerate() {
                let arrow = match sort {
                    Some(sort) if sort.column == index => {
                        if sort.ascending {
                            " (ascending)"
                        } else {
                            " (descending)"
                        }
                    }
                    _ => "",
                };
                let tooltip = format!("{}\n{SORT_HINT}", column.tooltip());
                if ui.button(format!("{}{arrow}", column.name)).on_hover_text(tooltip).clicked() {
                    commands.send(Command::SortTable(table.id.clone(), index));
                }
            }
            ui.end_row();
            let best = table.best_values();
            let best_colour = if ui.visuals().dark_mode {
                egui::Color32::from_rgb(120, 220, 120)
            } else {
                egui::Color32::from_rgb(0, 120, 0)
            };
            let mut family_shown: Option<String> = None;
            let model_column = table.column("Model").unwrap_or(0);
            for &row in &order {
                let cells = &table.rows[row];
                // Unsorted, rows come grouped by family (the study's tables): a header row starts each family.
                let model = cells.get(model_column).map(Cell::display).unwrap_or_default();
                let family = family_of(&model);
                if sort.is_none() && family_shown.as_deref() != Some(family) && !family.is_empty() {
                    ui.label(egui::RichText::new(family).strong().underline());
                    ui.end_row();
                    family_shown = Some(family.to_string());
                }
                let is_base = model.ends_with("/base") || model == "base";
                for (column, cell) in cells.iter().enumerate() {
                    let mut text = egui::RichText::new(cell.display());
                    if is_base {
                        text = text.strong();
                    }
                    let is_best = best.get(column).copied().flatten().is_some_and(|b| cell.number() == Some(b));
                    if is_best {
                        text = text.color(best_colour).strong();
                    }
                    let label = ui.label(text);
                    if is_best {
                        label.on_hover_text(format!("best {} in this table", table.columns[column].name));
                    }
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
