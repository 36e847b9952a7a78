//! Per-frame work of the explore view while a threshold slider moves, on a 10 000-sample trace with 3 early
//! exits: the real app in an egui_kittest harness (layout, analysis, plots; no GPU rendering). 60 frames per
//! second leaves 16.7 ms per frame. Run with `cargo bench --bench app_frame`.

use std::time::Instant;

use edgescope::analysis::{Criterion, Policy, Trace};
use edgescope::app::{Command, EdgescopeApp, SavedState, Tab};
use edgescope::runtime::{RunInfo, TraceRun};
use edgescope::session::{Session, VariantEntry};
use eframe::egui;

fn synthetic_run(variant: &str, samples: usize, exits: usize) -> TraceRun {
    let mut state = 0x2545f4914f6cdd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let segments: Vec<usize> = (0..exits).collect();
    let mut trace = Trace::new(10, exits, &segments);
    let mut probs = vec![0f32; 10];
    for _ in 0..samples {
        trace.labels.push((next() * 10.0) as u32 % 10);
        trace.preprocess_us.push(20.0);
        for exit in 0..exits {
            let sharpness = 1.0 + next() * 10.0;
            probs.iter_mut().for_each(|p| *p = (next() * sharpness).exp() as f32);
            let sum: f32 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= sum);
            trace.exits[exit].push_distribution(&probs);
            trace.segment_latency_us[exit].push(300.0 + (next() * 100.0) as f32);
        }
    }
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
    harness.run();

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
