//! The demo zoo: every committed manifest loads and runs, and edgescope's accuracy on the test split is exactly
//! what the recipe measured with Python onnxruntime (`models/accuracy.json`).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use edgescope::data::Dataset;
use edgescope::model::Variant;
use edgescope::record::RunMode;
use edgescope::runtime::LocalRunner;
use edgescope::session::Session;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn manifests() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for family in std::fs::read_dir(repo("models")).expect("models/").filter_map(Result::ok) {
        if !family.path().is_dir() || family.file_name() == "recipe" {
            continue;
        }
        for file in std::fs::read_dir(family.path()).expect("family folder").filter_map(Result::ok) {
            if file.path().extension().is_some_and(|e| e == "toml") {
                found.push(file.path());
            }
        }
    }
    found.sort();
    found
}

fn accuracy_json() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(repo("models/accuracy.json")).expect("models/accuracy.json"))
        .expect("valid JSON")
}

#[test]
fn every_manifest_loads_and_runs_on_a_few_samples() {
    let manifests = manifests();
    assert!(manifests.len() >= 10, "the zoo has {} manifests", manifests.len());
    let mut dataset = Dataset::open(&repo("assets/fashion-mnist/test")).expect("test split");
    assert_eq!(dataset.len(), 10_000);
    dataset.truncate(16);
    let dataset = Arc::new(dataset);
    let mut runner = LocalRunner::new();
    let expected = accuracy_json();
    for manifest in &manifests {
        let variant = Variant::open(manifest).unwrap_or_else(|e| panic!("{e}"));
        assert!(expected.get(&variant.name).is_some(), "{} is missing from models/accuracy.json", variant.name);
        let job = edgescope::runtime::Job {
            variant: Arc::new(variant),
            dataset: Arc::clone(&dataset),
            settings: common::quick_settings(),
            mode: RunMode::Trace,
            reference: None,
        };
        let run = common::trace(&mut runner, &job);
        assert_eq!(run.trace.len(), 16, "{}", manifest.display());
    }
}

/// The demo session is `edgescope eval` over the whole zoo: its final-exit (and per-exit) correct counts must
/// equal the recipe's Python onnxruntime counts exactly.
#[test]
fn edgescope_accuracy_equals_the_recipe_numbers() {
    let session = Session::load(&repo("sessions/demo.json")).expect("demo session");
    let expected = accuracy_json();
    let entries = expected.as_object().expect("object");
    let mut compared = 0;
    for (name, want) in entries {
        let run = session
            .runs
            .iter()
            .find(|r| &r.info.variant == name && !session.is_calibration_run(r))
            .unwrap_or_else(|| panic!("the demo session has no run of {name}"));
        assert!(run.info.complete, "{name}");
        assert_eq!(run.trace.len() as u64, want["total"].as_u64().expect("total"), "{name}");
        let exits = want["exits"].as_array().expect("exits");
        assert_eq!(exits.len(), run.trace.exits.len(), "{name}: exit count");
        for (index, want_correct) in exits.iter().enumerate() {
            let exit = &run.trace.exits[index];
            let correct = (0..run.trace.len()).filter(|&s| u32::from(exit.predicted(s)) == run.trace.labels[s]).count();
            assert_eq!(correct as u64, want_correct.as_u64().expect("count"), "{name} exit {index}");
        }
        compared += 1;
    }
    assert!(compared >= 10);
    // The demo session's variants all come from the committed zoo.
    for variant in &session.variants {
        assert!(
            variant.path.starts_with(repo("models")) || Path::new(&variant.path).exists(),
            "{}",
            variant.path.display()
        );
    }
}
