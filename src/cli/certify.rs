//! `edgescope certify`: early-exit thresholds with a statistical guarantee (Learn then Test), from a
//! calibration run or a held-out part of the variant's run. The work is in [`crate::analysis::certify`].

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use serde::Serialize;

use crate::analysis::certify::{
    CalibrationSet, Certificate, DEFAULT_PATH_STEPS, Evaluation, Levels, Reference, Risk, ThresholdPath, certify,
};
use crate::analysis::policy::{Criterion, Policy};
use crate::analysis::trace::Trace;
use crate::record::TraceRun;
use crate::report::{self, ReportOptions};
use crate::session::Session;

/// `edgescope certify`.
#[derive(Debug, Args)]
pub struct CertifyArgs {
    /// Session file.
    pub session: PathBuf,
    /// Early-exit variant name.
    #[arg(long)]
    pub variant: String,
    /// Calibration data: a dataset name of the session (the variant's run on it, on the same device), or
    /// holdout:FRACTION (that share of the variant's run, drawn with --seed, calibrates; the rest is the test).
    #[arg(long)]
    pub calibration: String,
    /// loyalty (1 - label loyalty against the reference) or accuracy (top-1 drop against the reference).
    #[arg(long, value_enum, default_value = "loyalty")]
    pub risk: Risk,
    /// Risk level, in (0, 1): 0.01 certifies label loyalty >= 99 % (or a top-1 drop <= 1 pp).
    #[arg(long, default_value_t = 0.01)]
    pub epsilon: f64,
    /// Error level, in (0, 1): the statement holds with probability >= 1 - delta over the calibration draw.
    #[arg(long, default_value_t = 0.05)]
    pub delta: f64,
    /// Exit criterion.
    #[arg(long, value_enum, default_value = "entropy")]
    pub criterion: Criterion,
    /// Threshold path: shared (one threshold at every exit, data-free grid) or quantile (the same confidence
    /// quantile at every exit, quantiles from a pilot part of the calibration data, see --pilot).
    #[arg(long, value_enum, default_value = "shared")]
    pub path: super::values::ThresholdPath,
    /// Steps of the path after "no early exit".
    #[arg(long, default_value_t = DEFAULT_PATH_STEPS)]
    pub steps: usize,
    /// With --path quantile: the share of the calibration samples set aside (with --seed) to place the quantiles.
    #[arg(long, default_value_t = 0.2)]
    pub pilot: f64,
    /// Seed of the held-out and pilot draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Device label or host (needed when the variant ran on several devices).
    #[arg(long)]
    pub device: Option<String>,
    /// Accuracy budget of the uncertified inf-opt shown for comparison, percentage points.
    #[arg(long, default_value_t = crate::analysis::DEFAULT_BUDGET_PP)]
    pub budget: f64,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: super::values::TextOrJson,
}

/// A point evaluated on the test samples.
#[derive(Debug, Serialize)]
struct TestPoint {
    /// Thresholds (`None`: no early exit).
    policy: Option<Policy>,
    /// What they yield on the test samples.
    evaluation: Evaluation,
}

/// Everything `certify` prints.
#[derive(Debug, Serialize)]
struct CertifyReport {
    variant: String,
    criterion: Criterion,
    /// The variant predictions are compared with (the base variant, or the chain itself: its final exit).
    reference_variant: String,
    /// Where the calibration samples came from.
    calibration: String,
    /// Where the test samples came from.
    test: String,
    /// The statement, or why there is none.
    statement: String,
    certificate: Certificate,
    /// The certified point on the test samples.
    certified_on_test: Option<TestPoint>,
    /// The uncertified inf-opt (the report's: fastest sweep point within the budget, chosen on the variant's
    /// whole run, so on the test samples too) on the test samples.
    inf_opt_on_test: Option<TestPoint>,
    budget_pp: f64,
}

/// The variant's run to certify (not a calibration run); an error lists the choices when it is ambiguous.
fn pick_run<'a>(session: &'a Session, args: &CertifyArgs) -> Result<&'a TraceRun> {
    let candidates: Vec<&TraceRun> = session
        .runs
        .iter()
        .filter(|r| r.info.variant == args.variant && !session.is_calibration_run(r))
        .filter(|r| args.device.as_ref().is_none_or(|d| r.info.device_label() == *d || r.info.device.host == *d))
        .collect();
    let full: Vec<&TraceRun> = candidates.iter().copied().filter(|r| r.info.sample_limit().is_none()).collect();
    let choices = if full.is_empty() { candidates } else { full };
    match choices.as_slice() {
        [one] => Ok(one),
        [] => bail!(
            "{} has no run of {:?}{} to certify (calibration runs aside)",
            args.session.display(),
            args.variant,
            args.device.as_ref().map_or_else(String::new, |d| format!(" on {d:?}"))
        ),
        many => bail!(
            "{:?} ran on several devices; pick one with --device: {}",
            args.variant,
            many.iter().map(|r| r.info.device_label()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The base run's trace when it covers `of` (its samples and classes; else loyalty has no reference).
fn usable<'a>(base: Option<&'a TraceRun>, of: &TraceRun) -> Option<&'a Trace> {
    base.map(|b| &b.trace).filter(|b| b.len() == of.trace.len() && b.num_classes == of.trace.num_classes)
}

/// The share in `holdout:FRACTION`, or `None` when `text` names a dataset.
fn holdout_fraction(text: &str) -> Result<Option<f64>> {
    let Some(rest) = text.strip_prefix("holdout:") else { return Ok(None) };
    let fraction: f64 =
        rest.parse().map_err(|_| anyhow!("--calibration holdout:FRACTION needs a number, not {rest:?}"))?;
    if !(fraction > 0.0 && fraction < 1.0) {
        bail!("--calibration holdout:FRACTION must be strictly between 0 and 1 (the rest is the test), not {fraction}");
    }
    Ok(Some(fraction))
}

/// `edgescope certify`.
pub fn certify_command(args: &CertifyArgs) -> Result<()> {
    let risk = args.risk;
    let criterion = args.criterion;
    let levels = Levels::new(args.epsilon, args.delta).map_err(|e| anyhow!("--{e}"))?;
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    if args.path == super::values::ThresholdPath::Quantile && !(args.pilot > 0.0 && args.pilot < 1.0) {
        bail!("--pilot must be strictly between 0 and 1, not {}", args.pilot);
    }
    let holdout = holdout_fraction(&args.calibration)?;

    let session = Session::load(&args.session)?;
    let entry = session.variant(&args.variant).ok_or_else(|| {
        anyhow!(
            "{} has no variant {:?}; its variants: {}",
            args.session.display(),
            args.variant,
            session.variants.iter().map(|v| v.name.as_str()).collect::<Vec<_>>().join(", ")
        )
    })?;
    if entry.early_exits == 0 {
        let chains: Vec<&str> =
            session.variants.iter().filter(|v| v.early_exits > 0).map(|v| v.name.as_str()).collect();
        bail!(
            "{:?} has no early exit: there is no threshold to certify (early-exit variants here: {})",
            args.variant,
            if chains.is_empty() { "none".to_string() } else { chains.join(", ") }
        );
    }
    let run = pick_run(&session, args)?;
    let base_run = report::base_run(&session, run);

    // The calibration run (a separate dataset) and its base, when there is one.
    let calibration_run = match holdout {
        Some(_) => None,
        None => Some(calibration_run(&session, args, run)?),
    };
    let test_base = usable(base_run, run);
    let calibration_base = calibration_run.and_then(|c| usable(report::base_run(&session, c), c));
    // One reference for calibration and test alike: the base when both have a base run on their samples.
    let reference = match (holdout, test_base, calibration_base) {
        (Some(_), Some(_), _) | (None, Some(_), Some(_)) => Reference::Base,
        _ => Reference::FinalExit,
    };
    let whole = CalibrationSet::new(&run.trace, test_base, criterion, reference)
        .with_context(|| format!("reading the run of {} on {}", args.variant, run.info.dataset))?;
    let (calibration, test, calibration_label, test_label) = match (holdout, calibration_run) {
        (Some(fraction), _) => {
            let (calibration, test) = whole.split(fraction, args.seed);
            let calibration_label = format!(
                "{} % of the run on {} (seed {}): {} samples",
                fraction * 100.0,
                run.info.dataset,
                args.seed,
                calibration.len()
            );
            let test_label = format!("the other {} samples of the run on {}", test.len(), run.info.dataset);
            (calibration, test, calibration_label, test_label)
        }
        (None, Some(c)) => {
            let base = calibration_base.filter(|_| reference == Reference::Base);
            let calibration = CalibrationSet::new(&c.trace, base, criterion, reference)
                .with_context(|| format!("reading the calibration run of {} on {}", args.variant, c.info.dataset))?;
            whole.check_compatible(&calibration).map_err(|e| anyhow!("--calibration {}: {e}", args.calibration))?;
            let calibration_label = format!("the run on {}: {} samples", c.info.dataset, calibration.len());
            let test_label = format!("the run on {}: {} samples", run.info.dataset, whole.len());
            (calibration, whole, calibration_label, test_label)
        }
        (None, None) => unreachable!("a calibration run was found above"),
    };

    let (calibration, path, calibration_label) = if args.path == super::values::ThresholdPath::Quantile {
        // The quantiles come from a pilot part the test never sees again: the path is fixed before the rest.
        let (pilot, rest) = calibration.split(args.pilot, args.seed ^ 0x005E_ED0F_9170);
        let label = format!("{calibration_label}, of which {} place the quantiles (pilot)", pilot.len());
        (rest, ThresholdPath::quantiles(&pilot, args.steps), label)
    } else {
        let path = ThresholdPath::shared(criterion, calibration.num_classes(), calibration.early_exits(), args.steps);
        (calibration, path, calibration_label)
    };
    let certificate = certify(&calibration, &path, risk, levels).map_err(|e| anyhow!("{e}"))?;

    let certified_on_test = certificate.certified.as_ref().map(|point| TestPoint {
        policy: point.policy.clone(),
        evaluation: test.evaluate_step(&path, point.step, risk),
    });
    let options = ReportOptions { criterion, budget_pp: args.budget, ..ReportOptions::default() };
    let (prepared, sweep) = report::sweep_run(&session, run, &options);
    let inf_opt_on_test = sweep.inf_opt.map(|i| {
        let policy = prepared.policy_at(&sweep.points[i]);
        TestPoint { evaluation: test.evaluate_policy(&policy, risk), policy: Some(policy) }
    });
    let reference_variant = match reference {
        Reference::Base => session.base_of(&args.variant).unwrap_or_default(),
        Reference::FinalExit => format!("{} (its final exit)", args.variant),
    };
    let output = CertifyReport {
        variant: args.variant.clone(),
        criterion,
        reference_variant,
        calibration: calibration_label,
        test: test_label,
        statement: certificate.summary(),
        certificate,
        certified_on_test,
        inf_opt_on_test,
        budget_pp: args.budget,
    };
    if args.format == super::values::TextOrJson::Json {
        println!("{}", serde_json::to_string_pretty(&output)?);
    } else {
        print!("{}", render_text(&output));
    }
    Ok(())
}

/// The variant's run on the dataset `--calibration` names, on the same device as `run`.
fn calibration_run<'a>(session: &'a Session, args: &CertifyArgs, run: &TraceRun) -> Result<&'a TraceRun> {
    let name = &args.calibration;
    if *name == run.info.dataset {
        bail!(
            "--calibration {name:?} is the dataset of the run being certified; calibrate on a separate dataset \
             (e.g. the session's calibration dataset{}) or hold part of this run out with holdout:0.2",
            session.calibration_dataset.as_ref().map_or_else(String::new, |d| format!(", {d:?}"))
        );
    }
    let Some(dataset) = session.datasets.iter().find(|d| &d.name == name) else {
        bail!(
            "--calibration {name:?} is neither holdout:FRACTION nor a dataset of {}; its datasets: {}",
            args.session.display(),
            session.datasets.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(", ")
        );
    };
    if let Some(tested) = session.datasets.iter().find(|d| d.name == run.info.dataset)
        && !dataset.classes.is_empty()
        && !tested.classes.is_empty()
        && dataset.classes != tested.classes
    {
        bail!(
            "--calibration {name:?} has other classes than {:?} ({} vs {}): a calibration set must come from the \
             same distribution as the data the thresholds will meet",
            run.info.dataset,
            dataset.classes.len(),
            tested.classes.len()
        );
    }
    session
        .runs
        .iter()
        .filter(|r| r.info.variant == args.variant && &r.info.dataset == name && r.info.same_device(&run.info))
        .min_by_key(|r| (r.info.sample_limit().is_some(), !r.info.complete))
        .ok_or_else(|| {
            anyhow!(
                "{:?} has no run on {name:?} on {}; run `edgescope eval --dataset <{name}> --variant ... --out {}` \
                 first, or use --calibration holdout:0.2",
                args.variant,
                run.info.device_label(),
                args.session.display()
            )
        })
}

fn percent(value: f64) -> String {
    format!("{:.2} %", value * 100.0)
}

fn thresholds(policy: &Option<Policy>) -> String {
    match policy {
        None => "none (no early exit)".into(),
        Some(p) => {
            let values: Vec<String> = p.thresholds.iter().map(|t| format!("{t:.6}")).collect();
            format!("{} = {}", p.criterion.name(), values.join(" / "))
        }
    }
}

fn evaluation_line(e: &Evaluation, risk: Risk) -> String {
    let risk_name = match risk {
        Risk::Loyalty => "risk (1 - loyalty)",
        Risk::Accuracy => "risk (ref right, chain wrong)",
    };
    format!(
        "{risk_name} {}, label loyalty {}, top-1 {} (reference {}), early exits {}, mean latency {:.3} ms{}",
        percent(e.risk),
        percent(e.label_loyalty),
        percent(e.accuracy),
        percent(e.reference_accuracy),
        percent(e.early_exit_rate),
        e.mean_latency_us / 1000.0,
        e.speedup.map_or_else(String::new, |s| format!(", speed-up {s:.3}x"))
    )
}

fn render_text(r: &CertifyReport) -> String {
    let c = &r.certificate;
    let mut out = String::new();
    let _ = writeln!(out, "{}", r.statement);
    let _ = writeln!(
        out,
        "variant {}, risk {} against {}, epsilon {}, delta {}, criterion {}",
        r.variant,
        c.risk.name(),
        r.reference_variant,
        c.levels.epsilon,
        c.levels.delta,
        r.criterion.name()
    );
    let _ = writeln!(
        out,
        "calibration: {} (n = {}; at least {} needed at these levels)",
        r.calibration, c.n, c.min_samples
    );
    let _ = writeln!(out, "path: {}", c.path);
    match &c.first_failure {
        Some(f) if f.step == 0 => {
            let _ = writeln!(
                out,
                "fixed-sequence test: stopped at step 0, no early exit ({} losses, p = {:.4} > delta): the chain's \
                 final exit alone differs from the reference on {} of {} calibration samples",
                f.losses, f.p_value, f.losses, c.n
            );
        }
        Some(f) => {
            let _ = writeln!(
                out,
                "fixed-sequence test: steps 0..{} passed, stopped at step {} ({} losses, p = {:.4} > delta)",
                f.step.saturating_sub(1),
                f.step,
                f.losses,
                f.p_value
            );
        }
        None => {
            let _ = writeln!(out, "fixed-sequence test: every step of the path passed");
        }
    }
    if let Some(point) = &c.certified {
        let _ = writeln!(
            out,
            "certified point: step {} of {}, thresholds {}",
            point.step,
            c.path_steps - 1,
            thresholds(&point.policy)
        );
        let _ = writeln!(
            out,
            "  on calibration: {} losses of {} ({}), Clopper-Pearson upper bound {} (p = {:.4})",
            point.losses,
            c.n,
            percent(point.empirical_risk),
            percent(point.upper_bound),
            point.p_value
        );
    }
    let _ = writeln!(out, "test: {}", r.test);
    if let Some(t) = &r.certified_on_test {
        let _ = writeln!(out, "  certified:          {}", evaluation_line(&t.evaluation, c.risk));
    }
    match &r.inf_opt_on_test {
        Some(t) => {
            let _ = writeln!(
                out,
                "  inf-opt (uncertified, budget {} pp, chosen on the whole run; {}):",
                r.budget_pp,
                thresholds(&t.policy)
            );
            let _ = writeln!(out, "                      {}", evaluation_line(&t.evaluation, c.risk));
        }
        None => {
            let _ = writeln!(out, "  inf-opt: none (no base run, or no point within the budget)");
        }
    }
    out
}
