//! The app's dialogs and Explore's certify line keep the UI thread free (issue 12): what they read or compute runs
//! on a worker while the window shows a spinner, and their work can be cancelled. Driven through the
//! accessibility tree with egui_kittest on real fixtures and the bundled demo session.
#![cfg(feature = "gui")]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{session_copy, settle};
use edgescope::app::{Command, EdgescopeApp, SavedState, Tab};
use eframe::egui;
use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};

fn harness(session: Option<PathBuf>, tab: Tab) -> Harness<'static, EdgescopeApp> {
    let saved = SavedState { hint_dismissed: true, tab, ..SavedState::default() };
    let mut harness = Harness::builder()
        .with_size(egui::vec2(1400.0, 1000.0))
        .build_eframe(move |cc| EdgescopeApp::with_state(cc.egui_ctx.clone(), saved, session));
    settle(&mut harness);
    harness
}

/// True when some node's label or value starts with `prefix`.
fn has_text_starting(harness: &Harness<'_, EdgescopeApp>, prefix: &str) -> bool {
    harness.query_all_by(|n| n.label().or_else(|| n.value()).is_some_and(|l| l.starts_with(prefix))).next().is_some()
}

/// Steps frame by frame (spinners repaint for ever, so never `run`) until `done` holds.
fn step_until(
    harness: &mut Harness<'static, EdgescopeApp>,
    what: &str,
    done: impl Fn(&Harness<'static, EdgescopeApp>) -> bool,
) {
    let started = Instant::now();
    while !done(harness) {
        harness.step();
        assert!(started.elapsed() < Duration::from_secs(120), "{what}: {:?}", harness.state().world.errors);
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_exits_dialog_reads_cut_points_on_a_worker_then_trains_and_adds_the_chain() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut harness = harness(Some(session_copy(&dir)), Tab::Models);
    harness.state_mut().send(Command::OpenExitsDialog("tiny/base".into()));
    // The command opens the window at once; the model is read on a worker, a spinner meanwhile.
    harness.step();
    harness.step();
    assert!(harness.query_by_label_contains("Add early exits to tiny/base").is_some(), "the window opened");
    settle(&mut harness);
    assert!(!has_text_starting(&harness, "reading the model's cut points"), "the spinner is gone");
    let texts: Vec<String> = harness
        .query_all_by(|_| true)
        .filter_map(|n| n.accesskit_node().label().or_else(|| n.accesskit_node().value()))
        .collect();
    assert!(texts.iter().any(|t| t.contains("cut point(s);")), "the cut points are listed: {texts:?}");
    let ticked = harness
        .query_all_by_role(Role::CheckBox)
        .filter(|n| n.accesskit_node().toggled().is_some_and(|t| t == egui::accesskit::Toggled::True))
        .count();
    assert!(ticked >= 1, "the suggested cut points are ticked");

    harness.get_by_label("Train and add").click();
    step_until(&mut harness, "the chain joins the session", |h| {
        h.state().world.session.variants.iter().any(|v| v.path.starts_with(dir.path()) && v.segments > 1)
    });
    harness.run_steps(4);
    let world = &harness.state().world;
    assert!(world.errors.is_empty(), "{:?}", world.errors);
    let chain = world.session.variants.iter().find(|v| v.path.starts_with(dir.path())).expect("the new chain");
    assert!(chain.early_exits >= 1, "{chain:?}");
    assert!(world.jobs.iter().any(|j| j.variant == chain.name), "its trace run started at once");
    assert!(has_text_starting(&harness, "wrote "), "the dialog says what it wrote");
}

#[test]
fn a_study_can_be_cancelled_from_its_window() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut harness = harness(Some(session_copy(&dir)), Tab::Models);
    harness.state_mut().send(Command::OpenStudyWizard(Some("tiny/base".into())));
    settle(&mut harness);
    // The session's models were read on a worker and the wizard's variant preselected.
    let model = harness.get_by_role_and_label(Role::TextInput, "model (float ONNX)").value().unwrap_or_default();
    assert!(model.ends_with("tiny_base.onnx"), "{model:?}");

    harness.get_by_label("Run the study").click();
    step_until(&mut harness, "the study starts", |h| h.query_by_label("Cancel").is_some());
    harness.get_by_label("Cancel").click();
    step_until(&mut harness, "the study stops", |h| !h.state().world.dialogs_busy());
    harness.run_steps(2);
    assert!(has_text_starting(&harness, "cancelled"), "the window says it was cancelled");
    assert!(harness.query_by_label("Cancel").is_none());
    assert!(harness.query_by_label("Run the study").is_some(), "it can run again");
    let world = &harness.state().world;
    assert!(world.errors.is_empty(), "{:?}", world.errors);
    assert!(world.session_path.as_ref().is_some_and(|p| p.starts_with(dir.path())), "the session stays open");
}

#[test]
fn closing_the_profile_window_cancels_its_work() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut harness = harness(Some(session_copy(&dir)), Tab::Models);
    harness.state_mut().send(Command::OpenProfileView("tiny/dq".into()));
    settle(&mut harness);
    harness.get_by_label("Profile").click();
    step_until(&mut harness, "profiling starts", |h| h.state().world.dialogs_busy());
    harness.get_by_label("Close window").click();
    step_until(&mut harness, "the window closes", |h| h.query_by_label("Per-operator latency").is_none());
    assert!(!harness.state().world.dialogs_busy(), "nothing runs for a closed window");
    assert!(harness.state().world.profile_view.is_none());
}

#[test]
fn the_certify_line_is_computed_on_a_worker_and_shown_after_settling() {
    let mut harness = harness(None, Tab::Explore);
    let app = harness.state();
    assert!(app.world.session_path.as_ref().is_some_and(|p| p.ends_with("sessions/demo.json")));
    let selected = app.saved.selected_variant.clone().expect("a variant is selected");
    let (key, result) = app.world.certified.clone().expect("a certificate was computed");
    assert_eq!(key.variant, selected);
    assert_eq!(key.criterion, app.saved.criterion);
    let certificate = result.as_ref().as_ref().expect("the demo's calibration run certifies");
    let calibration = app
        .world
        .session
        .runs
        .iter()
        .find(|r| r.info.variant == selected && app.world.session.is_calibration_run(r))
        .expect("its calibration run");
    assert_eq!(certificate.n, calibration.trace.len(), "certified on every calibration sample");
    let summary = certificate.summary();
    assert!(has_text_starting(&harness, &summary), "the line shows {summary:?}");

    // New levels: a spinner while the worker certifies again, then the new statement.
    let epsilon = harness.get_by_role_and_label(Role::SpinButton, "Certify: epsilon");
    epsilon.focus();
    harness.step();
    harness.key_press(egui::Key::ArrowUp);
    harness.step();
    settle(&mut harness);
    let (key_after, _) = harness.state().world.certified.clone().expect("certified again");
    assert!(key_after.epsilon > key.epsilon, "{} -> {}", key.epsilon, key_after.epsilon);
}

#[test]
fn a_focused_threshold_slider_moves_with_the_arrow_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut harness = harness(Some(session_copy(&dir)), Tab::Explore);
    assert_eq!(harness.state().saved.selected_variant.as_deref(), Some("tiny/ee"));
    let threshold = |h: &Harness<'static, EdgescopeApp>| {
        h.get_by_role_and_label(Role::Slider, "Exit 1 threshold").accesskit_node().numeric_value().expect("a value")
    };
    let before = threshold(&harness);
    harness.get_by_role_and_label(Role::Slider, "Exit 1 threshold").focus();
    harness.step();
    for _ in 0..3 {
        harness.key_press(egui::Key::ArrowRight);
        harness.step();
    }
    settle(&mut harness);
    let after = threshold(&harness);
    assert!(after > before, "ArrowRight raises the threshold: {before} -> {after}");
    let policy = harness.state().world.session.policies.get("tiny/ee").cloned().expect("the keys set a policy");
    assert!((policy.thresholds[0] - after).abs() <= 1e-6 * after.abs().max(1.0), "{policy:?} {after}");
}

#[test]
fn calibration_percentile_thresholds_are_computed_on_a_worker_and_applied() {
    let mut harness = harness(None, Tab::Explore);
    let app = harness.state();
    let selected = app.saved.selected_variant.clone().expect("a variant is selected");
    let criterion = app.saved.criterion;
    let run = app
        .world
        .session
        .runs
        .iter()
        .find(|r| r.info.variant == selected && !app.world.session.is_calibration_run(r))
        .expect("the selected variant's run");
    let expected = edgescope::report::percentile_policy(&app.world.session, run, criterion, &[75.0])
        .expect("the demo has a calibration run");
    assert_ne!(app.world.session.policies.get(&selected), Some(&expected), "Apply must change something");
    harness.get_by_label("Apply").click();
    harness.step();
    settle(&mut harness);
    assert_eq!(harness.state().world.session.policies.get(&selected), Some(&expected), "75th percentile applied");
}
