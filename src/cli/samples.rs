//! `edgescope samples`: one row per sample of a run, so a user can check edgescope against their own script
//! sample by sample (and so can we).

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};
use clap::Args;
use serde::Serialize;

use crate::analysis::trace::Trace;
use crate::data::Dataset;
use crate::record::TraceRun;
use crate::session::Session;

/// `edgescope samples`.
#[derive(Debug, Args)]
pub struct SamplesArgs {
    /// Session file.
    pub session: PathBuf,
    /// Variant name.
    #[arg(long)]
    pub variant: String,
    /// Device label or host (needed when the variant ran on several devices).
    #[arg(long)]
    pub device: Option<String>,
    /// Dataset name (default: the evaluation dataset, not the calibration one).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "csv")]
    pub format: super::values::CsvOrJson,
}

/// One exit of one sample.
#[derive(Debug, Serialize)]
struct ExitCells {
    top1: u16,
    max_probability: f32,
    entropy_nats: f32,
    /// Inference latency to this exit (the segments up to it), microseconds.
    latency_us: f32,
}

/// One sample: measured (with its exits) or skipped (with the reason).
#[derive(Debug, Serialize)]
struct SampleRow {
    index: usize,
    source: Option<String>,
    label: Option<u32>,
    status: &'static str,
    preprocess_us: Option<f32>,
    exits: Vec<ExitCells>,
    reason: Option<String>,
}

/// The run `args` names; an error lists the choices when it is ambiguous.
fn pick_run<'a>(session: &'a Session, args: &SamplesArgs) -> Result<&'a TraceRun> {
    let candidates: Vec<&TraceRun> = session
        .runs
        .iter()
        .filter(|r| r.info.variant == args.variant)
        .filter(|r| match &args.dataset {
            Some(name) => &r.info.dataset == name,
            None => !session.is_calibration_run(r),
        })
        .filter(|r| args.device.as_ref().is_none_or(|d| r.info.device_label() == *d || r.info.device.host == *d))
        .collect();
    // A full run is preferred to one limited to the first N samples.
    let full: Vec<&TraceRun> = candidates.iter().copied().filter(|r| r.info.sample_limit().is_none()).collect();
    let choices = if full.is_empty() { candidates } else { full };
    match choices.as_slice() {
        [one] => Ok(one),
        [] => bail!(
            "{} has no run of {:?}{}; its runs: {}",
            args.session.display(),
            args.variant,
            args.device.as_ref().map_or_else(String::new, |d| format!(" on {d:?}")),
            session
                .runs
                .iter()
                .map(|r| format!("{} on {}", r.info.variant, r.info.device_label()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        many => bail!(
            "{:?} ran on several devices; pick one with --device: {}",
            args.variant,
            many.iter().map(|r| r.info.device_label()).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn exit_cells(trace: &Trace, sample: usize) -> Vec<ExitCells> {
    (0..trace.exits.len())
        .map(|exit| {
            let e = &trace.exits[exit];
            ExitCells {
                top1: e.predicted(sample),
                max_probability: e.max_probability(sample),
                entropy_nats: e.entropy_nats[sample],
                latency_us: trace.latency_to_exit_us(sample, exit),
            }
        })
        .collect()
}

fn rows(run: &TraceRun, dataset: Option<&Dataset>) -> Vec<SampleRow> {
    let source = |index: usize| dataset.and_then(|d| d.sample_source(index)).map(|p| p.display().to_string());
    let mut rows: Vec<SampleRow> = run
        .info
        .measured_indices(run.trace.len())
        .into_iter()
        .enumerate()
        .map(|(sample, index)| SampleRow {
            index,
            source: source(index),
            label: Some(run.trace.labels[sample]),
            status: "measured",
            preprocess_us: run.trace.preprocess_us.get(sample).copied(),
            exits: exit_cells(&run.trace, sample),
            reason: None,
        })
        .collect();
    rows.extend(run.info.skipped.iter().map(|s| SampleRow {
        index: s.index,
        source: s.source.clone(),
        label: dataset.and_then(|d| d.labels.get(s.index).copied()),
        status: "skipped",
        preprocess_us: None,
        exits: Vec::new(),
        reason: Some(s.reason.clone()),
    }));
    rows.sort_by_key(|r| r.index);
    rows
}

/// Quotes a CSV field when it needs it (RFC 4180).
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text.to_string() }
}

fn render_csv(rows: &[SampleRow], exits: usize) -> String {
    let mut out = String::from("index,source,label,status,preprocess_us");
    for exit in 1..=exits {
        let name = if exit == exits { "final".to_string() } else { format!("exit{exit}") };
        let _ = write!(out, ",{name}_top1,{name}_max_probability,{name}_entropy_nats,{name}_latency_us");
    }
    out.push_str(",reason\n");
    for row in rows {
        let _ = write!(
            out,
            "{},{},{},{},{}",
            row.index,
            csv_field(row.source.as_deref().unwrap_or("")),
            row.label.map_or_else(String::new, |l| l.to_string()),
            row.status,
            row.preprocess_us.map_or_else(String::new, |v| format!("{v:.1}"))
        );
        for exit in 0..exits {
            match row.exits.get(exit) {
                // Probabilities and entropies with 9 significant digits: f32 round-trips exactly.
                Some(e) => {
                    let _ =
                        write!(out, ",{},{:.9e},{:.9e},{:.1}", e.top1, e.max_probability, e.entropy_nats, e.latency_us);
                }
                None => out.push_str(",,,,"),
            }
        }
        let _ = writeln!(out, ",{}", csv_field(row.reason.as_deref().unwrap_or("")));
    }
    out
}

/// Runs `edgescope samples`.
pub fn samples(args: &SamplesArgs) -> Result<()> {
    let session = Session::load(&args.session)?;
    let run = pick_run(&session, args)?;
    let dataset = session.datasets.iter().find(|d| d.name == run.info.dataset).and_then(|entry| {
        Dataset::open(&entry.path)
            .map_err(|e| eprintln!("note: sample sources are left blank: the dataset cannot be opened ({e})"))
            .ok()
    });
    let rows = rows(run, dataset.as_ref());
    let text = if args.format == super::values::CsvOrJson::Json {
        #[derive(Serialize)]
        struct Export<'a> {
            variant: &'a str,
            dataset: &'a str,
            device: String,
            output_kinds: Vec<&'static str>,
            summary: String,
            samples: &'a [SampleRow],
        }
        let export = Export {
            variant: &run.info.variant,
            dataset: &run.info.dataset,
            device: run.info.device_label(),
            output_kinds: run.info.output_kinds.iter().map(|k| k.name()).collect(),
            summary: run.info.sample_summary(),
            samples: &rows,
        };
        serde_json::to_string_pretty(&export).map_err(|e| anyhow!("serializing the samples: {e}"))? + "\n"
    } else {
        render_csv(&rows, run.trace.exits.len())
    };
    print!("{text}");
    Ok(())
}
