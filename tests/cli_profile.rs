//! `edgescope profile` end to end: on this machine (text, with the outside-operators row) and through a real
//! `edgescope-runner` process (`--device`, JSON), on the v1 fixture session's tiny base and DQ variants.

mod common;

use std::process::Command;

use common::fixture;
use edgescope::record::VariantProfile;

fn edgescope() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edgescope"))
}

fn run_ok(command: &mut Command) -> String {
    let output = command.output().expect("edgescope runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "failed: {stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn profile_here_and_through_a_runner_process() {
    let session = fixture("sessions/v1.json");
    let quick = ["--samples", "20", "--warmup", "2", "--threads", "1"];
    let text = run_ok(edgescope().arg("profile").arg(&session).args(["--variant", "tiny/dq"]).args(quick));
    assert!(text.contains("ConvInteger") && text.contains("outside operators"), "{text}");
    assert!(text.contains("without") && text.contains("slowest nodes"), "{text}");

    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "cli-test-token-0123456789").expect("token");
    let (mut child, address) = common::spawn_runner_process(&dir.path().join("cache"), &token_file);
    let json = run_ok(
        edgescope()
            .arg("profile")
            .arg(&session)
            .args(["--variant", "tiny/base", "--compare", "tiny/dq", "--format", "json"])
            .args(quick)
            .args(["--device", &format!("tcp://{address}"), "--token-file"])
            .arg(&token_file),
    );
    child.kill().expect("stop runner");
    let _ = child.wait();
    let profiles: Vec<VariantProfile> = serde_json::from_str(&json).expect("a JSON array of profiles");
    assert_eq!(profiles.iter().map(|p| p.variant.as_str()).collect::<Vec<_>>(), ["tiny/base", "tiny/dq"]);
    assert!(profiles.iter().all(|p| p.device.contains(address.as_str())), "ran on the runner");
    assert!(profiles[0].op_type_us("Conv") > 0.0 && profiles[1].op_type_us("ConvInteger") > 0.0);
    for profile in &profiles {
        assert!(profile.runs + profile.disturbed_runs == 20 && profile.complete);
        assert!(profile.remainder_us().is_finite() && profile.operator_sum_us() > 0.0);
    }
}
