//! The compare view: the study's tables (2, 3-6, 7), sortable and exportable, and scatter plots of accuracy
//! against latency and size with the Pareto front highlighted.

use eframe::egui;

use egui_plot::{Legend, Line, Plot, PlotPoints, Points};

use super::state::SavedState;
use super::world::World;
use super::{Command, Commands};
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
        if ui.button("Save plot as PNG…").clicked() {
            commands.send(Command::PickPlotExport);
        }
    });
    let mut tables = crate::report::tables(&rows, &options);
    tables.push(crate::report::runs_table(&world.session));
    egui::ScrollArea::vertical().show(ui, |ui| {
        scatter_ui(ui, &rows);
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
            for &row in &order {
                for cell in &table.rows[row] {
                    ui.label(cell);
                }
                ui.end_row();
            }
        });
    });
}

fn scatter_ui(ui: &mut egui::Ui, rows: &[Row]) {
    let latency: Vec<(f64, f64)> =
        rows.iter().map(|r| (r.outcome.latency.mean_us / 1000.0, r.outcome.accuracy * 100.0)).collect();
    // Size: lower is better like latency, so the same front applies.
    let size: Vec<(f64, f64)> = rows.iter().map(|r| (r.size_bytes as f64 / 1e6, r.outcome.accuracy * 100.0)).collect();
    // With several devices, each device is its own series, so the plots group the points by device.
    let several_devices = rows.iter().any(|r| r.device != rows[0].device);
    let name = |r: &Row| {
        let variant = match r.point {
            crate::report::PointKind::Static => r.variant.clone(),
            kind => format!("{} ({})", r.variant, kind.label()),
        };
        if several_devices { format!("{variant} @ {}", r.device) } else { variant }
    };
    let height = 260.0;
    ui.columns(2, |columns| {
        for (column, (title, x_label, pairs, id)) in [
            ("Accuracy vs mean latency", "mean latency (ms)", &latency, "scatter_latency"),
            ("Accuracy vs size", "size (MB)", &size, "scatter_size"),
        ]
        .into_iter()
        .enumerate()
        {
            let ui = &mut columns[column];
            ui.strong(title);
            let front: Vec<[f64; 2]> =
                crate::analysis::pareto_front(pairs).into_iter().map(|i| [pairs[i].0, pairs[i].1]).collect();
            let response = Plot::new(id)
                .height(height)
                .legend(Legend::default())
                .x_axis_label(x_label)
                .y_axis_label("accuracy (%)")
                .show(ui, |plot| {
                    plot.line(Line::new("Pareto front", PlotPoints::from(front)).width(2.5));
                    for (row, &(x, y)) in rows.iter().zip(pairs.iter()) {
                        plot.points(Points::new(name(row), vec![[x, y]]).radius(5.0));
                    }
                });
            if column == 0 {
                super::capture::remember_plot_rect(ui.ctx(), response.response.rect);
            }
        }
    });
}
