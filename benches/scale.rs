//! ImageNet scale: a 50 000-sample, 1000-class trace of a chain with 3 early exits + final, and its base, in a
//! session; prints the session's size, the time to load it, the app's first Explore frame, a criterion switch
//! and the per-frame work while a threshold slider moves. Targets (issue 14): file about 100 MB at most, open
//! under 2 s, frames under 16.7 ms (60 fps).
//!
//! The distributions are synthetic but shaped like an ImageNet classifier's on real photos: per sample a base
//! logit vector with a few strong classes and a long tail (about 30 % of the mass outside the top 16), and each
//! exit a noisier version of it (earlier exits noisier), so exits agree with the base more the deeper they are.
//! Every exit carries its per-sample divergence against the base, as a run compared with its base records.
//!
//! Run with `cargo bench --bench scale` (release build; takes about a minute to generate the data).

use std::time::Instant;

use edgescope::analysis::loyalty::jsd_bits_full;
use edgescope::analysis::{Criterion, DEFAULT_BUDGET_PP, Policy, PreparedTrace, ThresholdGrid, Trace};
use edgescope::app::{Command, EdgescopeApp, SavedState, Tab};
use edgescope::record::{RunInfo, TraceRun};
use edgescope::session::{Session, VariantEntry};
use eframe::egui;

#[path = "../tests/common/app_harness.rs"]
mod app_harness;

const SAMPLES: usize = 50_000;
const CLASSES: usize = 1000;
const EXITS: usize = 4;

struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-300);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

fn softmax(logits: &[f64], out: &mut Vec<f32>) {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    out.clear();
    out.extend(exps.iter().map(|e| (e / sum) as f32));
}

fn traces() -> (Trace, Trace, f64) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut base = Trace::new(CLASSES, 1, &[0]);
    let mut chain = Trace::new(CLASSES, EXITS, &[0, 1, 2, 3]);
    chain.reference = Some("imagenet/base".into());
    let (mut base_logits, mut logits) = (vec![0f64; CLASSES], vec![0f64; CLASSES]);
    let (mut base_probs, mut probs) = (Vec::new(), Vec::new());
    let mut outside_top16 = 0.0;
    for sample in 0..SAMPLES {
        let label = (rng.uniform() * CLASSES as f64) as usize % CLASSES;
        for (class, l) in base_logits.iter_mut().enumerate() {
            *l = 1.4 * rng.normal() + if class == label { 7.0 + 3.0 * rng.uniform() } else { 0.0 };
        }
        softmax(&base_logits, &mut base_probs);
        let mut sorted = base_probs.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        outside_top16 += 1.0 - sorted[..16].iter().map(|&p| f64::from(p)).sum::<f64>();
        base.labels.push(label as u32);
        base.preprocess_us.push(900.0);
        base.segment_latency_us[0].push(12_000.0 * (1.0 + 0.1 * rng.uniform() as f32));
        base.exits[0].push_distribution(&base_probs);
        chain.labels.push(label as u32);
        chain.preprocess_us.push(900.0);
        for exit in 0..EXITS {
            let noise = [1.6, 1.0, 0.5, 0.0][exit];
            for (l, b) in logits.iter_mut().zip(&base_logits) {
                *l = b + noise * rng.normal();
            }
            softmax(&logits, &mut probs);
            chain.exits[exit].push_distribution(&probs);
            chain.exits[exit].reference_jsd_bits.push(jsd_bits_full(&base_probs, &probs) as f32);
            chain.segment_latency_us[exit].push(3_200.0 * (1.0 + 0.1 * rng.uniform() as f32));
        }
        if sample % 10_000 == 9_999 {
            eprintln!("  generated {} samples", sample + 1);
        }
    }
    (base, chain, outside_top16 / SAMPLES as f64)
}

fn main() {
    let started = Instant::now();
    let (base, chain, outside) = traces();
    eprintln!("generated in {:.1} s", started.elapsed().as_secs_f64());
    let mut session = Session::default();
    for (name, trace, tags, base_name) in
        [("imagenet/base", base, "base", None), ("imagenet/ee", chain, "ee", Some("imagenet/base"))]
    {
        session.variants.push(VariantEntry {
            name: name.into(),
            tags: vec![tags.into()],
            base: base_name.map(String::from),
            early_exits: trace.exits.len() - 1,
            num_classes: CLASSES,
            ..VariantEntry::default()
        });
        let info =
            RunInfo { variant: name.into(), dataset: "imagenet-val".into(), complete: true, ..RunInfo::default() };
        session.runs.push(TraceRun { info, trace });
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("imagenet.json");
    let saving = Instant::now();
    session.save(&path).expect("save");
    let save_s = saving.elapsed().as_secs_f64();
    let size_mb = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;

    let loading = Instant::now();
    let loaded = Session::load(&path).expect("load");
    let load_s = loading.elapsed().as_secs_f64();
    // The analysis alone: the first preparation (loyalty of every sample at every exit) and a criterion switch.
    let (chain_trace, base_trace) = (&loaded.runs[1].trace, &loaded.runs[0].trace);
    let started = Instant::now();
    let prepared = PreparedTrace::new(chain_trace, Some(base_trace), Criterion::Entropy);
    let prepare_ms = started.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    let switched = prepared.with_criterion(chain_trace, Criterion::Margin);
    let rescore_ms = started.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    let sweep = switched.sweep(&ThresholdGrid::Quantiles(200), DEFAULT_BUDGET_PP);
    let sweep_ms = started.elapsed().as_secs_f64() * 1e3;
    assert!(sweep.points.len() > 100);
    drop(loaded);

    let saved = SavedState {
        hint_dismissed: true,
        tab: Tab::Explore,
        selected_variant: Some("imagenet/ee".into()),
        ..SavedState::default()
    };
    let opening = Instant::now();
    let mut harness = egui_kittest::Harness::builder()
        .with_size(egui::vec2(1400.0, 900.0))
        .build_eframe(move |cc| EdgescopeApp::with_state(cc.egui_ctx.clone(), saved, Some(path)));
    harness.step();
    let first_frame_s = opening.elapsed().as_secs_f64();
    // The trace is analysed on a worker while the first frames show a spinner; the plots are up once it settles.
    app_harness::settle(&mut harness);
    let plots_s = opening.elapsed().as_secs_f64();

    let mut switch_ms = Vec::new();
    for criterion in [Criterion::MaxProbability, Criterion::Margin, Criterion::Entropy, Criterion::MaxProbability] {
        harness.state_mut().send(Command::SetCriterion(criterion));
        let started = Instant::now();
        harness.step();
        switch_ms.push(started.elapsed().as_secs_f64() * 1e3);
        // The frame measured must be the one that draws the new criterion's plots: the analysis was there already
        // (every criterion is analysed on the worker when the run is first shown) and the switch started no
        // background work, so the frame did not just show a spinner and leave the work to later frames.
        let app = harness.state();
        let index = app.world.run_index("imagenet/ee").expect("the chain's run");
        assert_eq!(app.saved.criterion, criterion, "the switch was applied in the frame measured");
        assert!(
            app.world.cached_analysis(index, criterion).is_some(),
            "the switch frame drew {criterion:?}'s analysis"
        );
        assert!(!app.world.loader.any_busy(), "the switch started background work, so the frame measured less than it");
    }

    let mut frame_ms = Vec::new();
    for step in 0..200 {
        let t = 0.3 + 3.0 * (step as f64 / 200.0);
        let policy = Policy { criterion: Criterion::Entropy, thresholds: vec![t, t * 1.1, t * 1.2] };
        harness.state_mut().send(Command::SetPolicy("imagenet/ee".into(), policy));
        let started = Instant::now();
        harness.step();
        frame_ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    frame_ms.sort_by(f64::total_cmp);
    let at = |q: f64| frame_ms[((frame_ms.len() - 1) as f64 * q) as usize];

    println!("50 000 samples x 1000 classes, 3 early exits + final, and its base (synthetic, ImageNet-shaped):");
    println!("  base mass outside the top 16 classes: {:.1} % (mean)", outside * 100.0);
    println!("  session file: {size_mb:.1} MB (target: about 100 MB at most); saved in {save_s:.2} s");
    println!(
        "  Session::load: {load_s:.2} s; app start to first Explore frame: {first_frame_s:.2} s, to its plots (analysed on a worker): {plots_s:.2} s (target: < 2 s)"
    );
    println!(
        "  analysis: first preparation {prepare_ms:.1} ms; criterion switch: re-score {rescore_ms:.1} ms + sweep \
         {sweep_ms:.1} ms"
    );
    println!(
        "  criterion switch frames (first use of each criterion): {} ms (target: < 16.7 ms)",
        switch_ms.iter().map(|m| format!("{m:.1}")).collect::<Vec<_>>().join(", ")
    );
    println!(
        "  per-frame work while dragging a slider (logic + ui, no GPU): median {:.2} ms, p90 {:.2} ms, max {:.2} ms",
        at(0.5),
        at(0.9),
        at(1.0)
    );
}
