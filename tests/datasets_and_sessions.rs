//! Dataset readers agree with each other, and sessions survive a save and a load.

mod common;

use common::{expected, fixture, job, trace};
use edgescope::analysis::Trace;
use edgescope::data::Dataset;
use edgescope::record::{RunInfo, RunMode, TraceRun};
use edgescope::runtime::LocalRunner;
use edgescope::session::{Session, VariantEntry};

#[test]
fn idx_npy_and_image_folder_give_the_same_tensors() {
    let idx = Dataset::open(&fixture("fmnist500/dataset.toml")).expect("idx");
    let npy = Dataset::open(&fixture("fmnist500/dataset-npy.toml")).expect("npy");
    let bare = Dataset::open(&fixture("fmnist500/images-idx3-ubyte.gz")).expect("bare idx file");
    assert_eq!(idx.len(), 500);
    assert_eq!(idx.labels, npy.labels);
    assert_eq!(idx.labels, bare.labels);
    assert_eq!(idx.input_shape(), [1, 1, 28, 28]);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for sample in 0..idx.len() {
        idx.load_input(sample, &mut a).expect("idx sample");
        npy.load_input(sample, &mut b).expect("npy sample");
        assert_eq!(a, b, "sample {sample}");
    }

    let folder = Dataset::open(&fixture("folder")).expect("folder");
    assert_eq!(folder.len(), 30);
    assert_eq!(folder.classes.len(), 10);
    let records = expected()["folder"].as_array().expect("folder records").clone();
    let mut lossless = 0;
    for (sample, record) in records.iter().enumerate() {
        let test_index = record["test_index"].as_u64().expect("index") as usize;
        assert_eq!(folder.labels[sample], idx.labels[test_index], "{record}");
        if record["pixels_equal_test_image"].as_bool() == Some(true) {
            folder.load_input(sample, &mut a).expect("folder sample");
            idx.load_input(test_index, &mut b).expect("idx sample");
            assert_eq!(a, b, "{} decodes to the test image", record["file"]);
            lossless += 1;
        }
    }
    assert!(lossless >= 20, "the gray and RGB PNGs are lossless copies");
}

#[test]
fn sessions_round_trip_with_relative_paths() {
    let mut runner = LocalRunner::new();
    let mut quick = job("tiny_ee2.toml", "fmnist500", RunMode::Trace);
    quick.settings.limit = Some(40);
    let run = trace(&mut runner, &quick);
    let mut session = Session::default();
    session.upsert_variant(VariantEntry::of(&quick.variant));
    session.upsert_run(run);
    session.policies.insert(
        "tiny/ee2".into(),
        edgescope::analysis::Policy::uniform(edgescope::analysis::Criterion::Margin, 0.3, 2),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nested").join("s.json");
    session.save(&path).expect("save");
    let loaded = Session::load(&path).expect("load");
    assert_eq!(loaded.variants, session.variants);
    assert_eq!(loaded.policies, session.policies);
    assert_eq!(loaded.runs.len(), 1);
    assert_eq!(loaded.runs[0].info, session.runs[0].info);
    assert!(loaded.runs[0].trace == session.runs[0].trace, "trace survives the round trip bit for bit");
    let text = std::fs::read_to_string(&path).expect("read");
    let stored: serde_json::Value = serde_json::from_str(&text).expect("json");
    let stored_path = stored["variants"][0]["path"].as_str().expect("path");
    assert!(stored_path.starts_with(".."), "paths are stored relative to the session: {stored_path}");
}

#[test]
fn version_1_fixture_still_loads() {
    let session = Session::load(&fixture("sessions/v1.json")).expect("v1 session loads");
    assert!(!session.runs.is_empty());
    for run in &session.runs {
        run.trace.validate().expect("valid trace");
        assert!(run.info.complete);
    }
    assert!(session.variants.iter().all(|v| v.path.exists()), "variant paths resolve next to the fixture");
}

#[test]
fn version_2_fixture_loads_with_its_divergences_and_version_1_is_rewritten_as_2() {
    let session = Session::load(&fixture("sessions/v2.json")).expect("v2 session loads");
    let dq = session.runs.iter().find(|r| r.info.variant == "wide/dq").expect("dq run");
    assert_eq!(dq.trace.reference.as_deref(), Some("wide/base"));
    assert!(dq.trace.exits[0].has_reference_jsd());
    let base = session.runs.iter().find(|r| r.info.variant == "wide/base").expect("base run");
    let outcome = edgescope::analysis::PreparedTrace::new(
        &dq.trace,
        Some(&base.trace),
        edgescope::analysis::Criterion::MaxProbability,
    )
    .evaluate(&edgescope::analysis::Policy::never_exit(edgescope::analysis::Criterion::MaxProbability, 0));
    assert_eq!(outcome.probability_loyalty_error, Some(0.0), "the divergences make it exact");

    let dir = tempfile::tempdir().expect("temp dir");
    let old = Session::load(&fixture("sessions/v1.json")).expect("v1 loads");
    let resaved = dir.path().join("resaved.json");
    old.save(&resaved).expect("saves");
    let text = std::fs::read_to_string(&resaved).expect("read");
    assert!(text.contains("\"version\": 2"), "saved as the newest version");
    let again = Session::load(&resaved).expect("loads again");
    assert_eq!(again.runs.len(), old.runs.len());
    assert!(again.runs.iter().all(|r| r.trace.reference.is_none()), "nothing invented for old traces");
}

#[test]
fn large_traces_stay_compact_on_disk() {
    // 2 000 samples x 1 000 classes x 4 exits of pseudo-random distributions, the worst case for compression.
    let (samples, classes) = (2_000, 1_000);
    let mut trace = Trace::new(classes, 4, &[0, 1, 2, 3]);
    let mut state = 12345u64;
    let mut probs = vec![0f32; classes];
    for s in 0..samples {
        trace.labels.push((s % classes) as u32);
        trace.preprocess_us.push(10.0);
        for exit in 0..4 {
            for p in probs.iter_mut() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                *p = (state >> 40) as f32;
            }
            let sum: f32 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= sum);
            trace.exits[exit].push_distribution(&probs);
            trace.segment_latency_us[exit].push(100.0 + exit as f32);
        }
    }
    trace.validate().expect("valid");
    let mut session = Session::default();
    session
        .runs
        .push(TraceRun { info: RunInfo { variant: "big".into(), complete: true, ..RunInfo::default() }, trace });
    let bytes = session.to_json(std::path::Path::new("/")).len();
    let per_sample_exit = bytes as f64 / (samples * 4) as f64;
    // 50 000 samples x 4 exits at this rate stays far below 1 GB.
    assert!(per_sample_exit < 160.0, "{per_sample_exit:.1} bytes per sample and exit");
}

/// Writes an image folder under `root`: `classes` sub-folders, each with copies of one fixture PNG named
/// `names`, and returns the spec path.
fn image_folder(root: &std::path::Path, classes: &[&str], names: &[&str], spec_extra: &str) -> std::path::PathBuf {
    let png = fixture("folder/0_T-shirt_top/test005_gray.png");
    for class in classes {
        for name in names {
            let path = root.join(class).join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::copy(&png, &path).expect("copy");
        }
    }
    let spec = root.join("dataset.toml");
    std::fs::write(
        &spec,
        format!(
            "format = \"edgescope-dataset\"\nversion = 3\nname = \"folder\"\nkind = \"folder\"\n{spec_extra}\n\
             [preprocess]\nscale = 0.00392156862745098\nmean = [0.5]\nstd = [0.5]\nlayout = \"nchw\"\n\
             channels = 1\nresize = [28, 28]\n"
        ),
    )
    .expect("spec");
    spec
}

#[test]
fn folder_labels_follow_torchvision_image_folder() {
    // Twelve classes with numeric prefixes: ImageFolder sorts the names, so "10_k" is label 1, not 10.
    let dir = tempfile::tempdir().expect("temp dir");
    let classes: Vec<String> = (0..12).map(|i| format!("{i}_{}", (b'a' + i as u8) as char)).collect();
    let class_refs: Vec<&str> = classes.iter().map(String::as_str).collect();
    // Images in nested folders and with upper-case endings count too; other files do not.
    let spec = image_folder(dir.path(), &class_refs, &["b.png", "a.PNG", "deeper/c.png", "notes.txt"], "");
    let dataset = Dataset::open(&spec).expect("opens");
    let mut sorted = classes.clone();
    sorted.sort();
    assert_eq!(dataset.classes, sorted);
    assert_eq!(dataset.classes[1], "10_k");
    assert_eq!(dataset.len(), 36);
    assert_eq!(&dataset.labels[3..6], &[1, 1, 1]);
    // Within a class: the class folder's own files (sorted: "a.PNG" before "b.png"), then sub-folders.
    let order: Vec<String> = (0..3)
        .map(|i| {
            let path = dataset.sample_source(i).expect("file");
            path.strip_prefix(dir.path().join("0_a")).expect("in class 0").display().to_string()
        })
        .collect();
    assert_eq!(order, ["a.PNG", "b.png", "deeper/c.png"]);

    // Naming the classes in the spec: their count must match the folders, or every later label would shift.
    let spec = image_folder(dir.path(), &[], &[], "classes = [\"one\", \"two\"]");
    let error = Dataset::open(&spec).expect_err("12 folders, 2 names").to_string();
    assert!(error.contains("12 class sub-folders") && error.contains("class_folders"), "{error}");
}

#[test]
fn class_folders_file_maps_a_validation_subset_of_1000_classes() {
    let dir = tempfile::tempdir().expect("temp dir");
    // ImageNet's LOC_synset_mapping.txt layout: "<wnid> <names>" per line, label = line number.
    let mapping: String = (0..1000).map(|i| format!("n{:08} class number {i}\n", 1_440_764 + i * 7)).collect();
    std::fs::write(dir.path().join("synsets.txt"), mapping).expect("mapping");
    let present = ["n01440764", "n01441324", "n01447750"]; // labels 0, 80 and 998 (see the formula)
    let spec = image_folder(dir.path(), &present, &["x.png"], "class_folders = \"synsets.txt\"");
    let dataset = Dataset::open(&spec).expect("opens");
    assert_eq!(dataset.classes.len(), 1000);
    assert_eq!(dataset.classes[80], "class number 80");
    assert_eq!(dataset.labels, vec![0, 80, 998]);

    // A folder the mapping does not name is an error naming it; so is the field in an older spec version.
    std::fs::create_dir_all(dir.path().join("n99999999")).expect("mkdir");
    let error = Dataset::open(&spec).expect_err("unmapped folder").to_string();
    assert!(error.contains("n99999999") && error.contains("synsets.txt"), "{error}");
    std::fs::remove_dir(dir.path().join("n99999999")).expect("rmdir");
    let text = std::fs::read_to_string(&spec).expect("spec").replace("version = 3", "version = 2");
    std::fs::write(&spec, text).expect("spec");
    let error = Dataset::open(&spec).expect_err("version 2").to_string();
    assert!(error.contains("version = 3"), "{error}");

    // [folder_labels] inline.
    let inline = tempfile::tempdir().expect("temp dir");
    let spec = image_folder(inline.path(), &["cat", "dog"], &["x.png"], "[folder_labels]\ncat = 281\ndog = 207");
    let dataset = Dataset::open(&spec).expect("opens");
    assert_eq!(dataset.labels, vec![281, 207]);
    assert_eq!(dataset.classes.len(), 282);
}
