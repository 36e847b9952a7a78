//! The app's "Quantize…" dialog and sensitivity chart (issue 11 parts 2 and 4), driven through the accessibility
//! tree with egui_kittest on the fixture session: a DQ and a PTQ of `tiny/base` run on the worker thread, join the
//! session and start their runs; the PTQ's sensitivity chart is measured and lists its tensors worst first.
#![cfg(feature = "gui")]

mod common;

use std::time::Instant;

use common::fixture;
use edgescope::app::{EdgescopeApp, SavedState, Tab};
use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

fn harness(scratch: &tempfile::TempDir) -> Harness<'static, EdgescopeApp> {
    let text = std::fs::read_to_string(fixture("sessions/v1.json")).expect("fixture session");
    let session = edgescope::session::Session::from_json(&text, &fixture("sessions/v1.json")).expect("parses");
    let path = scratch.path().join("session.json");
    session.save(&path).expect("save copy");
    let saved = SavedState { hint_dismissed: true, tab: Tab::Models, ..SavedState::default() };
    let mut harness = Harness::builder()
        .with_size(egui::vec2(1400.0, 1000.0))
        .build_eframe(move |cc| EdgescopeApp::with_state(cc.egui_ctx.clone(), saved, Some(path)));
    common::settle(&mut harness);
    harness
}

/// Steps frame by frame (the worker asks for repaints) until `done` holds.
fn step_until(harness: &mut Harness<'static, EdgescopeApp>, what: &str, done: impl Fn(&EdgescopeApp) -> bool) {
    let started = Instant::now();
    while !done(harness.state()) {
        harness.step();
        assert!(started.elapsed().as_secs() < 120, "{what} did not finish: {:?}", harness.state().world.errors);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Fixed steps, not `run`: the runs the new variants started keep repainting.
    harness.run_steps(4);
}

#[test]
fn the_app_quantizes_a_session_variant_and_measures_its_sensitivity() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let mut harness = harness(&scratch);
    common::settle(&mut harness);

    // Dynamic quantization: tiny/base is listed first and open; tiny/dq exists, so the new one is tiny/dq-2.
    harness.get_all_by_label("Quantize…").next().expect("a button on tiny/base").click();
    harness.run_steps(4);
    assert!(harness.query_by_label_contains("Quantize tiny/base").is_some(), "the dialog opens");
    harness.get_by_label("DQ (dynamic)").click();
    harness.run_steps(4);
    harness.get_by_label("Quantize").click();
    step_until(&mut harness, "dynamic quantization", |app| app.world.session.variant("tiny/dq-2").is_some());
    {
        let world = &harness.state().world;
        assert!(world.errors.is_empty(), "{:?}", world.errors);
        let entry = world.session.variant("tiny/dq-2").expect("joined the session");
        assert_eq!(entry.tags, vec!["dq".to_string()]);
        assert_eq!(world.session.base_of("tiny/dq-2").as_deref(), Some("tiny/base"));
        assert!(entry.path.starts_with(scratch.path()), "written beside the session: {}", entry.path.display());
        assert!(world.jobs.iter().any(|j| j.variant == "tiny/dq-2"), "its run started at once");
        assert!(entry.op_histogram.iter().any(|(op, _)| op == "ConvInteger"), "{:?}", entry.op_histogram);
    }
    assert!(
        harness.query_all_by_label_contains("left in float (").next().is_some(),
        "the dialog lists the float operators"
    );

    // Static quantization of the same variant, entropy calibration on the fixture dataset.
    harness.get_by_label("PTQ (static, QDQ)").click();
    harness.run_steps(4);
    harness.get_by_label("Entropy").click();
    harness.run_steps(4);
    harness.get_by_label("Quantize").click();
    step_until(&mut harness, "static quantization", |app| app.world.session.variant("tiny/ptq").is_some());
    {
        let world = &harness.state().world;
        assert!(world.errors.is_empty(), "{:?}", world.errors);
        let entry = world.session.variant("tiny/ptq").expect("joined the session");
        assert_eq!(entry.tags, vec!["ptq".to_string()]);
        assert!(entry.op_histogram.iter().any(|(op, _)| op == "QuantizeLinear"), "{:?}", entry.op_histogram);
    }
    assert!(
        harness.query_all_by_label_contains("calibration samples").next().is_some(),
        "the summary names the calibration"
    );

    // Its sensitivity, from the dialog's result.
    harness.get_all_by_label("Sensitivity…").next().expect("a sensitivity button on the PTQ result").click();
    harness.run_steps(4);
    assert!(harness.query_by_label_contains("Sensitivity: ").is_some(), "the chart window opens");
    harness.get_by_label("Measure").click();
    step_until(&mut harness, "sensitivity", |app| {
        app.world.quantize.sensitivity.as_ref().is_some_and(|v| v.measured().is_some())
    });
    let noise = harness.state().world.quantize.sensitivity.as_ref().and_then(|v| v.measured()).expect("measured");
    assert!(noise.len() >= 3, "every quantized activation: {noise:?}");
    assert!(noise.windows(2).all(|w| w[0].sqnr_db <= w[1].sqnr_db), "worst first");
    assert!(noise.iter().all(|t| t.sqnr_db.is_finite() && t.sqnr_db > 0.0), "{noise:?}");
    assert!(harness.query_by_label_contains("quantized tensors; worst: ").is_some());
}
