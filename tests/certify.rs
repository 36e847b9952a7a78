//! Certified thresholds keep their promise on real traces: over hundreds of random calibration draws from the
//! demo session's traces, the share of draws whose certified point has a risk above epsilon stays within
//! delta (plus a binomial margin for the finite number of draws).
//!
//! Two experiments per variant and risk:
//! - **splits**: 1 000 calibration samples drawn without replacement, the other 9 000 the test set; a
//!   violation is a test risk above epsilon (the test risk is itself an estimate, so this is the practical check);
//! - **bootstrap**: 1 000 calibration samples drawn with replacement from the 10 000, whose empirical
//!   distribution is then the population: the calibration samples are exactly i.i.d. from it and a violation
//!   is a population risk above epsilon, the statement Learn then Test makes.
//!
//! For contrast the uncertified pick (the fastest step whose calibration risk is <= epsilon) is counted too.

mod common;

use std::path::PathBuf;

use edgescope::analysis::Criterion;
use edgescope::analysis::certify::{
    CalibrationSet, Levels, Reference, Risk, SplitMix64, ThresholdPath, binomial_cdf, certify,
};
use edgescope::session::Session;

fn demo() -> Session {
    Session::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sessions/demo.json")).expect("demo session")
}

/// The test-split run of `variant` with its base, read under `criterion`.
fn set(session: &Session, variant: &str, criterion: Criterion, reference: Reference) -> CalibrationSet {
    let run = session.primary_run(variant).expect("demo run");
    let base = session.base_of(variant).and_then(|b| session.matching_run(&b, &run.info)).expect("base run");
    CalibrationSet::new(&run.trace, Some(&base.trace), criterion, reference).expect("calibration set")
}

/// The largest violation count that `draws` draws with violation probability `delta` exceed with
/// probability at most 1e-3.
fn allowed_violations(draws: usize, delta: f64) -> usize {
    (0..=draws).find(|&m| 1.0 - binomial_cdf(m, draws, delta) <= 1e-3).unwrap_or(draws)
}

struct Tally {
    certified_violations: usize,
    naive_violations: usize,
    exits_early: usize,
    mean_speedup: f64,
}

fn experiment(whole: &CalibrationSet, risk: Risk, levels: Levels, draws: usize, bootstrap: bool) -> Tally {
    let path = ThresholdPath::shared(whole.criterion(), whole.num_classes(), whole.early_exits(), 1000);
    let n = 1000;
    let mut tally = Tally { certified_violations: 0, naive_violations: 0, exits_early: 0, mean_speedup: 0.0 };
    for draw in 0..draws {
        let seed = 0xC0FFEE + draw as u64;
        let (calibration, test) = if bootstrap {
            let mut rng = SplitMix64(seed);
            let indices: Vec<usize> = (0..n).map(|_| rng.below(whole.len() as u64) as usize).collect();
            (whole.subset(&indices), whole.clone())
        } else {
            whole.split(n as f64 / whole.len() as f64, seed)
        };
        let certificate = certify(&calibration, &path, risk, levels).expect("1000 samples suffice");
        let step = certificate.certified.as_ref().map_or(0, |c| c.step);
        let on_test = test.evaluate_step(&path, step, risk);
        tally.certified_violations += usize::from(on_test.risk > levels.epsilon);
        tally.exits_early += usize::from(step > 0);
        tally.mean_speedup += on_test.speedup.unwrap_or(1.0) / draws as f64;
        let naive = calibration.uncertified_step(&path, risk, levels.epsilon);
        tally.naive_violations += usize::from(test.evaluate_step(&path, naive, risk).risk > levels.epsilon);
    }
    tally
}

#[test]
fn the_guarantee_holds_over_random_calibration_draws() {
    let session = demo();
    let draws = 200;
    let cases = [
        ("resnet/ee-all", Risk::Loyalty, Reference::Base, 0.01, 0.05),
        ("resnet/ee-all", Risk::Accuracy, Reference::Base, 0.01, 0.1),
        ("mobilenet/ee-all", Risk::Loyalty, Reference::Base, 0.02, 0.1),
        ("resnet/ptq-ee4", Risk::Loyalty, Reference::Base, 0.01, 0.05),
        ("mobilenet/dq-ee5", Risk::Accuracy, Reference::FinalExit, 0.01, 0.05),
    ];
    for (variant, risk, reference, epsilon, delta) in cases {
        let whole = set(&session, variant, Criterion::Entropy, reference);
        let levels = Levels::new(epsilon, delta).expect("levels");
        let allowed = allowed_violations(draws, delta);
        for bootstrap in [false, true] {
            let tally = experiment(&whole, risk, levels, draws, bootstrap);
            let kind = if bootstrap { "bootstrap" } else { "splits" };
            println!(
                "{variant} {} eps {epsilon} delta {delta} ({kind}): certified violations {}/{draws} (allowed {allowed}), \
                 uncertified {}/{draws}, early exits certified in {}/{draws}, mean test speed-up {:.3}x",
                risk.name(),
                tally.certified_violations,
                tally.naive_violations,
                tally.exits_early,
                tally.mean_speedup
            );
            assert!(
                tally.certified_violations <= allowed,
                "{variant} {kind}: {} of {draws} draws violate epsilon {epsilon}, more than delta {delta} allows",
                tally.certified_violations
            );
            assert!(tally.exits_early > draws / 2, "{variant}: the certificate should usually allow early exits");
        }
    }
}

#[test]
fn a_separate_calibration_run_certifies_the_test_run() {
    let session = demo();
    let variant = "resnet/ee-all";
    let run = session.primary_run(variant).expect("test run");
    let calibration_run = session.calibration_run(variant, &run.info).expect("calibration run");
    // No base run on the calibration dataset: both sides compare with the chain's own final exit, which for a
    // float chain cut from the base network is the base's prediction.
    let calibration = CalibrationSet::new(&calibration_run.trace, None, Criterion::Entropy, Reference::FinalExit)
        .expect("calibration");
    let test = set(&session, variant, Criterion::Entropy, Reference::FinalExit);
    test.check_compatible(&calibration).expect("same variant and classes");
    let path = ThresholdPath::shared(Criterion::Entropy, 10, 3, 1000);
    let levels = Levels::new(0.01, 0.05).expect("levels");
    let certificate = certify(&calibration, &path, Risk::Loyalty, levels).expect("certificate");
    let point = certificate.certified.expect("certified");
    assert!(point.step > 0 && point.upper_bound <= 0.01);
    let on_test = test.evaluate_step(&path, point.step, Risk::Loyalty);
    assert!(on_test.label_loyalty >= 0.99, "test loyalty {}", on_test.label_loyalty);
    assert!(on_test.speedup.is_some_and(|s| s > 1.0), "{:?}", on_test.speedup);
    // A calibration set of another variant (fewer exits) is refused.
    let other = session.calibration_run("resnet/ee4", &run.info).expect("ee4 calibration");
    let other = CalibrationSet::new(&other.trace, None, Criterion::Entropy, Reference::FinalExit).expect("ee4");
    assert!(test.check_compatible(&other).expect_err("other variant").to_string().contains("another variant"));
}

fn edgescope(args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_edgescope"))
        .arg("certify")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sessions/demo.json"))
        .args(args)
        .output()
        .expect("edgescope runs");
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status.success(), text(output.stdout), text(output.stderr))
}

#[test]
fn the_command_certifies_and_explains_bad_input() {
    let (ok, out, _) = edgescope(&["--variant", "resnet/ee4", "--calibration", "fmnist-calib", "--format", "json"]);
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(json["statement"], "certified: label loyalty >= 99 % with probability >= 95 % (n = 1000)");
    assert_eq!(json["certificate"]["n"], 1000);
    assert!(json["certified_on_test"]["evaluation"]["label_loyalty"].as_f64().is_some_and(|l| l >= 0.99));
    let (ok, out, _) =
        edgescope(&["--variant", "resnet/ptq-ee4", "--calibration", "holdout:0.3", "--risk", "accuracy"]);
    assert!(ok, "{out}");
    assert!(out.starts_with("certified: top-1 drop <= 1 pp with probability >= 95 % (n = 3000)"), "{out}");
    // "Not certifiable" is an answer.
    let (ok, out, _) = edgescope(&[
        "--variant",
        "resnet/ptq-ee4",
        "--calibration",
        "holdout:0.5",
        "--epsilon",
        "0.001",
        "--delta",
        "0.2",
    ]);
    assert!(ok);
    assert!(out.starts_with("not certifiable at these levels"), "{out}");
    assert!(out.contains("final exit alone differs from the reference"), "{out}");
    for (args, expected) in [
        (vec!["--variant", "resnet/dq", "--calibration", "fmnist-calib"], "has no early exit"),
        (vec!["--variant", "resnet/ee4", "--calibration", "fmnist-calib", "--epsilon", "0"], "--epsilon must be"),
        (vec!["--variant", "resnet/ee4", "--calibration", "fmnist-calib", "--delta", "1.5"], "--delta must be"),
        (vec!["--variant", "resnet/ee4", "--calibration", "holdout:0.02"], "at least 299 are needed"),
        (vec!["--variant", "resnet/ee4", "--calibration", "fmnist-calib", "--epsilon", "0.001"], "at least 2995"),
        (vec!["--variant", "resnet/ee4", "--calibration", "fmnist-test"], "is the dataset of the run being certified"),
        (vec!["--variant", "resnet/ee4", "--calibration", "elsewhere"], "neither holdout:FRACTION nor a dataset"),
        (vec!["--variant", "resnet/ee4", "--calibration", "holdout:1"], "strictly between 0 and 1"),
        (
            vec!["--variant", "resnet/ee4", "--calibration", "fmnist-calib", "--risk", "speed"],
            "possible values: loyalty, accuracy",
        ),
    ] {
        let (ok, _, err) = edgescope(&args);
        assert!(!ok, "{args:?} should fail");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

/// The explore view shows the certificate of the selected early-exit variant and sets its thresholds.
#[cfg(feature = "gui")]
#[test]
fn the_explore_view_shows_the_certified_line() {
    use edgescope::app::{EdgescopeApp, SavedState, Tab};
    use eframe::egui;
    use egui_kittest::Harness;
    use egui_kittest::kittest::Queryable;

    let session = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sessions/demo.json");
    let saved = SavedState {
        hint_dismissed: true,
        tab: Tab::Explore,
        selected_variant: Some("mobilenet/ee-all".into()),
        ..SavedState::default()
    };
    let mut harness = Harness::builder()
        .with_size(egui::vec2(1400.0, 1000.0))
        .build_eframe(move |cc| EdgescopeApp::with_state(cc.egui_ctx.clone(), saved, Some(session)));
    common::settle(&mut harness);
    let text = |n: &egui_kittest::kittest::AccessKitNode<'_>| n.label().or_else(|| n.value());
    let starting = |harness: &Harness<'_, EdgescopeApp>, prefix: &str| {
        harness.query_all_by(|n| text(n).is_some_and(|l| l.starts_with(prefix))).next().is_some()
    };
    assert!(
        starting(&harness, "certified: label loyalty >= 99 % with probability >= 95 % (n = 1000)"),
        "the certified line shows"
    );
    assert!(starting(&harness, "certified region: every exit's entropy threshold <= 0.3704"));
    harness.get_by_label("Set certified").click();
    common::settle(&mut harness);
    let policy = harness.state().world.session.policies.get("mobilenet/ee-all").cloned().expect("a policy is set");
    assert_eq!(policy.thresholds.len(), 3);
    assert!((policy.thresholds[0] - 0.370364).abs() < 1e-5, "{:?}", policy.thresholds);
}
