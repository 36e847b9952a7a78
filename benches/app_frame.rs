//! Per-frame work of the explore view while a threshold slider moves, on a 10 000-sample trace with 3 early
//! exits: the real app in an egui_kittest harness (layout, analysis, plots; no GPU rendering). 60 frames per
//! second leaves 16.7 ms per frame. Run with `cargo bench --bench app_frame`.

use std::time::Instant;

use edgescope::analysis::{Criterion, Policy};
use edgescope::app::{Command, EdgescopeApp, SavedState, Tab};
use edgescope::record::{RunInfo, TraceRun};
use edgescope::session::{Session, VariantEntry};
use eframe::egui;

#[path = "../tests/common/app_harness.rs"]
mod app_harness;

#[path = "support/synthetic.rs"]
mod synthetic;
use synthetic::synthetic_trace;

fn synthetic_run(variant: &str, samples: usize, exits: usize) -> TraceRun {
    let trace = synthetic_trace(samples, exits, 10, 300.0);
    let info = RunInfo { variant: variant.into(), dataset: "synthetic".into(), complete: true, ..RunInfo::default() };
    TraceRun { info, trace }
}

fn main() {
    let mut session = Session::default();
    for (name, exits, tags) in [("synthetic/base", 1, "base"), ("synthetic/ee", 4, "ee")] {
        session.variants.push(VariantEntry {
            name: name.into(),
            tags: vec![tags.into()],
            base: (tags == "ee").then(|| "synthetic/base".to_string()),
            early_exits: exits - 1,
            num_classes: 10,
            ..VariantEntry::default()
        });
        session.runs.push(synthetic_run(name, 10_000, exits));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("synthetic.json");
    session.save(&path).expect("save");

    let saved = SavedState {
        hint_dismissed: true,
        tab: Tab::Explore,
        selected_variant: Some("synthetic/ee".into()),
        ..SavedState::default()
    };
    let mut harness = egui_kittest::Harness::builder()
        .with_size(egui::vec2(1400.0, 900.0))
        .build_eframe(move |cc| EdgescopeApp::with_state(cc.egui_ctx.clone(), saved, Some(path)));
    app_harness::settle(&mut harness);

    let mut frame_ms = Vec::new();
    for step in 0..300 {
        let t = 0.05 + 1.5 * (step as f64 / 300.0);
        let policy = Policy { criterion: Criterion::Entropy, thresholds: vec![t, t * 1.1, t * 1.2] };
        harness.state_mut().send(Command::SetPolicy("synthetic/ee".into(), policy));
        let started = Instant::now();
        harness.step();
        frame_ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    frame_ms.sort_by(f64::total_cmp);
    let at = |q: f64| frame_ms[((frame_ms.len() - 1) as f64 * q) as usize];
    println!("explore view while dragging, 10 000 samples x 3 early exits + final:");
    println!(
        "  per-frame work (logic + ui, no GPU): median {:.2} ms, p90 {:.2} ms, max {:.2} ms",
        at(0.5),
        at(0.9),
        at(1.0)
    );
    println!("  budget at 60 fps: 16.7 ms per frame");
}
