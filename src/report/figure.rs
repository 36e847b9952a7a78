//! Figures for slides: one colour per technique and per exit (the app's plots use the same), and annotated
//! SVG export — title, axes with ticks, a legend outside the plot area and the headline under it. The app
//! rasterises the same SVG for PNG export, so both formats show the same figure.

use std::fmt::Write as _;

/// An sRGB colour.
pub type Rgb = [u8; 3];

/// The colour of a technique, from a variant's tags: the same in every plot and export.
pub fn technique_colour(tags: &[String]) -> Rgb {
    let has = |t: &str| tags.iter().any(|x| x == t);
    let early_exit = has("ee");
    match () {
        _ if (has("base") || has("float")) && !early_exit => [60, 60, 60],
        _ if has("ptq") && early_exit => [148, 103, 189],
        _ if has("dq") && early_exit => [227, 119, 194],
        _ if has("prune") && early_exit => [188, 189, 34],
        _ if has("ptq") => [214, 39, 40],
        _ if has("dq") => [255, 127, 14],
        _ if has("prune") => [44, 160, 44],
        _ if early_exit => [31, 119, 180],
        _ => [127, 127, 127],
    }
}

/// The technique of a variant, from its tags, as the study names it (the legend groups by it).
pub fn technique_label(tags: &[String]) -> &'static str {
    let has = |t: &str| tags.iter().any(|x| x == t);
    let early_exit = has("ee");
    match () {
        _ if (has("base") || has("float")) && !early_exit => "base",
        _ if has("ptq") && early_exit => "PTQ-EE",
        _ if has("dq") && early_exit => "DQ-EE",
        _ if has("prune") && early_exit => "PRUNE-EE",
        _ if has("ptq") => "PTQ",
        _ if has("dq") => "DQ",
        _ if has("prune") => "pruned",
        _ if early_exit => "EE",
        _ => "other",
    }
}

/// The colour of exit `index` (0 = first early exit); the final exit is [`FINAL_EXIT_COLOUR`].
pub fn exit_colour(index: usize) -> Rgb {
    const EXITS: [Rgb; 6] =
        [[31, 119, 180], [44, 160, 44], [255, 127, 14], [148, 103, 189], [23, 190, 207], [140, 86, 75]];
    EXITS[index % EXITS.len()]
}

/// Colour of the final exit.
pub const FINAL_EXIT_COLOUR: Rgb = [90, 90, 90];
/// Colour of the Pareto front.
pub const FRONT_COLOUR: Rgb = [0, 0, 0];
/// Colour of the current operating point.
pub const CURRENT_COLOUR: Rgb = [220, 20, 60];

/// How a series is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mark {
    /// A solid line.
    Line,
    /// A dashed line.
    Dashed,
    /// Round markers.
    Dots,
    /// Diamond markers.
    Diamonds,
    /// A large ring (the current point).
    Ring,
}

/// One series of a figure.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Colour.
    pub colour: Rgb,
    /// How it is drawn.
    pub mark: Mark,
    /// (x, y) points.
    pub points: Vec<(f64, f64)>,
    /// What each point is (shown on hover; empty when the series name says it).
    pub labels: Vec<String>,
}

/// A figure: what the app shows, for a slide.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// Title over the plot.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Logarithmic x axis.
    pub log_x: bool,
    /// The series, drawn in order.
    pub series: Vec<Series>,
    /// The headline under the plot (may be empty).
    pub headline: String,
}

/// Figure size in SVG user units (pixels at 1x).
pub const WIDTH: f64 = 960.0;
/// Figure height.
pub const HEIGHT: f64 = 560.0;
const PLOT_LEFT: f64 = 80.0;
const PLOT_TOP: f64 = 60.0;
const PLOT_RIGHT: f64 = 680.0;
const PLOT_BOTTOM: f64 = 470.0;
const LEGEND_LEFT: f64 = 700.0;

/// The round step (1, 2, 2.5 or 5 times a power of ten) at or above `raw` (1 for a degenerate `raw`).
pub fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude)
}

/// About `count` round tick values covering [low, high].
pub fn ticks(low: f64, high: f64, count: usize) -> Vec<f64> {
    if !(low.is_finite() && high.is_finite()) || high <= low {
        return vec![low];
    }
    let step = nice_step((high - low) / count.max(1) as f64);
    let mut tick = (low / step).ceil() * step;
    let mut out = Vec::new();
    while tick <= high + step * 1e-9 {
        out.push(if tick.abs() < step * 1e-9 { 0.0 } else { tick });
        tick += step;
    }
    out
}

/// Tick values of a logarithmic axis: 1, 2, 5 times powers of ten within [low, high].
fn log_ticks(low: f64, high: f64) -> Vec<f64> {
    let mut out = Vec::new();
    if low <= 0.0 || high <= low {
        return out;
    }
    let mut decade = 10f64.powf(low.log10().floor());
    while decade <= high {
        for m in [1.0, 2.0, 5.0] {
            let v = m * decade;
            if v >= low && v <= high {
                out.push(v);
            }
        }
        decade *= 10.0;
    }
    out
}

/// A tick label without trailing zeros: 0.25, 1, 12.5.
pub fn tick_label(value: f64) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" { "0".into() } else { text.to_string() }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn colour(rgb: Rgb) -> String {
    format!("#{:02x}{:02x}{:02x}", rgb[0], rgb[1], rgb[2])
}

/// The figure as a standalone SVG document.
pub fn to_svg(figure: &Figure) -> String {
    let points = figure.series.iter().flat_map(|s| s.points.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
    let points: Vec<(f64, f64)> = points.filter(|(x, _)| !figure.log_x || *x > 0.0).copied().collect();
    let (mut x0, mut x1, mut y0, mut y1) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY), |(a, b, c, d), &(x, y)| {
            (a.min(x), b.max(x), c.min(y), d.max(y))
        });
    if points.is_empty() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    // A margin so points do not sit on the frame.
    let (xm, ym) = (((x1 - x0) * 0.05).max(1e-6), ((y1 - y0) * 0.05).max(0.05));
    if figure.log_x {
        (x0, x1) = (x0 / 1.1, x1 * 1.1);
    } else {
        (x0, x1) = (x0 - xm, x1 + xm);
    }
    (y0, y1) = (y0 - ym, y1 + ym);
    let map_x = |x: f64| {
        let t = if figure.log_x { (x.ln() - x0.ln()) / (x1.ln() - x0.ln()) } else { (x - x0) / (x1 - x0) };
        PLOT_LEFT + t * (PLOT_RIGHT - PLOT_LEFT)
    };
    let map_y = |y: f64| PLOT_BOTTOM - (y - y0) / (y1 - y0) * (PLOT_BOTTOM - PLOT_TOP);

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="36" font-size="20" font-weight="bold" text-anchor="middle">{}</text>"#,
        (PLOT_LEFT + PLOT_RIGHT) / 2.0,
        escape(&figure.title)
    );
    // Axes, grid and ticks.
    let _ = writeln!(
        svg,
        r##"<rect x="{PLOT_LEFT}" y="{PLOT_TOP}" width="{}" height="{}" fill="none" stroke="#444" class="axes"/>"##,
        PLOT_RIGHT - PLOT_LEFT,
        PLOT_BOTTOM - PLOT_TOP
    );
    let x_ticks = if figure.log_x { log_ticks(x0, x1) } else { ticks(x0, x1, 8) };
    for x in x_ticks {
        let px = map_x(x);
        let _ = writeln!(
            svg,
            r##"<line x1="{px:.1}" y1="{PLOT_TOP}" x2="{px:.1}" y2="{PLOT_BOTTOM}" stroke="#e5e5e5"/><text x="{px:.1}" y="{}" font-size="13" text-anchor="middle" class="tick">{}</text>"##,
            PLOT_BOTTOM + 18.0,
            tick_label(x)
        );
    }
    for y in ticks(y0, y1, 6) {
        let py = map_y(y);
        let _ = writeln!(
            svg,
            r##"<line x1="{PLOT_LEFT}" y1="{py:.1}" x2="{PLOT_RIGHT}" y2="{py:.1}" stroke="#e5e5e5"/><text x="{}" y="{:.1}" font-size="13" text-anchor="end" class="tick">{}</text>"##,
            PLOT_LEFT - 6.0,
            py + 4.0,
            tick_label(y)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" font-size="15" text-anchor="middle" class="axis-label">{}</text>"#,
        (PLOT_LEFT + PLOT_RIGHT) / 2.0,
        PLOT_BOTTOM + 42.0,
        escape(&figure.x_label)
    );
    let _ = writeln!(
        svg,
        r#"<text x="22" y="{0}" font-size="15" text-anchor="middle" transform="rotate(-90 22 {0})" class="axis-label">{1}</text>"#,
        (PLOT_TOP + PLOT_BOTTOM) / 2.0,
        escape(&figure.y_label)
    );
    // Series, clipped to the plot area.
    let _ = writeln!(
        svg,
        r#"<clipPath id="plot"><rect x="{PLOT_LEFT}" y="{PLOT_TOP}" width="{}" height="{}"/></clipPath><g clip-path="url(#plot)">"#,
        PLOT_RIGHT - PLOT_LEFT,
        PLOT_BOTTOM - PLOT_TOP
    );
    for series in &figure.series {
        let c = colour(series.colour);
        let visible: Vec<(f64, f64)> = series
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite() && (!figure.log_x || *x > 0.0))
            .map(|&(x, y)| (map_x(x), map_y(y)))
            .collect();
        match series.mark {
            Mark::Line | Mark::Dashed => {
                let path: Vec<String> = visible.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
                let dash = if series.mark == Mark::Dashed { r#" stroke-dasharray="6 4""# } else { "" };
                let _ = writeln!(
                    svg,
                    r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2.5"{dash}/>"#,
                    path.join(" ")
                );
            }
            Mark::Dots => {
                for (x, y) in visible {
                    let _ = writeln!(svg, r#"<circle cx="{x:.1}" cy="{y:.1}" r="6" fill="{c}"/>"#);
                }
            }
            Mark::Diamonds => {
                for (x, y) in visible {
                    let _ = writeln!(
                        svg,
                        r#"<polygon points="{x:.1},{:.1} {:.1},{y:.1} {x:.1},{:.1} {:.1},{y:.1}" fill="{c}"/>"#,
                        y - 7.0,
                        x + 7.0,
                        y + 7.0,
                        x - 7.0
                    );
                }
            }
            Mark::Ring => {
                for (x, y) in visible {
                    let _ = writeln!(
                        svg,
                        r#"<circle cx="{x:.1}" cy="{y:.1}" r="9" fill="none" stroke="{c}" stroke-width="3"/>"#
                    );
                }
            }
        }
    }
    let _ = writeln!(svg, "</g>");
    // The legend, outside the plot area.
    let _ = writeln!(svg, r#"<g class="legend">"#);
    for (i, series) in figure.series.iter().enumerate() {
        let y = PLOT_TOP + 10.0 + i as f64 * 22.0;
        if y > HEIGHT - 60.0 {
            let _ = writeln!(
                svg,
                r#"<text x="{LEGEND_LEFT}" y="{y:.1}" font-size="13">… {} more</text>"#,
                figure.series.len() - i
            );
            break;
        }
        let c = colour(series.colour);
        let swatch = match series.mark {
            Mark::Line => format!(
                r#"<line x1="{LEGEND_LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="{c}" stroke-width="3"/>"#,
                LEGEND_LEFT + 22.0
            ),
            Mark::Dashed => format!(
                r#"<line x1="{LEGEND_LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="{c}" stroke-width="3" stroke-dasharray="6 4"/>"#,
                LEGEND_LEFT + 22.0
            ),
            Mark::Ring => format!(
                r#"<circle cx="{}" cy="{y:.1}" r="6" fill="none" stroke="{c}" stroke-width="3"/>"#,
                LEGEND_LEFT + 11.0
            ),
            Mark::Dots | Mark::Diamonds => {
                format!(r#"<circle cx="{}" cy="{y:.1}" r="6" fill="{c}"/>"#, LEGEND_LEFT + 11.0)
            }
        };
        let _ = writeln!(
            svg,
            r#"{swatch}<text x="{}" y="{:.1}" font-size="14">{}</text>"#,
            LEGEND_LEFT + 30.0,
            y + 5.0,
            escape(&series.name)
        );
    }
    let _ = writeln!(svg, "</g>");
    if !figure.headline.is_empty() {
        let _ = writeln!(
            svg,
            r#"<text x="{PLOT_LEFT}" y="{}" font-size="17" class="headline">{}</text>"#,
            HEIGHT - 18.0,
            escape(&figure.headline)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 10.0, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(91.3, 93.9, 6);
        assert!(t.len() >= 3 && t.iter().all(|v| (91.3..=93.9).contains(v)), "{t:?}");
        assert_eq!(log_ticks(0.3, 30.0), vec![0.5, 1.0, 2.0, 5.0, 10.0, 20.0]);
    }

    #[test]
    fn the_svg_has_title_axes_ticks_legend_and_headline() {
        let figure = Figure {
            title: "mobilenet/ee: accuracy vs latency".into(),
            x_label: "mean latency (ms)".into(),
            y_label: "accuracy (%)".into(),
            log_x: false,
            series: vec![
                Series {
                    name: "sweep".into(),
                    colour: exit_colour(0),
                    mark: Mark::Line,
                    points: vec![(1.0, 90.0), (2.0, 93.0)],
                    labels: Vec::new(),
                },
                Series {
                    name: "base <float>".into(),
                    colour: technique_colour(&["base".into()]),
                    mark: Mark::Dots,
                    points: vec![(2.5, 93.5)],
                    labels: Vec::new(),
                },
            ],
            headline: "1.61x faster, -1.00 pp".into(),
        };
        let svg = to_svg(&figure);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("mobilenet/ee: accuracy vs latency") && svg.contains("mean latency (ms)"));
        assert!(svg.matches(r#"class="tick""#).count() >= 6, "enough tick labels");
        assert!(svg.contains("base &lt;float&gt;"), "legend text escaped");
        assert!(svg.contains(r#"class="headline">1.61x faster, -1.00 pp<"#));
    }

    #[test]
    fn colours_follow_the_technique_not_the_order() {
        let ptq_ee = technique_colour(&["ptq".into(), "ee".into()]);
        assert_eq!(ptq_ee, technique_colour(&["ee".into(), "ptq".into()]));
        assert_ne!(ptq_ee, technique_colour(&["ptq".into()]));
        assert_ne!(technique_colour(&["dq".into()]), technique_colour(&["ptq".into()]));
    }
}
