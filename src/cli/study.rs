//! `edgescope study`: the study on your model in one command. Parsing and printing only; the work is in
//! [`crate::optimize::study`].

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use crate::optimize::study::{
    DEFAULT_EPOCHS, DEFAULT_TEST_LIMIT, StudyDevice, StudyError, StudyEvent, StudyOptions, StudyRequest, run_study,
};
use crate::report::{self, Format, ReportOptions};
use crate::runtime::{CancelToken, IsolatedRunner};
use crate::session::Session;

/// `edgescope study`.
#[derive(Debug, Args)]
pub struct StudyArgs {
    /// The float classifier (one ONNX file, one logits output).
    #[arg(long)]
    pub model: PathBuf,
    /// Test dataset every variant is measured on (dataset.toml, folder, IDX or NPY).
    #[arg(long)]
    pub dataset: PathBuf,
    /// Training dataset for the exit heads.
    #[arg(long)]
    pub train: PathBuf,
    /// Calibration dataset for static quantization.
    #[arg(long)]
    pub calibration: PathBuf,
    /// Output folder: the variants, session.json and study.json (run the same command again to resume).
    #[arg(long)]
    pub out: PathBuf,
    /// Where to measure: `local` (this machine, the default), a name from the devices list (`edgescope
    /// devices`) or a remote runner tcp://HOST:PORT (with --token-file); repeat for several devices.
    #[arg(long = "device")]
    pub devices: Vec<String>,
    /// Token file shared with the remote runners.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// A pruned version of the model (float ONNX): it gets exits too (PRUNE-EE); repeat for several.
    #[arg(long)]
    pub pruned: Vec<PathBuf>,
    /// Prefix of the variant names (default: the model's file stem, or its folder's name for base.onnx).
    #[arg(long)]
    pub name: Option<String>,
    /// Test samples measured per variant (a quick first pass); --all-samples measures every one.
    #[arg(long, default_value_t = DEFAULT_TEST_LIMIT)]
    pub limit: usize,
    /// Measure every test sample.
    #[arg(long)]
    pub all_samples: bool,
    /// Only the first N training samples for the exit heads (default: all).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Only the first N calibration samples (default: all).
    #[arg(long)]
    pub calibration_limit: Option<usize>,
    /// Exit heads: linear (pooling + one fully connected layer) or mlp (one hidden layer).
    #[arg(long, value_enum, default_value = "linear")]
    pub head: crate::optimize::heads::HeadKind,
    /// Most training epochs per head (early stopping on a held-out 10 % of the training set).
    #[arg(long, default_value_t = DEFAULT_EPOCHS)]
    pub epochs: usize,
    /// Seed of the heads' training.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// ONNX Runtime intra-op threads (0 = its default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Untimed warm-up runs before each measured run.
    #[arg(long, default_value_t = crate::record::DEFAULT_WARMUP_RUNS)]
    pub warmup: usize,
}

fn cancel_on_ctrl_c() -> CancelToken {
    let cancel = CancelToken::new();
    let handler = cancel.clone();
    if let Err(e) = ctrlc::set_handler(move || {
        if handler.is_cancelled() {
            std::process::exit(130);
        }
        eprintln!(
            "\ninterrupted: stopping; finished steps are kept, the step in progress writes nothing (Ctrl-C again to \
             quit at once)"
        );
        handler.cancel();
    }) {
        eprintln!("note: Ctrl-C will end the process at once ({e})");
    }
    cancel
}

fn devices(args: &StudyArgs) -> Result<Vec<StudyDevice>> {
    let names: Vec<String> = if args.devices.is_empty() { vec!["local".into()] } else { args.devices.clone() };
    let mut devices = Vec::with_capacity(names.len());
    for name in names {
        if name == "local" || name == "this machine" {
            // Each variant in a fresh process: its memory is its own (README, measurement rules).
            devices.push(StudyDevice { name: "this machine".into(), runner: Box::new(IsolatedRunner::current_exe()?) });
        } else {
            let runner = super::remote_runner(&name, args.token_file.as_deref())?;
            devices.push(StudyDevice { runner: Box::new(runner), name });
        }
    }
    Ok(devices)
}

/// Runs `edgescope study`.
pub fn study(args: &StudyArgs) -> Result<()> {
    let options = StudyOptions {
        family: args.name.clone(),
        test_limit: (!args.all_samples).then_some(args.limit),
        train_limit: args.train_limit,
        calibration_limit: args.calibration_limit,
        head: args.head.name().into(),
        epochs: args.epochs,
        seed: args.seed,
        threads: args.threads,
        warmup_runs: args.warmup,
    };
    let request = StudyRequest {
        model: args.model.clone(),
        test: args.dataset.clone(),
        train: args.train.clone(),
        calibration: args.calibration.clone(),
        pruned: args.pruned.clone(),
        out: args.out.clone(),
        options,
    };
    let mut devices = devices(args)?;
    eprintln!("study of {} into {}", args.model.display(), args.out.display());
    for line in request.options.describe() {
        eprintln!("  {line}");
    }
    let cancel = cancel_on_ctrl_c();
    let terminal = std::io::stderr().is_terminal();
    let mut last_line = std::time::Instant::now();
    let mut on_event = |event: StudyEvent| match &event {
        StudyEvent::Progress { .. } => {
            if terminal {
                eprint!("\r{:<110.110}", event.line());
            } else if last_line.elapsed().as_secs() >= 10 {
                // Not a terminal (a log): a line every ten seconds at most.
                eprintln!("{}", event.line());
                last_line = std::time::Instant::now();
            }
        }
        _ => {
            if terminal {
                eprint!("\r{:<110}\r", "");
            }
            eprintln!("{}", event.line());
        }
    };
    let outcome = match run_study(&request, &mut devices, &mut on_event, &cancel) {
        Err(StudyError::Cancelled(out)) => {
            if terminal {
                eprintln!();
            }
            bail!("cancelled; the finished steps are kept in {}: run the same command again to go on", out.display())
        }
        other => other?,
    };
    let skipped = outcome.steps.iter().filter(|(_, skipped, _)| *skipped).count();
    println!(
        "study done in {:.1} s: {} variants, {} step(s) run, {} skipped (done before, inputs unchanged){}",
        outcome.total_s,
        outcome.variants.len(),
        outcome.steps.len() - skipped,
        skipped,
        if outcome.runs_skipped > 0 {
            format!(", {} measurement(s) skipped", outcome.runs_skipped)
        } else {
            String::new()
        }
    );
    for (title, skipped, record) in &outcome.steps {
        println!(
            "  {title}: {}{}",
            if *skipped { "skipped; ".to_string() } else { format!("{:.1} s; ", record.seconds) },
            record.summary
        );
    }
    println!("variants:");
    for variant in &outcome.variants {
        println!("  {:<28} [{}]  {}", variant.name, variant.tags.join(", "), variant.manifest.display());
    }
    let session = Session::load(&outcome.session)?;
    let report_options = ReportOptions::default();
    let rows = report::rows(&session, &report_options);
    let tables: Vec<_> = report::tables(&rows, &report_options).into_iter().filter(|t| t.id == "table7").collect();
    print!("{}", report::render(&tables, &rows, Format::Text));
    println!(
        "session: {}  (every table: edgescope report {0}; the app: edgescope --session {0})",
        outcome.session.display()
    );
    Ok(())
}
