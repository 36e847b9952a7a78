//! Numbers you can trust on any model: every figure equals an independent Python onnxruntime + numpy
//! evaluation (tests/fixtures/kinds/expected.json, made by make_kinds.py) whatever the output kind; bad images
//! are skipped and counted; runs never lose what they measured; memory does not depend on what ran before.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use edgescope::analysis::{Criterion, Policy, PreparedTrace};
use edgescope::data::Dataset;
use edgescope::model::{KindOrigin, OutputKind, Variant};
use edgescope::record::{RunMode, RunOutput, RunSettings, TraceRun};
use edgescope::runtime::{CancelToken, Job, LocalRunner, Runner};
use edgescope::session::Session;

use common::{fixture, ints, job, quick_settings, trace};

fn kinds_expected() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("kinds/expected.json")).expect("kinds/expected.json");
    serde_json::from_str(&text).expect("valid json")
}

fn number(value: &serde_json::Value) -> f64 {
    value.as_f64().expect("a number")
}

fn assert_close(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() <= 1e-6, "{what}: edgescope {got} vs Python {want}");
}

fn base_trace() -> TraceRun {
    trace(&mut LocalRunner::new(), &job("tiny_base.toml", "fmnist500", RunMode::Trace))
}

#[test]
fn output_kinds_are_read_off_the_graph() {
    for (file, kind, operator) in [
        ("tiny_base.onnx", OutputKind::Logits, None),
        ("kinds/tiny_base_probs.onnx", OutputKind::Probabilities, Some("Softmax")),
        ("kinds/tiny_base_logprobs.onnx", OutputKind::LogProbabilities, Some("LogSoftmax")),
        // Softmax, then QuantizeLinear / DequantizeLinear: still probabilities.
        ("kinds/tiny_ptq_probs.onnx", OutputKind::Probabilities, Some("Softmax")),
    ] {
        let variant = Variant::open(&fixture(file)).expect("opens");
        assert_eq!(variant.exit_kinds(), vec![kind], "{file}");
        let origin = &variant.segments[0].exit_kind_origin;
        match operator {
            Some(op) => assert_eq!(origin, &KindOrigin::Graph(op.into()), "{file}"),
            None => assert_eq!(origin, &KindOrigin::Default, "{file}"),
        }
    }
    let chain = Variant::open(&fixture("kinds/tiny_ee_probs.toml")).expect("chain opens");
    assert_eq!(chain.exit_kinds(), vec![OutputKind::Probabilities; 2]);
    // A manifest or --outputs states it; the stated kind travels in the manifest a remote runner receives.
    let mut stated = Variant::open(&fixture("kinds/tiny_base_probs.onnx")).expect("opens");
    stated.state_output_kind(OutputKind::Probabilities);
    assert_eq!(stated.manifest().segments[0].outputs, Some(OutputKind::Probabilities));
}

#[test]
fn every_output_kind_gives_python_s_figures() {
    let expected = kinds_expected();
    let base = base_trace();
    for file in ["tiny_base_probs.onnx", "tiny_base_logprobs.onnx", "tiny_ptq_probs.onnx"] {
        let want = &expected["models"][file];
        let run = trace(&mut LocalRunner::new(), &job(&format!("kinds/{file}"), "fmnist500", RunMode::Trace));
        assert_eq!(run.info.output_kinds.len(), 1);
        assert_eq!(run.info.output_kinds[0].name(), want["kind"].as_str().expect("kind"), "{file}");
        let got: Vec<i64> = (0..run.trace.len()).map(|s| i64::from(run.trace.exits[0].predicted(s))).collect();
        assert_eq!(got, ints(&want["argmax"]), "{file}: per-sample top-1");
        let prepared = PreparedTrace::new(&run.trace, Some(&base.trace), Criterion::Entropy);
        let outcome = prepared.evaluate(&Policy::never_exit(Criterion::Entropy, 0));
        assert_close(outcome.accuracy, number(&want["accuracy"]), &format!("{file} accuracy"));
        assert_close(outcome.label_loyalty.expect("base"), number(&want["label_loyalty"]), &format!("{file} label"));
        assert_close(
            outcome.probability_loyalty.expect("base"),
            number(&want["probability_loyalty"]),
            &format!("{file} probability loyalty"),
        );
    }
}

#[test]
fn a_probability_chain_gives_python_s_exit_rates_and_loyalty() {
    let expected = kinds_expected();
    let chain = &expected["chains"]["tiny_ee_probs.toml"];
    let base = base_trace();
    let run = trace(&mut LocalRunner::new(), &job("kinds/tiny_ee_probs.toml", "fmnist500", RunMode::Trace));
    let prepared = PreparedTrace::new(&run.trace, Some(&base.trace), Criterion::Entropy);
    // With softmax applied twice, the final exit's loyalty to a base it equals fell to about 0.3.
    let never = prepared.evaluate(&Policy::never_exit(Criterion::Entropy, 1));
    assert_close(never.probability_loyalty.expect("base"), number(&chain["exits"][1]["probability_loyalty"]), "final");
    for point in chain["thresholds"].as_array().expect("thresholds") {
        let threshold = number(&point["threshold"]);
        let outcome = prepared.evaluate(&Policy::uniform(Criterion::Entropy, threshold, 1));
        let at = format!("T = {threshold}");
        assert_close(outcome.early_exit_rate, number(&point["exit_rate"]), &format!("exit rate at {at}"));
        assert_close(outcome.accuracy, number(&point["accuracy"]), &format!("accuracy at {at}"));
        assert_close(outcome.label_loyalty.expect("base"), number(&point["label_loyalty"]), &format!("label {at}"));
        assert_close(
            outcome.probability_loyalty.expect("base"),
            number(&point["probability_loyalty"]),
            &format!("probability loyalty at {at}"),
        );
    }
}

#[test]
fn a_stated_kind_the_numbers_contradict_is_a_clear_error() {
    let mut variant = Variant::open(&fixture("tiny_base.onnx")).expect("opens");
    variant.state_output_kind(OutputKind::Probabilities);
    let job = Job {
        variant: Arc::new(variant),
        dataset: Arc::new(Dataset::open(&fixture("fmnist500")).expect("dataset")),
        settings: quick_settings(),
        mode: RunMode::Trace,
        reference: None,
    };
    let error = LocalRunner::new().run(&job, &mut |_| {}, &CancelToken::new()).expect_err("contradiction");
    let message = error.to_string();
    assert!(message.contains("tiny_base.onnx") && message.contains("state outputs = \"logits\""), "{message}");
}

#[test]
fn unreadable_images_are_skipped_listed_and_left_out_of_every_denominator() {
    let dataset = Dataset::open(&fixture("kinds/folder_bad")).expect("folder opens");
    assert_eq!(dataset.len(), 32);
    let run = trace(
        &mut LocalRunner::new(),
        &Job {
            variant: Arc::new(Variant::open(&fixture("tiny_base.toml")).expect("variant")),
            dataset: Arc::new(dataset),
            settings: quick_settings(),
            mode: RunMode::Trace,
            reference: None,
        },
    );
    assert!(run.info.complete, "one bad image does not cost the run");
    assert_eq!(run.trace.len(), 30);
    assert_eq!(run.info.skipped.len(), 2, "{:?}", run.info.skipped);
    let sources: Vec<&str> = run.info.skipped.iter().filter_map(|s| s.source.as_deref()).collect();
    assert!(sources.iter().any(|s| s.ends_with("test999_corrupt.png")), "{sources:?}");
    assert!(sources.iter().any(|s| s.ends_with("test998_truncated.jpg")), "{sources:?}");
    assert_eq!(run.info.sample_summary(), "30 of 32 samples; 2 skipped");
    // Trace position -> dataset index skips the bad files.
    let indices = run.info.measured_indices(run.trace.len());
    assert_eq!(indices.len(), 30);
    assert!(run.info.skipped.iter().all(|s| !indices.contains(&s.index)));
}

#[test]
fn a_limit_of_zero_is_an_error_and_a_limited_run_sits_beside_the_full_trace() {
    let mut zero = job("tiny_base.toml", "fmnist500", RunMode::Trace);
    zero.settings.limit = Some(0);
    assert!(LocalRunner::new().run(&zero, &mut |_| {}, &CancelToken::new()).is_err());

    let mut session = Session::default();
    let full = base_trace();
    assert!(session.upsert_run(full.clone()));
    let mut limited_job = job("tiny_base.toml", "fmnist500", RunMode::Trace);
    limited_job.settings = RunSettings { limit: Some(50), ..quick_settings() };
    let limited = trace(&mut LocalRunner::new(), &limited_job);
    assert_eq!(limited.info.sample_limit(), Some(50));
    assert!(session.upsert_run(limited));
    assert_eq!(session.runs.len(), 2, "the limited run is kept beside the full one");
    assert_eq!(session.matching_run("tiny/base", &full.info).map(|r| r.trace.len()), Some(500));
    // An incomplete run never replaces a complete one.
    let mut partial = full.clone();
    partial.info.complete = false;
    partial.trace = partial.trace.head(10);
    assert!(!session.upsert_run(partial));
    assert_eq!(session.matching_run("tiny/base", &full.info).map(|r| r.trace.len()), Some(500));
}

fn edgescope() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edgescope"))
}

fn run_ok(command: &mut Command) -> String {
    let output = command.output().expect("run edgescope");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{command:?} failed: {stderr}");
    String::from_utf8(output.stdout).expect("utf-8") + &stderr
}

#[test]
fn memory_of_a_variant_does_not_depend_on_what_ran_before() {
    let dir = tempfile::tempdir().expect("temp dir");
    let memory_of_ptq = |order: [&str; 2], name: &str| {
        let session = dir.path().join(name);
        run_ok(
            edgescope()
                .args(["eval", "--threads", "1", "--warmup", "2", "--sample-ms", "20", "--dataset"])
                .arg(fixture("fmnist500"))
                .arg("--variant")
                .args(order.map(fixture))
                .arg("--out")
                .arg(&session),
        );
        let session = Session::load(&session).expect("session");
        let run = session.runs.iter().find(|r| r.info.variant == "tiny/ptq").expect("ptq run");
        assert!(run.info.isolated, "a local eval measures each variant in a fresh process");
        run.info.memory_bytes().expect("memory measured") as f64
    };
    let after_base = memory_of_ptq(["heavy.onnx", "tiny_ptq.toml"], "a.json");
    let first = memory_of_ptq(["tiny_ptq.toml", "heavy.onnx"], "b.json");
    let ratio = after_base / first;
    assert!((0.95..=1.05).contains(&ratio), "ptq memory {after_base} after heavy vs {first} first");
}

#[test]
fn strict_stops_on_the_first_bad_image_and_the_default_skips_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let session = dir.path().join("s.json");
    let output = edgescope()
        .args(["eval", "--strict", "--warmup", "1", "--no-sampler", "--dataset"])
        .arg(fixture("kinds/folder_bad"))
        .arg("--variant")
        .arg(fixture("tiny_base.onnx"))
        .arg("--out")
        .arg(&session)
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("test999_corrupt.png") || stderr.contains("test998_truncated.jpg"), "{stderr}");
    assert!(!session.exists(), "nothing measured, nothing written");

    let text = run_ok(
        edgescope()
            .args(["eval", "--warmup", "1", "--no-sampler", "--dataset"])
            .arg(fixture("kinds/folder_bad"))
            .arg("--variant")
            .arg(fixture("tiny_base.onnx"))
            .arg("--out")
            .arg(&session),
    );
    assert!(text.contains("30 of 32 samples; 2 skipped"), "{text}");
    let report = run_ok(edgescope().arg("report").arg(&session));
    assert!(report.contains("30 of 32 samples; 2 skipped") && report.contains("test999_corrupt.png"), "{report}");
    let csv = run_ok(edgescope().arg("samples").arg(&session).args(["--variant", "tiny_base"]));
    let lines: Vec<&str> = csv.lines().filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_digit())).collect();
    assert_eq!(lines.len(), 32, "{csv}");
    assert_eq!(lines.iter().filter(|l| l.contains(",skipped,")).count(), 2);
}

#[test]
fn bare_onnx_files_get_the_first_float_model_as_base_and_samples_export_matches_python() {
    let dir = tempfile::tempdir().expect("temp dir");
    let session_path = dir.path().join("s.json");
    let text = run_ok(
        edgescope()
            .args(["eval", "--warmup", "1", "--no-sampler", "--dataset"])
            .arg(fixture("fmnist500"))
            .arg("--variant")
            .args(["tiny_ptq.onnx", "tiny_base.onnx", "kinds/tiny_base_probs.onnx"].map(fixture))
            .arg("--out")
            .arg(&session_path),
    );
    assert!(text.contains("base: tiny_base"), "{text}");
    let session = Session::load(&session_path).expect("session");
    assert_eq!(session.base_of("tiny_ptq").as_deref(), Some("tiny_base"));
    assert_eq!(session.base_of("tiny_base_probs").as_deref(), Some("tiny_base"));
    let report = run_ok(edgescope().arg("report").arg(&session_path).args(["--format", "csv"]));
    // Table 2 comes first; its header names the plain columns, and missing values are empty fields.
    let header: Vec<&str> =
        report.lines().find(|l| l.starts_with("Device,Model,")).expect("header").split(',').collect();
    let ptq_row: Vec<&str> = report.lines().find(|l| l.contains(",tiny_ptq,")).expect("ptq row").split(',').collect();
    for column in ["Compression (x)", "Label loyalty (%)", "Prob. loyalty (%)"] {
        let index = header.iter().position(|h| *h == column).expect(column);
        assert!(ptq_row[index].parse::<f64>().is_ok(), "{column} is shown as a plain number: {ptq_row:?}");
    }

    // Per-sample export: the top-1 of every sample equals Python onnxruntime's.
    let expected = kinds_expected();
    let want = ints(&expected["models"]["tiny_base_probs.onnx"]["argmax"]);
    let json = run_ok(edgescope().arg("samples").arg(&session_path).args([
        "--variant",
        "tiny_base_probs",
        "--format",
        "json",
    ]));
    let start = json.find('{').expect("json");
    let parsed: serde_json::Value =
        serde_json::Deserializer::from_str(&json[start..]).into_iter().next().expect("one value").expect("json");
    let samples = parsed["samples"].as_array().expect("samples");
    assert_eq!(samples.len(), 500);
    let got: Vec<i64> = samples.iter().map(|s| s["exits"][0]["top1"].as_i64().expect("top1")).collect();
    assert_eq!(got, want);
    assert_eq!(parsed["output_kinds"][0], "probabilities");
}

#[test]
fn verify_refuses_non_finite_thresholds_and_a_changed_dataset() {
    let dir = tempfile::tempdir().expect("temp dir");
    let session = dir.path().join("s.json");
    run_ok(
        edgescope()
            .args(["eval", "--warmup", "1", "--no-sampler", "--dataset"])
            .arg(fixture("fmnist500"))
            .arg("--variant")
            .args(["tiny_base.toml", "tiny_ee.toml"].map(fixture))
            .arg("--out")
            .arg(&session),
    );
    for bad in ["inf", "NaN"] {
        let output = edgescope()
            .arg("verify")
            .arg(&session)
            .args(["--variant", "tiny/ee", "--threshold", bad, "--save"])
            .output()
            .expect("run");
        assert!(!output.status.success(), "--threshold {bad} is refused");
        assert!(String::from_utf8_lossy(&output.stderr).contains("not a finite number"));
    }
    assert!(Session::load(&session).is_ok(), "the session still opens");
    let text = run_ok(edgescope().arg("verify").arg(&session).args([
        "--variant",
        "tiny/ee",
        "--threshold",
        "0.5",
        "--limit",
        "40",
    ]));
    assert!(text.contains(": 40 samples"), "{text}");
    assert!(text.contains("same exit as predicted: 40 of 40"), "{text}");
    let output = edgescope()
        .args(["eval", "--limit", "0", "--dataset"])
        .arg(fixture("fmnist500"))
        .arg("--variant")
        .arg(fixture("tiny_base.onnx"))
        .arg("--out")
        .arg(dir.path().join("z.json"))
        .output()
        .expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--limit 0"));
}

#[test]
fn an_interrupted_eval_keeps_its_samples_marked_incomplete() {
    let dir = tempfile::tempdir().expect("temp dir");
    let session = dir.path().join("s.json");
    let mut child = edgescope()
        .args(["eval", "--threads", "1", "--warmup", "1", "--no-sampler", "--dataset"])
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/fashion-mnist/test"))
        .arg("--variant")
        .arg(fixture("heavy.onnx"))
        .arg("--out")
        .arg(&session)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start eval");
    std::thread::sleep(std::time::Duration::from_secs(4));
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let started = std::time::Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(started.elapsed().as_secs() < 30, "eval did not stop after SIGTERM");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(exit.success(), "an interrupted eval saves and exits cleanly");
    let session = Session::load(&session).expect("the session was saved");
    let run = &session.runs[0];
    assert!(!run.info.complete);
    assert!(!run.trace.is_empty() && run.trace.len() < 10_000, "{} samples", run.trace.len());
}

#[test]
fn a_killed_eval_keeps_the_samples_of_its_last_checkpoint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let session = dir.path().join("s.json");
    let mut child = edgescope()
        .args(["eval", "--threads", "1", "--warmup", "1", "--no-sampler", "--save-every-s", "1", "--dataset"])
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/fashion-mnist/test"))
        .arg("--variant")
        .arg(fixture("heavy.onnx"))
        .arg("--out")
        .arg(&session)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start eval");
    let started = std::time::Instant::now();
    while !session.exists() {
        assert!(started.elapsed().as_secs() < 60, "no checkpoint was saved");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let session = Session::load(&session).expect("the checkpoint is a whole session");
    let run = &session.runs[0];
    assert!(!run.info.complete);
    assert!(!run.trace.is_empty() && run.trace.len() < 10_000, "{} samples", run.trace.len());
}

#[test]
fn a_dynamic_run_in_a_fresh_process_takes_the_exits_the_trace_predicts() {
    let mut runner = edgescope::runtime::IsolatedRunner::new(env!("CARGO_BIN_EXE_edgescope"));
    let run = trace(&mut runner, &job("tiny_ee.toml", "fmnist500", RunMode::Trace));
    assert!(run.info.isolated && run.info.complete);
    let policy = Policy::uniform(Criterion::Entropy, 0.5, 1);
    let predicted = PreparedTrace::new(&run.trace, None, Criterion::Entropy).exit_of_each_sample(&policy);
    let output = runner
        .run(&job("tiny_ee.toml", "fmnist500", RunMode::Dynamic(policy)), &mut |_| {}, &CancelToken::new())
        .expect("dynamic run");
    let RunOutput::Dynamic(dynamic) = output else { panic!("dynamic") };
    assert_eq!(dynamic.exit_taken, predicted);
}

/// tests/fixtures/wide: a 1000-class model whose base keeps 30 % of its mass outside the top 16 classes, its
/// ORT-quantized forms and an early-exit chain, with an exact Python reference (make_wide.py).
fn wide_expected() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("wide/expected.json")).expect("wide/expected.json");
    serde_json::from_str(&text).expect("valid json")
}

#[test]
fn probability_loyalty_at_1000_classes_equals_python_exactly() {
    let expected = wide_expected();
    assert!(number(&expected["base_mass_outside_top16_mean"]) > 0.2, "the fixture must defeat a top-16 record");
    let dir = tempfile::tempdir().expect("temp dir");
    let session_path = dir.path().join("wide.json");
    // The CLI's way: each variant in a fresh child process, compared with the base during the run.
    let output = run_ok(
        edgescope()
            .args(["eval", "--threads", "1", "--warmup", "1", "--dataset"])
            .arg(fixture("wide/dataset.toml"))
            .arg("--variant")
            .args(["wide/wide_base.toml", "wide/wide_ptq.toml", "wide/wide_dq.toml", "wide/wide_ee.toml"].map(fixture))
            .arg("--out")
            .arg(&session_path),
    );
    let session = Session::load(&session_path).expect("session loads");
    let base = session.runs.iter().find(|r| r.info.variant == "wide/base").expect("base run");
    assert!(base.trace.exits[0].reference_jsd_bits.is_empty(), "the base is not compared with itself");
    let itself = PreparedTrace::new(&base.trace, Some(&base.trace), Criterion::MaxProbability)
        .evaluate(&Policy::never_exit(Criterion::MaxProbability, 0));
    assert_eq!((itself.probability_loyalty, itself.probability_loyalty_error), (Some(1.0), Some(0.0)));
    let close = |got: Option<f64>, want: &serde_json::Value, what: &str| {
        let got = got.expect(what);
        assert!((got - number(want)).abs() <= 1e-6, "{what}: edgescope {got} vs Python {}", number(want));
    };
    for name in ["wide/ptq", "wide/dq"] {
        let run = session.runs.iter().find(|r| r.info.variant == name).expect("run");
        assert_eq!(run.trace.reference.as_deref(), Some("wide/base"), "{name}: {output}");
        let outcome = PreparedTrace::new(&run.trace, Some(&base.trace), Criterion::MaxProbability)
            .evaluate(&Policy::never_exit(Criterion::MaxProbability, 0));
        let want = &expected["variants"][name];
        close(outcome.probability_loyalty, &want["probability_loyalty"], name);
        close(outcome.label_loyalty, &want["label_loyalty"], name);
        assert_eq!(outcome.probability_loyalty_error, Some(0.0), "{name}: measured, so exact");

        // Without the measured divergences the top-16 estimate is off by more than the shown precision, and
        // says so: its bound covers the true value and is flagged in the report.
        let mut estimated = run.trace.clone();
        for exit in &mut estimated.exits {
            exit.reference_jsd_bits.clear();
        }
        let rough = PreparedTrace::new(&estimated, Some(&base.trace), Criterion::MaxProbability)
            .evaluate(&Policy::never_exit(Criterion::MaxProbability, 0));
        let (value, bound) =
            (rough.probability_loyalty.expect("estimate"), rough.probability_loyalty_error.expect("bound"));
        let truth = number(&want["probability_loyalty"]);
        assert!(bound > 1e-4 && (value - truth).abs() <= bound + 1e-6, "{name}: {value} ± {bound} vs {truth}");
        assert!(edgescope::report::probability_loyalty_percent(Some(value), Some(bound)).starts_with('≈'));
    }
    let chain = session.runs.iter().find(|r| r.info.variant == "wide/ee").expect("chain run");
    assert!(chain.trace.exits.iter().all(|e| e.has_reference_jsd()));
    let prepared = PreparedTrace::new(&chain.trace, Some(&base.trace), Criterion::MaxProbability);
    for point in expected["chain"]["thresholds"].as_array().expect("thresholds") {
        let threshold = number(&point["threshold"]);
        let outcome = prepared.evaluate(&Policy::uniform(Criterion::MaxProbability, threshold, 1));
        assert!((outcome.early_exit_rate - number(&point["exit_rate"])).abs() < 1e-9, "exit rate at {threshold}");
        close(outcome.probability_loyalty, &point["probability_loyalty"], &format!("chain at {threshold}"));
        close(outcome.label_loyalty, &point["label_loyalty"], &format!("chain labels at {threshold}"));
    }
    // A measured divergence that contradicts the top-k records (another reference) is not trusted.
    let mut forged = chain.trace.clone();
    forged.exits[1].reference_jsd_bits.iter_mut().for_each(|d| *d = 0.9);
    let outcome = PreparedTrace::new(&forged, Some(&base.trace), Criterion::MaxProbability)
        .evaluate(&Policy::never_exit(Criterion::MaxProbability, 1));
    assert!(outcome.probability_loyalty.expect("loyalty") > 0.99, "the forged column was used");
}
