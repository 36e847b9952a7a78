//! The desktop app driven through its accessibility tree with egui_kittest: no display needed.
#![cfg(feature = "gui")]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{fixture, settle};
use edgescope::analysis::PreparedTrace;
use edgescope::app::{Command, EdgescopeApp, SavedState, Tab};
use edgescope::report::{Format, TableSort};
use eframe::egui;
use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};

fn harness(session: PathBuf, tab: Tab) -> Harness<'static, EdgescopeApp> {
    // The devices list beside the session copy, never the user's own.
    let devices_file = Some(session.with_file_name("devices.toml"));
    let saved = SavedState { hint_dismissed: true, tab, devices_file, ..SavedState::default() };
    let mut harness = Harness::builder()
        .with_size(egui::vec2(1400.0, 900.0))
        .build_eframe(move |cc| EdgescopeApp::with_state(cc.egui_ctx.clone(), saved, Some(session)));
    settle(&mut harness);
    harness
}

/// The text of a node: a button's label, or a text label's value.
fn text_of(node: &egui_kittest::kittest::AccessKitNode<'_>) -> Option<String> {
    node.label().or_else(|| node.value())
}

/// The text of the label that starts with `prefix`.
fn label_starting(harness: &Harness<'_, EdgescopeApp>, prefix: &str) -> String {
    let node = harness.query_all_by(|n| text_of(n).is_some_and(|l| l.starts_with(prefix))).next();
    node.and_then(|n| text_of(&n.accesskit_node())).unwrap_or_else(|| panic!("no text starts with {prefix:?}"))
}

/// True when some node's text starts with `prefix`.
fn has_text_starting(harness: &Harness<'_, EdgescopeApp>, prefix: &str) -> bool {
    harness.query_all_by(|n| text_of(n).is_some_and(|l| l.starts_with(prefix))).next().is_some()
}

/// A copy of the v1 fixture session next to the fixtures it names, so the test can save without touching it.
fn session_copy(dir: &tempfile::TempDir) -> PathBuf {
    let text = std::fs::read_to_string(fixture("sessions/v1.json")).expect("fixture session");
    let session = edgescope::session::Session::from_json(&text, &fixture("sessions/v1.json")).expect("parses");
    let path = dir.path().join("session.json");
    session.save(&path).expect("save copy");
    path
}

#[test]
fn dragging_a_threshold_slider_updates_the_readouts_to_the_engines_numbers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut harness = harness(session_copy(&dir), Tab::Explore);
    settle(&mut harness);
    assert_eq!(harness.state().saved.selected_variant.as_deref(), Some("tiny/ee"));
    assert!(!harness.state().world.dirty, "looking at a session does not change it");
    let accuracy_before = label_starting(&harness, "Accuracy: ");
    let exit_rate_before = label_starting(&harness, "Exit rate, exit 1: ");

    // Drag the slider from its handle to the far left: a tiny entropy threshold, almost no early exits.
    let slider = harness.get_by_role_and_label(Role::Slider, "Exit 1 threshold");
    let rect = slider.rect();
    // Pressing on the rail moves the value there; then drag to the far left.
    let start = rect.center();
    harness.hover_at(start);
    harness.drag_at(start);
    harness.run_steps(2);
    harness.hover_at(egui::pos2(rect.left() + 1.0, rect.center().y));
    harness.run_steps(2);
    harness.drop_at(egui::pos2(rect.left() + 1.0, rect.center().y));
    settle(&mut harness);

    let policy = harness.state().world.session.policies.get("tiny/ee").cloned().expect("the drag set a policy");
    let accuracy_after = label_starting(&harness, "Accuracy: ");
    let exit_rate_after = label_starting(&harness, "Exit rate, exit 1: ");
    assert_ne!(exit_rate_before, exit_rate_after, "the exit rate follows the slider");

    // The readouts are exactly what the engine computes for that threshold.
    let session = &harness.state().world.session;
    let run = session.runs.iter().find(|r| r.info.variant == "tiny/ee").expect("run");
    let base = session.runs.iter().find(|r| r.info.variant == "tiny/base").expect("base run");
    let outcome = PreparedTrace::new(&run.trace, Some(&base.trace), policy.criterion).evaluate(&policy);
    assert!(accuracy_after.starts_with(&format!("Accuracy: {:.2} %", outcome.accuracy * 100.0)), "{accuracy_after}");
    assert_eq!(exit_rate_after, format!("Exit rate, exit 1: {:.2} %", outcome.exit_rates[0] * 100.0));
    assert!(accuracy_before.starts_with("Accuracy: "));
}

#[test]
fn a_run_can_be_started_and_cancelled_keeping_its_samples_and_the_old_traces() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut harness = harness(session_copy(&dir), Tab::Runs);
    settle(&mut harness);
    let runs_before = harness.state().world.session.runs.clone();
    // heavy.onnx takes milliseconds per sample: 500 samples leave time to cancel.
    harness.state_mut().send(Command::AddFiles(vec![fixture("heavy.onnx"), fixture("fmnist500/dataset.toml")]));
    settle(&mut harness);
    harness.state_mut().send(Command::SetRunDataset("fmnist500".into()));
    settle(&mut harness);
    let selection = harness.state().world.run_selection.clone();
    for name in selection.iter().filter(|n| n.as_str() != "heavy") {
        harness.state_mut().send(Command::ToggleRunSelection(name.clone()));
    }
    settle(&mut harness);
    harness.get_by_label("Run selected").click();
    settle(&mut harness);
    let started = Instant::now();
    while harness.query_by_label("Cancel").is_none() && started.elapsed() < Duration::from_secs(30) {
        harness.step();
        std::thread::sleep(Duration::from_millis(10));
    }
    harness.get_by_label("Cancel").click();
    let started = Instant::now();
    while harness.state().world.jobs.iter().any(|j| j.handle.is_some()) && started.elapsed() < Duration::from_secs(60) {
        harness.step();
        std::thread::sleep(Duration::from_millis(10));
    }
    let job = harness.state().world.jobs.last().expect("a job");
    assert!(job.handle.is_none(), "the job stopped");
    assert!(job.phase.starts_with("cancelled"), "{}", job.phase);
    assert!(job.done < 500, "cancel really stopped the run ({} samples)", job.done);
    let runs_after = &harness.state().world.session.runs;
    for run in &runs_before {
        assert!(runs_after.contains(run), "an incomplete run replaces no complete trace");
    }
    for run in runs_after.iter().filter(|r| !runs_before.contains(r)) {
        assert_eq!(run.info.variant, "heavy");
        assert!(!run.info.complete && run.trace.len() == job.done, "the measured samples are kept, incomplete");
    }
}

#[test]
fn a_bad_file_shows_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broken = dir.path().join("broken.onnx");
    std::fs::write(&broken, b"not an onnx model").expect("write");
    let mut harness = harness(session_copy(&dir), Tab::Models);
    settle(&mut harness);
    harness.state_mut().send(Command::AddFiles(vec![broken.clone()]));
    settle(&mut harness);
    let message = label_starting(&harness, "Error: ");
    assert!(message.contains("broken.onnx") && message.contains("not a usable ONNX model"), "{message}");
    // Dismissing removes it.
    harness.get_by_label("dismiss").click();
    settle(&mut harness);
    assert!(!has_text_starting(&harness, "Error: "));
}

#[test]
fn the_compare_tab_shows_the_study_tables() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut harness = harness(session_copy(&dir), Tab::Compare);
    settle(&mut harness);
    for title in ["Table 2 - fidelity and compression", "Tables 3-6 - performance", "Table 7 - early exit"] {
        assert!(has_text_starting(&harness, title), "{title}");
    }
    assert!(has_text_starting(&harness, "tiny/ee (acc-opt, T = "));
    assert!(has_text_starting(&harness, "tiny/ee (inf-opt, T = "));
    // Sorting by accuracy puts the most accurate row first.
    harness.get_all_by_label("Accuracy (%)").next().expect("Table 2 header").click();
    settle(&mut harness);
    let sort = TableSort { table: "table2".to_string(), column: 4, ascending: false };
    assert_eq!(harness.state().world.table_sort, Some(sort));
}

/// The fields of one CSV line (quoted fields may hold commas and doubled quotes).
fn csv_fields(line: &str) -> Vec<String> {
    let (mut fields, mut field, mut quoted, mut chars) = (Vec::new(), String::new(), false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// The header and rows of the CSV section whose title starts with `title`.
fn csv_section(csv: &str, title: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut lines = csv.lines().skip_while(|l| !l.starts_with(&format!("# {title}"))).skip(1);
    let header = csv_fields(lines.next().expect("a header"));
    let rows = lines.take_while(|l| !l.is_empty() && !l.starts_with("# ")).map(csv_fields).collect();
    (header, rows)
}

#[test]
fn a_sorted_table_exports_as_csv_in_the_order_on_screen_with_plain_numbers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut harness = harness(session_copy(&dir), Tab::Compare);
    settle(&mut harness);
    let export = |harness: &mut Harness<'_, EdgescopeApp>, name: &str| {
        let path = dir.path().join(name);
        harness.state_mut().send(Command::ExportTables(path.clone(), Format::Csv));
        settle(harness);
        std::fs::read_to_string(&path).expect("the CSV was written")
    };
    let (header, unsorted) = csv_section(&export(&mut harness, "unsorted.csv"), "Table 2");
    let model = header.iter().position(|h| h == "Model").expect("Model column");
    let accuracy = header.iter().position(|h| h == "Accuracy (%)").expect("Accuracy column");
    let speedup_header = csv_section(&export(&mut harness, "again.csv"), "Tables 3-6").0;
    assert!(speedup_header.iter().any(|h| h == "Speed-up (x)"), "units in the header: {speedup_header:?}");
    assert!(unsorted.len() >= 3, "{unsorted:?}");
    let models: Vec<String> = unsorted.iter().map(|r| r[model].clone()).collect();

    // Descending, then ascending: each file lists Table 2 as the screen shows it.
    for (click, descending) in [("Accuracy (%)", true), ("Accuracy (%) (descending)", false)] {
        harness.get_all_by_label(click).next().expect("Table 2's accuracy header").click();
        settle(&mut harness);
        // A label and its text run both carry the text: each cell appears twice in a row.
        let mut on_screen: Vec<String> = harness
            .query_all_by(|n| text_of(n).is_some_and(|t| models.contains(&t)))
            .filter_map(|n| text_of(&n.accesskit_node()))
            .collect();
        on_screen.dedup();
        on_screen.truncate(models.len());
        let name = if descending { "descending.csv" } else { "ascending.csv" };
        let (_, rows) = csv_section(&export(&mut harness, name), "Table 2");
        let exported: Vec<String> = rows.iter().map(|r| r[model].clone()).collect();
        assert_eq!(exported, on_screen, "the file's rows are in the order on screen");
        // Plain numbers: they parse, carry no "%" or "x", and follow the sort.
        let values: Vec<f64> = rows.iter().map(|r| r[accuracy].parse().expect("a plain number")).collect();
        let sorted = values.windows(2).all(|w| if descending { w[0] >= w[1] } else { w[0] <= w[1] });
        assert!(sorted, "{values:?}");
        let suffixed = |f: &String| f.strip_suffix(['x', '%']).is_some_and(|n| n.parse::<f64>().is_ok());
        assert!(!rows.iter().flatten().any(suffixed), "no \"1.00x\" or \"89.40%\" fields: {rows:?}");
    }
}

#[test]
fn the_app_opens_on_the_demo_session_with_an_early_exit_variant() {
    let dir = tempfile::tempdir().expect("temp dir");
    let saved = SavedState {
        hint_dismissed: false,
        devices_file: Some(dir.path().join("devices.toml")),
        ..SavedState::default()
    };
    let mut harness = Harness::builder()
        .with_size(egui::vec2(1400.0, 900.0))
        .build_eframe(move |cc| EdgescopeApp::with_state(cc.egui_ctx.clone(), saved, None));
    settle(&mut harness);
    let app = harness.state();
    assert!(app.world.session_path.as_ref().is_some_and(|p| p.ends_with("sessions/demo.json")));
    assert!(app.world.errors.is_empty(), "{:?}", app.world.errors);
    let selected = app.saved.selected_variant.clone().expect("a variant is selected");
    let index = app.world.run_index(&selected).expect("it has a trace");
    assert!(
        app.world.session.runs[index].trace.early_exit_count() > 0,
        "the first view explores an early-exit variant"
    );
    assert!(has_text_starting(&harness, "Start here:"), "the first-start hint shows");
    assert!(has_text_starting(&harness, "Accuracy: "));
    assert!(harness.query_by_role_and_label(Role::Slider, "Exit 1 threshold").is_some());
}

#[test]
fn bare_onnx_files_added_to_a_new_session_get_the_first_float_model_as_base() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("new.json");
    edgescope::session::Session::default().save(&path).expect("save an empty session");
    let mut harness = harness(path, Tab::Models);
    settle(&mut harness);
    let files = ["tiny_ptq.onnx", "tiny_base.onnx", "kinds/tiny_base_probs.onnx"].map(fixture).to_vec();
    harness.state_mut().send(Command::AddFiles(files));
    settle(&mut harness);
    let session = &harness.state().world.session;
    assert_eq!(session.base.as_deref(), Some("tiny_base"));
    assert_eq!(session.base_of("tiny_ptq").as_deref(), Some("tiny_base"));
    assert_eq!(session.base_of("tiny_base_probs").as_deref(), Some("tiny_base"), "compared with the base, not itself");
    let probs = session.variant("tiny_base_probs").expect("added");
    assert!(probs.outputs.starts_with("probabilities"), "{}", probs.outputs);
    // The first variant's details are open: the Models tab says what its exits hold.
    assert!(has_text_starting(&harness, "exit outputs: logits (no softmax in the graph)"));
}

/// Steps the app until `done` holds (background work arrives between frames), failing after `limit`.
fn step_until(harness: &mut Harness<'_, EdgescopeApp>, limit: Duration, done: impl Fn(&EdgescopeApp) -> bool) {
    let started = Instant::now();
    while !done(harness.state()) {
        assert!(started.elapsed() < limit, "timed out waiting for the app");
        harness.step();
        std::thread::sleep(Duration::from_millis(10));
    }
    settle(harness);
}

#[test]
fn verify_runs_on_the_remote_runner_that_measured_the_trace() {
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, b"app-test-token-0123456789").expect("token");
    let (mut child, address) = common::spawn_runner_process(&dir.path().join("cache"), &token_file);
    let mut harness = harness(session_copy(&dir), Tab::Runs);
    settle(&mut harness);
    // Only the runner's trace of tiny/ee remains: measure it there.
    harness.state_mut().world.session.runs.retain(|r| r.info.variant != "tiny/ee");
    let device = edgescope::app::state::DeviceConfig {
        name: "loopback".into(),
        address: format!("tcp://{address}"),
        token_file: token_file.clone(),
    };
    harness.state_mut().send(Command::AddDevice(device.clone()));
    harness.state_mut().send(Command::ToggleRunDevice("this machine".into()));
    settle(&mut harness);
    // The device went into the devices list the CLI reads (`--device loopback`).
    let devices_file = harness.state().saved.devices_file.clone().expect("test devices file");
    let list = edgescope::net::DeviceList::load(&devices_file).expect("devices list written");
    assert_eq!(list.devices, [device]);
    let selection = harness.state().world.run_selection.clone();
    for name in selection.iter().filter(|n| n.as_str() != "tiny/ee") {
        harness.state_mut().send(Command::ToggleRunSelection(name.clone()));
    }
    if !selection.contains("tiny/ee") {
        harness.state_mut().send(Command::ToggleRunSelection("tiny/ee".into()));
    }
    settle(&mut harness);
    harness.state_mut().send(Command::StartRuns);
    step_until(&mut harness, Duration::from_secs(120), |app| {
        !app.world.jobs.is_empty() && app.world.jobs.iter().all(|j| j.handle.is_none())
    });
    let run = harness.state().world.session.runs.iter().find(|r| r.info.variant == "tiny/ee").expect("remote trace");
    assert_eq!(run.info.runner.as_deref(), Some(format!("tcp://{address}").as_str()));

    harness.state_mut().send(Command::SelectVariant("tiny/ee".into()));
    harness.state_mut().send(Command::SelectTab(Tab::Explore));
    settle(&mut harness);
    harness.get_by_label("Verify").click();
    settle(&mut harness);
    let verify_job = harness.state().world.jobs.last().expect("a verify job");
    assert_eq!(verify_job.device, "loopback", "Verify runs where the trace was measured");
    step_until(&mut harness, Duration::from_secs(120), |app| app.world.verification.is_some());
    let verification = harness.state().world.verification.as_ref().expect("verified");
    assert_eq!(verification.device, "loopback");
    assert_eq!(verification.run.info.runner.as_deref(), Some(format!("tcp://{address}").as_str()));
    let policy = harness.state().world.session.policies.get("tiny/ee").cloned();
    let expected_thresholds = policy.map_or_else(|| verification.policy.thresholds.clone(), |p| p.thresholds);
    assert_eq!(verification.policy.thresholds, expected_thresholds, "the thresholds it ran at are recorded");
    assert!(has_text_starting(&harness, "on loopback at "), "the result names the device and thresholds");
    let job = harness.state().world.jobs.last().expect("job");
    let rate_at_end = job.rate();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(harness.state().world.jobs.last().expect("job").rate(), rate_at_end, "a finished job's rate is frozen");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_budget_box_moves_inf_opt_in_explore() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut harness = harness(session_copy(&dir), Tab::Explore);
    settle(&mut harness);
    let inf_opt_at = |harness: &mut Harness<'_, EdgescopeApp>, budget_pp: f64| {
        harness.state_mut().send(Command::SetBudget(budget_pp));
        settle(harness);
        harness.get_by_label("Set inf-opt").click();
        settle(harness);
        harness.state().world.session.policies.get("tiny/ee").cloned().expect("inf-opt set a policy")
    };
    let strict = inf_opt_at(&mut harness, 0.0);
    let loose = inf_opt_at(&mut harness, 20.0);
    assert_ne!(strict, loose, "a larger accuracy budget lets inf-opt exit earlier");
    // Exiting earlier under entropy means a higher threshold.
    assert!(loose.thresholds[0] > strict.thresholds[0], "{strict:?} vs {loose:?}");
}

#[test]
fn opening_another_session_with_unsaved_changes_asks_first() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = session_copy(&dir);
    let mut harness = harness(path.clone(), Tab::Explore);
    settle(&mut harness);
    // An unsaved change: a policy.
    let policy = edgescope::analysis::Policy::uniform(edgescope::analysis::Criterion::Entropy, 0.2, 1);
    harness.state_mut().send(Command::SetPolicy("tiny/ee".into(), policy.clone()));
    settle(&mut harness);
    assert!(harness.state().world.dirty);
    harness.state_mut().send(Command::NewSession);
    settle(&mut harness);
    assert!(harness.state().world.unsaved_prompt.is_some(), "the command waits for an answer");
    assert!(has_text_starting(&harness, "Save the changes to"), "the prompt shows");
    assert!(!harness.state().world.session.runs.is_empty(), "nothing discarded yet");
    harness.get_by_label("Cancel").click();
    settle(&mut harness);
    assert!(harness.state().world.dirty && !harness.state().world.session.runs.is_empty(), "cancel keeps the work");

    // Save from the prompt writes the file, then goes on.
    harness.state_mut().send(Command::NewSession);
    settle(&mut harness);
    harness.get_by_label("Save").click();
    settle(&mut harness);
    assert!(harness.state().world.session.runs.is_empty(), "then the new session opened");
    let saved = edgescope::session::Session::load(&path).expect("saved session loads");
    assert_eq!(saved.policies.get("tiny/ee"), Some(&policy), "the change was saved first");
}

#[test]
fn ctrl_s_saves_and_the_bundled_demo_is_never_overwritten() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = session_copy(&dir);
    let mut harness = harness(path.clone(), Tab::Explore);
    let policy = edgescope::analysis::Policy::uniform(edgescope::analysis::Criterion::Entropy, 0.3, 1);
    harness.state_mut().send(Command::SetPolicy("tiny/ee".into(), policy.clone()));
    settle(&mut harness);
    harness.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::S);
    settle(&mut harness);
    assert!(!harness.state().world.dirty, "Ctrl+S saved");
    let saved = edgescope::session::Session::load(&path).expect("saved session loads");
    assert_eq!(saved.policies.get("tiny/ee"), Some(&policy));
    assert!(!edgescope::app::is_demo_session(&path));
    let demo = edgescope::app::demo_session_path().expect("the repository has its demo session");
    assert!(edgescope::app::is_demo_session(&demo));
}

#[test]
fn presentation_mode_turns_on_the_light_theme_and_hides_the_file_controls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut harness = harness(session_copy(&dir), Tab::Explore);
    assert!(harness.ctx.global_style().visuals.dark_mode, "the working theme is dark");
    assert!(harness.query_by_label("Open…").is_some());
    harness.get_by_label("Present").click();
    settle(&mut harness);
    assert!(harness.state().saved.presentation);
    assert!(!harness.ctx.global_style().visuals.dark_mode, "presentation is light");
    assert!(harness.ctx.zoom_factor() > 1.2, "and large");
    assert!(harness.query_by_label("Open…").is_none(), "file controls are hidden");
    assert!(has_text_starting(&harness, "tiny/ee"), "the headline card shows");
    harness.key_press(egui::Key::Escape);
    settle(&mut harness);
    assert!(!harness.state().saved.presentation && harness.ctx.global_style().visuals.dark_mode, "Esc leaves it");
}

#[test]
fn an_exported_figure_has_axes_a_legend_and_the_headline_in_svg_and_png() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut harness = harness(session_copy(&dir), Tab::Explore);
    let headline = label_starting(&harness, "tiny/ee");
    assert!(headline.contains("faster") || headline.contains("slower"), "{headline}");
    assert!(headline.contains(" pp"), "{headline}");
    let svg_path = dir.path().join("figure.svg");
    harness.state_mut().send(Command::ExportFigure(svg_path.clone()));
    settle(&mut harness);
    let svg = std::fs::read_to_string(&svg_path).expect("the SVG was written");
    for text in ["mean latency (ms)", "accuracy (%)", "tiny/ee: accuracy vs mean latency", "Pareto front", "current"] {
        assert!(svg.contains(text), "the figure has {text:?}");
    }
    assert!(svg.contains(r#"class="legend""#) && svg.matches(r#"class="tick""#).count() >= 6, "legend and ticks");
    assert!(svg.contains(&format!(r#"class="headline">{}<"#, headline.replace('>', "&gt;").replace('<', "&lt;"))));

    let png_path = dir.path().join("figure.png");
    harness.state_mut().send(Command::ExportFigure(png_path.clone()));
    settle(&mut harness);
    let png = image::open(&png_path).expect("the PNG was written").to_rgba8();
    let (width, height) = png.dimensions();
    assert_eq!((width, height), (2 * 960, 2 * 560), "PNG at twice the figure's size");
    // Text and lines are drawn: a good share of the pixels are not white.
    let inked = png.pixels().filter(|p| p.0[0] < 200 || p.0[1] < 200 || p.0[2] < 200).count();
    assert!(inked > (width * height / 200) as usize, "{inked} inked pixels");
}

#[test]
fn devices_an_older_version_saved_in_the_app_move_into_the_shared_list() {
    let dir = tempfile::tempdir().expect("temp dir");
    let devices_file = dir.path().join("devices.toml");
    let token_file = dir.path().join("token");
    let mut list = edgescope::net::DeviceList::default();
    let shared = edgescope::net::DeviceConfig {
        name: "orin".into(),
        address: "tcp://127.0.0.1:9".into(),
        token_file: token_file.clone(),
    };
    list.upsert(shared.clone());
    list.save(&devices_file).expect("devices file");
    // An app state as versions before the shared list saved it: its devices inside.
    let old_state = serde_json::json!({
        "hint_dismissed": true,
        "devices": [
            {"name": "pi5", "address": "tcp://127.0.0.1:10", "token_file": token_file},
            {"name": "orin", "address": "tcp://127.0.0.1:11", "token_file": token_file}
        ]
    });
    let mut saved: SavedState = serde_json::from_value(old_state).expect("old saved state reads");
    saved.devices_file = Some(devices_file.clone());
    let mut harness = Harness::builder()
        .with_size(egui::vec2(1400.0, 900.0))
        .build_eframe(move |cc| EdgescopeApp::with_state(cc.egui_ctx.clone(), saved, None));
    settle(&mut harness);
    let names: Vec<String> = harness.state().world.devices.iter().map(|d| d.name.clone()).collect();
    assert_eq!(names, ["orin", "pi5"], "the list's own entry wins; the old one joins");
    assert_eq!(harness.state().world.devices[0], shared);
    let written = edgescope::net::DeviceList::load(&devices_file).expect("list");
    assert_eq!(written.devices.len(), 2, "the moved device is in the file the CLI reads");
    assert!(harness.state().saved.legacy_devices.is_empty());
    let state = serde_json::to_value(&harness.state().saved).expect("saved state");
    assert!(state.get("devices").is_none(), "the app's own state no longer holds devices: {state}");
}
