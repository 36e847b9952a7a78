//! Inserting early exits into a plain classifier (issue 10, part 3), with real ONNX Runtime: the chain's final
//! logits are the base model's for every sample, heads train deterministically, the demo ResNet's exits reach the
//! PyTorch-trained heads' accuracy (ignored: about two minutes), and bad input gets a clear message and leaves
//! nothing behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use edgescope::data::Dataset;
use edgescope::model::Variant;
use edgescope::model::proto::{NodeProto, read_model};
use edgescope::optimize::exits_add::{AddExitsEvent, AddExitsRequest, add_exits};
use edgescope::optimize::heads::{HeadKind, TrainConfig};
use edgescope::runtime::CancelToken;
use ort::session::Session;
use ort::value::TensorRef;
use prost::Message;

use common::fixture;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn session(path: &Path) -> Session {
    let environment = edgescope::runtime::ort_environment().expect("ONNX Runtime loads");
    Session::builder(environment)
        .expect("builder")
        .with_intra_threads(2)
        .expect("threads")
        .commit_from_file(path)
        .unwrap_or_else(|e| panic!("ONNX Runtime refuses {}: {e}", path.display()))
}

/// Every exit's outputs (`[samples, classes]` row-major per exit, depth order) of a chain over a dataset, run
/// `batch` samples at a time; a single-graph variant gives its one output.
fn run_chain(variant: &Variant, dataset: &Dataset, batch: usize) -> Vec<Vec<f32>> {
    let mut sessions: Vec<Session> = variant.segments.iter().map(|s| session(&s.path)).collect();
    let shape = dataset.input_shape();
    let mut outputs = vec![Vec::new(); variant.segments.iter().filter(|s| s.exit.is_some()).count()];
    let mut one = Vec::new();
    let mut start = 0;
    while start < dataset.len() {
        let count = batch.min(dataset.len() - start);
        let mut input = Vec::new();
        for index in start..start + count {
            dataset.load_input(index, &mut one).expect("sample");
            input.extend_from_slice(&one);
        }
        let mut carried: (Vec<usize>, Vec<f32>) = (vec![count, shape[1], shape[2], shape[3]], input);
        for (k, (session, segment)) in sessions.iter_mut().zip(&variant.segments).enumerate() {
            let tensor = TensorRef::from_array_view((carried.0.clone(), carried.1.as_slice())).expect("tensor");
            let result = session.run(ort::inputs![segment.input.as_str() => tensor]).expect("runs");
            let exit = segment.exit.as_deref().expect("exit");
            let (_, values) = result[exit].try_extract_tensor::<f32>().expect("float exit");
            outputs[k].extend_from_slice(values);
            if let Some(carry) = &segment.carry {
                let (dims, values) = result[carry.as_str()].try_extract_tensor::<f32>().expect("float carry");
                carried = (dims.iter().map(|&d| d as usize).collect(), values.to_vec());
            }
        }
        start += count;
    }
    outputs
}

fn accuracy(logits: &[f32], labels: &[u32]) -> f64 {
    let classes = logits.len() / labels.len();
    let correct = labels
        .iter()
        .enumerate()
        .filter(|(i, label)| {
            let row = &logits[i * classes..(i + 1) * classes];
            let best = (0..classes).fold(0, |b, c| if row[c] > row[b] { c } else { b });
            best as u32 == **label
        })
        .count();
    correct as f64 / labels.len() as f64
}

/// The chain's final logits against the base model's, sample by sample: the same top-1 everywhere, values within
/// float rounding (ONNX Runtime may sum in another order across a segment boundary). Returns the largest difference.
fn assert_final_equals_base(base: &[f32], chain: &[f32], classes: usize) -> f32 {
    assert_eq!(base.len(), chain.len());
    let mut largest = 0f32;
    for (sample, (b, c)) in base.chunks(classes).zip(chain.chunks(classes)).enumerate() {
        let argmax = |row: &[f32]| (0..classes).fold(0, |m, k| if row[k] > row[m] { k } else { m });
        assert_eq!(argmax(b), argmax(c), "sample {sample}: top-1 of the chain differs from the base's");
        for (x, y) in b.iter().zip(c) {
            let difference = (x - y).abs();
            assert!(difference <= 1e-5 * x.abs().max(1.0), "sample {sample}: final logit {y} vs base {x}");
            largest = largest.max(difference);
        }
    }
    largest
}

fn entries(directory: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(directory)
        .expect("folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn tiny_request(out: &Path, at: &str) -> AddExitsRequest {
    let mut request =
        AddExitsRequest::new(fixture("tiny_base.onnx"), vec![at.into()], fixture("fmnist500"), out.to_path_buf());
    request.val = Some(fixture("calib100"));
    request.config = TrainConfig { epochs: 8, seed: 11, ..TrainConfig::default() };
    request.intra_threads = 1;
    request
}

#[test]
fn one_exit_on_the_tiny_cnn_keeps_the_final_logits_and_trains_deterministically() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let out = scratch.path().join("tiny-ee");
    let mut events = Vec::new();
    // `late` is the flattened [N, 400] tensor before the classifier: a head reads it as it is.
    let outcome = add_exits(&tiny_request(&out, "late"), &mut |e| events.push(e), &CancelToken::new()).expect("adds");
    // Progress: placed, features for both sets, every epoch, the head, writing.
    assert!(matches!(&events[0], AddExitsEvent::Placed { tensors } if tensors.len() == 1));
    assert!(events.iter().any(|e| matches!(e, AddExitsEvent::Features { set: "val", done: 100, total: 100 })));
    let epochs = events.iter().filter(|e| matches!(e, AddExitsEvent::Epoch { .. })).count();
    assert_eq!(epochs, outcome.exits[0].epochs_run);
    assert!(matches!(events.last(), Some(AddExitsEvent::Writing)));
    assert_eq!(outcome.samples, (500, 100));
    let exit = &outcome.exits[0];
    assert!(!exit.pooled && exit.features == 400, "{exit:?}");
    assert!(exit.val_accuracy > 0.5, "a head on the tiny CNN's late features: {}", exit.val_accuracy);
    assert_eq!(entries(&out), vec!["tiny_base-ee.toml", "tiny_base-s1.onnx", "tiny_base-s2.onnx"]);

    let chain = Variant::open(&outcome.chain.manifest).expect("the chain opens");
    assert_eq!(chain.early_exit_count(), 1);
    assert_eq!(chain.segments[0].carry.as_deref(), Some(exit.tensor.as_str()));
    let base = Variant::open(&fixture("tiny_base.onnx")).expect("base");
    let dataset = Dataset::open(&fixture("fmnist500")).expect("dataset");
    let want = run_chain(&base, &dataset, 1);
    let got = run_chain(&chain, &dataset, 1);
    assert_final_equals_base(&want[0], &got[1], 10);
    // The ONNX head gives the validation accuracy the trainer measured.
    let calib = Dataset::open(&fixture("calib100")).expect("calib");
    let exit_logits = &run_chain(&chain, &calib, 1)[0];
    assert!((accuracy(exit_logits, &calib.labels) - exit.val_accuracy).abs() < 0.015);

    // Same seed, same files; the model's cut named by its tensor works the same as `late`.
    let again = scratch.path().join("again");
    add_exits(&tiny_request(&again, &exit.tensor), &mut |_| {}, &CancelToken::new()).expect("adds again");
    for file in ["tiny_base-s1.onnx", "tiny_base-s2.onnx"] {
        assert!(std::fs::read(out.join(file)).expect("read") == std::fs::read(again.join(file)).expect("read"));
    }
    // An mlp head on a pooled [N, 16, 5, 5] tensor trains and runs too.
    let mlp = scratch.path().join("mlp");
    let mut request = tiny_request(&mlp, "c2");
    request.config.kind = HeadKind::Mlp { hidden: 16 };
    let outcome = add_exits(&request, &mut |_| {}, &CancelToken::new()).expect("mlp head");
    assert!(outcome.exits[0].pooled && outcome.exits[0].features == 16);
    let chain = Variant::open(&outcome.chain.manifest).expect("opens");
    let got = run_chain(&chain, &calib, 1);
    assert!((accuracy(&got[0], &calib.labels) - outcome.exits[0].val_accuracy).abs() < 0.015);
    // A cancelled run writes nothing.
    let cancel = CancelToken::new();
    cancel.cancel();
    let cancelled = scratch.path().join("cancelled");
    let error = add_exits(&tiny_request(&cancelled, "middle"), &mut |_| {}, &cancel).expect_err("cancelled");
    assert!(error.to_string().contains("cancelled"), "{error}");
    assert!(!cancelled.exists());
}

fn assert_refused(request: &AddExitsRequest, expected: &[&str]) {
    let message = add_exits(request, &mut |_| {}, &CancelToken::new()).expect_err("refused").to_string();
    for part in expected {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
    assert!(!request.out.exists(), "{} was created", request.out.display());
    let parent = request.out.parent().expect("parent");
    assert!(entries(parent).iter().all(|e| !e.starts_with(".edgescope")), "staging left in {}", parent.display());
}

#[test]
fn bad_input_is_a_clear_error_and_creates_nothing() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let out = scratch.path().join("out");
    // No single-tensor cut: two parallel branches from the image run up to the output.
    let mut request = tiny_request(&out, "a1_relu_out");
    request.model = fixture("exits/parallel_ee.onnx");
    assert_refused(&request, &["parallel_ee.onnx", "no single tensor separates"]);
    // A tensor inside a residual block is not a cut point.
    let mut request = tiny_request(&out, "/blocks.1/Relu_output_0");
    request.model = repo("models/resnet/base.onnx");
    assert_refused(&request, &["base.onnx", "is not a cut point", "exits candidates"]);
    let mut request = tiny_request(&out, "no_such_tensor");
    request.model = repo("models/resnet/base.onnx");
    assert_refused(&request, &["has no tensor \"no_such_tensor\""]);
    // A cut tensor in a layout the head cannot tell: the tiny CNN made channels-last before its classifier.
    let mut model = read_model(&fixture("tiny_base.onnx")).expect("tiny");
    let graph = model.graph.as_mut().expect("graph");
    let flatten = graph.node.iter().position(|n| n.op_type == "Flatten").expect("flatten");
    graph.node[flatten].input[0] = "c2_nhwc".into();
    let perm = edgescope::model::proto::AttributeProto {
        name: "perm".into(),
        r#type: 7,
        ints: vec![0, 2, 3, 1],
        ..Default::default()
    };
    let transpose = NodeProto {
        input: vec!["c2".into()],
        output: vec!["c2_nhwc".into()],
        name: "to_nhwc".into(),
        op_type: "Transpose".into(),
        attribute: vec![perm],
        ..Default::default()
    };
    graph.node.insert(flatten, transpose);
    let nhwc = scratch.path().join("nhwc.onnx");
    std::fs::write(&nhwc, model.encode_to_vec()).expect("write");
    let mut request = tiny_request(&out, "c2_nhwc");
    request.model = nhwc;
    assert_refused(&request, &["nhwc.onnx", "cannot feed an exit head", "shape is unknown"]);
    // A training set whose images do not make the model's input (three channels for a gray model).
    let spec = std::fs::read_to_string(fixture("fmnist500/dataset.toml")).expect("spec");
    let folder = fixture("fmnist500");
    let spec = spec
        .replace("channels = 1", "channels = 3")
        .replace("mean = [0.2860]", "mean = [0.2860, 0.2860, 0.2860]")
        .replace("std = [0.3530]", "std = [0.3530, 0.3530, 0.3530]")
        .replace("\"images-idx3", &format!("\"{}/images-idx3", folder.display()))
        .replace("\"labels-idx1", &format!("\"{}/labels-idx1", folder.display()));
    let rgb = scratch.path().join("rgb.toml");
    std::fs::write(&rgb, spec).expect("write");
    let mut request = tiny_request(&out, "middle");
    request.train = rgb;
    assert_refused(&request, &["must produce the model's input", "[1, 3, 28, 28]"]);
    // A non-empty output folder is never mixed with.
    std::fs::create_dir(&out).expect("mkdir");
    std::fs::write(out.join("keep.txt"), "x").expect("write");
    let message = add_exits(&tiny_request(&out, "middle"), &mut |_| {}, &CancelToken::new()).expect_err("not empty");
    assert!(message.to_string().contains("not empty"), "{message}");
    assert_eq!(entries(&out), vec!["keep.txt"]);
}

#[test]
fn the_command_line_adds_exits_and_refuses_a_non_cut() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let out = scratch.path().join("cli");
    let output = Command::new(env!("CARGO_BIN_EXE_edgescope"))
        .args(["exits", "add", "--model"])
        .arg(fixture("tiny_base.onnx"))
        .args(["--at", "early,late", "--train"])
        .arg(fixture("fmnist500"))
        .args(["--epochs", "3", "--seed", "5", "--threads", "1", "--out"])
        .arg(&out)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("exit 2") && stdout.contains("validation accuracy"), "{stdout}");
    assert!(stdout.contains("450 training / 50 validation samples"), "{stdout}");
    let chain = Variant::open(&out.join("tiny_base-ee.toml")).expect("opens");
    assert_eq!(chain.early_exit_count(), 2);
    let refused = scratch.path().join("refused");
    let output = Command::new(env!("CARGO_BIN_EXE_edgescope"))
        .args(["exits", "add", "--model"])
        .arg(repo("models/resnet/base.onnx"))
        .args(["--at", "/blocks.0/Relu_output_0", "--train"])
        .arg(fixture("fmnist500"))
        .arg("--out")
        .arg(&refused)
        .output()
        .expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not a cut point"));
    assert!(!refused.exists());
}

/// The base tensor a zoo exit segment carries (the zoo's recipe renamed only the carried output).
fn zoo_exit_tensor(family: &str, exit: &str) -> String {
    let base = read_model(&repo(&format!("models/{family}/base.onnx"))).expect("base");
    let manifest = std::fs::read_to_string(repo(&format!("models/{family}/{exit}.toml"))).expect("manifest");
    let carry = manifest
        .lines()
        .find_map(|l| l.strip_prefix("carry = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("a carry")
        .to_string();
    let segment = read_model(&repo(&format!("models/{family}/{exit}-s1.onnx"))).expect("segment");
    let node = segment.graph.as_ref().expect("graph").node.iter().find(|n| n.output.contains(&carry)).cloned();
    let node = node.expect("producer of the carry");
    let base_graph = base.graph.as_ref().expect("graph");
    let base_node =
        base_graph.node.iter().find(|n| n.op_type == node.op_type && n.input == node.input).expect("same node");
    base_node.output[0].clone()
}

/// The quality bar of issue 10: heads after the zoo's ee2 / ee4 / ee5 blocks, trained on the committed
/// 10 000-image subset, reach the PyTorch-trained heads' test accuracy (64.66 / 85.07 / 91.70 %) within 1.5
/// points or better; the chain's final accuracy equals the base's. About two minutes in a debug build.
#[test]
#[ignore = "trains three heads on 10 000 images and runs the 10 000-image test split twice (about two minutes)"]
fn resnet_heads_at_the_zoo_s_exits_reach_the_pytorch_heads() {
    let tensors: Vec<String> = ["ee2", "ee4", "ee5"].iter().map(|e| zoo_exit_tensor("resnet", e)).collect();
    let scratch = tempfile::tempdir().expect("temp dir");
    let out = scratch.path().join("resnet-ee");
    let mut request =
        AddExitsRequest::new(repo("models/resnet/base.onnx"), tensors, repo("assets/fashion-mnist/train"), out);
    request.config.seed = 0;
    let outcome = add_exits(&request, &mut |_| {}, &CancelToken::new()).expect("adds");
    let chain = Variant::open(&outcome.chain.manifest).expect("opens");
    let base = Variant::open(&repo("models/resnet/base.onnx")).expect("base");
    let test = Dataset::open(&repo("assets/fashion-mnist/test")).expect("test split");
    let want = run_chain(&base, &test, 50);
    let got = run_chain(&chain, &test, 50);
    let largest = assert_final_equals_base(&want[0], &got[3], 10);
    assert_eq!(accuracy(&got[3], &test.labels), accuracy(&want[0], &test.labels));
    for (k, pytorch) in [0.6466, 0.8507, 0.9170].iter().enumerate() {
        let ours = accuracy(&got[k], &test.labels);
        eprintln!(
            "exit {} after {}: test top-1 {:.2} % (PyTorch head {:.2} %), validation {:.2} %",
            k + 1,
            outcome.exits[k].tensor,
            100.0 * ours,
            100.0 * pytorch,
            100.0 * outcome.exits[k].val_accuracy
        );
        assert!(ours >= pytorch - 0.015, "exit {}: {ours} vs PyTorch {pytorch}", k + 1);
    }
    eprintln!(
        "final: {:.2} % (base {:.2} %), largest logit difference {largest:e}; features {:.1} s, total {:.1} s",
        100.0 * accuracy(&got[3], &test.labels),
        100.0 * accuracy(&want[0], &test.labels),
        outcome.features_s,
        outcome.total_s
    );
}

/// The app's "Add early exits…" dialog (issue 10 part 4): opened on a single-graph variant, it lists the cut
/// points, trains on a worker thread, and the chain joins the session and starts a run at once.
#[cfg(feature = "gui")]
#[test]
fn the_app_adds_exits_to_a_session_variant_and_runs_the_chain() {
    use edgescope::app::{EdgescopeApp, SavedState, Tab};
    use eframe::egui;
    use egui_kittest::Harness;
    use egui_kittest::kittest::Queryable;

    let scratch = tempfile::tempdir().expect("temp dir");
    let text = std::fs::read_to_string(fixture("sessions/v1.json")).expect("fixture session");
    let session = edgescope::session::Session::from_json(&text, &fixture("sessions/v1.json")).expect("parses");
    let path = scratch.path().join("session.json");
    session.save(&path).expect("save copy");
    let saved = SavedState { hint_dismissed: true, tab: Tab::Models, ..SavedState::default() };
    let mut harness = Harness::builder()
        .with_size(egui::vec2(1400.0, 900.0))
        .build_eframe(move |cc| EdgescopeApp::with_state(cc.egui_ctx.clone(), saved, Some(path)));
    common::settle(&mut harness);
    // tiny/base (a single graph) is listed first and open; the chain tiny/ee gets no button.
    harness.get_all_by_label("Add early exits…").next().expect("a button on tiny/base").click();
    common::settle(&mut harness);
    assert!(harness.query_by_label_contains("Add early exits to tiny/base").is_some(), "the dialog opens");
    assert!(harness.query_by_label_contains("7 cut point(s)").is_some(), "it lists the tiny CNN's cut points");
    harness.get_by_label("Train and add").click();
    let started = std::time::Instant::now();
    loop {
        // The worker asks for repaints while it trains: step frame by frame rather than wait for a settled UI.
        harness.step();
        if harness.state().world.session.variants.iter().any(|v| v.name == "tiny_base/ee+3") {
            break;
        }
        assert!(started.elapsed().as_secs() < 120, "training did not finish");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let world = &harness.state().world;
    assert!(world.errors.is_empty(), "{:?}", world.errors);
    let entry = world.session.variants.iter().find(|v| v.name == "tiny_base/ee+3").expect("joined");
    assert_eq!(entry.early_exits, 3);
    assert!(entry.path.starts_with(scratch.path()), "written beside the session: {}", entry.path.display());
    assert!(world.jobs.iter().any(|j| j.variant == "tiny_base/ee+3"), "its run started at once");
}
