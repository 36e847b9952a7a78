//! The `edgescope` binary end to end: eval, report, sweep, verify, inspect, and a missing ONNX Runtime.

mod common;

use std::process::Command;

use common::fixture;

fn edgescope() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edgescope"))
}

fn run_ok(command: &mut Command) -> String {
    let output = command.output().expect("run edgescope");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{command:?} failed: {stderr}");
    String::from_utf8(output.stdout).expect("utf-8")
}

#[test]
fn eval_report_sweep_verify() {
    let dir = tempfile::tempdir().expect("temp dir");
    let session = dir.path().join("s.json");
    run_ok(
        edgescope()
            .args(["eval", "--threads", "1", "--warmup", "1", "--limit", "120", "--dataset"])
            .arg(fixture("fmnist500"))
            .arg("--variant")
            .args(["tiny_base.toml", "tiny_ee.toml", "tiny_ptq.toml"].map(fixture))
            .arg("--out")
            .arg(&session),
    );

    let text = run_ok(edgescope().arg("report").arg(&session));
    for needle in ["Table 2", "Tables 3-6", "Table 7", "tiny/ee (acc-opt", "tiny/ee (inf-opt", "tiny/ptq"] {
        assert!(text.contains(needle), "report lacks {needle}:\n{text}");
    }
    let csv = run_ok(edgescope().arg("report").arg(&session).args(["--format", "csv"]));
    assert!(csv.contains("Device,Model,Size (MB)"));
    let md = run_ok(edgescope().arg("report").arg(&session).args(["--format", "md"]));
    assert!(md.contains("| Device | Model |"));
    let json = run_ok(edgescope().arg("report").arg(&session).args(["--format", "json"]));
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("json report");
    assert_eq!(parsed["tables"].as_array().map(Vec::len), Some(4), "Tables 2, 3-6, 7 and the runs");
    assert_eq!(parsed["tables"][3]["id"], "runs");
    // CSV and JSON carry plain numbers, units in the headers.
    assert!(csv.contains("Speed-up (x)") && csv.contains("Early-exit avg (ms),Final-exit avg (ms)"), "{csv}");
    let suffixed = |f: &str| f.strip_suffix(['x', '%']).is_some_and(|n| n.parse::<f64>().is_ok());
    assert!(!csv.lines().flat_map(|l| l.split(',')).any(suffixed), "no 1.00x or 89.40% fields:\n{csv}");
    let table2 = &parsed["tables"][0];
    let accuracy = table2["columns"].as_array().and_then(|c| c.iter().position(|h| h == "Accuracy (%)"));
    let accuracy = accuracy.expect("Accuracy (%) column");
    for row in table2["rows"].as_array().expect("rows") {
        assert!(row[accuracy].as_f64().is_some_and(|a| (0.0..=100.0).contains(&a)), "a number: {row}");
    }

    let sweep = run_ok(edgescope().arg("sweep").arg(&session).args([
        "--variant",
        "tiny/ee",
        "--points",
        "20",
        "--criterion",
        "max-probability",
    ]));
    let mut lines = sweep.lines();
    assert!(lines.next().is_some_and(|h| h.starts_with("threshold_max_probability,accuracy")));
    assert!(lines.count() >= 10);

    let verify = run_ok(edgescope().arg("verify").arg(&session).args([
        "--variant",
        "tiny/ee",
        "--threshold",
        "0.5",
        "--warmup",
        "1",
        "--save",
    ]));
    assert!(verify.contains("same exit as predicted: 120 of 120"), "{verify}");
    let saved = edgescope::session::Session::load(&session).expect("session");
    assert_eq!(saved.verifications.len(), 1);
    assert!(saved.policies.contains_key("tiny/ee"));

    let inspect = run_ok(edgescope().arg("inspect").arg(fixture("tiny_dq.onnx")));
    assert!(inspect.contains("[dq]") && inspect.contains("DynamicQuantizeLinear"), "{inspect}");
}

#[test]
fn a_missing_onnx_runtime_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = edgescope()
        .env("ORT_DYLIB_PATH", dir.path().join("libonnxruntime.so"))
        .args(["eval", "--dataset"])
        .arg(fixture("fmnist500"))
        .arg("--variant")
        .arg(fixture("tiny_base.toml"))
        .arg("--out")
        .arg(dir.path().join("s.json"))
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("libonnxruntime") && stderr.contains("ORT_DYLIB_PATH"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!dir.path().join("s.json").exists(), "nothing is written when nothing ran");
}

#[test]
fn bad_arguments_fail_without_a_panic() {
    let output = edgescope().args(["report", "/nonexistent/session.json"]).output().expect("run");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/session.json"), "{stderr}");
}

#[test]
fn devices_and_remote_eval_through_a_runner_process() {
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "cli-test-token-0123456789").expect("token");
    let (mut child, address) = common::spawn_runner_process(&dir.path().join("cache"), &token_file);
    let config = dir.path().join("devices.toml");
    let listing = run_ok(
        edgescope()
            .args(["devices", "--config"])
            .arg(&config)
            .args(["--add", "bench-pi", &format!("tcp://{address}"), "--token-file"])
            .arg(&token_file),
    );
    assert!(
        listing.contains("bench-pi") && listing.contains("connected") && listing.contains("ONNX Runtime 1.31"),
        "{listing}"
    );
    let session = dir.path().join("remote.json");
    run_ok(
        edgescope()
            .args(["eval", "--threads", "1", "--warmup", "1", "--limit", "40", "--dataset"])
            .arg(fixture("fmnist500"))
            // By its name in the devices list: address and token come from the list.
            .env("EDGESCOPE_DEVICES", &config)
            .args(["--device", "bench-pi"])
            .arg("--variant")
            .args(["tiny_base.toml", "tiny_ee.toml"].map(fixture))
            .arg("--out")
            .arg(&session),
    );
    let saved = edgescope::session::Session::load(&session).expect("session");
    assert_eq!(saved.runs.len(), 2);
    assert!(saved.runs.iter().all(|r| r.info.complete && r.trace.len() == 40));
    assert!(saved.runs.iter().all(|r| r.info.runner.as_deref() == Some(format!("tcp://{address}").as_str())));
    // The same variants on this machine: the report puts both devices side by side.
    run_ok(
        edgescope()
            .args(["eval", "--threads", "1", "--warmup", "1", "--limit", "40", "--dataset"])
            .arg(fixture("fmnist500"))
            .arg("--variant")
            .args(["tiny_base.toml", "tiny_ee.toml"].map(fixture))
            .arg("--out")
            .arg(&session),
    );
    let report = run_ok(edgescope().arg("report").arg(&session));
    assert!(report.contains("Tables 3-6 by device"), "{report}");
    assert!(report.contains(&format!("via tcp://{address}")), "{report}");
    child.kill().expect("stop runner");
    let _ = child.wait();
    // With the runner gone, the listing says so instead of failing.
    let listing = run_ok(edgescope().args(["devices", "--config"]).arg(&config));
    assert!(listing.contains("bench-pi") && listing.contains("unavailable"), "{listing}");
    // A name the list does not hold is refused with the names it does.
    let output = edgescope()
        .env("EDGESCOPE_DEVICES", &config)
        .args(["eval", "--dataset"])
        .arg(fixture("fmnist500"))
        .args(["--device", "jetson", "--variant"])
        .arg(fixture("tiny_base.toml"))
        .arg("--out")
        .arg(dir.path().join("never.json"))
        .output()
        .expect("run edgescope");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("no device called \"jetson\"") && stderr.contains("bench-pi"),
        "{stderr}"
    );
    let listing = run_ok(edgescope().args(["devices", "--config"]).arg(&config).args(["--remove", "bench-pi"]));
    assert!(listing.contains("no devices configured"), "{listing}");
}
