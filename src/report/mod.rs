//! The study's tables from a session: Table 2 (fidelity and compression), Tables 3-6 (performance on a
//! device) and Table 7 (quantization x early exit), every early-exit variant at its chosen, acc-opt and inf-opt
//! points. Rendered as text, CSV, Markdown or JSON; the app shows the same rows.

use serde::Serialize;

pub mod figure;
pub mod table;

pub use table::{Better, Cell, Column, Plain, Quantity, Table, Unit, csv_line, to_csv, to_markdown, to_text};

use crate::analysis::outcome::{Outcome, PreparedTrace, compression_ratio};
use crate::analysis::policy::{Criterion, Policy};
use crate::analysis::sweep::{Sweep, ThresholdGrid};
use crate::record::{RunInfo, TraceRun};
use crate::session::Session;

/// How operating points are chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportOptions {
    /// Criterion of the sweeps.
    pub criterion: Criterion,
    /// Accuracy budget of inf-opt, percentage points below the base.
    pub budget_pp: f64,
    /// Thresholds per sweep.
    pub sweep_points: usize,
    /// Extra rows at these calibration percentiles (seed 003), when the session has calibration runs.
    pub percentiles: Vec<f64>,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            criterion: Criterion::Entropy,
            budget_pp: crate::analysis::DEFAULT_BUDGET_PP,
            sweep_points: 1000,
            percentiles: Vec::new(),
        }
    }
}

/// Which point of an early-exit variant a row shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PointKind {
    /// A static variant (no early exit).
    Static,
    /// The policy saved in the session.
    Chosen,
    /// Highest accuracy.
    AccOpt,
    /// Fastest within the accuracy budget.
    InfOpt,
    /// Thresholds at a percentile of calibration confidence.
    Percentile,
}

impl PointKind {
    /// Label as in the study.
    pub fn label(self) -> &'static str {
        match self {
            PointKind::Static => "",
            PointKind::Chosen => "chosen",
            PointKind::AccOpt => "acc-opt",
            PointKind::InfOpt => "inf-opt",
            PointKind::Percentile => "percentile",
        }
    }
}

/// One variant at one operating point on one device.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Device host and provider.
    pub device: String,
    /// Variant name.
    pub variant: String,
    /// Technique tags.
    pub tags: Vec<String>,
    /// Which point.
    pub point: PointKind,
    /// The policy, for early-exit rows.
    pub policy: Option<Policy>,
    /// The calibration percentile, for percentile rows.
    pub percentile: Option<f64>,
    /// Size on disk, bytes.
    pub size_bytes: u64,
    /// Base size / size.
    pub compression: Option<f64>,
    /// What the policy yields.
    pub outcome: Outcome,
    /// Mean CPU % of the run.
    pub cpu_percent: Option<f64>,
    /// Mean GPU % of the run.
    pub gpu_percent: Option<f64>,
    /// Memory of running this variant, bytes: see [`RunInfo::memory_bytes`].
    pub rss_bytes: Option<f64>,
    /// False when the run was cut short.
    pub complete: bool,
    /// `Some(N)` when the run covered only the first N samples.
    pub sample_limit: Option<usize>,
    /// Samples measured, skipped and in the dataset, for people: `9990 of 10000 samples; 10 skipped`.
    pub samples: String,
    /// Samples that could not be read (not in any denominator).
    pub skipped: usize,
    /// True when other processes competed for the CPU during the run.
    pub noisy: bool,
    /// Board power during the run and at rest before it, where the board measures it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power: Option<crate::record::PowerSummary>,
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned plain text.
    Text,
    /// Comma-separated values.
    Csv,
    /// Markdown tables.
    Markdown,
    /// JSON (tables and rows).
    Json,
}

impl Format {
    /// Name on the command line (`--format`).
    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Csv => "csv",
            Format::Markdown => "md",
            Format::Json => "json",
        }
    }
}

/// What a person should know about a run beyond its figures: skipped samples, a failure, a noisy machine.
pub fn run_notes(info: &RunInfo) -> Vec<String> {
    let mut notes = vec![info.sample_summary()];
    for skipped in info.skipped.iter().take(10) {
        let source = skipped.source.as_deref().map_or_else(String::new, |s| format!(" ({s})"));
        notes.push(format!("skipped sample {}{source}: {}", skipped.index, skipped.reason));
    }
    if info.skipped.len() > 10 {
        notes.push(format!("... and {} more skipped (edgescope samples lists them all)", info.skipped.len() - 10));
    }
    if let Some(failure) = &info.reference_failure {
        notes.push(format!(
            "probability loyalty is a top-{} estimate (shown with ≈): {failure}",
            crate::analysis::trace::MAX_TOP_K
        ));
    }
    if let Some(resources) = info.resources.as_ref().filter(|r| r.is_noisy()) {
        notes.push(format!(
            "noisy: other processes used {:.0} % of the CPU during the run (load average {:.2}); its latencies \
             are not the machine's own, measure again on an idle machine",
            resources.mean_other_cpu_percent().unwrap_or(0.0),
            resources.mean_load_average().unwrap_or(0.0)
        ));
    }
    notes
}

/// The base run for `run` (same dataset, device and provider), if the session has one.
pub fn base_run<'a>(session: &'a Session, run: &TraceRun) -> Option<&'a TraceRun> {
    let base = session.base_of(&run.info.variant)?;
    session.matching_run(&base, &run.info)
}

/// Prepares a run against its base under `criterion`.
pub fn prepare(session: &Session, run: &TraceRun, criterion: Criterion) -> PreparedTrace {
    PreparedTrace::new(&run.trace, base_run(session, run).map(|b| &b.trace), criterion)
}

/// The sweep of an early-exit run.
pub fn sweep_run(session: &Session, run: &TraceRun, options: &ReportOptions) -> (PreparedTrace, Sweep) {
    let prepared = prepare(session, run, options.criterion);
    let sweep = prepared.sweep(&ThresholdGrid::Quantiles(options.sweep_points), options.budget_pp);
    (prepared, sweep)
}

/// The policy whose thresholds sit at `percentiles` (one for all exits, or one per exit) of the confidence
/// the variant showed on the session's calibration dataset; `None` without a calibration run.
pub fn percentile_policy(
    session: &Session,
    run: &TraceRun,
    criterion: Criterion,
    percentiles: &[f64],
) -> Option<Policy> {
    let calibration = session.calibration_run(&run.info.variant, &run.info)?;
    let thresholds = crate::analysis::thresholds_from_percentiles(
        &calibration.trace.exits,
        calibration.trace.num_classes,
        criterion,
        percentiles,
    )?;
    Some(Policy { criterion, thresholds })
}

/// Every row: static variants once, early-exit variants at their chosen, acc-opt and inf-opt points.
pub fn rows(session: &Session, options: &ReportOptions) -> Vec<Row> {
    let mut rows = Vec::new();
    for run in session.runs.iter().filter(|r| !session.is_calibration_run(r)) {
        let Some(entry) = session.variant(&run.info.variant) else { continue };
        let base_size = session.base_of(&entry.name).and_then(|b| session.variant(&b)).map(|b| b.size_bytes);
        let resources = run.info.resources.as_ref();
        let make_row = |point: PointKind, policy: Option<Policy>, outcome: Outcome| Row {
            device: run.info.device_label(),
            variant: entry.name.clone(),
            tags: entry.tags.clone(),
            point,
            percentile: None,
            policy,
            size_bytes: entry.size_bytes,
            compression: base_size.and_then(|b| compression_ratio(b, entry.size_bytes)),
            outcome,
            cpu_percent: resources.and_then(|r| r.mean_cpu_percent()),
            gpu_percent: resources.and_then(|r| r.mean_gpu_percent()),
            rss_bytes: run.info.memory_bytes().map(|b| b as f64),
            complete: run.info.complete,
            sample_limit: run.info.sample_limit(),
            samples: run.info.sample_summary(),
            skipped: run.info.skipped.len(),
            noisy: resources.is_some_and(|r| r.is_noisy()),
            power: run.info.power.clone(),
        };
        if run.trace.early_exit_count() == 0 {
            let prepared = prepare(session, run, options.criterion);
            let policy = Policy::never_exit(options.criterion, 0);
            rows.push(make_row(PointKind::Static, None, prepared.evaluate(&policy)));
            continue;
        }
        let (prepared, sweep) = sweep_run(session, run, options);
        if let Some(chosen) = session.policies.get(&entry.name).filter(|p| p.criterion == options.criterion) {
            rows.push(make_row(PointKind::Chosen, Some(chosen.clone()), prepared.evaluate(chosen)));
        }
        for (kind, index) in [(PointKind::AccOpt, sweep.acc_opt), (PointKind::InfOpt, sweep.inf_opt)] {
            if let Some(point) = index.map(|i| &sweep.points[i]) {
                let policy = prepared.policy_at(point);
                rows.push(make_row(kind, Some(policy.clone()), prepared.evaluate(&policy)));
            }
        }
        for &percentile in &options.percentiles {
            if let Some(policy) = percentile_policy(session, run, options.criterion, &[percentile]) {
                let outcome = prepared.evaluate(&policy);
                rows.push(Row {
                    percentile: Some(percentile),
                    ..make_row(PointKind::Percentile, Some(policy), outcome)
                });
            }
        }
    }
    rows
}

/// Probability loyalty in percent with two decimals; marked approximate ("≈", with its bound) when the figure
/// may be off by more than half the last shown digit (a top-k estimate; see `analysis::loyalty`).
pub fn probability_loyalty_percent(value: Option<f64>, error: Option<f64>) -> String {
    probability_loyalty_cell(value, error).display()
}

/// The probability loyalty cell: an estimate with its bound when the trace carries one.
fn probability_loyalty_cell(value: Option<f64>, error: Option<f64>) -> Cell {
    match (value, error) {
        (Some(v), Some(e)) => {
            Cell::Estimate(Quantity { value: v * 100.0, unit: Unit::Percent, decimals: 2 }, e * 100.0)
        }
        (value, _) => Cell::percent(value, 2),
    }
}

fn model_label(row: &Row) -> String {
    let mut label = row.variant.clone();
    if row.point != PointKind::Static {
        let threshold = row.policy.as_ref().map(|p| {
            let values: Vec<String> = p.thresholds.iter().map(|t| format!("{t:.4}")).collect();
            values.join("/")
        });
        let point = match (row.point, &row.percentile) {
            (PointKind::Percentile, Some(p)) => format!("p{p}"),
            (kind, _) => kind.label().to_string(),
        };
        label = format!("{label} ({point}, T = {})", threshold.unwrap_or_default());
    }
    if let Some(limit) = row.sample_limit {
        label.push_str(&format!(" [first {limit} samples]"));
    }
    if !row.complete {
        label.push_str(" [incomplete]");
    }
    if row.skipped > 0 {
        label.push_str(&format!(" [{} skipped]", row.skipped));
    }
    if row.noisy {
        label.push_str(" [noisy]");
    }
    label
}

/// The columns every table shares, with what they mean (tooltips in the app).
mod columns {
    use super::{Better, Column, Unit};

    pub fn device() -> Column {
        Column::text("Device", "The machine and execution provider that measured the run (host/provider).")
    }

    pub fn model() -> Column {
        Column::text(
            "Model",
            "The variant; early-exit variants at an operating point: chosen (saved in the session), acc-opt \
             (highest accuracy), inf-opt (fastest within the accuracy budget) or a calibration percentile, with \
             their thresholds T. [first N samples], [incomplete], [skipped] and [noisy] flag runs to read with care.",
        )
    }

    pub fn size() -> Column {
        Column::number("Size (MB)", Unit::Megabytes, Some(Better::Lower), "The model file's size on disk.")
    }

    pub fn compression() -> Column {
        Column::number(
            "Compression",
            Unit::Ratio,
            Some(Better::Higher),
            "Base model size / this model's size: 4.00x means a quarter of the bytes.",
        )
    }

    pub fn accuracy() -> Column {
        Column::number(
            "Accuracy (%)",
            Unit::Percent,
            Some(Better::Higher),
            "Top-1 accuracy: the share of samples whose prediction (at the exit they left by) is the true label.",
        )
    }

    pub fn total_time() -> Column {
        Column::number(
            "Total inf. time (s)",
            Unit::Seconds,
            Some(Better::Lower),
            "Time to run every sample once at this operating point, preprocessing included.",
        )
    }

    pub fn speedup() -> Column {
        Column::number(
            "Speed-up",
            Unit::Ratio,
            Some(Better::Higher),
            "Base model's mean latency / this one's on the same device: 2.00x means twice as fast.",
        )
    }

    pub fn early_exit_rate() -> Column {
        Column::number(
            "Early-exit rate (%)",
            Unit::Percent,
            None,
            "Share of samples that leave at an early exit rather than the final one (\"-\" for a static model).",
        )
    }

    pub fn mean_latency() -> Column {
        Column::number(
            "Avg inf. time (ms)",
            Unit::Millis,
            Some(Better::Lower),
            "Mean latency per sample, predicted from the trace: each sample costs the time to the exit it leaves by.",
        )
    }

    pub fn percentile(name: &str, p: &str) -> Column {
        Column::number(
            name,
            Unit::Millis,
            Some(Better::Lower),
            &format!("The {p} percentile of the per-sample latency: {p} % of samples finish at least this fast."),
        )
    }
}

/// Device, model, size, compression and accuracy: the first columns of Tables 2 and 7.
fn size_and_accuracy_cells(r: &Row) -> Vec<Cell> {
    vec![
        Cell::text(&r.device),
        Cell::text(model_label(r)),
        Cell::quantity(r.size_bytes as f64 / 1e6, Unit::Megabytes, 2),
        Cell::ratio(r.compression),
        Cell::percent(Some(r.outcome.accuracy), 2),
    ]
}

/// The early-exit rate, or missing for a static variant.
fn early_exit_rate_cell(r: &Row) -> Cell {
    if r.point == PointKind::Static { Cell::Missing } else { Cell::percent(Some(r.outcome.early_exit_rate), 2) }
}

/// Builds the study's tables from rows.
pub fn tables(rows: &[Row], options: &ReportOptions) -> Vec<Table> {
    let criterion = options.criterion.name();
    let table2 = Table {
        id: "table2".into(),
        title: format!("Table 2 - fidelity and compression (criterion: {criterion})"),
        columns: vec![
            columns::device(),
            columns::model(),
            columns::size(),
            columns::compression(),
            columns::accuracy(),
            Column::number(
                "Top-5 (%)",
                Unit::Percent,
                Some(Better::Higher),
                "Share of samples whose true label is among the five most probable classes (\"-\" when the model has \
                 fewer than five classes or the trace lacks them).",
            ),
            Column::number(
                "Label loyalty (%)",
                Unit::Percent,
                Some(Better::Higher),
                "Share of samples where this model predicts the same label as the base model, right or wrong.",
            ),
            Column::number(
                "Prob. loyalty (%)",
                Unit::Percent,
                Some(Better::Higher),
                "How close this model's probabilities are to the base model's (100 % = identical), averaged over \
                 samples. ≈ marks a top-k estimate with its bound (±).",
            )
            .with_plain_names(&["Prob. loyalty (%)", "Prob. loyalty bound (%)"]),
            columns::early_exit_rate(),
        ],
        rows: rows
            .iter()
            .map(|r| {
                let mut cells = size_and_accuracy_cells(r);
                cells.extend([
                    Cell::percent(r.outcome.top5_accuracy, 2),
                    Cell::percent(r.outcome.label_loyalty, 2),
                    probability_loyalty_cell(r.outcome.probability_loyalty, r.outcome.probability_loyalty_error),
                    early_exit_rate_cell(r),
                ]);
                cells
            })
            .collect(),
    };
    let mut performance = Table {
        id: "table3-6".into(),
        title:
            "Tables 3-6 - performance on the device (latency predicted from the trace; total includes preprocessing)"
                .into(),
        columns: vec![
            columns::device(),
            columns::model(),
            columns::total_time(),
            columns::speedup(),
            columns::mean_latency(),
            columns::percentile("p50 (ms)", "50th"),
            columns::percentile("p90 (ms)", "90th"),
            columns::percentile("p99 (ms)", "99th"),
            Column::number(
                "Early-exit / final-exit avg (ms)",
                Unit::Millis,
                None,
                "Mean latency of the samples that left early / of those that ran to the final exit (\"-\" for a \
                 static model or when no sample took that path).",
            )
            .with_plain_names(&["Early-exit avg (ms)", "Final-exit avg (ms)"]),
            Column::number(
                "CPU avg (%)",
                Unit::Percent,
                Some(Better::Lower),
                "Mean CPU use of the process during the run (100 % = one core busy).",
            ),
            Column::number(
                "GPU avg (%)",
                Unit::Percent,
                None,
                "Mean GPU utilisation during the run, where the device reports it.",
            ),
            Column::number(
                "RAM (MB)",
                Unit::Megabytes,
                Some(Better::Lower),
                "Memory of running this variant: peak resident memory of a process that ran only it.",
            ),
        ],
        rows: rows
            .iter()
            .map(|r| {
                let o = &r.outcome;
                let early_final = if r.point == PointKind::Static {
                    Cell::Missing
                } else {
                    Cell::Pair(
                        Box::new(Cell::millis_from_us(o.early_exit_mean_latency_us)),
                        Box::new(Cell::millis_from_us(o.final_exit_mean_latency_us)),
                    )
                };
                vec![
                    Cell::text(&r.device),
                    Cell::text(model_label(r)),
                    Cell::quantity(o.total_time_s, Unit::Seconds, 3),
                    Cell::ratio(o.speedup),
                    Cell::millis_from_us(Some(o.latency.mean_us)),
                    Cell::millis_from_us(Some(o.latency.p50_us)),
                    Cell::millis_from_us(Some(o.latency.p90_us)),
                    Cell::millis_from_us(Some(o.latency.p99_us)),
                    early_final,
                    Cell::optional(r.cpu_percent, Unit::Percent, 1),
                    Cell::optional(r.gpu_percent, Unit::Percent, 1),
                    Cell::optional(r.rss_bytes.map(|b| b / 1e6), Unit::Megabytes, 1),
                ]
            })
            .collect(),
    };
    add_power_columns(&mut performance, rows);
    let quantized_or_ee = |r: &&Row| ["base", "ptq", "dq", "ee"].iter().any(|t| r.tags.iter().any(|x| x == t));
    let table7 = Table {
        id: "table7".into(),
        title: "Table 7 - early exit and quantization combined".into(),
        columns: vec![
            columns::device(),
            columns::model(),
            columns::size(),
            columns::compression(),
            columns::accuracy(),
            columns::total_time(),
            columns::speedup(),
            columns::early_exit_rate(),
        ],
        rows: rows
            .iter()
            .filter(quantized_or_ee)
            .map(|r| {
                let mut cells = size_and_accuracy_cells(r);
                cells.extend([
                    Cell::quantity(r.outcome.total_time_s, Unit::Seconds, 3),
                    Cell::ratio(r.outcome.speedup),
                    early_exit_rate_cell(r),
                ]);
                cells
            })
            .collect(),
    };
    let mut tables = vec![table2, performance, table7];
    tables.extend(device_pivot(rows));
    tables
}

/// Power and energy columns of Tables 3-6, when any run measured board power: mean and idle power, and
/// energy per inference = power x the row's mean inference latency (seed 002), in total and above idle.
fn add_power_columns(table: &mut Table, rows: &[Row]) {
    if rows.iter().all(|r| r.power.is_none()) {
        return;
    }
    table.columns.extend([
        Column::number("Power (W)", Unit::Watts, Some(Better::Lower), "Mean board power during the run."),
        Column::number("Idle (W)", Unit::Watts, None, "Board power at rest, measured just before the run."),
        Column::number(
            "Energy/inf. (mJ)",
            Unit::Millijoules,
            Some(Better::Lower),
            "Energy per inference: mean power x mean inference latency.",
        ),
        Column::number(
            "Above idle (mJ)",
            Unit::Millijoules,
            Some(Better::Lower),
            "Energy per inference above the idle draw: (power - idle) x mean inference latency.",
        ),
    ]);
    for (cells, row) in table.rows.iter_mut().zip(rows) {
        let latency_us = row.outcome.latency.mean_us;
        let power = row.power.as_ref();
        cells.extend([
            Cell::optional(power.map(|p| p.mean_w), Unit::Watts, 2),
            Cell::optional(power.and_then(|p| p.idle_w), Unit::Watts, 2),
            Cell::optional(power.map(|p| p.energy_per_inference_j(latency_us) * 1e3), Unit::Millijoules, 3),
            Cell::optional(
                power.and_then(|p| p.energy_above_idle_j(latency_us)).map(|j| j * 1e3),
                Unit::Millijoules,
                3,
            ),
        ]);
    }
}

/// One row per run: the samples it measured and skipped (every metric's denominator), what its exits held,
/// how busy the machine was, and why it stopped early or which samples it skipped.
pub fn runs_table(session: &Session) -> Table {
    let rows = session
        .runs
        .iter()
        .map(|run| {
            let info = &run.info;
            let resources = info.resources.as_ref();
            let mut notes: Vec<String> = Vec::new();
            if session.is_calibration_run(run) {
                notes.push("calibration".into());
            }
            if let Some(failure) = &info.failure {
                notes.push(failure.clone());
            }
            if resources.is_some_and(|r| r.is_noisy()) {
                notes.push("noisy: other processes competed for the CPU".into());
            }
            for skipped in info.skipped.iter().take(3) {
                let source = skipped.source.as_deref().unwrap_or("");
                notes.push(format!("skipped {} {source}: {}", skipped.index, skipped.reason));
            }
            if info.skipped.len() > 3 {
                notes.push(format!("{} more skipped (edgescope samples lists them)", info.skipped.len() - 3));
            }
            let kinds: Vec<&str> = info.output_kinds.iter().map(|k| k.name()).collect();
            let kinds = match kinds.as_slice() {
                [] => Cell::Missing,
                [first, rest @ ..] if rest.iter().all(|k| k == first) => Cell::text(*first),
                many => Cell::text(many.join("/")),
            };
            vec![
                Cell::text(info.device_label()),
                Cell::text(&info.variant),
                Cell::text(&info.dataset),
                Cell::text(info.sample_summary()),
                kinds,
                Cell::optional(resources.and_then(|r| r.mean_other_cpu_percent()), Unit::Percent, 1),
                Cell::optional(resources.and_then(|r| r.mean_load_average()), Unit::Number, 2),
                Cell::text(notes.join("; ")),
            ]
        })
        .collect();
    Table {
        id: "runs".into(),
        title: "Runs - samples measured (the denominator of every figure above), output kinds, machine load".into(),
        columns: vec![
            columns::device(),
            Column::text("Model", "The variant the run measured."),
            Column::text("Dataset", "The dataset the run measured."),
            Column::text("Samples", "Samples measured, skipped (unreadable; in no denominator) and in the dataset."),
            Column::text(
                "Outputs",
                "What the model's exits emit: logits, probabilities or log-probabilities (one per exit when they differ).",
            ),
            Column::number(
                "Other CPU (%)",
                Unit::Percent,
                None,
                "CPU used by other processes during the run: high values make latencies unreliable (noisy).",
            ),
            Column::number("Load avg", Unit::Number, None, "The machine's one-minute load average during the run."),
            Column::text("Notes", "Calibration runs, failures, noise and skipped samples."),
        ],
        rows,
    }
}

/// Tables 3-6 side by side: one row per variant and point, one column group per device (only when the rows
/// come from more than one device).
pub fn device_pivot(rows: &[Row]) -> Option<Table> {
    let mut devices: Vec<&str> = Vec::new();
    for row in rows {
        if !devices.contains(&row.device.as_str()) {
            devices.push(&row.device);
        }
    }
    if devices.len() < 2 {
        return None;
    }
    let key = |r: &Row| {
        let point = r.percentile.map_or_else(|| r.point.label().to_string(), |p| format!("p{p}"));
        if point.is_empty() { r.variant.clone() } else { format!("{} ({point})", r.variant) }
    };
    let mut keys: Vec<String> = Vec::new();
    for row in rows {
        let k = key(row);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let mut columns = vec![Column::text("Model", "The variant and its operating point.")];
    for device in &devices {
        let on = |what: &str| format!("{device}: {what}");
        let help = |what: &str| format!("{what} on {device}.");
        columns.extend([
            Column::number(
                &on("avg inf. time (ms)"),
                Unit::Millis,
                Some(Better::Lower),
                &help("Mean latency per sample"),
            ),
            Column::number(&on("p99 (ms)"), Unit::Millis, Some(Better::Lower), &help("99th percentile latency")),
            Column::number(
                &on("speed-up"),
                Unit::Ratio,
                Some(Better::Higher),
                &help("Base model's mean latency / this one's"),
            ),
            Column::number(&on("accuracy (%)"), Unit::Percent, Some(Better::Higher), &help("Top-1 accuracy")),
        ]);
    }
    let table_rows = keys
        .iter()
        .map(|k| {
            let mut cells = vec![Cell::text(k)];
            for device in &devices {
                match rows.iter().find(|r| r.device == *device && key(r) == *k) {
                    Some(r) => cells.extend([
                        Cell::millis_from_us(Some(r.outcome.latency.mean_us)),
                        Cell::millis_from_us(Some(r.outcome.latency.p99_us)),
                        Cell::ratio(r.outcome.speedup),
                        Cell::percent(Some(r.outcome.accuracy), 2),
                    ]),
                    None => cells.extend(std::iter::repeat_n(Cell::Missing, 4)),
                }
            }
            cells
        })
        .collect();
    Some(Table {
        id: "devices".into(),
        title: "Tables 3-6 by device - the same variants side by side".into(),
        columns,
        rows: table_rows,
    })
}

/// The tables the app shows and exports: the study's tables and the runs table.
pub fn all_tables(session: &Session, rows: &[Row], options: &ReportOptions) -> Vec<Table> {
    let mut tables = tables(rows, options);
    tables.push(runs_table(session));
    tables
}

/// How a person sorted one table: by `column` of the table `table` (its id), ascending or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSort {
    /// The sorted table's id.
    pub table: String,
    /// Column index.
    pub column: usize,
    /// Ascending (else descending).
    pub ascending: bool,
}

/// The tables with `sort` applied to the one it names (the others keep their order): what the app shows.
pub fn apply_sort(tables: Vec<Table>, sort: Option<&TableSort>) -> Vec<Table> {
    let Some(sort) = sort else { return tables };
    tables.into_iter().map(|t| if t.id == sort.table { t.sorted(sort.column, sort.ascending) } else { t }).collect()
}

/// Renders tables (and, for JSON, the rows behind them). CSV and JSON carry plain numbers (units in the
/// headers, JSON `null` for missing values); text and Markdown show what the screen shows.
pub fn render(tables: &[Table], rows: &[Row], format: Format) -> String {
    match format {
        Format::Json => {
            #[derive(Serialize)]
            struct Report<'a> {
                tables: &'a [Table],
                rows: &'a [Row],
            }
            serde_json::to_string_pretty(&Report { tables, rows }).unwrap_or_default()
        }
        Format::Csv => tables.iter().map(|t| format!("# {}\n{}", t.title, to_csv(t))).collect::<Vec<_>>().join("\n"),
        Format::Markdown => tables.iter().map(to_markdown).collect::<Vec<_>>().join("\n"),
        Format::Text => tables.iter().map(to_text).collect::<Vec<_>>().join("\n"),
    }
}

/// A sweep as CSV: one line per threshold, with Pareto, acc-opt and inf-opt flags.
pub fn sweep_csv(sweep: &Sweep, criterion: Criterion) -> String {
    let exits = sweep.points.first().map_or(0, |p| p.exit_rates.len());
    let mut header: Vec<String> = vec![format!("threshold_{}", criterion.name().replace('-', "_"))];
    header.extend(
        [
            "accuracy",
            "label_loyalty",
            "probability_loyalty",
            "probability_loyalty_error",
            "early_exit_rate",
            "mean_latency_us",
        ]
        .map(String::from),
    );
    header.extend(
        (0..exits).map(|e| if e + 1 == exits { "exit_rate_final".to_string() } else { format!("exit_rate_{}", e + 1) }),
    );
    header.extend(["pareto", "acc_opt", "inf_opt"].map(String::from));
    let mut out = csv_line(&header) + "\n";
    for (index, p) in sweep.points.iter().enumerate() {
        let mut fields = vec![
            format!("{}", p.threshold),
            format!("{:.6}", p.accuracy),
            if sweep.has_base { format!("{:.6}", p.label_loyalty) } else { String::new() },
            if sweep.has_base { format!("{:.6}", p.probability_loyalty) } else { String::new() },
            if sweep.has_base { format!("{:.6}", p.probability_loyalty_error) } else { String::new() },
            format!("{:.6}", p.early_exit_rate),
            format!("{:.3}", p.mean_latency_us),
        ];
        fields.extend(p.exit_rates.iter().map(|r| format!("{r:.6}")));
        fields.push(u8::from(sweep.pareto.contains(&index)).to_string());
        fields.push(u8::from(sweep.acc_opt == Some(index)).to_string());
        fields.push(u8::from(sweep.inf_opt == Some(index)).to_string());
        out += &(csv_line(&fields) + "\n");
    }
    out
}

/// The headline of an operating point, for a slide: "mobilenet/ee5 at entropy <= 0.90: 1.61x faster, -1.00 pp,
/// 93 % leave at exit 1, 0.64 MB". Parts that are unknown (no base, no size) are left out.
pub fn headline(
    variant: &str,
    policy: Option<&Policy>,
    outcome: &Outcome,
    base_accuracy: Option<f64>,
    size_bytes: Option<u64>,
) -> String {
    let mut parts = Vec::new();
    if let Some(speedup) = outcome.speedup {
        parts.push(if speedup >= 1.0 {
            format!("{speedup:.2}x faster")
        } else {
            format!("{:.2}x slower", 1.0 / speedup)
        });
    }
    if let Some(base) = base_accuracy {
        parts.push(format!("{:+.2} pp", (outcome.accuracy - base) * 100.0));
    } else {
        parts.push(format!("{:.2} % top-1", outcome.accuracy * 100.0));
    }
    let early_exits = outcome.exit_rates.len().saturating_sub(1);
    if early_exits == 1 {
        parts.push(format!("{:.0} % leave at exit 1", outcome.exit_rates[0] * 100.0));
    } else if early_exits > 1 {
        parts.push(format!("{:.0} % leave early", outcome.early_exit_rate * 100.0));
    }
    if let Some(bytes) = size_bytes {
        parts.push(format!("{:.2} MB", bytes as f64 / 1e6));
    }
    let at = policy.filter(|p| !p.thresholds.is_empty()).map(|p| {
        let verb = if p.criterion.exits_below() { "<=" } else { ">=" };
        let values: Vec<String> = p.thresholds.iter().map(|t| format!("{t:.2}")).collect();
        format!(" at {} {verb} {}", p.criterion.name(), values.join("/"))
    });
    format!("{variant}{}: {}", at.unwrap_or_default(), parts.join(", "))
}
