//! The command line: `eval`, `report`, `sweep`, `verify`, `samples`, `inspect`, `certify` and `exits`. Parsing
//! and printing only; the work happens in the library layers below.

mod certify;
mod exits_add;
mod profile;
mod quantize;
mod samples;
mod study;
mod values;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};

use crate::analysis::outcome::LatencySummary;
use crate::analysis::policy::{Criterion, Policy};
use crate::data::Dataset;
use crate::model::{OutputKind, Variant, format_shape};
use crate::record::{ProviderChoice, RunEvent, RunMode, RunOutput, RunSettings, TraceRun};
use crate::report::{self, Format, ReportOptions};
use crate::runtime::{CancelToken, IsolatedRunner, Job, Runner};
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
    /// Export one row per sample of a variant's run (labels, per-exit predictions, confidences, latencies).
    Samples(samples::SamplesArgs),
    /// Show what a variant (ONNX file or manifest) contains.
    Inspect(InspectArgs),
    /// Early-exit thresholds with a guarantee (Learn then Test): risk <= epsilon with probability >= 1 - delta.
    Certify(certify::CertifyArgs),
    /// Per-operator latency of a variant (ONNX Runtime's profiler), per segment and operator type.
    Profile(profile::ProfileArgs),
    /// List the configured remote runners with their state, or add one.
    Devices(DevicesArgs),
    /// Early exits: split a multi-exit ONNX into a chain, list where exits can go, or add trained exits.
    #[command(subcommand)]
    Exits(ExitsCommand),
    /// Quantize a float variant (ONNX file or manifest, chains segment by segment): ptq (QDQ) or dq, as ONNX
    /// Runtime's quantizer does it, written with a manifest tagged ptq/dq.
    Quantize(quantize::QuantizeArgs),
    /// Per quantized activation, the signal-to-quantization-noise ratio of a QDQ model against its float model.
    Sensitivity(quantize::SensitivityArgs),
    /// The study on your model in one command: PTQ, DQ, early exits, PTQ-EE, DQ-EE (PRUNE-EE), measured and saved
    /// as a session for `report` and the app; resumable.
    Study(study::StudyArgs),
    /// Internal: run one job sent on stdin (the fresh process each local variant is measured in).
    #[command(name = "measure-job", hide = true)]
    MeasureJob,
}

/// `edgescope exits ...`.
#[derive(Debug, Subcommand)]
pub enum ExitsCommand {
    /// Split a multi-exit ONNX (exit heads + final output in one graph) into an early-exit chain + manifest.
    Split(SplitArgs),
    /// List the tensors where the graph can be cut with a single tensor crossing, and suggest exit places.
    Candidates(CandidatesArgs),
    /// Insert early exits into a plain classifier: train their heads on frozen features, write the chain.
    Add(exits_add::AddArgs),
}

/// `edgescope exits split`.
#[derive(Debug, Args)]
pub struct SplitArgs {
    /// The multi-exit ONNX file.
    #[arg(long)]
    pub model: PathBuf,
    /// Exit outputs in depth order, the final output last (default: outputs of shape [N, classes], the one
    /// that depends on the most nodes being the final output).
    #[arg(long, value_delimiter = ',')]
    pub exits: Vec<String>,
    /// Folder to write the segments and the manifest into (created; an existing one must be empty).
    #[arg(long)]
    pub out: PathBuf,
    /// Name of the base variant the chain is compared with.
    #[arg(long)]
    pub base: Option<String>,
    /// Variant name (default: STEM/ee).
    #[arg(long)]
    pub name: Option<String>,
}

/// `edgescope exits candidates`.
#[derive(Debug, Args)]
pub struct CandidatesArgs {
    /// The ONNX file.
    #[arg(long)]
    pub model: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: values::TextOrJson,
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
    /// Remove the device called NAME.
    #[arg(long, value_name = "NAME", conflicts_with = "add")]
    pub remove: Option<String>,
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
    #[arg(long, default_value_t = crate::record::DEFAULT_WARMUP_RUNS)]
    pub warmup: usize,
    /// Execution provider.
    #[arg(long, value_enum, default_value = "cpu")]
    pub ep: ProviderChoice,
    /// Only the first N samples (a limited run is kept beside the full trace, never in its place).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Switch the resource sampler off.
    #[arg(long)]
    pub no_sampler: bool,
    /// Resource sampling interval in milliseconds.
    #[arg(long, default_value_t = crate::record::DEFAULT_SAMPLER_INTERVAL_MS)]
    pub sample_ms: u64,
}

impl RunArgs {
    fn settings(&self) -> Result<RunSettings> {
        if self.limit == Some(0) {
            bail!("--limit 0 measures nothing; give at least 1, or leave --limit out for every sample");
        }
        let provider = self.ep;
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
    /// Name of the base variant (overrides tags). Without it and without a variant tagged `base` by a
    /// manifest, the first float model (no quantized operators) among bare ONNX files is the base.
    #[arg(long)]
    pub base: Option<String>,
    /// What the exits of bare ONNX files hold: logits, probabilities or log-probabilities (default: read off
    /// the graph, a final Softmax / LogSoftmax, and confirmed on the first samples). Manifests say it themselves.
    #[arg(long, value_enum)]
    pub outputs: Option<OutputKind>,
    /// Seconds between saves of the variant in progress (so even a killed eval keeps what it measured).
    #[arg(long, default_value_t = 20)]
    pub save_every_s: u64,
    /// Read and preprocess every sample before running anything and stop at the first unreadable one
    /// (by default unreadable samples are skipped, listed and left out of every denominator).
    #[arg(long)]
    pub strict: bool,
    /// Run on a remote edgescope-runner instead of this machine: a name from the devices list (`edgescope
    /// devices`) or tcp://HOST:PORT.
    #[arg(long)]
    pub device: Option<String>,
    /// Token file shared with the remote runner (default: the devices list's entry).
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
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Exit criterion for the operating points.
    #[arg(long, value_enum, default_value = "entropy")]
    pub criterion: Criterion,
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
    /// Exit criterion.
    #[arg(long, value_enum, default_value = "entropy")]
    pub criterion: Criterion,
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
    /// Exit criterion.
    #[arg(long, value_enum, default_value = "entropy")]
    pub criterion: Criterion,
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
        Some(Command::Samples(args)) => samples::samples(&args),
        Some(Command::Inspect(args)) => inspect(&args),
        Some(Command::Certify(args)) => certify::certify_command(&args),
        Some(Command::Profile(args)) => profile::profile_command(&args),
        Some(Command::Devices(args)) => devices(&args),
        Some(Command::Exits(ExitsCommand::Split(args))) => exits_split(&args),
        Some(Command::Exits(ExitsCommand::Candidates(args))) => exits_candidates(&args),
        Some(Command::Exits(ExitsCommand::Add(args))) => exits_add::exits_add(&args),
        Some(Command::Quantize(args)) => quantize::quantize(&args),
        Some(Command::Sensitivity(args)) => quantize::sensitivity(&args),
        Some(Command::Study(args)) => study::study(&args),
        Some(Command::MeasureJob) => crate::runtime::isolated::serve_child_job().map_err(|e| anyhow!(e)),
        None => open_app(cli.session, cli.screenshots),
    }
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
            RunEvent::Queued => bar.set_message("queued behind another run"),
            RunEvent::Loading => bar.set_message("loading"),
            RunEvent::WarmingUp => bar.set_message("warming up"),
            RunEvent::Progress { done, total } => {
                bar.set_length(*total as u64);
                bar.set_position(*done as u64);
                bar.set_message("");
            }
            RunEvent::ComparingWithReference { done, total } => {
                bar.set_length(*total as u64);
                bar.set_position(*done as u64);
                bar.set_message("comparing with the base (exact loyalty)");
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

fn run_job(runner: &mut dyn Runner, job: &Job, cancel: &CancelToken) -> Result<RunOutput> {
    run_job_with(runner, job, cancel, &mut |_| {})
}

/// Runs a job with a progress bar, passing every event on to `on_event` too.
fn run_job_with(
    runner: &mut dyn Runner,
    job: &Job,
    cancel: &CancelToken,
    on_event: &mut dyn FnMut(&RunEvent),
) -> Result<RunOutput> {
    let progress = Progress::new(&job.variant.name);
    let result = runner.run(
        job,
        &mut |event| {
            progress.event(&event);
            on_event(&event);
        },
        cancel,
    );
    progress.finish();
    result.with_context(|| format!("running {}", job.variant.name))
}

/// Ctrl-C and SIGTERM cancel the run in flight (its measured samples are saved, marked incomplete); a second
/// Ctrl-C ends the process at once.
fn cancel_on_signals() -> CancelToken {
    let cancel = CancelToken::new();
    let handler_cancel = cancel.clone();
    let installed = ctrlc::set_handler(move || {
        if handler_cancel.is_cancelled() {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: saving the samples measured so far (Ctrl-C again to quit at once)");
        handler_cancel.cancel();
    });
    if let Err(e) = installed {
        eprintln!("note: Ctrl-C will not save a partial run ({e})");
    }
    cancel
}

/// Saves the session on a named background thread at most every `interval` while a run
/// streams checkpoints, so even a killed `eval` keeps what it measured. The measuring thread only clones and
/// hands over; a save still in progress makes it skip that checkpoint rather than wait.
struct CheckpointSaver {
    sender: Option<crossbeam_channel::Sender<Session>>,
    worker: Option<std::thread::JoinHandle<()>>,
    last_save: std::time::Instant,
    interval: std::time::Duration,
}

/// Samples between checkpoints of a local run.
const CHECKPOINT_SAMPLES: usize = 200;

impl CheckpointSaver {
    fn start(path: PathBuf, interval: std::time::Duration) -> Self {
        let (sender, receiver) = crossbeam_channel::bounded::<Session>(1);
        let worker = std::thread::Builder::new()
            .name("edgescope-checkpoint".into())
            .spawn(move || {
                for session in receiver {
                    if let Err(e) = session.save(&path) {
                        eprintln!("note: could not save a checkpoint of the run: {e}");
                    }
                }
            })
            .ok();
        Self { sender: worker.is_some().then_some(sender), worker, last_save: std::time::Instant::now(), interval }
    }

    /// Offers the session with `partial` kept in it, when a save is due.
    fn offer(&mut self, session: &Session, partial: &TraceRun) {
        let Some(sender) = &self.sender else { return };
        if self.last_save.elapsed() < self.interval {
            return;
        }
        let mut snapshot = session.clone();
        if snapshot.keep_partial(partial.clone()) && sender.try_send(snapshot).is_ok() {
            self.last_save = std::time::Instant::now();
        }
    }

    /// Waits for a save in progress, so the final save comes last.
    fn finish(mut self) {
        self.sender = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn eval(args: &EvalArgs) -> Result<()> {
    let settings = args.run.settings()?;
    let dataset = Arc::new(Dataset::open(&args.dataset)?);
    let stated_outputs = args.outputs;
    let mut variants = Vec::new();
    for path in &args.variants {
        let mut variant = Variant::open(path)?;
        if let Some(kind) = stated_outputs
            && variant.source.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
        {
            variant.state_output_kind(kind);
        }
        variants.push(variant);
    }
    let implied_base = if args.base.is_none() { implied_base(&variants) } else { None };
    if let Some(base) = &implied_base {
        // Other bare float files (a pruned export, say) are compared with it rather than with themselves.
        for variant in variants.iter_mut().filter(|v| &v.name != base && is_bare(v)) {
            variant.tags.retain(|t| t != "base");
            if variant.tags.is_empty() {
                variant.tags.push("float".into());
            }
        }
    }
    let variants: Vec<Arc<Variant>> = variants.into_iter().map(Arc::new).collect();
    // Check every pairing before running anything, so a mistake is reported in seconds, not after an hour.
    for variant in &variants {
        crate::runtime::check_compatible(variant, &dataset)?;
    }
    if args.strict {
        let progress = Progress::new("checking samples");
        dataset
            .check_every_sample(|done| progress.event(&RunEvent::Progress { done, total: dataset.len() }))
            .context("--strict: a sample is unreadable; fix or remove it, or run without --strict to skip it")?;
        progress.finish();
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
    } else if session.base.is_none()
        && let Some(base) = implied_base
    {
        eprintln!("base: {base} (the first float model; pass --base NAME to choose another)");
        session.base = Some(base);
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

    let remote = args.device.as_deref().map(|device| remote_runner(device, args.token_file.as_deref())).transpose()?;
    let runner_address = remote.as_ref().map(|r| format!("tcp://{}", r.address()));
    let mut runner: Box<dyn Runner> = match remote {
        Some(remote) => Box::new(remote),
        // Each variant in a fresh process: its memory is its own (see README, measurement rules).
        None => Box::new(IsolatedRunner::current_exe()?),
    };
    let device = runner.device()?;
    eprintln!("device: {}", device.summary());
    let cancel = cancel_on_signals();
    let checkpoint_settings =
        RunSettings { checkpoint_every: settings.checkpoint_every.or(Some(CHECKPOINT_SAMPLES)), ..settings.clone() };
    for variant in &variants {
        let reference = session.reference_for(variant).unwrap_or_else(|warning| {
            eprintln!("warning: {warning}");
            None
        });
        let job = Job {
            variant: Arc::clone(variant),
            dataset: Arc::clone(&dataset),
            settings: checkpoint_settings.clone(),
            mode: RunMode::Trace,
            reference,
        };
        let mut saver =
            CheckpointSaver::start(args.out.clone(), std::time::Duration::from_secs(args.save_every_s.max(1)));
        let mut partial: Option<TraceRun> = None;
        let result = run_job_with(runner.as_mut(), &job, &cancel, &mut |event| {
            if let RunEvent::Checkpoint { samples, .. } = event {
                let run = partial.get_or_insert_with(|| TraceRun {
                    info: crate::record::RunInfo {
                        variant: variant.name.clone(),
                        dataset: dataset.name.clone(),
                        device: device.clone(),
                        settings: settings.clone(),
                        samples_total: settings.limit.map_or(dataset.len(), |l| l.min(dataset.len())),
                        dataset_samples: dataset.len(),
                        runner: runner_address.clone(),
                        ..Default::default()
                    },
                    trace: crate::analysis::trace::Trace::new(
                        variant.num_classes,
                        variant.segments.len(),
                        &variant.exit_segments(),
                    ),
                });
                run.trace.append(samples);
                run.info.samples_done = run.trace.len();
                saver.offer(&session, run);
            }
        });
        saver.finish();
        let output = match result {
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
        for line in report::run_notes(&run.info) {
            eprintln!("  {line}");
        }
        let stopped = run.info.failure.clone();
        let complete = run.info.complete;
        if !session.upsert_run(run) {
            eprintln!("  kept the complete trace already in {}; this incomplete one is not saved", args.out.display());
        }
        if let Some(calibration) =
            calibration.as_ref().filter(|_| variant.early_exit_count() > 0 && complete && !cancel.is_cancelled())
        {
            let job = Job {
                variant: Arc::clone(variant),
                dataset: Arc::clone(calibration),
                settings: RunSettings { sample_resources: false, limit: None, ..settings.clone() },
                mode: RunMode::Trace,
                reference: None,
            };
            let RunOutput::Trace(run) = run_job(runner.as_mut(), &job, &cancel)? else {
                bail!("the runner returned a dynamic run for a trace job")
            };
            eprintln!("{} (calibration)", run_summary(&run));
            session.upsert_run(run);
        }
        // Save after every variant: an interrupted evaluation keeps what it measured.
        session.save(&args.out)?;
        if let Some(failure) = stopped {
            bail!("{}: {failure}; the samples before it are saved in {}", variant.name, args.out.display());
        }
        if cancel.is_cancelled() {
            eprintln!("saved {} (interrupted)", args.out.display());
            return Ok(());
        }
    }
    eprintln!("saved {}", args.out.display());
    Ok(())
}

/// The base a set of bare ONNX variants implies: none when a manifest names or tags one; otherwise the first
/// variant without quantized operators (pruned and early-exit variants come from manifests that name theirs).
fn implied_base(variants: &[Variant]) -> Option<String> {
    if variants.iter().any(|v| v.base.is_some() || (v.has_tag("base") && !is_bare(v))) {
        return None;
    }
    variants.iter().find(|v| is_bare(v) && v.has_tag("base")).map(|v| v.name.clone())
}

fn is_bare(variant: &Variant) -> bool {
    variant.source.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
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
    let format = args.format;
    let session = Session::load(&args.session)?;
    let options = ReportOptions { criterion: args.criterion, budget_pp: args.budget, ..ReportOptions::default() };
    let rows = report::rows(&session, &options);
    if rows.is_empty() {
        bail!("{} holds no runs; create some with `edgescope eval`", args.session.display());
    }
    let tables = report::all_tables(&session, &rows, &options);
    print!("{}", report::render(&tables, &rows, format));
    Ok(())
}

fn find_run<'a>(session: &'a Session, variant: &str, path: &Path) -> Result<&'a TraceRun> {
    session.primary_run(variant).ok_or_else(|| {
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
    let criterion = args.criterion;
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
    if let Some(bad) = args.threshold.iter().find(|t| !t.is_finite()) {
        bail!("--threshold {bad} is not a finite number; give thresholds such as 0.5 (entropy in nats)");
    }
    if let Some(bad) = args.percentile.iter().find(|p| !(p.is_finite() && (0.0..=100.0).contains(*p))) {
        bail!("--percentile {bad} must be a number from 0 to 100");
    }
    let criterion = args.criterion;
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
    let variant = Arc::new(entry.open()?);
    let dataset = Dataset::open(&dataset_entry.path)?;
    // The trace must describe this dataset: same sample count (old sessions: at least as many samples).
    let traced_samples = run.trace.len() + run.info.skipped.len();
    let sizes_differ = if run.info.dataset_samples > 0 {
        run.info.dataset_samples != dataset.len()
    } else {
        traced_samples > dataset.len()
    };
    if sizes_differ {
        bail!(
            "the trace of {} was made on {} samples of {} but {} now holds {}; run `edgescope eval` again",
            args.variant,
            run.info.dataset_samples.max(traced_samples),
            run.info.dataset,
            dataset_entry.path.display(),
            dataset.len()
        );
    }
    // The dynamic run covers the dataset samples the trace covers, or the first N of them (--limit N); the
    // prediction comes from exactly those samples.
    let mut settings = args.run.settings()?;
    let covered = run.info.samples_done.max(traced_samples).min(dataset.len());
    let dataset_samples = args.run.limit.unwrap_or(covered).min(covered);
    settings.limit = Some(dataset_samples);
    let trace_samples =
        run.info.measured_indices(run.trace.len()).iter().filter(|&&index| index < dataset_samples).count();
    let trace = run.trace.head(trace_samples);
    let base_trace = report::base_run(&session, &run).map(|b| b.trace.head(trace_samples));
    let prepared = crate::analysis::outcome::PreparedTrace::new(&trace, base_trace.as_ref(), criterion);
    let predicted = prepared.evaluate(&policy);
    let exit_policy = prepared.exit_of_each_sample(&policy);

    let job =
        Job { variant, dataset: Arc::new(dataset), settings, mode: RunMode::Dynamic(policy.clone()), reference: None };
    let RunOutput::Dynamic(dynamic) = run_job(&mut IsolatedRunner::current_exe()?, &job, &cancel_on_signals())? else {
        bail!("the runner returned a trace for a dynamic job")
    };
    if !dynamic.info.complete {
        bail!(
            "the dynamic run stopped after {} of {} samples{}; nothing to compare",
            dynamic.labels.len(),
            trace_samples,
            dynamic.info.failure.as_deref().map_or_else(String::new, |f| format!(" ({f})"))
        );
    }
    if dynamic.labels.len() != trace_samples {
        bail!(
            "the dynamic run measured {} samples where the trace holds {trace_samples} (were images added, removed or \
             repaired since the trace was made?); run `edgescope eval` again",
            dynamic.labels.len()
        );
    }

    let n = dynamic.labels.len().max(1) as f64;
    let mut measured_latency = dynamic.latency_us.clone();
    let measured = LatencySummary::from_values(&mut measured_latency);
    let correct = dynamic.predicted.iter().zip(&dynamic.labels).filter(|(p, l)| u32::from(**p) == **l).count();
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

/// A client for `device`: a name from the devices list or `tcp://HOST:PORT`; `token_file` overrides the list's
/// (and is needed for an address the list does not hold).
pub(crate) fn remote_runner(device: &str, token_file: Option<&std::path::Path>) -> Result<crate::net::RemoteRunner> {
    use crate::net::DeviceList;
    // An address with its token needs no list: a damaged list does not stop it.
    let list = if device.starts_with("tcp://") && token_file.is_some() {
        DeviceList::default()
    } else {
        DeviceList::load(&DeviceList::default_path()?)?
    };
    let (address, token) = list.resolve(device, token_file).map_err(|e| anyhow!(e))?;
    Ok(crate::net::RemoteRunner::new(&address, token))
}

fn devices(args: &DevicesArgs) -> Result<()> {
    use crate::net::{DeviceConfig, DeviceList};
    let path = match &args.config {
        Some(path) => path.clone(),
        None => DeviceList::default_path()?,
    };
    let mut list = DeviceList::load(&path)?;
    if let Some(add) = &args.add {
        let token_file = args.token_file.clone().ok_or_else(|| anyhow!("--add needs --token-file"))?;
        let entry = DeviceConfig { name: add[0].clone(), address: add[1].clone(), token_file };
        entry.check().map_err(|e| anyhow!(e))?;
        list.upsert(entry);
        list.save(&path)?;
        eprintln!("saved {}", path.display());
    }
    if let Some(name) = &args.remove {
        if !list.remove(name) {
            bail!("{} has no device called {name:?}", path.display());
        }
        list.save(&path)?;
        eprintln!("removed {name} from {}", path.display());
    }
    if list.devices.is_empty() {
        println!(
            "no devices configured; add one with `edgescope devices --add NAME tcp://HOST:PORT --token-file PATH`"
        );
    }
    for device in &list.devices {
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
                    format!(" (exit: {}, {})", segment.exit_kind.name(), segment.exit_kind_origin.describe())
                } else if segment.carry.as_deref() == Some(output.name.as_str()) {
                    " (carried)".into()
                } else {
                    String::new()
                };
                println!("    out  {} {} {}{role}", output.name, output.dtype, format_shape(&output.shape));
            }
        }
        println!("  outputs: {}", variant.describe_outputs());
        let histogram: Vec<String> = variant.op_histogram().iter().map(|(op, n)| format!("{op} x{n}")).collect();
        println!("  ops: {}", histogram.join(", "));
    }
    Ok(())
}

fn exits_split(args: &SplitArgs) -> Result<()> {
    let request = crate::optimize::SplitRequest {
        model: args.model.clone(),
        exits: (!args.exits.is_empty()).then(|| args.exits.clone()),
        out: args.out.clone(),
        name: args.name.clone(),
        base: args.base.clone(),
    };
    let outcome = crate::optimize::split_to_folder(&request)?;
    let total: u64 = outcome.segment_macs.iter().sum();
    println!("{} -> {}", args.model.display(), outcome.manifest.display());
    for (index, segment) in outcome.variant.segments.iter().enumerate() {
        let macs = outcome.segment_macs.get(index).copied().unwrap_or(0);
        println!(
            "  segment {} {}: {} -> exit {}{}  ({:.1} % of the MACs)",
            index + 1,
            segment.path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            segment.input,
            segment.exit.as_deref().unwrap_or("-"),
            segment.carry.as_deref().map_or_else(String::new, |c| format!(", carry {c}")),
            if total == 0 { 0.0 } else { 100.0 * macs as f64 / total as f64 }
        );
    }
    Ok(())
}

fn exits_candidates(args: &CandidatesArgs) -> Result<()> {
    let analysis = crate::optimize::cut_candidates(&args.model)?;
    match args.format {
        values::TextOrJson::Json => {
            let cuts: Vec<serde_json::Value> = analysis
                .cuts
                .iter()
                .enumerate()
                .map(|(index, cut)| {
                    let suggested = analysis.suggested.iter().find(|(_, i)| *i == index).map(|(d, _)| d.name());
                    serde_json::json!({
                        "tensor": cut.tensor,
                        "operator": cut.operator,
                        "shape": cut.shape.as_ref().map(|s| format_shape(s)),
                        "macs_before": cut.macs_before,
                        "mac_share": cut.mac_share,
                        "parameters_before": cut.parameters_before,
                        "parameter_share": cut.parameter_share,
                        "block_boundary": cut.block_boundary,
                        "suggested": suggested,
                    })
                })
                .collect();
            let suggested: serde_json::Map<String, serde_json::Value> = analysis
                .suggested
                .iter()
                .map(|(depth, index)| (depth.name().to_string(), serde_json::json!(analysis.cuts[*index].tensor)))
                .collect();
            let document = serde_json::json!({
                "model": args.model,
                "output": analysis.output,
                "total_macs": analysis.total_macs,
                "total_parameters": analysis.total_parameters,
                "candidates": cuts,
                "suggested": suggested,
            });
            println!("{}", serde_json::to_string_pretty(&document)?);
        }
        values::TextOrJson::Text => {
            println!(
                "{}: {} cut point(s) on the way to {:?}; {} MACs and {} parameters per sample in all",
                args.model.display(),
                analysis.cuts.len(),
                analysis.output,
                analysis.total_macs,
                analysis.total_parameters
            );
            println!("  {:>7} {:>7}  {:<8} {:<20} {:<18} tensor", "MACs %", "params %", "suggest", "shape", "after");
            for (index, cut) in analysis.cuts.iter().enumerate() {
                let suggested = analysis.suggested.iter().find(|(_, i)| *i == index).map_or("", |(d, _)| d.name());
                let operator =
                    if cut.block_boundary { format!("{} (block)", cut.operator) } else { cut.operator.clone() };
                println!(
                    "  {:>7.1} {:>7.1}  {:<8} {:<20} {:<18} {}",
                    100.0 * cut.mac_share,
                    100.0 * cut.parameter_share,
                    suggested,
                    cut.shape.as_ref().map_or_else(|| "?".into(), |s| format_shape(s)),
                    operator,
                    cut.tensor
                );
            }
        }
    }
    Ok(())
}
