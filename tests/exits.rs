//! Early exits for any classifier (issue 10, parts 1-2), checked with real ONNX Runtime: every model re-encodes
//! without loss; a split multi-exit model gives, on every sample of fmnist500, the unsplit model's exit outputs;
//! cut points are found where the zoo's exits are; bad input gets a clear message and leaves nothing behind.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use edgescope::data::Dataset;
use edgescope::model::cuts::{Depth, cut_points};
use edgescope::model::proto::{ModelProto, read_model};
use edgescope::model::{OutputKind, Variant, inspect};
use edgescope::optimize::{SplitRequest, cut_candidates, split_to_folder};
use ort::session::Session;
use ort::value::Tensor as OrtTensor;
use prost::Message;

use common::fixture;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn onnx_files(directory: &Path, into: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(directory).expect("readable folder").map(|e| e.expect("entry").path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            onnx_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "onnx") {
            into.push(path);
        }
    }
}

fn session(path: &Path) -> Session {
    let environment = edgescope::runtime::ort_environment().expect("ONNX Runtime loads");
    Session::builder(environment)
        .expect("builder")
        .with_intra_threads(1)
        .expect("threads")
        .commit_from_file(path)
        .unwrap_or_else(|e| panic!("ONNX Runtime refuses {}: {e}", path.display()))
}

/// A float tensor: shape and values.
type Tensor = (Vec<usize>, Vec<f32>);

/// Runs a session on named float inputs; returns every float output.
fn run(session: &mut Session, inputs: &[(&str, &Tensor)]) -> BTreeMap<String, Tensor> {
    let values: Vec<(String, ort::value::DynValue)> = inputs
        .iter()
        .map(|(name, (shape, data))| {
            let tensor = OrtTensor::from_array((shape.clone(), data.clone())).expect("tensor");
            (name.to_string(), tensor.into_dyn())
        })
        .collect();
    let names: Vec<String> = session.outputs().iter().map(|o| o.name().to_string()).collect();
    let outputs = session.run(values).expect("runs");
    let mut result = BTreeMap::new();
    for name in names {
        if let Ok((shape, data)) = outputs[name.as_str()].try_extract_tensor::<f32>() {
            let shape = shape.iter().map(|&d| usize::try_from(d).expect("dimension")).collect();
            result.insert(name, (shape, data.to_vec()));
        }
    }
    result
}

fn assert_same(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(g.to_bits() == w.to_bits() || (g - w).abs() <= 1e-6, "{what}[{i}]: split {g} vs unsplit {w}");
    }
}

#[test]
fn every_model_decodes_and_reencodes_without_loss() {
    let mut files = Vec::new();
    onnx_files(&repo("tests/fixtures"), &mut files);
    onnx_files(&repo("models"), &mut files);
    assert!(files.len() >= 40, "fixture and zoo models found: {}", files.len());
    let scratch = tempfile::tempdir().expect("temp dir");
    for (index, path) in files.iter().enumerate() {
        let bytes = std::fs::read(path).expect("readable");
        let model: ModelProto = read_model(path).expect("decodes");
        let encoded = model.encode_to_vec();
        assert_eq!(ModelProto::decode(encoded.as_slice()).expect("re-decodes"), model, "{}", path.display());
        assert_eq!(encoded.len(), bytes.len(), "{}: re-encoded size", path.display());
        assert!(encoded == bytes, "{}: re-encoded bytes differ", path.display());
        // ONNX Runtime loads the re-encoded model and gives the same outputs on the same inputs.
        let info = inspect(path).expect("inspects");
        if info.inputs.iter().any(|i| i.dtype != "float32") {
            continue;
        }
        let inputs: Vec<(String, Tensor)> = info
            .inputs
            .iter()
            .map(|i| {
                let shape: Vec<usize> =
                    i.shape.iter().map(|d| d.fixed().map_or(1, |v| usize::try_from(v).expect("size"))).collect();
                let count = shape.iter().product::<usize>();
                let data = (0..count).map(|k| ((k * 7919 + index) % 255) as f32 / 255.0).collect();
                (i.name.clone(), (shape, data))
            })
            .collect();
        let named: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let copy = scratch.path().join(format!("{index}.onnx"));
        std::fs::write(&copy, &encoded).expect("write");
        let want = run(&mut session(path), &named);
        let got = run(&mut session(&copy), &named);
        assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{}", path.display());
        for (name, (shape, data)) in &want {
            assert_eq!(&got[name].0, shape, "{}: {name}", path.display());
            assert!(
                got[name].1.iter().zip(data).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{}: output {name} differs after re-encoding",
                path.display()
            );
        }
    }
}

fn split(model: &Path, exits: Option<&[&str]>, out: &Path) -> Variant {
    let request = SplitRequest {
        model: model.to_path_buf(),
        exits: exits.map(|e| e.iter().map(|s| s.to_string()).collect()),
        out: out.to_path_buf(),
        name: None,
        base: Some("tiny/base".into()),
    };
    split_to_folder(&request).unwrap_or_else(|e| panic!("split {}: {e}", model.display())).variant
}

/// Every sample of fmnist500 through the unsplit model and through the chain: every exit equal.
fn assert_chain_reproduces(model: &Path, chain: &Variant) {
    let dataset = Dataset::open(&fixture("fmnist500")).expect("dataset");
    let shape = dataset.input_shape().to_vec();
    let mut whole = session(model);
    let mut segments: Vec<Session> = chain.segments.iter().map(|s| session(&s.path)).collect();
    let mut image = Vec::new();
    let mut bitwise = 0usize;
    let mut compared = 0usize;
    for sample in 0..dataset.len() {
        dataset.load_input(sample, &mut image).expect("sample");
        let input: Tensor = (shape.clone(), image.clone());
        let want = run(&mut whole, &[("image", &input)]);
        let mut carried = input;
        for (segment, spec) in segments.iter_mut().zip(&chain.segments) {
            let outputs = run(segment, &[(spec.input.as_str(), &carried)]);
            let exit = spec.exit.as_deref().expect("every split segment has an exit");
            let what = format!("sample {sample}, exit {exit}");
            assert_same(&outputs[exit].1, &want[exit].1, &what);
            compared += 1;
            bitwise += usize::from(outputs[exit].1.iter().zip(&want[exit].1).all(|(a, b)| a.to_bits() == b.to_bits()));
            if let Some(carry) = &spec.carry {
                carried = outputs[carry.as_str()].clone();
            }
        }
    }
    assert_eq!(compared, dataset.len() * chain.segments.len());
    eprintln!("{}: {bitwise} of {compared} exit outputs bitwise equal", model.display());
}

#[test]
fn a_merged_tiny_chain_splits_back_into_its_segments() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let out = scratch.path().join("tiny");
    let model = fixture("exits/tiny_ee_multi.onnx");
    let chain = split(&model, None, &out);
    assert_eq!(chain.segments.len(), 2);
    assert_eq!(chain.segments[0].exit.as_deref(), Some("exit_logits"));
    assert_eq!(chain.segments[0].carry.as_deref(), Some("features"), "the cut the original chain had");
    assert_eq!(chain.segments[1].exit.as_deref(), Some("logits"));
    assert_eq!(chain.tags, vec!["ee".to_string()]);
    assert_eq!(chain.base.as_deref(), Some("tiny/base"));
    // Each weight lives only in the segment that uses it.
    let first = read_model(&chain.segments[0].path).expect("segment 1");
    let names: std::collections::BTreeSet<String> =
        first.graph.as_ref().expect("graph").initializer.iter().map(|t| t.name.clone()).collect();
    let want: std::collections::BTreeSet<String> =
        ["conv1.weight", "conv1.bias", "exit1.weight", "exit1.bias"].into_iter().map(String::from).collect();
    assert_eq!(names, want);
    assert_eq!(first.opset_import, read_model(&model).expect("model").opset_import);
    assert_chain_reproduces(&model, &chain);
}

#[test]
fn a_residual_model_is_cut_where_the_skip_connection_ends() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let out = scratch.path().join("residual");
    let model = fixture("exits/residual_ee.onnx");
    let chain = split(&model, None, &out);
    let carries: Vec<Option<&str>> = chain.segments.iter().map(|s| s.carry.as_deref()).collect();
    // Exit 1 branches off inside block 2 (at b2r1_out), where the skip connection from b1 crosses: the first
    // single-tensor cut after it is the block's Add. Exit 2 branches off a block output, itself a cut point.
    assert_eq!(carries, vec![Some("b2_add"), Some("b3_relu_out"), None]);
    let exits: Vec<Option<&str>> = chain.segments.iter().map(|s| s.exit.as_deref()).collect();
    assert_eq!(exits, vec![Some("exit1_logits"), Some("exit2_logits"), Some("probabilities")]);
    assert_eq!(chain.exit_kinds(), vec![OutputKind::Logits, OutputKind::Logits, OutputKind::Probabilities]);
    assert_chain_reproduces(&model, &chain);
    // Named exits give the same chain; naming only the final output leaves nothing to split.
    let named = split(&model, Some(&["exit2_logits", "exit1_logits", "probabilities"]), &scratch.path().join("named"));
    assert_eq!(
        named.segments.iter().map(|s| s.carry.clone()).collect::<Vec<_>>(),
        chain.segments.iter().map(|s| s.carry.clone()).collect::<Vec<_>>()
    );
}

fn leftovers(directory: &Path) -> Vec<String> {
    std::fs::read_dir(directory)
        .expect("folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn inseparable_exits_are_a_clear_error_and_leave_nothing_behind() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let out = scratch.path().join("parallel");
    let request =
        SplitRequest { model: fixture("exits/parallel_ee.onnx"), out: out.clone(), ..SplitRequest::default() };
    let message = split_to_folder(&request).expect_err("no single-tensor cut").to_string();
    assert!(message.contains("parallel_ee.onnx"), "{message}");
    assert!(message.contains("exit \"exit_logits\" branches off the backbone at \"a1_relu_out\""), "{message}");
    assert!(message.contains("no single tensor"), "{message}");
    assert!(message.contains("Leave this exit out"), "{message}");
    assert!(leftovers(scratch.path()).is_empty(), "nothing written: {:?}", leftovers(scratch.path()));

    let message = cut_candidates(&fixture("exits/parallel_ee.onnx")).expect_err("no cut point").to_string();
    assert!(message.contains("no single tensor separates"), "{message}");
    assert!(message.contains("re-export the model with its branches merged"), "{message}");

    // A folder with something in it is refused before anything is written.
    std::fs::create_dir(&out).expect("mkdir");
    std::fs::write(out.join("keep.txt"), "mine").expect("write");
    let request =
        SplitRequest { model: fixture("exits/tiny_ee_multi.onnx"), out: out.clone(), ..SplitRequest::default() };
    let message = split_to_folder(&request).expect_err("not empty").to_string();
    assert!(message.contains("not empty"), "{message}");
    assert_eq!(leftovers(&out), vec!["keep.txt"]);
    assert_eq!(leftovers(scratch.path()), vec!["parallel"]);

    // Unknown exits and single-output models.
    let request = SplitRequest {
        model: fixture("exits/tiny_ee_multi.onnx"),
        exits: Some(vec!["nope".into(), "logits".into()]),
        out: scratch.path().join("x"),
        ..SplitRequest::default()
    };
    let message = split_to_folder(&request).expect_err("unknown exit").to_string();
    assert!(message.contains("no tensor \"nope\""), "{message}");
    let request =
        SplitRequest { model: fixture("tiny_base.onnx"), out: scratch.path().join("y"), ..SplitRequest::default() };
    let message = split_to_folder(&request).expect_err("single output").to_string();
    assert!(message.contains("nothing to split"), "{message}");
    assert_eq!(leftovers(scratch.path()), vec!["parallel"]);
}

#[test]
fn cut_points_of_a_plain_cnn_with_hand_counted_macs() {
    let model = read_model(&fixture("tiny_base.onnx")).expect("model");
    let analysis = cut_points(model.graph.as_ref().expect("graph"), &fixture("tiny_base.onnx")).expect("cuts");
    // conv1 8x26x26 outputs x 9 MACs, conv2 16x11x11 x 72, fc 10 x 400.
    assert_eq!(analysis.total_macs, 8 * 26 * 26 * 9 + 16 * 11 * 11 * 72 + 10 * 400);
    assert_eq!(analysis.total_parameters, 8 * 9 + 8 + 16 * 72 + 16 + 4000 + 10);
    let tensors: Vec<&str> = analysis.cuts.iter().map(|c| c.tensor.as_str()).collect();
    assert_eq!(tensors, vec!["conv1_conv", "conv1_relu", "c1", "conv2_conv", "conv2_relu", "c2", "flat"]);
    let c1 = &analysis.cuts[2];
    assert_eq!(c1.macs_before, 8 * 26 * 26 * 9);
    assert_eq!(c1.parameters_before, 80);
    assert!(c1.block_boundary, "a pooling ends a block");
    let shape: Vec<String> = c1.shape.as_ref().expect("inferred").iter().map(ToString::to_string).collect();
    assert_eq!(shape, vec!["N", "8", "13", "13"]);
}

/// The base-model tensor that a zoo exit segment carries: the base node with the operator and inputs of the
/// segment's node producing the carried tensor (the zoo's recipe renamed only that output).
fn zoo_exit_tensor(base: &ModelProto, segment: &Path, carry: &str) -> String {
    let segment = read_model(segment).expect("segment");
    let graph = segment.graph.as_ref().expect("graph");
    let node = graph.node.iter().find(|n| n.output.iter().any(|o| o == carry)).expect("producer of the carry");
    let base_node = base
        .graph
        .as_ref()
        .expect("graph")
        .node
        .iter()
        .find(|n| n.op_type == node.op_type && n.input == node.input)
        .expect("the same node in the base model");
    base_node.output[0].clone()
}

#[test]
fn the_zoo_s_exits_are_among_the_candidates() {
    for family in ["resnet", "mobilenet"] {
        let base_path = repo(&format!("models/{family}/base.onnx"));
        let base = read_model(&base_path).expect("base");
        let analysis = cut_candidates(&base_path).expect("cut points");
        let tensors: Vec<&str> = analysis.cuts.iter().map(|c| c.tensor.as_str()).collect();
        let mut checked = 0;
        for entry in std::fs::read_dir(repo(&format!("models/{family}"))).expect("zoo") {
            let path = entry.expect("entry").path();
            let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else { continue };
            if !(name.starts_with("ee") && name.ends_with(".toml")) {
                continue;
            }
            let variant = Variant::open(&path).expect("zoo variant");
            let first = &variant.segments[0];
            if first.input != "image" {
                continue;
            }
            let carry = first.carry.as_deref().expect("an early exit carries");
            let tensor = zoo_exit_tensor(&base, &first.path, carry);
            assert!(tensors.contains(&tensor.as_str()), "{name}: {tensor} not among {tensors:?}");
            checked += 1;
        }
        assert!(checked >= 2, "{family}: zoo exits checked: {checked}");
        // Shares grow with depth, every shape is known, suggestions are block boundaries near 25/50/75 %.
        assert!(analysis.cuts.windows(2).all(|w| w[0].mac_share <= w[1].mac_share), "{family}");
        assert!(analysis.cuts.iter().all(|c| c.shape.is_some()), "{family}: shapes");
        let depths: Vec<Depth> = analysis.suggested.iter().map(|(d, _)| *d).collect();
        assert_eq!(depths, vec![Depth::Early, Depth::Middle, Depth::Late], "{family}");
        for ((_, index), target) in analysis.suggested.iter().zip([0.25, 0.5, 0.75]) {
            let cut = &analysis.cuts[*index];
            let boundary_near = analysis.cuts.iter().any(|c| c.block_boundary && (c.mac_share - target).abs() <= 0.1);
            assert!(cut.block_boundary || !boundary_near, "{family}: {} is not a block boundary", cut.tensor);
            assert!((cut.mac_share - target).abs() <= 0.15, "{family}: {} at {}", cut.tensor, cut.mac_share);
        }
    }
}

#[test]
fn the_command_line_splits_and_lists_candidates() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let out = scratch.path().join("chain");
    let status = Command::new(env!("CARGO_BIN_EXE_edgescope"))
        .args(["exits", "split", "--model"])
        .arg(fixture("exits/tiny_ee_multi.onnx"))
        .arg("--out")
        .arg(&out)
        .args(["--base", "tiny/base"])
        .output()
        .expect("runs");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let manifest = out.join("tiny_ee_multi-ee.toml");
    let text = std::fs::read_to_string(&manifest).expect("manifest written");
    assert!(text.contains("format = \"edgescope-variant\"") && text.contains("carry = \"features\""), "{text}");
    assert_eq!(Variant::open(&manifest).expect("opens").early_exit_count(), 1);

    let output = Command::new(env!("CARGO_BIN_EXE_edgescope"))
        .args(["exits", "candidates", "--format", "json", "--model"])
        .arg(repo("models/resnet/base.onnx"))
        .output()
        .expect("runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert!(json["candidates"].as_array().expect("candidates").len() >= 6);
    assert!(json["suggested"]["middle"].is_string(), "{json}");

    let output = Command::new(env!("CARGO_BIN_EXE_edgescope"))
        .args(["exits", "split", "--model"])
        .arg(fixture("exits/parallel_ee.onnx"))
        .arg("--out")
        .arg(scratch.path().join("bad"))
        .output()
        .expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no single tensor"));
    assert!(!scratch.path().join("bad").exists());
}
