//! `edgescope profile`: per-operator latency of a variant (ONNX Runtime's profiler), per segment and per
//! operator type, with what the operators do not explain; optionally a second variant side by side. The work
//! is in [`crate::runtime::profile`].

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;

use crate::data::Dataset;
use crate::runtime::profile::{VariantProfile, profile_variant};
use crate::session::Session;

/// `edgescope profile`.
#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// Session file.
    pub session: PathBuf,
    /// Variant name.
    #[arg(long)]
    pub variant: String,
    /// A second variant to put side by side (e.g. the base next to its DQ variant).
    #[arg(long)]
    pub compare: Option<String>,
    /// Dataset name (default: the dataset of the variant's run, else the session's first).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Samples profiled (after the warm-up).
    #[arg(long, default_value_t = 200)]
    pub samples: usize,
    /// Untimed warm-up runs.
    #[arg(long, default_value_t = 20)]
    pub warmup: usize,
    /// Intra-op threads (0 = ONNX Runtime's default).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// text or json.
    #[arg(long, default_value = "text")]
    pub format: String,
}

/// `edgescope profile`.
pub fn profile_command(args: &ProfileArgs) -> Result<()> {
    if !matches!(args.format.as_str(), "text" | "json") {
        bail!("--format must be text or json, not {:?}", args.format);
    }
    if args.samples == 0 {
        bail!("--samples must be at least 1");
    }
    let session = Session::load(&args.session)?;
    let dataset_name = match &args.dataset {
        Some(name) => name.clone(),
        None => session
            .primary_run(&args.variant)
            .map(|r| r.info.dataset.clone())
            .or_else(|| {
                session
                    .datasets
                    .iter()
                    .find(|d| Some(&d.name) != session.calibration_dataset.as_ref())
                    .map(|d| d.name.clone())
            })
            .ok_or_else(|| anyhow!("{} has no dataset to profile on", args.session.display()))?,
    };
    let entry = session
        .datasets
        .iter()
        .find(|d| d.name == dataset_name)
        .ok_or_else(|| anyhow!("{} has no dataset {dataset_name:?}", args.session.display()))?;
    let dataset = Dataset::open(&entry.path).with_context(|| format!("opening dataset {dataset_name:?}"))?;
    let mut profiles = Vec::new();
    for name in std::iter::once(&args.variant).chain(&args.compare) {
        let variant_entry = session.variant(name).ok_or_else(|| {
            anyhow!(
                "{} has no variant {name:?}; its variants: {}",
                args.session.display(),
                session.variants.iter().map(|v| v.name.as_str()).collect::<Vec<_>>().join(", ")
            )
        })?;
        let variant = variant_entry.open().with_context(|| format!("opening {name}"))?;
        let profile = profile_variant(&variant, &dataset, args.samples, args.warmup, args.threads)
            .with_context(|| format!("profiling {name}"))?;
        profiles.push(profile);
    }
    if args.format == "json" {
        println!("{}", serde_json::to_string_pretty(&profiles)?);
    } else {
        for profile in &profiles {
            print!("{}", render_profile(profile));
        }
        if let [a, b] = profiles.as_slice() {
            print!("{}", render_comparison(a, b));
        }
    }
    Ok(())
}

fn render_profile(p: &VariantProfile) -> String {
    let mut out = String::new();
    let measured = p.measured_mean_us();
    let operators = p.operator_sum_us();
    let _ = writeln!(
        out,
        "{}: {} runs, {} thread(s); measured {:.1} us per inference, operators {:.1} us ({:.1} %), remainder {:.1} us",
        p.variant,
        p.runs,
        p.intra_threads,
        measured,
        operators,
        100.0 * operators / measured.max(1e-9),
        measured - operators
    );
    for (index, segment) in p.segments.iter().enumerate() {
        let _ = writeln!(
            out,
            "  segment {index} ({}): measured {:.1} us, model_run {:.1} us, operators {:.1} us, remainder {:.1} us ({:.1} %)",
            segment.path.file_name().map_or_else(String::new, |f| f.to_string_lossy().into_owned()),
            segment.measured_mean_us,
            segment.model_run_us,
            segment.operator_sum_us,
            segment.remainder_us(),
            100.0 * segment.remainder_us() / segment.measured_mean_us.max(1e-9)
        );
        for op in &segment.op_types {
            let _ = writeln!(
                out,
                "    {:<24} {:>8.1} us {:>5.1} %  ({} nodes, {})",
                op.op_type,
                op.mean_us,
                100.0 * op.mean_us / segment.operator_sum_us.max(1e-9),
                op.nodes_per_run,
                op.provider.trim_end_matches("ExecutionProvider")
            );
        }
    }
    out
}

fn render_comparison(a: &VariantProfile, b: &VariantProfile) -> String {
    let mut types: Vec<String> = a.op_types.iter().chain(&b.op_types).map(|o| o.op_type.clone()).collect();
    types.sort();
    types.dedup();
    let time = |p: &VariantProfile, t: &str| {
        p.op_types.iter().filter(|o| o.op_type == t).map(|o| o.mean_us).fold(0.0, |sum, t| sum + t)
    };
    let mut rows: Vec<(String, f64, f64)> = types.iter().map(|t| (t.clone(), time(a, t), time(b, t))).collect();
    rows.sort_by(|x, y| (y.2 - y.1).total_cmp(&(x.2 - x.1)));
    let mut out = String::new();
    let _ = writeln!(out, "\n{:<24} {:>12} {:>12} {:>12}", "operator type", a.variant, b.variant, "difference");
    for (t, x, y) in rows {
        let _ = writeln!(out, "{t:<24} {x:>9.1} us {y:>9.1} us {:>+9.1} us", y - x);
    }
    let (ma, mb) = (a.measured_mean_us(), b.measured_mean_us());
    let _ = writeln!(out, "{:<24} {ma:>9.1} us {mb:>9.1} us {:>+9.1} us", "measured (whole chain)", mb - ma);
    out
}
