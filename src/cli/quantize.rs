//! `edgescope quantize` and `edgescope sensitivity`: parsing and printing only; the work is in
//! [`crate::optimize::quantize`].

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;

use crate::data::Dataset;
use crate::model::proto::read_model;
use crate::optimize::quantize::{
    CalibrationMethod, Method, QuantType, QuantizeError, QuantizeEvent, QuantizeOptions, QuantizeRequest,
    quantize_to_disk, run, sensitivity,
};
use crate::runtime::CancelToken;

/// `edgescope quantize`.
#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// The float variant: an ONNX file or a manifest (an early-exit chain is quantized segment by segment).
    #[arg(long)]
    pub model: PathBuf,
    /// ptq (static, QDQ, calibrated) or dq (dynamic).
    #[arg(long, value_enum)]
    pub method: Method,
    /// Output: a .onnx file (its manifest is written beside it) or a new folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Calibration dataset (ptq): a dataset.toml, a folder, or an IDX/NPY images file.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Only the first N calibration samples.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Calibration batch size.
    #[arg(long, default_value_t = 50)]
    pub batch_size: usize,
    /// Quantize weights per output channel.
    #[arg(long)]
    pub per_channel: bool,
    /// 7-bit weights (ORT's reduce_range).
    #[arg(long)]
    pub reduce_range: bool,
    /// Operator types to quantize (default: every type ONNX Runtime's quantizer supports for the method).
    #[arg(long, value_delimiter = ',')]
    pub op_types: Vec<String>,
    /// Node names to leave in float.
    #[arg(long, value_delimiter = ',')]
    pub exclude: Vec<String>,
    /// Activation type for ptq: u8 or i8.
    #[arg(long, value_enum, default_value = "u8")]
    pub activation_type: QuantType,
    /// Weight type: i8 or u8 (default: i8 for ptq, u8 for dq, which ONNX Runtime's CPU ConvInteger needs).
    #[arg(long, value_enum)]
    pub weight_type: Option<QuantType>,
    /// Calibration method: minmax, percentile or entropy (ONNX Runtime's CalibrationMethod, same arithmetic).
    #[arg(long, default_value = "minmax")]
    pub calibrate: String,
    /// Percentile calibration: share of values kept inside the range, in percent (ORT's CalibPercentile).
    #[arg(long, default_value_t = 99.999)]
    pub percentile: f64,
    /// Percentile / entropy calibration: histogram bins (default: ORT's, 2048 for percentile, 128 for entropy).
    #[arg(long)]
    pub num_bins: Option<usize>,
    /// Entropy calibration: quantized bins of the KL search (default: ORT's 128).
    #[arg(long)]
    pub num_quantized_bins: Option<usize>,
    /// Percentile calibration: histogram of |x| and a symmetric range (ORT's CalibTensorRangeSymmetric; default
    /// true for percentile, as ORT).
    #[arg(long)]
    pub calib_symmetric: Option<bool>,
    /// Op types whose outputs stay float (e.g. Gemm, so logits keep their resolution).
    #[arg(long, value_delimiter = ',')]
    pub keep_output_float: Vec<String>,
    /// Accuracy budget (ptq, single graph): keep the most sensitive nodes float, one at a time, until the top-1
    /// drop against the float model on --validation is at most this many percentage points.
    #[arg(long, requires = "validation")]
    pub max_drop: Option<f64>,
    /// Validation dataset for --max-drop.
    #[arg(long)]
    pub validation: Option<PathBuf>,
    /// Only the first N validation samples.
    #[arg(long)]
    pub validation_limit: Option<usize>,
    /// Most nodes --max-drop keeps float before giving up.
    #[arg(long, default_value_t = 20)]
    pub max_float_nodes: usize,
    /// Variant name (default: derived from the source's, e.g. resnet/base -> resnet/ptq).
    #[arg(long)]
    pub name: Option<String>,
    /// ONNX Runtime intra-op threads (0 = its default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

impl QuantizeArgs {
    fn options(&self) -> Result<QuantizeOptions> {
        let method = self.method;
        let mut options = if method == Method::Ptq { QuantizeOptions::ptq() } else { QuantizeOptions::dq() };
        options.activation_type = self.activation_type;
        if let Some(weight) = self.weight_type {
            options.weight_type = weight;
        }
        if method == Method::Dq && options.activation_type != QuantType::U8 {
            bail!("dynamic quantization computes uint8 activations only; drop --activation-type");
        }
        options.per_channel = self.per_channel;
        options.reduce_range = self.reduce_range;
        options.op_types = (!self.op_types.is_empty()).then(|| self.op_types.clone());
        options.exclude = self.exclude.clone();
        options.keep_output_float = self.keep_output_float.clone();
        options.calibrate = match CalibrationMethod::parse(&self.calibrate).map_err(|e| anyhow!(e))? {
            CalibrationMethod::Percentile { num_bins, symmetric, .. } => {
                if !(0.0..=100.0).contains(&self.percentile) {
                    bail!("--percentile must be between 0 and 100, not {}", self.percentile);
                }
                CalibrationMethod::Percentile {
                    percentile: self.percentile,
                    num_bins: self.num_bins.unwrap_or(num_bins),
                    symmetric: self.calib_symmetric.unwrap_or(symmetric),
                }
            }
            CalibrationMethod::Entropy { num_bins, num_quantized_bins } => CalibrationMethod::Entropy {
                num_bins: self.num_bins.unwrap_or(num_bins),
                num_quantized_bins: self.num_quantized_bins.unwrap_or(num_quantized_bins),
            },
            CalibrationMethod::MinMax => CalibrationMethod::MinMax,
        };
        if let CalibrationMethod::Entropy { num_bins, num_quantized_bins } = options.calibrate
            && (num_quantized_bins == 0 || num_quantized_bins > num_bins)
        {
            bail!("--num-quantized-bins must be between 1 and --num-bins ({num_bins}), not {num_quantized_bins}");
        }
        if options.calibrate.num_bins() == Some(0) {
            bail!("--num-bins must be at least 1");
        }
        if self.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        options.batch_size = self.batch_size;
        Ok(options)
    }
}

/// `edgescope sensitivity`.
#[derive(Debug, Args)]
pub struct SensitivityArgs {
    /// The float model (ONNX).
    #[arg(long)]
    pub model: PathBuf,
    /// The QDQ model quantized from it (ONNX).
    #[arg(long)]
    pub quantized: PathBuf,
    /// Dataset to run.
    #[arg(long)]
    pub dataset: PathBuf,
    /// Samples to use (the first N).
    #[arg(long, default_value_t = 200)]
    pub samples: usize,
    /// Batch size.
    #[arg(long, default_value_t = 50)]
    pub batch_size: usize,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: super::values::TextOrJson,
}

fn cancel_on_ctrl_c() -> CancelToken {
    let cancel = CancelToken::new();
    let handler = cancel.clone();
    if let Err(e) = ctrlc::set_handler(move || {
        if handler.is_cancelled() {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: stopping (nothing is written; Ctrl-C again to quit at once)");
        handler.cancel();
    }) {
        eprintln!("note: Ctrl-C will end the process at once ({e})");
    }
    cancel
}

fn bar(label: &str) -> Option<indicatif::ProgressBar> {
    std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        let style = indicatif::ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(label.to_string());
        bar
    })
}

/// Runs `edgescope quantize`.
pub fn quantize(args: &QuantizeArgs) -> Result<()> {
    let options = args.options()?;
    let budget = match (args.max_drop, &args.validation) {
        (Some(max_drop_pp), Some(validation)) => {
            if !(max_drop_pp.is_finite() && max_drop_pp >= 0.0) {
                bail!("--max-drop must be a number of percentage points >= 0, not {max_drop_pp}");
            }
            Some(crate::optimize::quantize::Budget {
                max_drop_pp,
                validation: validation.clone(),
                limit: args.validation_limit,
                max_nodes: args.max_float_nodes,
            })
        }
        (None, Some(_)) => bail!("--validation is for --max-drop; add --max-drop PP"),
        _ => None,
    };
    let request = QuantizeRequest {
        model: args.model.clone(),
        options,
        calibration: args.calibration.clone(),
        calibration_limit: args.limit,
        out: args.out.clone(),
        name: args.name.clone(),
        threads: args.threads,
        budget,
    };
    let cancel = cancel_on_ctrl_c();
    let progress = bar("quantizing");
    let started = std::time::Instant::now();
    let mut segment_label = String::new();
    let outcome = quantize_to_disk(
        &request,
        &mut |event| match event {
            QuantizeEvent::Segment { index, count } => {
                segment_label = if count > 1 { format!("segment {}/{count}", index + 1) } else { String::new() };
                if let Some(bar) = &progress {
                    bar.set_message(segment_label.clone());
                }
            }
            QuantizeEvent::Calibrating { done, total } => {
                if let Some(bar) = &progress {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                    bar.set_message(format!("calibrating {segment_label}"));
                }
            }
            QuantizeEvent::Budget { excluded, top1_percent, float_top1_percent } => {
                let line = format!(
                    "budget: {excluded} node(s) float: top-1 {top1_percent:.2} % (float {float_top1_percent:.2} %, drop \
                     {:.2} pp)",
                    float_top1_percent - top1_percent
                );
                match &progress {
                    Some(bar) => bar.println(line),
                    None => eprintln!("{line}"),
                }
            }
            QuantizeEvent::Writing => {
                if let Some(bar) = &progress {
                    bar.set_message("writing");
                }
            }
        },
        &cancel,
    );
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let outcome = match outcome {
        Err(QuantizeError::Cancelled) => bail!("cancelled; nothing was written"),
        other => other?,
    };
    println!(
        "{} ({}) written in {:.1} s: {}",
        outcome.variant.name,
        outcome.variant.tags.join(", "),
        started.elapsed().as_secs_f64(),
        outcome.manifest.display()
    );
    println!("settings: {}", request.options.describe());
    if outcome.calibration_samples > 0 {
        println!("calibration: {} samples", outcome.calibration_samples);
    }
    if let Some((budget, last)) = outcome.budget.as_ref().and_then(|b| Some((b, b.steps.last()?))) {
        println!(
            "accuracy budget: float top-1 {:.2} %, quantized {:.2} % (drop {:.2} pp, {}); kept float for it: {}",
            budget.float_top1_percent,
            last.top1_percent,
            budget.float_top1_percent - last.top1_percent,
            if budget.within_budget { "within budget" } else { "budget NOT reached" },
            if last.excluded.is_empty() { "none".to_string() } else { last.excluded.join(", ") }
        );
    }
    for report in &outcome.segments {
        println!(
            "{}: {} nodes quantized, {} left float",
            report.file.display(),
            report.quantized_nodes.len(),
            report.float_nodes.len()
        );
        let mut by_reason: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (node, reason) in &report.float_nodes {
            by_reason.entry(reason.as_str()).or_default().push(node.as_str());
        }
        for (reason, nodes) in by_reason {
            let shown: Vec<&str> = nodes.iter().take(6).copied().collect();
            let more = if nodes.len() > shown.len() {
                format!(" and {} more", nodes.len() - shown.len())
            } else {
                String::new()
            };
            println!("  float ({}): {reason}: {}{more}", nodes.len(), shown.join(", "));
        }
        let folded = report.notes.iter().filter(|(_, n)| n.contains("folded")).count();
        if folded > 0 {
            println!("  {folded} Relu/Clip folded into the quantized range of their producer");
        }
        for (what, note) in report.notes.iter().filter(|(_, n)| !n.contains("folded")) {
            println!("  note: {what}: {note}");
        }
    }
    Ok(())
}

/// Runs `edgescope sensitivity`.
pub fn sensitivity(args: &SensitivityArgs) -> Result<()> {
    if args.samples == 0 || args.batch_size == 0 {
        bail!("--samples and --batch-size must be at least 1");
    }
    let float_model = read_model(&args.model)?;
    let quantized = read_model(&args.quantized)?;
    let mut dataset = Dataset::open(&args.dataset)?;
    dataset.truncate(args.samples);
    let total = dataset.len();
    let size = args.batch_size;
    let mut batches = (0..total).step_by(size).map(|start| run::dataset_batch(&dataset, start, size, total));
    let cancel = cancel_on_ctrl_c();
    let progress = bar("sensitivity");
    if let Some(bar) = &progress {
        bar.set_length(total as u64);
    }
    let result = sensitivity::sensitivity(&float_model, &quantized, &mut batches, 0, &cancel, &mut |done| {
        if let Some(bar) = &progress {
            bar.set_position(done as u64);
        }
    });
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let noise =
        result.with_context(|| format!("comparing {} with {}", args.quantized.display(), args.model.display()))?;
    if args.format == super::values::TextOrJson::Json {
        println!("{}", serde_json::to_string_pretty(&noise)?);
        return Ok(());
    }
    println!(
        "SQNR per quantized activation on {total} samples of {} (worst first; dB, higher is better)",
        dataset.name
    );
    println!("{:>10} {:>10}  {:<48} producer", "float-vs-q", "own QDQ", "tensor");
    for n in &noise {
        println!("{:>10.2} {:>10.2}  {:<48} {}", n.sqnr_db, n.qdq_sqnr_db, n.tensor, n.producer);
    }
    Ok(())
}
