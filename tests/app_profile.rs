//! The profile window driven through the accessibility tree: "Profile…" on the DQ variant opens it beside its
//! base, profiling runs on the worker thread with progress, and each variant gets bars per operator type and an
//! "outside operators" bar, with the operator types that got slower listed.
#![cfg(feature = "gui")]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::fixture;
use edgescope::app::{EdgescopeApp, SavedState, Tab};
use eframe::egui;
use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};

fn harness(session: PathBuf) -> Harness<'static, EdgescopeApp> {
    let saved = SavedState { hint_dismissed: true, tab: Tab::Models, ..SavedState::default() };
    let mut harness = Harness::builder()
        .with_size(egui::vec2(1400.0, 1000.0))
        .build_eframe(move |cc| EdgescopeApp::with_state(cc.egui_ctx.clone(), saved, Some(session)));
    common::settle(&mut harness);
    harness
}

/// Labels of the bars (progress indicators) whose text starts with `prefix`.
fn bars(harness: &Harness<'_, EdgescopeApp>, prefix: &str) -> Vec<String> {
    harness
        .query_all_by_role(Role::ProgressIndicator)
        .filter_map(|n| n.accesskit_node().label())
        .filter(|l| l.starts_with(prefix))
        .collect()
}

#[test]
fn the_profile_window_shows_bars_per_operator_type_beside_the_base() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = std::fs::read_to_string(fixture("sessions/v1.json")).expect("fixture session");
    let session = edgescope::session::Session::from_json(&text, &fixture("sessions/v1.json")).expect("parses");
    let path = dir.path().join("session.json");
    session.save(&path).expect("save copy");
    let mut harness = harness(path);
    common::settle(&mut harness);
    // Open tiny/dq's details, then its "Profile…".
    harness.query_all_by(|n| n.label().is_some_and(|l| l.starts_with("tiny/dq"))).next().expect("tiny/dq").click();
    common::settle(&mut harness);
    harness.get_all_by_label("Profile…").last().expect("Profile… of tiny/dq").click();
    common::settle(&mut harness);
    assert!(harness.query_by_label("Per-operator latency").is_some(), "the window opened");
    harness.get_by_label("Profile").click();
    let started = Instant::now();
    while bars(&harness, "outside operators").len() < 2 && started.elapsed() < Duration::from_secs(120) {
        harness.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    common::settle(&mut harness);
    let outside = bars(&harness, "outside operators");
    assert_eq!(outside.len(), 2, "one remainder bar per variant: {outside:?}");
    // The base runs Conv; its DQ variant runs ConvInteger fed by DynamicQuantizeLinear (ONNX Runtime fuses the
    // third into DynamicQuantizeMatMul).
    assert!(!bars(&harness, "Conv x2").is_empty(), "{:?}", bars(&harness, ""));
    assert!(!bars(&harness, "ConvInteger x2").is_empty(), "{:?}", bars(&harness, ""));
    assert!(!bars(&harness, "DynamicQuantizeLinear x2").is_empty(), "{:?}", bars(&harness, ""));
    // Side by side: what tiny/dq costs against tiny/base, per operator type.
    assert!(
        harness
            .query_all_by(|n| n
                .label()
                .or_else(|| n.value())
                .is_some_and(|l| l.starts_with("tiny/dq against tiny/base")))
            .next()
            .is_some(),
        "the comparison line"
    );
    assert!(harness.query_by_label("Cancel").is_none(), "the worker finished");
}
