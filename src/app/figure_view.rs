//! Draws a [`Figure`] with egui_plot: the on-screen plot and the exported SVG/PNG come from the same figure, so
//! colours, names and points match. Colours come from `report::figure` (one per technique and per exit).

use eframe::egui;
use egui_plot::{Line, MarkerShape, Plot, PlotPoints, Points};

use crate::report::figure::{self, Figure, Mark, Rgb};

/// An sRGB triple as an egui colour.
pub fn colour(rgb: Rgb) -> egui::Color32 {
    egui::Color32::from_rgb(rgb[0], rgb[1], rgb[2])
}

/// A series colour on screen: black (the Pareto front on white paper) becomes the theme's strong text colour.
fn on_screen(front_colour: egui::Color32, rgb: Rgb) -> egui::Color32 {
    if rgb == figure::FRONT_COLOUR { front_colour } else { colour(rgb) }
}

/// The legend of a figure under its plot (never over the data or a table): a coloured mark and a name per
/// series, each one text so a row wraps inside its column.
fn legend_ui(ui: &mut egui::Ui, figure: &Figure) {
    ui.horizontal_wrapped(|ui| {
        for series in &figure.series {
            let mark = match series.mark {
                Mark::Line => "—",
                Mark::Dashed => "- -",
                // Glyphs the bundled font has: a bullet for markers, a ring for the current point.
                Mark::Dots | Mark::Diamonds => "•",
                Mark::Ring => "o",
            };
            let mut job = egui::text::LayoutJob::default();
            let body = egui::TextStyle::Body.resolve(ui.style());
            let text_colour = ui.visuals().text_color();
            let mark_font = egui::FontId::new(body.size * 1.3, body.family.clone());
            job.append(
                mark,
                0.0,
                egui::TextFormat::simple(mark_font, on_screen(ui.visuals().strong_text_color(), series.colour)),
            );
            job.append(&series.name, 4.0, egui::TextFormat::simple(body, text_colour));
            ui.label(job);
            ui.add_space(6.0);
        }
    });
}

/// Draws `figure` in a plot `height` points high, its legend underneath; hovering a point names it and shows its
/// value.
pub fn plot_figure_ui(ui: &mut egui::Ui, id: &str, figure: &Figure, height: f32) {
    plot_only_ui(ui, id, figure, height);
    legend_ui(ui, figure);
}

fn plot_only_ui(ui: &mut egui::Ui, id: &str, figure: &Figure, height: f32) {
    let log_x = figure.log_x;
    // A logarithmic axis is drawn as log10 of the value, with tick labels turned back into values.
    let x_of = move |x: f64| if log_x { x.max(1e-9).log10() } else { x };
    let x_unit = figure.x_label.clone();
    // Point labels by series name, for the hover text.
    let labels: Vec<(String, Vec<String>)> =
        figure.series.iter().filter(|s| !s.labels.is_empty()).map(|s| (s.name.clone(), s.labels.clone())).collect();
    let y_unit = figure.y_label.clone();
    let mut plot = Plot::new(id)
        .height(height)
        .x_axis_label(figure.x_label.clone())
        .y_axis_label(figure.y_label.clone())
        .label_formatter(move |hover| {
            // Name the series of the point under the pointer; elsewhere, no label.
            let egui_plot::HoverPosition::NearDataPoint { plot_name, position, index } = hover else { return None };
            let x = if log_x { 10f64.powf(position.x) } else { position.x };
            let point = labels.iter().find(|(name, _)| name == plot_name).and_then(|(_, l)| l.get(*index));
            let name = point.map_or_else(|| plot_name.to_string(), |p| format!("{p} ({plot_name})"));
            Some(format!("{name}\n{x:.3} {x_unit}\n{:.2} {y_unit}", position.y))
        });
    // Every labelled grid mark gets its value (the default leaves a short latency axis with a single label).
    plot = if log_x {
        plot.x_axis_formatter(|mark, _range| figure::tick_label(10f64.powf(mark.value)))
    } else {
        // About six labelled steps of 1, 2, 2.5 or 5 times a power of ten across the visible range.
        plot.x_axis_formatter(|mark, _range| figure::tick_label(mark.value)).x_grid_spacer(
            egui_plot::uniform_grid_spacer(|input| {
                let step = figure::nice_step((input.bounds.1 - input.bounds.0) / 6.0);
                [step / 5.0, step, step * 5.0]
            }),
        )
    };
    let front_colour = ui.visuals().strong_text_color();
    plot.show(ui, |plot_ui| {
        for series in &figure.series {
            let points: Vec<[f64; 2]> = series
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_x || *x > 0.0))
                .map(|&(x, y)| [x_of(x), y])
                .collect();
            let c = on_screen(front_colour, series.colour);
            let name = series.name.clone();
            match series.mark {
                Mark::Line => plot_ui.line(Line::new(name, PlotPoints::from(points)).color(c).width(2.0)),
                Mark::Dashed => plot_ui.line(
                    Line::new(name, PlotPoints::from(points))
                        .color(c)
                        .width(1.5)
                        .style(egui_plot::LineStyle::dashed_loose()),
                ),
                Mark::Dots => plot_ui.points(Points::new(name, points).color(c).radius(5.0).filled(true)),
                Mark::Diamonds => {
                    plot_ui.points(Points::new(name, points).color(c).radius(7.0).shape(MarkerShape::Diamond))
                }
                Mark::Ring => plot_ui
                    .points(Points::new(name, points).color(c).radius(9.0).shape(MarkerShape::Circle).filled(false)),
            }
        }
    });
}
