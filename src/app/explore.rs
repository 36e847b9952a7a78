//! The explore view: one slider per early exit, live outcomes, and plots that follow the slider — the
//! accuracy/latency sweep with its operating points and every static variant, exit rate against the threshold,
//! the latency histogram by exit, and the samples whose prediction changed against the base.

use eframe::egui;

use egui_plot::{Bar, BarChart, Legend, Line, Plot, PlotPoints, VLine};

use super::state::SavedState;
use super::world::{JobKind, World};
use super::{Command, Commands};
use crate::analysis::{Criterion, Outcome, Policy};
use crate::report::figure::{self, Figure, Mark, Series};

/// Samples shown in the "changed against the base" grid.
const CHANGED_SAMPLES_SHOWN: usize = 40;

fn percent(value: f64) -> String {
    format!("{:.2} %", value * 100.0)
}

/// Slider range and scale for a criterion.
fn slider_range(criterion: Criterion, num_classes: usize) -> (f64, f64, bool) {
    match criterion {
        Criterion::Entropy => (1e-6, (num_classes.max(2) as f64).ln(), true),
        Criterion::NormalizedEntropy => (1e-6, 1.0, true),
        Criterion::MaxProbability => (1.0 / num_classes.max(1) as f64, 1.0, false),
        Criterion::Margin => (0.0, 1.0, false),
    }
}

/// Draws the explore tab.
pub fn explore_ui(ui: &mut egui::Ui, saved: &SavedState, world: &World, commands: &mut Commands<'_>) {
    let variants: Vec<(String, usize)> = {
        let mut seen = Vec::new();
        for run in world.session.runs.iter().filter(|r| !world.session.is_calibration_run(r)) {
            if !seen.iter().any(|(n, _): &(String, usize)| n == &run.info.variant) {
                seen.push((run.info.variant.clone(), run.trace.early_exit_count()));
            }
        }
        seen
    };
    if variants.is_empty() {
        ui.heading("No traces yet");
        ui.label("Open a session (the demo opens by default), or add variants and a dataset and run them in Runs.");
        return;
    }
    let selected = saved.selected_variant.clone().filter(|v| variants.iter().any(|(n, _)| n == v));
    let Some(selected) = selected.or_else(|| variants.iter().find(|(_, e)| *e > 0).map(|(n, _)| n.clone())) else {
        return;
    };

    // The policy is evaluated once per frame; the controls and the plots share the result.
    // The analysis is made on a worker the first time a run is shown; until then the view says so.
    let index = world.run_index(&selected);
    let analysis = index.and_then(|index| world.cached_analysis(index, saved.criterion));
    if let (Some(index), None) = (index, &analysis) {
        commands.send(Command::NeedAnalysis(index));
    }
    let frame = index.zip(analysis).map(|(index, analysis)| {
        let criterion = saved.criterion;
        let early = world.session.runs[index].trace.early_exit_count();
        let policy = world.policy_for(&selected, criterion).unwrap_or_else(|| Policy::never_exit(criterion, early));
        let outcome = analysis.prepared.evaluate(&policy);
        let per_sample = analysis.prepared.exits_and_latencies(&policy);
        ExploreFrame { index, analysis, policy, outcome, per_sample }
    });

    egui::Panel::left("explore_controls").resizable(true).default_size(360.0).show(ui, |ui| {
        egui::ScrollArea::vertical().show(ui, |ui| {
            controls_ui(ui, saved, world, commands, &variants, &selected, frame.as_ref());
        });
    });
    match &frame {
        Some(frame) => {
            egui::CentralPanel::default().show(ui, |ui| plots_ui(ui, saved, world, commands, &selected, frame));
        }
        None => {
            egui::CentralPanel::default().show(ui, |ui| {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label(format!("preparing the trace of {selected}…"));
                });
            });
        }
    }
}

/// What the explore view computes once per frame for the selected variant.
struct ExploreFrame {
    /// Index of the explored run.
    index: usize,
    /// Its prepared trace and sweep.
    analysis: std::sync::Arc<super::world::Analysis>,
    /// The current policy.
    policy: Policy,
    /// What the policy yields.
    outcome: Outcome,
    /// Exit and predicted latency of every sample under the policy.
    per_sample: Vec<(u8, f32)>,
}

fn controls_ui(
    ui: &mut egui::Ui,
    saved: &SavedState,
    world: &World,
    commands: &mut Commands<'_>,
    variants: &[(String, usize)],
    selected: &str,
    frame: Option<&ExploreFrame>,
) {
    ui.heading("Variant");
    egui::ComboBox::from_label("variant").selected_text(selected).width(220.0).show_ui(ui, |ui| {
        for (name, early) in variants {
            let label = if *early > 0 {
                format!("{name}  ({early} early exit{})", if *early > 1 { "s" } else { "" })
            } else {
                name.clone()
            };
            if ui.selectable_label(name == selected, label).clicked() {
                commands.send(Command::SelectVariant(name.clone()));
            }
        }
    });
    let criterion = saved.criterion;
    egui::ComboBox::from_label("criterion").selected_text(criterion.name()).show_ui(ui, |ui| {
        for c in Criterion::ALL {
            if ui.selectable_label(c == criterion, c.name()).on_hover_text(criterion_help(c)).clicked() {
                commands.send(Command::SetCriterion(c));
            }
        }
    });
    let mut budget = saved.budget_pp;
    ui.horizontal(|ui| {
        let label = ui.label("inf-opt accuracy budget (pp)").on_hover_text(
            "inf-opt is the fastest operating point whose accuracy is at most this many percentage points below \
             the base's (the study's inf-opt); acc-opt is the most accurate one",
        );
        let budget_box = egui::DragValue::new(&mut budget).range(0.0..=100.0).speed(0.05).max_decimals(2);
        if ui.add(budget_box).labelled_by(label.id).changed() {
            commands.send(Command::SetBudget(budget));
        }
    });

    let Some(ExploreFrame { index, analysis, policy, outcome, .. }) = frame else { return };
    let run = &world.session.runs[*index];
    let early = run.trace.early_exit_count();
    let num_classes = run.trace.num_classes;
    ui.weak(format!(
        "{} samples of {} on {} ({})",
        run.trace.len(),
        run.info.dataset,
        run.info.device.host,
        run.info.provider
    ));
    ui.separator();

    if early > 0 {
        ui.heading("Thresholds");
        let verb = if criterion.exits_below() { "<=" } else { ">=" };
        ui.weak(format!("a sample leaves at the first exit whose {} is {verb} its threshold", criterion.name()));
        let (low, high, logarithmic) = slider_range(criterion, num_classes);
        let mut thresholds = policy.thresholds.clone();
        let mut changed = false;
        for (exit, threshold) in thresholds.iter_mut().enumerate() {
            *threshold = threshold.clamp(low, high);
            let slider = egui::Slider::new(threshold, low..=high)
                .logarithmic(logarithmic)
                .smallest_positive(1e-6)
                .text(format!("Exit {} threshold", exit + 1));
            let response = ui.add(slider);
            changed |= response.changed();
            let range = (low, high, logarithmic);
            super::certify::shade_certified_ui(ui, world, &response, (selected, criterion), exit, range);
        }
        if changed {
            commands.send(Command::SetPolicy(selected.to_string(), Policy { criterion, thresholds }));
        }
        let percentile_id = ui.scope_id().with(("calibration_percentile", selected));
        let run = &world.session.runs[*index];
        if world.session.calibration_run(&run.info.variant, &run.info).is_some() {
            let mut percentile: f64 = ui.data(|d| d.get_temp(percentile_id)).unwrap_or(75.0);
            ui.horizontal(|ui| {
                let slider =
                    egui::Slider::new(&mut percentile, 0.0..=100.0).max_decimals(1).text("Calibration percentile");
                if ui.add(slider).changed() {
                    ui.data_mut(|d| d.insert_temp(percentile_id, percentile));
                }
                if ui
                    .button("Apply")
                    .on_hover_text(
                        "Thresholds at this percentile of the confidence seen on the calibration set (seed 003)",
                    )
                    .clicked()
                {
                    commands.send(Command::ApplyPercentile(selected.to_string(), *index, criterion, percentile));
                }
            });
        }
        if !saved.presentation {
            super::certify::certified_ui(ui, world, *index, criterion, commands);
        }
        ui.horizontal(|ui| {
            let sweep = &analysis.sweep;
            for (label, point) in [("acc-opt", sweep.acc_opt), ("inf-opt", analysis.inf_opt(saved.budget_pp))] {
                let enabled = point.is_some();
                let help = if label == "acc-opt" {
                    "Thresholds of the most accurate point of the sweep (ties: the fastest)"
                } else {
                    "Thresholds of the fastest point within the accuracy budget"
                };
                if ui.add_enabled(enabled, egui::Button::new(format!("Set {label}"))).on_hover_text(help).clicked()
                    && let Some(p) = point
                {
                    commands
                        .send(Command::SetPolicy(selected.to_string(), analysis.prepared.policy_at(&sweep.points[p])));
                }
            }
            if !saved.presentation
                && ui
                    .button("Verify")
                    .on_hover_text("Run the variant really skipping segments at this policy")
                    .clicked()
            {
                commands.send(Command::Verify);
            }
        });
    }

    ui.separator();
    ui.heading("Outcome");
    readouts_ui(ui, outcome, analysis.prepared.base_accuracy());
    verification_ui(ui, world, selected, commands);
}

/// The live numbers. Each is one label, so tests and screen readers find it by its text.
fn readouts_ui(ui: &mut egui::Ui, outcome: &Outcome, base_accuracy: Option<f64>) {
    let delta =
        base_accuracy.map_or(String::new(), |b| format!(" ({:+.2} pp vs base)", (outcome.accuracy - b) * 100.0));
    ui.label(format!("Accuracy: {}{delta}", percent(outcome.accuracy)))
        .on_hover_text("Top-1 accuracy against the true labels at these thresholds, and its change against the base");
    if let Some(top5) = outcome.top5_accuracy {
        ui.label(format!("Top-5 accuracy: {}", percent(top5)))
            .on_hover_text("Share of samples whose true label is among the 5 most probable classes");
    }
    if let (Some(label), Some(probability)) = (outcome.label_loyalty, outcome.probability_loyalty) {
        ui.label(format!("Label loyalty: {}", percent(label)))
            .on_hover_text("Share of samples given the same top-1 label as the base model, right or wrong");
        let figure = crate::report::probability_loyalty_percent(Some(probability), outcome.probability_loyalty_error);
        ui.label(format!("Probability loyalty: {figure} %")).on_hover_text(
            "How close the output distribution stays to the base's: the mean over samples of 1 - sqrt(JSD), the \
             Jensen-Shannon divergence in bits (Xu et al., 2021). ≈: an estimate from the top classes the trace \
             keeps, ± the most it can be off",
        );
    }
    let exits = outcome.exit_rates.len();
    for (exit, rate) in outcome.exit_rates.iter().enumerate() {
        let name = if exit + 1 == exits { "final".to_string() } else { format!("exit {}", exit + 1) };
        ui.label(format!("Exit rate, {name}: {}", percent(*rate)))
            .on_hover_text("Share of samples that leave at this exit (the final exit takes the rest)");
    }
    ui.label(format!("Predicted mean latency: {:.3} ms", outcome.latency.mean_us / 1000.0)).on_hover_text(
        "Mean inference latency predicted from the trace: each sample's measured segment times up to its exit",
    );
    ui.label(format!("Predicted p99 latency: {:.3} ms", outcome.latency.p99_us / 1000.0))
        .on_hover_text("99th percentile of the predicted per-sample latency");
    if let Some(speedup) = outcome.speedup {
        ui.label(format!("Speed-up vs base: {speedup:.2}x"))
            .on_hover_text("The base's mean latency divided by this mean latency, same dataset and device");
    }
    if let (Some(early), Some(last)) = (outcome.early_exit_mean_latency_us, outcome.final_exit_mean_latency_us) {
        ui.label(format!("Early / final exit latency: {:.3} / {:.3} ms", early / 1000.0, last / 1000.0))
            .on_hover_text("Mean latency of the samples that left early, and of those that ran to the final exit");
    }
}

/// Thresholds as the user reads them: "entropy <= 0.450, 0.300".
fn thresholds_text(policy: &Policy) -> String {
    let verb = if policy.criterion.exits_below() { "<=" } else { ">=" };
    let values: Vec<String> = policy.thresholds.iter().map(|t| format!("{t:.3}")).collect();
    format!("{} {verb} {}", policy.criterion.name(), values.join(", "))
}

fn verification_ui(ui: &mut egui::Ui, world: &World, selected: &str, commands: &mut Commands<'_>) {
    let verifying = world
        .jobs
        .iter()
        .rev()
        .find(|j| j.variant == selected && j.handle.is_some() && matches!(j.kind, JobKind::Verify(..)));
    if let Some(job) = verifying {
        ui.horizontal(|ui| {
            let eta = job.eta_s().map_or(String::new(), |e| format!(", ETA {e:.0} s"));
            let text =
                format!("verifying on {}: {} / {} samples{eta} ({})", job.device, job.done, job.total, job.phase);
            ui.add(egui::ProgressBar::new(job.done as f32 / job.total.max(1) as f32).text(text).desired_width(360.0));
            if ui.button("Cancel").on_hover_text("Stop the verification run").clicked() {
                commands.send(Command::CancelJob(job.id));
            }
        });
    }
    let Some(v) = world.verification.as_ref().filter(|v| v.variant == selected) else { return };
    let mut measured = v.run.latency_us.clone();
    let measured = crate::analysis::LatencySummary::from_values(&mut measured);
    ui.separator();
    ui.heading("Verified (dynamic run)");
    ui.label(format!("on {} at {}", v.device, thresholds_text(&v.policy)))
        .on_hover_text("The device and thresholds of the dynamic run; the prediction is the trace's at the same ones");
    egui::Grid::new("verification").striped(true).show(ui, |ui| {
        ui.label("");
        ui.strong("predicted");
        ui.strong("measured");
        ui.end_row();
        for (name, predicted, real) in [
            ("mean (ms)", v.predicted.latency.mean_us, measured.mean_us),
            ("p50 (ms)", v.predicted.latency.p50_us, measured.p50_us),
            ("p99 (ms)", v.predicted.latency.p99_us, measured.p99_us),
        ] {
            ui.label(name);
            ui.label(format!("{:.3}", predicted / 1000.0));
            ui.label(format!("{:.3}", real / 1000.0));
            ui.end_row();
        }
    });
    ui.label(format!("same exit as predicted: {} of {}", v.same_exit, v.run.exit_taken.len()));
}

fn plots_ui(
    ui: &mut egui::Ui,
    saved: &SavedState,
    world: &World,
    commands: &mut Commands<'_>,
    selected: &str,
    frame: &ExploreFrame,
) {
    let criterion = saved.criterion;
    let ExploreFrame { index, analysis, policy, outcome, per_sample } = frame;
    let index = *index;
    let early = world.session.runs[index].trace.early_exit_count();
    let statics = static_points(world, commands, index, criterion);

    let size_bytes = world.session.variant(selected).map(|v| v.size_bytes);
    let shown_policy = (early > 0).then_some(policy);
    let headline =
        crate::report::headline(selected, shown_policy, outcome, analysis.prepared.base_accuracy(), size_bytes);
    headline_card_ui(ui, saved, &headline, commands);
    let height = (ui.available_height() / 2.0 - 48.0).max(160.0);
    ui.columns(2, |columns| {
        let ui = &mut columns[0];
        ui.strong("Accuracy vs mean latency");
        let sweep = &analysis.sweep;
        let curve: Vec<[f64; 2]> =
            sweep.points.iter().map(|p| [p.mean_latency_us / 1000.0, p.accuracy * 100.0]).collect();
        let mut all: Vec<(f64, f64)> = curve.iter().map(|p| (p[0], p[1])).collect();
        all.extend(statics.iter().map(|(_, l, a)| (*l, *a)));
        let front: Vec<[f64; 2]> =
            crate::analysis::pareto_front(&all).into_iter().map(|i| [all[i].0, all[i].1]).collect();
        let certified_point = super::certify::certified_policy(world, selected, criterion).map(|policy| {
            let certified = analysis.prepared.evaluate(&policy);
            [certified.latency.mean_us / 1000.0, certified.accuracy * 100.0]
        });
        let variant_tags = world.session.variant(selected).map(|v| v.tags.clone()).unwrap_or_default();
        let mut series = Vec::new();
        if early > 0 {
            series.push(Series {
                name: format!("{selected} sweep"),
                colour: figure::technique_colour(&variant_tags),
                mark: Mark::Line,
                points: curve.iter().map(|p| (p[0], p[1])).collect(),
                labels: Vec::new(),
            });
        }
        series.push(Series {
            name: "Pareto front".into(),
            colour: figure::FRONT_COLOUR,
            mark: Mark::Dashed,
            points: front.iter().map(|p| (p[0], p[1])).collect(),
            labels: Vec::new(),
        });
        for (name, latency, accuracy) in &statics {
            let tags = world.session.variant(name).map(|v| v.tags.clone()).unwrap_or_default();
            series.push(Series {
                name: name.clone(),
                colour: figure::technique_colour(&tags),
                mark: Mark::Dots,
                points: vec![(*latency, *accuracy)],
                labels: Vec::new(),
            });
        }
        for (label, point, rgb) in
            [("acc-opt", sweep.acc_opt, [0, 128, 128]), ("inf-opt", analysis.inf_opt(saved.budget_pp), [205, 133, 0])]
        {
            if let Some(p) = point.map(|i| &sweep.points[i]) {
                series.push(Series {
                    name: label.into(),
                    colour: rgb,
                    mark: Mark::Diamonds,
                    points: vec![(p.mean_latency_us / 1000.0, p.accuracy * 100.0)],
                    labels: Vec::new(),
                });
            }
        }
        if let Some(point) = certified_point {
            series.push(Series {
                name: "certified".into(),
                colour: [46, 139, 87],
                mark: Mark::Diamonds,
                points: vec![(point[0], point[1])],
                labels: Vec::new(),
            });
        }
        series.push(Series {
            name: "current".into(),
            colour: figure::CURRENT_COLOUR,
            mark: Mark::Ring,
            points: vec![(outcome.latency.mean_us / 1000.0, outcome.accuracy * 100.0)],
            labels: Vec::new(),
        });
        let accuracy_figure = Figure {
            title: format!("{selected}: accuracy vs mean latency ({})", criterion.name()),
            x_label: "mean latency (ms)".into(),
            y_label: "accuracy (%)".into(),
            log_x: saved.log_latency,
            series,
            headline: headline.to_string(),
        };
        super::figure_view::plot_figure_ui(ui, "accuracy_latency", &accuracy_figure, height);
        super::capture::remember_figure(ui.ctx(), accuracy_figure);

        let ui = &mut columns[1];
        ui.strong(format!("Exit rate vs threshold ({})", criterion.name()));
        Plot::new("exit_rate_threshold")
            .height(height)
            .legend(Legend::default())
            .x_axis_label(format!("threshold ({})", criterion.name()))
            .y_axis_label("share of samples (%)")
            .show(ui, |plot| {
                let exits = sweep.points.first().map_or(0, |p| p.exit_rates.len());
                for exit in 0..exits.saturating_sub(1) {
                    let points: Vec<[f64; 2]> =
                        sweep.points.iter().map(|p| [p.threshold, p.exit_rates[exit] * 100.0]).collect();
                    let exit_colour = super::figure_view::colour(figure::exit_colour(exit));
                    plot.line(Line::new(format!("exit {}", exit + 1), PlotPoints::from(points)).color(exit_colour));
                }
                let total: Vec<[f64; 2]> =
                    sweep.points.iter().map(|p| [p.threshold, p.early_exit_rate * 100.0]).collect();
                let all_colour = super::figure_view::colour(figure::FINAL_EXIT_COLOUR);
                plot.line(
                    Line::new("all early exits", PlotPoints::from(total))
                        .color(all_colour)
                        .style(egui_plot::LineStyle::dashed_loose()),
                );
                for threshold in &policy.thresholds {
                    plot.vline(VLine::new("current", *threshold));
                }
            });
    });
    ui.columns(2, |columns| {
        let ui = &mut columns[0];
        ui.strong("Predicted latency by exit");
        histogram_ui(ui, per_sample, policy.thresholds.len() + 1, height);
        let ui = &mut columns[1];
        if !saved.presentation {
            changed_samples_ui(ui, world, commands, index, per_sample);
        }
    });
}

/// What a criterion measures, for its tooltip.
fn criterion_help(criterion: Criterion) -> &'static str {
    match criterion {
        Criterion::Entropy => {
            "Entropy of the exit's softmax, in nats (the study's criterion): a sample leaves when it is low"
        }
        Criterion::NormalizedEntropy => "Entropy divided by ln(classes), 0..1: comparable across class counts",
        Criterion::MaxProbability => "Largest softmax probability: a sample leaves when it is high",
        Criterion::Margin => "Difference between the two largest probabilities: a sample leaves when it is high",
    }
}

/// The current operating point in one sentence, large, with copy and figure export.
fn headline_card_ui(ui: &mut egui::Ui, saved: &SavedState, headline: &str, commands: &mut Commands<'_>) {
    egui::Frame::group(ui.style()).show(ui, |ui| {
        ui.horizontal_wrapped(|ui| {
            let size = if saved.presentation { 20.0 } else { 17.0 };
            ui.label(egui::RichText::new(headline).size(size).strong())
                .on_hover_text("The current operating point: speed-up and accuracy change against the base, where samples leave, size on disk");
            if ui.button("Copy").on_hover_text("Copy this line to the clipboard").clicked() {
                commands.send(Command::CopyText(headline.to_string()));
            }
            if !saved.presentation
                && ui
                    .button("Export figure…")
                    .on_hover_text("The accuracy/latency figure with title, axes, legend and this line: SVG, or PNG at 2x")
                    .clicked()
            {
                commands.send(Command::PickFigureExport);
            }
            let mut log = saved.log_latency;
            if ui.checkbox(&mut log, "log latency").on_hover_text("Latency axis on a logarithmic scale").changed() {
                commands.send(Command::SetLogLatency(log));
            }
        });
    });
}

/// Static variants (and the base) of the same family — the same base — on the same dataset and device:
/// (name, mean latency ms, accuracy %).
fn static_points(
    world: &World,
    commands: &mut Commands<'_>,
    index: usize,
    criterion: Criterion,
) -> Vec<(String, f64, f64)> {
    let Some(reference) = world.run(index).map(|r| r.info.clone()) else { return Vec::new() };
    let family = world.session.base_of(&reference.variant);
    let candidates: Vec<usize> = (0..world.session.runs.len())
        .filter(|&i| {
            let r = &world.session.runs[i];
            i != index
                && r.trace.early_exit_count() == 0
                && r.info.dataset == reference.dataset
                && r.info.same_device(&reference)
                && (family.is_none() || world.session.base_of(&r.info.variant) == family)
        })
        .collect();
    let mut points = Vec::new();
    for i in candidates {
        let name = world.session.runs[i].info.variant.clone();
        // A static run's sweep is one point, its final exit: cached, not re-evaluated every frame.
        match world.cached_analysis(i, criterion) {
            Some(analysis) => {
                if let Some(point) = analysis.sweep.points.first() {
                    points.push((name, point.mean_latency_us / 1000.0, point.accuracy * 100.0));
                }
            }
            None => commands.send(Command::NeedAnalysis(i)),
        }
    }
    points
}

/// Stacked latency histogram, one series per exit; `exit_count` counts the final exit, so "final exit" names
/// only the samples that reached the last segment, whichever exits the others took.
fn histogram_ui(ui: &mut egui::Ui, samples: &[(u8, f32)], exit_count: usize, height: f32) {
    if samples.is_empty() {
        return;
    }
    // The range ends a little past the 99th percentile; rarer outliers gather in the last bin.
    let mut latencies: Vec<f32> = samples.iter().map(|s| s.1).collect();
    let p99 = crate::analysis::LatencySummary::from_values(&mut latencies).p99_us as f32;
    let max_us = (p99 * 1.25).max(1.0);
    let bins = 40usize;
    let width_ms = f64::from(max_us) / 1000.0 / bins as f64;
    let exits = exit_count.max(samples.iter().map(|s| usize::from(s.0)).max().unwrap_or(0) + 1);
    let mut counts = vec![vec![0usize; bins]; exits];
    for &(exit, latency) in samples {
        let bin = ((latency / max_us) * (bins as f32 - 1e-3)) as usize;
        counts[usize::from(exit)][bin.min(bins - 1)] += 1;
    }
    Plot::new("latency_histogram")
        .height(height)
        .legend(Legend::default())
        .x_axis_label("predicted latency (ms)")
        .y_axis_label("samples")
        .show(ui, |plot| {
            let mut below: Vec<f64> = vec![0.0; bins];
            for (exit, bins_of_exit) in counts.iter().enumerate() {
                let name = if exit + 1 == exits { "final exit".to_string() } else { format!("exit {}", exit + 1) };
                let rgb = if exit + 1 == exits { figure::FINAL_EXIT_COLOUR } else { figure::exit_colour(exit) };
                let bars: Vec<Bar> = bins_of_exit
                    .iter()
                    .enumerate()
                    .map(|(b, &c)| {
                        Bar::new((b as f64 + 0.5) * width_ms, c as f64).width(width_ms * 0.95).base_offset(below[b])
                    })
                    .collect();
                for (b, &c) in bins_of_exit.iter().enumerate() {
                    below[b] += c as f64;
                }
                plot.bar_chart(BarChart::new(name, bars).color(super::figure_view::colour(rgb)));
            }
        });
}

/// The samples whose top-1 label differs from the base's under the current policy, with thumbnails.
fn changed_samples_ui(
    ui: &mut egui::Ui,
    world: &World,
    commands: &mut Commands<'_>,
    index: usize,
    per_sample: &[(u8, f32)],
) {
    let run = &world.session.runs[index];
    let Some(base) = crate::report::base_run(&world.session, run).filter(|b| b.trace.len() == run.trace.len()) else {
        ui.strong("Changed against the base");
        ui.weak("no base trace on this dataset and device");
        return;
    };
    let base_final = base.trace.exits.len() - 1;
    let changed: Vec<(usize, u8, u16, u16, u32)> = per_sample
        .iter()
        .enumerate()
        .filter_map(|(s, &(e, _))| {
            let variant_label = run.trace.exits[usize::from(e)].predicted(s);
            let base_label = base.trace.exits[base_final].predicted(s);
            (variant_label != base_label).then_some((s, e, base_label, variant_label, run.trace.labels[s]))
        })
        .collect();
    let early_exits = run.trace.early_exit_count();
    let dataset_name = run.info.dataset.clone();
    ui.strong(format!("Changed against the base: {} samples", changed.len()));
    let classes: Vec<String> =
        world.session.datasets.iter().find(|d| d.name == dataset_name).map(|d| d.classes.clone()).unwrap_or_default();
    let class_name = |c: u32| classes.get(c as usize).cloned().unwrap_or_else(|| c.to_string());
    let mut missing = Vec::new();
    egui::ScrollArea::vertical().id_salt("changed_samples").show(ui, |ui| {
        ui.horizontal_wrapped(|ui| {
            for &(sample, exit, base_label, variant_label, truth) in changed.iter().take(CHANGED_SAMPLES_SHOWN) {
                let exit_name =
                    if usize::from(exit) == early_exits { "final".to_string() } else { format!("exit {}", exit + 1) };
                ui.vertical(|ui| {
                    thumbnail_ui(ui, world, &dataset_name, sample, 56.0, &mut missing);
                    ui.small(format!("#{sample} {exit_name}"));
                    ui.small(format!("base: {}", class_name(u32::from(base_label))));
                    ui.small(format!("now: {}", class_name(u32::from(variant_label))));
                    ui.small(format!("true: {}", class_name(truth)));
                });
            }
        });
        if changed.len() > CHANGED_SAMPLES_SHOWN {
            ui.weak(format!("… and {} more", changed.len() - CHANGED_SAMPLES_SHOWN));
        }
    });
    request_thumbnails(world, commands, &dataset_name, missing);
}

/// Draws the thumbnail of a dataset sample, or notes it in `missing` for a worker to decode.
pub(super) fn thumbnail_ui(
    ui: &mut egui::Ui,
    world: &World,
    dataset: &str,
    sample: usize,
    size_points: f32,
    missing: &mut Vec<usize>,
) {
    match world.thumbnails.get(&(dataset.to_string(), sample)) {
        Some(Some(texture)) => {
            ui.add(egui::Image::new(texture).fit_to_exact_size(egui::vec2(size_points, size_points)));
        }
        Some(None) => {
            ui.allocate_space(egui::vec2(size_points, size_points));
        }
        None => {
            missing.push(sample);
            ui.allocate_ui(egui::vec2(size_points, size_points), |ui| ui.spinner());
        }
    }
}

/// Asks for the thumbnails `missing` lists: the dataset opened first if it is not.
pub(super) fn request_thumbnails(world: &World, commands: &mut Commands<'_>, dataset: &str, missing: Vec<usize>) {
    if missing.is_empty() {
        return;
    }
    match world.loaded_dataset(dataset) {
        None => commands.send(Command::NeedDataset(dataset.to_string())),
        Some(Ok(_)) => commands.send(Command::NeedThumbnails(dataset.to_string(), missing)),
        Some(Err(_)) => {}
    }
}
