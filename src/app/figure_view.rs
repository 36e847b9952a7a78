//! Draws a [`Figure`] with egui_plot: the on-screen plot and the exported SVG/PNG come from the same figure, so
//! colours, names and points match. Colours come from `report::figure` (one per technique and per exit).

use eframe::egui;
use egui_plot::{Legend, Line, MarkerShape, Plot, PlotPoints, Points};

use crate::report::figure::{Figure, Mark, Rgb};

/// An sRGB triple as an egui colour.
pub fn colour(rgb: Rgb) -> egui::Color32 {
    egui::Color32::from_rgb(rgb[0], rgb[1], rgb[2])
}

/// Draws `figure` in a plot `height` points high; hovering a point names its series and shows its value.
pub fn plot_figure_ui(ui: &mut egui::Ui, id: &str, figure: &Figure, height: f32) -> egui::Response {
    let log_x = figure.log_x;
    // A logarithmic axis is drawn as log10 of the value, with tick labels turned back into values.
    let x_of = move |x: f64| if log_x { x.max(1e-9).log10() } else { x };
    let x_unit = figure.x_label.clone();
    let y_unit = figure.y_label.clone();
    let mut plot = Plot::new(id)
        .height(height)
        .legend(Legend::default().position(egui_plot::Corner::RightBottom))
        .x_axis_label(figure.x_label.clone())
        .y_axis_label(figure.y_label.clone())
        .label_formatter(move |hover| {
            // Name the series of the point under the pointer; elsewhere, no label.
            let egui_plot::HoverPosition::NearDataPoint { plot_name, position, .. } = hover else { return None };
            let x = if log_x { 10f64.powf(position.x) } else { position.x };
            Some(format!("{plot_name}\n{x:.3} {x_unit}\n{:.2} {y_unit}", position.y))
        });
    if log_x {
        plot = plot.x_axis_formatter(|mark, _range| format!("{:.3}", 10f64.powf(mark.value)));
    }
    plot.show(ui, |plot_ui| {
        for series in &figure.series {
            let points: Vec<[f64; 2]> = series
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_x || *x > 0.0))
                .map(|&(x, y)| [x_of(x), y])
                .collect();
            let c = colour(series.colour);
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
    })
    .response
}
