//! `edgescope profile`: per-operator latency of a variant (ONNX Runtime's profiler), per segment and per
//! operator type, with what the operators do not explain as an "outside operators" row; optionally a second
//! variant side by side; on this machine or on a remote runner (`--device`). The work is in
//! [`crate::runtime::profile`] (and [`crate::net::RemoteRunner::profile`]).

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;

use crate::data::Dataset;
use crate::record::{ProfileProgress, ProfileSettings, VariantProfile};
use crate::runtime::CancelToken;
use crate::runtime::profile::profile_variant;
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
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: super::values::TextOrJson,
    /// Profile on a remote edgescope-runner instead of this machine: a name from the devices list or
    /// tcp://HOST:PORT.
    #[arg(long)]
    pub device: Option<String>,
    /// Token file shared with the remote runner (default: the devices list's entry).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

/// `edgescope profile`.
pub fn profile_command(args: &ProfileArgs) -> Result<()> {
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
    let settings = ProfileSettings { samples: args.samples, warmup: args.warmup, intra_threads: args.threads };
    let mut remote =
        args.device.as_deref().map(|device| super::remote_runner(device, args.token_file.as_deref())).transpose()?;
    let cancel = CancelToken::new();
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
        // Progress redraws one line on a terminal; logs get none.
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let mut progress = |p: ProfileProgress| {
            if terminal {
                eprint!("\rprofiling {name}: {}/{} samples", p.done, p.total);
            }
        };
        let profile = match &mut remote {
            Some(runner) => runner.profile(&variant, &dataset, &settings, &mut progress, &cancel),
            None => profile_variant(&variant, &dataset, &settings, &mut progress, &cancel).map(|mut p| {
                p.device = crate::record::DeviceRecord::this_machine().host;
                p
            }),
        }
        .with_context(|| format!("profiling {name}"))?;
        if terminal {
            eprintln!();
        }
        profiles.push(profile);
    }
    if args.format == super::values::TextOrJson::Json {
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

/// The text report of one profile: per segment, the operator types (kernel, dispatch, share of the measured
/// latency), the "outside operators" row with its parts, and the slowest nodes.
pub fn render_profile(p: &VariantProfile) -> String {
    let mut out = String::new();
    let measured = p.measured_mean_us();
    let operators = p.operator_sum_us();
    let percent = |part: f64, whole: f64| 100.0 * part / whole.max(1e-9);
    let _ = writeln!(
        out,
        "{}{}: {} runs{}{}, {} thread(s); measured {measured:.1} us per inference with the profiler on, {:.1} us without",
        p.variant,
        if p.device.is_empty() { String::new() } else { format!(" on {}", p.device) },
        p.runs,
        if p.disturbed_runs > 0 {
            format!(
                " ({} more left out: slowed over {}x the median by the machine)",
                p.disturbed_runs,
                crate::runtime::profile::DISTURBED_FACTOR
            )
        } else {
            String::new()
        },
        if p.complete { "" } else { " (cancelled: incomplete)" },
        p.intra_threads,
        p.plain_mean_us(),
    );
    let _ = writeln!(
        out,
        "  operators {operators:.1} us ({:.1} % of measured: kernels {:.1} us + dispatch {:.1} us), outside operators {:.1} us ({:.1} %)",
        percent(operators, measured),
        p.kernel_us(),
        operators - p.kernel_us(),
        p.remainder_us(),
        percent(p.remainder_us(), measured),
    );
    for (index, segment) in p.segments.iter().enumerate() {
        let _ = writeln!(
            out,
            "  segment {index} ({}): measured {:.1} us (model_run {:.1} us), operators {:.1} us ({:.1} %)",
            segment.path.file_name().map_or_else(String::new, |f| f.to_string_lossy().into_owned()),
            segment.measured_mean_us,
            segment.model_run_us,
            segment.operator_sum_us,
            100.0 * segment.explained(),
        );
        let _ = writeln!(
            out,
            "    {:<34} {:>10} {:>12} {:>10} {:>7}",
            "operator type (nodes)", "kernel us", "dispatch us", "total us", "share"
        );
        for op in &segment.op_types {
            let _ = writeln!(
                out,
                "    {:<34} {:>10.1} {:>12.1} {:>10.1} {:>6.1} %",
                format!("{} ({}, {})", op.op_type, op.nodes_per_run, op.provider.trim_end_matches("ExecutionProvider")),
                op.mean_us,
                op.dispatch_us,
                op.total_us(),
                percent(op.total_us(), segment.measured_mean_us),
            );
        }
        let parts =
            segment.remainder_parts().iter().map(|(name, us)| format!("{name} {us:.1}")).collect::<Vec<_>>().join(", ");
        let _ = writeln!(
            out,
            "    {:<34} {:>10} {:>12} {:>10.1} {:>6.1} %  ({parts})",
            "outside operators",
            "",
            "",
            segment.remainder_us(),
            percent(segment.remainder_us(), segment.measured_mean_us),
        );
    }
    let _ = writeln!(out, "  slowest nodes:");
    for (segment, node) in p.top_nodes(8) {
        let _ = writeln!(
            out,
            "    {:<40} {:<22} segment {segment} {:>9.1} us (kernel {:.1} + dispatch {:.1})",
            node.node,
            node.op_type,
            node.total_us(),
            node.kernel_us,
            node.dispatch_us
        );
    }
    out
}

/// Two profiles' operator types side by side (kernel plus dispatch), largest increase first, with the
/// outside-operators and measured rows.
pub fn render_comparison(a: &VariantProfile, b: &VariantProfile) -> String {
    let mut types: Vec<String> = a.op_types.iter().chain(&b.op_types).map(|o| o.op_type.clone()).collect();
    types.sort();
    types.dedup();
    let mut rows: Vec<(String, f64, f64)> =
        types.iter().map(|t| (t.clone(), a.op_type_us(t), b.op_type_us(t))).collect();
    rows.sort_by(|x, y| (y.2 - y.1).total_cmp(&(x.2 - x.1)));
    let mut out = String::new();
    let _ = writeln!(out, "\n{:<24} {:>12} {:>12} {:>12}", "operator type", a.variant, b.variant, "difference");
    rows.push(("outside operators".into(), a.remainder_us(), b.remainder_us()));
    rows.push(("measured (whole chain)".into(), a.measured_mean_us(), b.measured_mean_us()));
    rows.push(("without the profiler".into(), a.plain_mean_us(), b.plain_mean_us()));
    for (t, x, y) in rows {
        let _ = writeln!(out, "{t:<24} {x:>9.1} us {y:>9.1} us {:>+9.1} us", y - x);
    }
    out
}
