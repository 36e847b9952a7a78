//! The command line: `eval`, `report`, `sweep`, `verify` and `inspect`. Parsing and printing only; the work
//! happens in the library layers below.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};

use crate::analysis::outcome::LatencySummary;
use crate::analysis::policy::{Criterion, Policy};
use crate::data::Dataset;
use crate::model::{Variant, format_shape};
use crate::report::{self, Format, ReportOptions};
use crate::runtime::{
    CancelToken, Job, LocalRunner, ProviderChoice, RunEvent, RunMode, RunOutput, RunSettings, Runner, TraceRun,
};
use crate::session::{DatasetEntry, Session, VariantEntry};

/// edgescope: compare pruned, quantized and early-exit variants of a CNN on a labelled dataset.
#[derive(Debug, Parser)]
#[command(name = "edgescope", version, about, long_about = None)]
pub struct Cli {
    /// Session to open in the desktop app (default: the last one, else the demo session).
    #[arg(long)]
    pub session: Option<PathBuf>,
    /// Take the README's screenshots into this folder, then close (run under Xvfb: see README).
    #[arg(long, hide = true)]
    pub screenshots: Option<PathBuf>,
    /// What to do; without a command the desktop app opens.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[cfg(feature = "gui")]
fn open_app(session: Option<PathBuf>, screenshots: Option<PathBuf>) -> Result<()> {
    if let Some(directory) = &screenshots {
        std::fs::create_dir_all(directory).with_context(|| format!("creating {}", directory.display()))?;
    }
    crate::app::run_app(session, screenshots).map_err(|e| anyhow!(e))
}

#[cfg(not(feature = "gui"))]
fn open_app(_session: Option<PathBuf>, _screenshots: Option<PathBuf>) -> Result<()> {
    use clap::CommandFactory;
    Cli::command().print_help()?;
    println!("\n\nThis build has no desktop app (built without the `gui` feature); use the commands above.");
    Ok(())
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run variants over a dataset and save their traces in a session.
    Eval(EvalArgs),
    /// Print the study's tables (2, 3-6, 7) for a session.
    Report(ReportArgs),
    /// Print an early-exit variant's threshold sweep as CSV.
    Sweep(SweepArgs),
    /// Run a variant dynamically at a policy and compare measured with predicted latency.
    Verify(VerifyArgs),
    /// Show what a variant (ONNX file or manifest) contains.
    Inspect(InspectArgs),
    /// List the configured remote runners with their state, or add one.
    Devices(DevicesArgs),
}

/// `edgescope devices`.
#[derive(Debug, Args)]
pub struct DevicesArgs {
    /// Devices file (default: $EDGESCOPE_DEVICES, else ~/.config/edgescope/devices.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Add or replace a device: NAME ADDRESS (tcp://HOST:PORT); needs --token-file.
    #[arg(long, num_args = 2, value_names = ["NAME", "ADDRESS"])]
    pub add: Option<Vec<String>>,
    /// Token file of the device being added.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

/// Options shared by commands that run models.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Intra-op threads (0 = ONNX Runtime's default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Untimed warm-up runs before measuring.
    #[arg(long, default_value_t = crate::runtime::runner::DEFAULT_WARMUP_RUNS)]
    pub warmup: usize,
    /// Execution provider: cpu, cuda or tensorrt.
    #[arg(long, default_value = "cpu")]
    pub ep: String,
    /// Only the first N samples.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Switch the resource sampler off.
    #[arg(long)]
    pub no_sampler: bool,
    /// Resource sampling interval in milliseconds.
    #[arg(long, default_value_t = crate::runtime::runner::DEFAULT_SAMPLER_INTERVAL_MS)]
    pub sample_ms: u64,
}

impl RunArgs {
    fn settings(&self) -> Result<RunSettings> {
        let provider = ProviderChoice::parse(&self.ep)
            .ok_or_else(|| anyhow!("--ep must be cpu, cuda or tensorrt, not {:?}", self.ep))?;
        Ok(RunSettings {
            intra_threads: self.threads,
            warmup_runs: self.warmup,
            provider,
            sample_resources: !self.no_sampler,
            sampler_interval_ms: self.sample_ms,
            limit: self.limit,
            checkpoint_every: None,
        })
    }
}

/// `edgescope eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Dataset: a dataset.toml, a folder, or an IDX/NPY images file.
    #[arg(long)]
    pub dataset: PathBuf,
    /// Variants: ONNX files or manifests (.toml). The first tagged `base` is the loyalty reference.
    #[arg(long = "variant", required = true, num_args = 1..)]
    pub variants: Vec<PathBuf>,
    /// Session file to write (added to when it exists).
    #[arg(long)]
    pub out: PathBuf,
    /// Name of the base variant (overrides tags).
    #[arg(long)]
    pub base: Option<String>,
    /// Run on a remote edgescope-runner (tcp://HOST:PORT) instead of this machine.
    #[arg(long, requires = "token_file")]
    pub device: Option<String>,
    /// Token file shared with the remote runner.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// A calibration dataset: early-exit variants also run on it, so thresholds can be set as percentiles of
    /// their confidence there (`report --percentile`, `verify --percentile`).
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Run options.
    #[command(flatten)]
    pub run: RunArgs,
}

/// `edgescope report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Session file.
    pub session: PathBuf,
    /// text, csv, md or json.
    #[arg(long, default_value = "text")]
    pub format: String,
    /// Exit criterion for the operating points.
    #[arg(long, default_value = "entropy")]
    pub criterion: String,
    /// Accuracy budget of inf-opt, percentage points below the base.
    #[arg(long, default_value_t = crate::analysis::DEFAULT_BUDGET_PP)]
    pub budget: f64,
    /// Also show early-exit variants at these calibration percentiles (e.g. 50,75,95).
    #[arg(long, value_delimiter = ',')]
    pub percentile: Vec<f64>,
}

/// `edgescope sweep`.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Session file.
    pub session: PathBuf,
    /// Variant name.
    #[arg(long)]
    pub variant: String,
    /// entropy, normalized-entropy, max-probability or margin.
    #[arg(long, default_value = "entropy")]
    pub criterion: String,
    /// Number of thresholds.
    #[arg(long, default_value_t = 200)]
    pub points: usize,
    /// Accuracy budget of inf-opt, percentage points below the base.
    #[arg(long, default_value_t = crate::analysis::DEFAULT_BUDGET_PP)]
    pub budget: f64,
}

/// `edgescope verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Session file.
    pub session: PathBuf,
    /// Variant name.
    #[arg(long)]
    pub variant: String,
    /// Threshold at every early exit (or one per exit, comma-separated).
    #[arg(long, value_delimiter = ',', required_unless_present = "percentile", conflicts_with = "percentile")]
    pub threshold: Vec<f64>,
    /// Thresholds at this percentile of calibration confidence (or one per exit, comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub percentile: Vec<f64>,
    /// entropy, normalized-entropy, max-probability or margin.
    #[arg(long, default_value = "entropy")]
    pub criterion: String,
    /// Store the dynamic run and the policy in the session.
    #[arg(long)]
    pub save: bool,
    /// Run options.
    #[command(flatten)]
    pub run: RunArgs,
}

/// `edgescope inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// ONNX files or manifests.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Eval(args)) => eval(&args),
        Some(Command::Report(args)) => report_command(&args),
        Some(Command::Sweep(args)) => sweep(&args),
        Some(Command::Verify(args)) => verify(&args),
        Some(Command::Inspect(args)) => inspect(&args),
        Some(Command::Devices(args)) => devices(&args),
        None => open_app(cli.session, cli.screenshots),
    }
}

fn parse_criterion(text: &str) -> Result<Criterion> {
    Criterion::parse(text)
        .ok_or_else(|| anyhow!("unknown criterion {text:?}; use {}", Criterion::ALL.map(Criterion::name).join(", ")))
}

/// A terminal progress bar, or nothing when stderr is not a terminal.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new(label: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            let style = indicatif::ProgressStyle::with_template(
                "{prefix:>24} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(label.to_string());
            bar
        });
        Self { bar }
    }

    fn event(&self, event: &RunEvent) {
        let Some(bar) = &self.bar else { return };
        match event {
            RunEvent::Loading => bar.set_message("loading"),
            RunEvent::WarmingUp => bar.set_message("warming up"),
            RunEvent::Progress { done, total } => {
                bar.set_length(*total as u64);
                bar.set_position(*done as u64);
                bar.set_message("");
            }
            RunEvent::Checkpoint { .. } => {}
        }
    }

    fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

fn run_job(runner: &mut dyn Runner, job: &Job) -> Result<RunOutput> {
    let progress = Progress::new(&job.variant.name);
    let result = runner.run(job, &mut |event| progress.event(&event), &CancelToken::new());
    progress.finish();
    result.with_context(|| format!("running {}", job.variant.name))
}

fn eval(args: &EvalArgs) -> Result<()> {
    let settings = args.run.settings()?;
    let mut dataset = Dataset::open(&args.dataset)?;
    if let Some(limit) = settings.limit {
        dataset.truncate(limit);
    }
    let dataset = Arc::new(dataset);
    let mut variants = Vec::new();
    for path in &args.variants {
        variants.push(Arc::new(Variant::open(path)?));
    }
    // Check every pairing before running anything, so a mistake is reported in seconds, not after an hour.
    for variant in &variants {
        crate::runtime::check_compatible(variant, &dataset)?;
    }
    let mut session = if args.out.exists() { Session::load(&args.out)? } else { Session::default() };
    if let Some(base) = &args.base {
        if !variants.iter().any(|v| &v.name == base) && session.variant(base).is_none() {
            bail!(
                "--base {base:?} names no variant; the variants are {}",
                variants.iter().map(|v| v.name.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
        session.base = Some(base.clone());
    }
    session.upsert_dataset(DatasetEntry::of(&dataset));
    for variant in &variants {
        session.upsert_variant(VariantEntry::of(variant));
    }

    let calibration = match &args.calibration {
        Some(path) => {
            let calibration = Arc::new(Dataset::open(path)?);
            if calibration.name == dataset.name {
                bail!(
                    "the calibration dataset {} has the same name as the evaluation dataset; give it its own name",
                    path.display()
                );
            }
            for variant in variants.iter().filter(|v| v.early_exit_count() > 0) {
                crate::runtime::check_compatible(variant, &calibration)?;
            }
            session.upsert_dataset(DatasetEntry::of(&calibration));
            session.calibration_dataset = Some(calibration.name.clone());
            Some(calibration)
        }
        None => None,
    };

    let mut runner: Box<dyn Runner> = match (&args.device, &args.token_file) {
        (Some(address), Some(token_file)) => {
            let token = crate::net::protocol::read_token(token_file).map_err(|e| anyhow!(e))?;
            Box::new(crate::net::RemoteRunner::new(address, token))
        }
        _ => Box::new(LocalRunner::new()),
    };
    let device = runner.device()?;
    eprintln!("device: {}", device.summary());
    for variant in &variants {
        let job = Job {
            variant: Arc::clone(variant),
            dataset: Arc::clone(&dataset),
            settings: settings.clone(),
            mode: RunMode::Trace,
        };
        let output = match run_job(runner.as_mut(), &job) {
            Ok(output) => output,
            Err(error) => {
                // A remote run cut short keeps what it measured, marked incomplete, before the error is reported.
                if let Some(crate::runtime::RuntimeError::Interrupted { partial, .. }) = error.downcast_ref()
                    && session.keep_partial((**partial).clone())
                {
                    session.save(&args.out)?;
                }
                return Err(error);
            }
        };
        let RunOutput::Trace(run) = output else { bail!("the runner returned a dynamic run for a trace job") };
        eprintln!("{}", run_summary(&run));
        session.upsert_run(run);
        if let Some(calibration) = calibration.as_ref().filter(|_| variant.early_exit_count() > 0) {
            let job = Job {
                variant: Arc::clone(variant),
                dataset: Arc::clone(calibration),
                settings: RunSettings { sample_resources: false, limit: None, ..settings.clone() },
                mode: RunMode::Trace,
            };
            let RunOutput::Trace(run) = run_job(runner.as_mut(), &job)? else {
                bail!("the runner returned a dynamic run for a trace job")
            };
            eprintln!("{} (calibration)", run_summary(&run));
            session.upsert_run(run);
        }
        // Save after every variant: an interrupted evaluation keeps what it measured.
        session.save(&args.out)?;
    }
    eprintln!("saved {}", args.out.display());
    Ok(())
}

fn run_summary(run: &TraceRun) -> String {
    let n = run.trace.len().max(1);
    let last = run.trace.exits.len() - 1;
    let correct =
        (0..run.trace.len()).filter(|&s| u32::from(run.trace.exits[last].predicted(s)) == run.trace.labels[s]).count();
    let mut latencies: Vec<f32> = (0..run.trace.len()).map(|s| run.trace.latency_to_exit_us(s, last)).collect();
    let latency = LatencySummary::from_values(&mut latencies);
    format!(
        "{:<24} {} samples, final-exit accuracy {:.2} %, mean {:.3} ms, p99 {:.3} ms, {:.1} s{}",
        run.info.variant,
        run.trace.len(),
        correct as f64 * 100.0 / n as f64,
        latency.mean_us / 1000.0,
        latency.p99_us / 1000.0,
        run.info.wall_time_s,
        if run.info.complete { "" } else { " (incomplete)" }
    )
}

fn report_command(args: &ReportArgs) -> Result<()> {
    let format = Format::parse(&args.format).ok_or_else(|| anyhow!("--format must be text, csv, md or json"))?;
    let session = Session::load(&args.session)?;
    let options = ReportOptions {
        criterion: parse_criterion(&args.criterion)?,
        budget_pp: args.budget,
        ..ReportOptions::default()
    };
    let rows = report::rows(&session, &options);
    if rows.is_empty() {
        bail!("{} holds no runs; create some with `edgescope eval`", args.session.display());
    }
    let tables = report::tables(&rows, &options);
    print!("{}", report::render(&tables, &rows, format));
    Ok(())
}

fn find_run<'a>(session: &'a Session, variant: &str, path: &Path) -> Result<&'a TraceRun> {
    session.runs.iter().find(|r| r.info.variant == variant && !session.is_calibration_run(r)).ok_or_else(|| {
        let names: Vec<&str> = session.runs.iter().map(|r| r.info.variant.as_str()).collect();
        anyhow!("{} has no run of {variant:?}; it has {}", path.display(), names.join(", "))
    })
}

fn sweep(args: &SweepArgs) -> Result<()> {
    let session = Session::load(&args.session)?;
    let run = find_run(&session, &args.variant, &args.session)?;
    if run.trace.early_exit_count() == 0 {
        bail!("{} has no early exit: there is nothing to sweep", args.variant);
    }
    let criterion = parse_criterion(&args.criterion)?;
    let options =
        ReportOptions { criterion, budget_pp: args.budget, sweep_points: args.points, ..ReportOptions::default() };
    let (_, sweep) = report::sweep_run(&session, run, &options);
    print!("{}", report::sweep_csv(&sweep, criterion));
    Ok(())
}

fn verify(args: &VerifyArgs) -> Result<()> {
    let mut session = Session::load(&args.session)?;
    let run = find_run(&session, &args.variant, &args.session)?.clone();
    let early = run.trace.early_exit_count();
    if early == 0 {
        bail!("{} has no early exit: a dynamic run would equal the trace", args.variant);
    }
    let criterion = parse_criterion(&args.criterion)?;
    let policy = if args.percentile.is_empty() {
        let thresholds = match args.threshold.as_slice() {
            [one] => vec![*one; early],
            many if many.len() == early => many.to_vec(),
            many => bail!("{} has {early} early exits but {} thresholds were given", args.variant, many.len()),
        };
        Policy { criterion, thresholds }
    } else {
        report::percentile_policy(&session, &run, criterion, &args.percentile).ok_or_else(|| {
            anyhow!(
                "{} has no calibration run of {}; add one with `edgescope eval --calibration DATASET`",
                args.session.display(),
                args.variant
            )
        })?
    };
    let entry = session
        .variant(&args.variant)
        .ok_or_else(|| anyhow!("the session does not list variant {:?}", args.variant))?;
    let dataset_entry = session
        .datasets
        .iter()
        .find(|d| d.name == run.info.dataset)
        .ok_or_else(|| anyhow!("the session does not list dataset {:?}", run.info.dataset))?;
    let variant = Arc::new(Variant::open(&entry.path)?);
    let mut dataset = Dataset::open(&dataset_entry.path)?;
    dataset.truncate(run.trace.len());
    let mut settings = args.run.settings()?;
    settings.limit = Some(args.run.limit.unwrap_or(run.trace.len()).min(run.trace.len()));

    let predicted = report::prepare(&session, &run, criterion).evaluate(&policy);
    let job = Job { variant, dataset: Arc::new(dataset), settings, mode: RunMode::Dynamic(policy.clone()) };
    let RunOutput::Dynamic(dynamic) = run_job(&mut LocalRunner::new(), &job)? else {
        bail!("the runner returned a trace for a dynamic job")
    };

    let n = dynamic.labels.len().max(1) as f64;
    let mut measured_latency = dynamic.latency_us.clone();
    let measured = LatencySummary::from_values(&mut measured_latency);
    let correct = dynamic.predicted.iter().zip(&dynamic.labels).filter(|(p, l)| u32::from(**p) == **l).count();
    let exit_policy = report::prepare(&session, &run, criterion).exit_of_each_sample(&policy);
    let same_exit = exit_policy.iter().zip(&dynamic.exit_taken).filter(|(a, b)| a == b).count();
    let early_measured = dynamic.exit_taken.iter().filter(|&&e| usize::from(e) < early).count();
    println!("{} at {} {:?}: {} samples", args.variant, criterion.name(), policy.thresholds, dynamic.labels.len());
    println!("{:<22} {:>12} {:>12}", "", "predicted", "measured");
    for (name, predicted_us, measured_us) in [
        ("mean latency (ms)", predicted.latency.mean_us, measured.mean_us),
        ("p50 latency (ms)", predicted.latency.p50_us, measured.p50_us),
        ("p90 latency (ms)", predicted.latency.p90_us, measured.p90_us),
        ("p99 latency (ms)", predicted.latency.p99_us, measured.p99_us),
    ] {
        println!("{name:<22} {:>12.3} {:>12.3}", predicted_us / 1000.0, measured_us / 1000.0);
    }
    println!("{:<22} {:>12.2} {:>12.2}", "accuracy (%)", predicted.accuracy * 100.0, correct as f64 * 100.0 / n);
    println!(
        "{:<22} {:>12.2} {:>12.2}",
        "early-exit rate (%)",
        predicted.early_exit_rate * 100.0,
        early_measured as f64 * 100.0 / n
    );
    println!("same exit as predicted: {same_exit} of {} samples", dynamic.labels.len());
    if args.save {
        session.policies.insert(args.variant.clone(), policy);
        session.verifications.retain(|v| v.info.variant != args.variant);
        session.verifications.push(dynamic);
        session.save(&args.session)?;
        eprintln!("saved {}", args.session.display());
    }
    Ok(())
}

/// The devices file: `format = "edgescope-devices"`, `version = 1`, then `[[devices]]` with name, address and
/// token_file.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct DevicesFile {
    format: String,
    version: u32,
    #[serde(default)]
    devices: Vec<DeviceEntry>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct DeviceEntry {
    name: String,
    address: String,
    token_file: PathBuf,
}

fn devices_path(args: &DevicesArgs) -> Result<PathBuf> {
    if let Some(path) = &args.config {
        return Ok(path.clone());
    }
    if let Some(path) = std::env::var_os("EDGESCOPE_DEVICES") {
        return Ok(PathBuf::from(path));
    }
    let home = std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set; pass --config"))?;
    Ok(PathBuf::from(home).join(".config/edgescope/devices.toml"))
}

fn devices(args: &DevicesArgs) -> Result<()> {
    let path = devices_path(args)?;
    let mut file = if path.exists() {
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let file: DevicesFile =
            toml::from_str(&text).with_context(|| format!("{} is not a valid devices file", path.display()))?;
        if file.format != "edgescope-devices" {
            bail!("{} is not an edgescope devices file (format = \"edgescope-devices\")", path.display());
        }
        if file.version > 1 {
            bail!(
                "{} is devices file version {}, newer than this edgescope reads (1); update edgescope",
                path.display(),
                file.version
            );
        }
        file
    } else {
        DevicesFile { format: "edgescope-devices".into(), version: 1, devices: Vec::new() }
    };
    if let Some(add) = &args.add {
        let token_file = args.token_file.clone().ok_or_else(|| anyhow!("--add needs --token-file"))?;
        let entry = DeviceEntry { name: add[0].clone(), address: add[1].clone(), token_file };
        file.devices.retain(|d| d.name != entry.name);
        file.devices.push(entry);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let text = toml::to_string(&file).context("serializing the devices file")?;
        crate::session::write_atomically(&path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("saved {}", path.display());
    }
    if file.devices.is_empty() {
        println!(
            "no devices configured; add one with `edgescope devices --add NAME tcp://HOST:PORT --token-file PATH`"
        );
    }
    for device in &file.devices {
        let state = crate::net::protocol::read_token(&device.token_file)
            .map_err(|e| anyhow!(e))
            .and_then(|token| Ok(crate::net::RemoteRunner::new(&device.address, token).device()?));
        match state {
            Ok(record) => println!("{:<16} {:<24} connected  {}", device.name, device.address, record.status_line()),
            Err(e) => println!("{:<16} {:<24} unavailable: {e:#}", device.name, device.address),
        }
    }
    Ok(())
}

fn inspect(args: &InspectArgs) -> Result<()> {
    for path in &args.paths {
        let variant = Variant::open(path)?;
        println!("{}  [{}]  base: {}", variant.name, variant.tags.join(", "), variant.base.as_deref().unwrap_or("-"));
        println!(
            "  {} segment(s), {} early exit(s), {} classes, {:.2} MB, {} parameters",
            variant.segments.len(),
            variant.early_exit_count(),
            variant.num_classes,
            variant.size_bytes() as f64 / 1e6,
            variant.parameter_count()
        );
        for (index, segment) in variant.segments.iter().enumerate() {
            let info = &segment.info;
            let opsets: Vec<String> = info
                .opsets
                .iter()
                .map(|(d, v)| format!("{}{v}", if d.is_empty() { String::new() } else { format!("{d}:") }))
                .collect();
            println!(
                "  segment {} {} (IR {}, opset {}, {})",
                index + 1,
                segment.path.display(),
                info.ir_version,
                opsets.join(" "),
                info.producer
            );
            for input in &info.inputs {
                println!("    in   {} {} {}", input.name, input.dtype, format_shape(&input.shape));
            }
            for output in &info.outputs {
                let role = if segment.exit.as_deref() == Some(output.name.as_str()) {
                    " (exit)"
                } else if segment.carry.as_deref() == Some(output.name.as_str()) {
                    " (carried)"
                } else {
                    ""
                };
                println!("    out  {} {} {}{role}", output.name, output.dtype, format_shape(&output.shape));
            }
        }
        let histogram: Vec<String> = variant.op_histogram().iter().map(|(op, n)| format!("{op} x{n}")).collect();
        println!("  ops: {}", histogram.join(", "));
    }
    Ok(())
}
