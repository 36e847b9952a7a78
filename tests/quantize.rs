//! Parity of edgescope's quantizer with ONNX Runtime's Python quantizer on the demo zoo: quantizing
//! `models/{resnet,mobilenet}/base.onnx` (and the `ee4` chain) with the settings of `models/recipe/quantize.py`
//! gives the committed ORT-made files — every initializer (scales, zero points, integer tensors) equal by name,
//! and the whole file equal byte for byte. Plus the bad inputs the quantizer must refuse with a clear error.
//!
//! The top-1 accuracy of the quantized models on the 10 000 test images is `#[ignore]`d (slow at batch 1):
//! `cargo test --test quantize -- --ignored`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use edgescope::data::Dataset;
use edgescope::model::proto::{ModelProto, encode_model, read_model};
use edgescope::optimize::quantize::{
    self, Batch, Method, QuantizeError, QuantizeOptions, QuantizeRequest, calibrate::MinMax, quantize_to_disk,
};
use edgescope::runtime::CancelToken;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn zoo(file: &str) -> PathBuf {
    root().join("models").join(file)
}

/// Every initializer of `ours` equals the one of the same name in `theirs` (type, shape, bytes), and the sets of
/// names are the same; then the files are equal byte for byte.
fn assert_same_model(ours: &ModelProto, reference: &Path) {
    let theirs = read_model(reference).expect("reference model");
    let index = |m: &ModelProto| -> HashMap<String, edgescope::model::proto::TensorProto> {
        m.graph
            .as_ref()
            .map(|g| g.initializer.iter().map(|t| (t.name.clone(), t.clone())).collect())
            .unwrap_or_default()
    };
    let (a, b) = (index(ours), index(&theirs));
    let mut missing: Vec<&String> = b.keys().filter(|k| !a.contains_key(*k)).collect();
    missing.sort();
    let mut extra: Vec<&String> = a.keys().filter(|k| !b.contains_key(*k)).collect();
    extra.sort();
    assert!(missing.is_empty() && extra.is_empty(), "{}: missing {missing:?}, extra {extra:?}", reference.display());
    for (name, tensor) in &b {
        assert_eq!(&a[name], tensor, "{}: initializer {name:?} differs", reference.display());
    }
    let ours_bytes = encode_model(ours);
    let theirs_bytes = std::fs::read(reference).expect("reference bytes");
    assert!(ours_bytes == theirs_bytes, "{}: same initializers, but the graphs differ", reference.display());
}

fn calibrate(model: &ModelProto, options: &QuantizeOptions) -> quantize::Ranges {
    let dataset = Dataset::open(&root().join("assets/fashion-mnist/calib")).expect("calibration set");
    let mut prepared = model.clone();
    quantize::prepare(&mut prepared);
    let mut calibrator = MinMax::new(&prepared, &options.op_type_set(), 0).expect("calibrator");
    for start in (0..dataset.len()).step_by(options.batch_size) {
        let batch: Batch =
            quantize::run::dataset_batch(&dataset, start, options.batch_size, dataset.len()).expect("batch");
        calibrator.collect(&batch).expect("calibration batch");
    }
    assert_eq!(dataset.len(), 1000);
    calibrator.ranges().expect("ranges")
}

#[test]
fn dynamic_quantization_equals_ort_on_the_zoo() {
    for family in ["resnet", "mobilenet"] {
        let model = read_model(&zoo(&format!("{family}/base.onnx"))).expect("base model");
        let q = quantize::quantize_dynamic(&model, &QuantizeOptions::recipe_dq()).expect("dq");
        assert_same_model(&q.model, &zoo(&format!("{family}/dq.onnx")));
        assert!(q.quantized_nodes.iter().any(|n| n.ends_with("/Conv")), "{:?}", q.quantized_nodes);
    }
}

#[test]
fn static_quantization_equals_ort_on_the_zoo() {
    for family in ["resnet", "mobilenet"] {
        let model = read_model(&zoo(&format!("{family}/base.onnx"))).expect("base model");
        let options = QuantizeOptions::recipe_ptq();
        let ranges = calibrate(&model, &options);
        let q = quantize::quantize_static(&model, &ranges, &options).expect("ptq");
        assert_same_model(&q.model, &zoo(&format!("{family}/ptq.onnx")));
        assert!(q.float_nodes.is_empty(), "every node is quantized with the full op set: {:?}", q.float_nodes);
        assert!(q.notes.iter().any(|(_, note)| note.contains("folded")), "Relu/Clip fold into their producer");
    }
}

#[test]
fn chains_are_quantized_segment_by_segment_as_the_recipe_does() {
    let out = tempfile::tempdir().expect("temp dir");
    for (method, options) in [(Method::Ptq, QuantizeOptions::recipe_ptq()), (Method::Dq, QuantizeOptions::recipe_dq())]
    {
        let request = QuantizeRequest {
            model: zoo("resnet/ee4.toml"),
            options,
            calibration: Some(root().join("assets/fashion-mnist/calib")),
            calibration_limit: None,
            out: out.path().join(method.name()),
            name: None,
            threads: 0,
            budget: None,
        };
        let mut events = Vec::new();
        let outcome = quantize_to_disk(&request, &mut |e| events.push(e), &CancelToken::new()).expect("quantize");
        assert_eq!(outcome.variant.name, format!("resnet/{}-ee4", method.name()));
        assert_eq!(outcome.variant.base.as_deref(), Some("resnet/ee4"));
        assert_eq!(outcome.variant.tags, vec![method.name().to_string(), "ee".to_string()]);
        assert_eq!(outcome.segments.len(), 2);
        for (k, report) in outcome.segments.iter().enumerate() {
            let ours = read_model(&report.file).expect("written segment");
            assert_same_model(&ours, &zoo(&format!("resnet/{}-ee4-s{}.onnx", method.name(), k + 1)));
        }
        assert!(events.contains(&quantize::QuantizeEvent::Writing));
    }
}

fn request(model: PathBuf, method: Method, out: PathBuf) -> QuantizeRequest {
    QuantizeRequest {
        model,
        options: if method == Method::Ptq { QuantizeOptions::recipe_ptq() } else { QuantizeOptions::recipe_dq() },
        calibration: Some(root().join("assets/fashion-mnist/calib")),
        calibration_limit: Some(50),
        out,
        name: None,
        threads: 0,
        budget: None,
    }
}

#[test]
fn bad_inputs_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    // An already-quantized model.
    let quantized = zoo("resnet/ptq.onnx");
    let err = quantize_to_disk(
        &request(quantized.clone(), Method::Dq, dir.path().join("a.onnx")),
        &mut |_| {},
        &CancelToken::new(),
    )
    .expect_err("already quantized");
    let text = err.to_string();
    assert!(text.contains("ptq.onnx") && text.contains("already quantized"), "{text}");

    // A calibration dataset whose samples do not fit the model's input.
    let mut wrong = request(zoo("resnet/ee4-s2.onnx"), Method::Ptq, dir.path().join("b.onnx"));
    wrong.calibration = Some(root().join("assets/fashion-mnist/calib"));
    let err = quantize_to_disk(&wrong, &mut |_| {}, &CancelToken::new()).expect_err("shape mismatch");
    let text = err.to_string();
    assert!(text.contains("calib") && text.contains("ee4-s2.onnx"), "{text}");

    // Weights in an external data file.
    let mut model = read_model(&zoo("resnet/base.onnx")).expect("base");
    let graph = model.graph.as_mut().expect("graph");
    let tensor = &mut graph.initializer[0];
    tensor.raw_data = None;
    tensor.data_location = Some(1);
    tensor.external_data =
        vec![edgescope::model::proto::StringStringEntryProto { key: "location".into(), value: "weights.bin".into() }];
    let external = dir.path().join("external.onnx");
    std::fs::write(&external, encode_model(&model)).expect("write");
    std::fs::write(dir.path().join("weights.bin"), vec![0u8; 1152]).expect("write");
    let err =
        quantize_to_disk(&request(external, Method::Dq, dir.path().join("c.onnx")), &mut |_| {}, &CancelToken::new())
            .expect_err("external data");
    let text = err.to_string();
    assert!(text.contains("external.onnx") && text.contains("external data"), "{text}");

    // PTQ without calibration data, and a cancelled run, leave nothing behind.
    let mut none = request(zoo("resnet/base.onnx"), Method::Ptq, dir.path().join("d.onnx"));
    none.calibration = None;
    assert!(
        quantize_to_disk(&none, &mut |_| {}, &CancelToken::new())
            .expect_err("no data")
            .to_string()
            .contains("--calibration")
    );
    let cancel = CancelToken::new();
    cancel.cancel();
    let cancelled = request(zoo("resnet/base.onnx"), Method::Ptq, dir.path().join("e.onnx"));
    assert!(matches!(quantize_to_disk(&cancelled, &mut |_| {}, &cancel), Err(QuantizeError::Cancelled)));
    assert!(!dir.path().join("d.onnx").exists() && !dir.path().join("e.onnx").exists());
}

#[test]
fn a_single_graph_is_written_with_its_manifest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("resnet-dq.onnx");
    let outcome =
        quantize_to_disk(&request(zoo("resnet/base.toml"), Method::Dq, out.clone()), &mut |_| {}, &CancelToken::new())
            .expect("quantize");
    assert_eq!(outcome.manifest, dir.path().join("resnet-dq.toml"));
    assert_eq!(std::fs::read(&out).expect("written"), std::fs::read(zoo("resnet/dq.onnx")).expect("reference"));
    assert_eq!(outcome.variant.name, "resnet/dq");
    assert_eq!(outcome.variant.base.as_deref(), Some("resnet/base"));
    assert!(outcome.variant.has_tag("dq"));
    // Never overwrites.
    let again = quantize_to_disk(&request(zoo("resnet/base.toml"), Method::Dq, out), &mut |_| {}, &CancelToken::new());
    assert!(again.expect_err("exists").to_string().contains("exists already"));
}

#[test]
fn sensitivity_ranks_every_quantized_activation() {
    let float_model = read_model(&zoo("resnet/base.onnx")).expect("float");
    let quantized = read_model(&zoo("resnet/ptq.onnx")).expect("ptq");
    let mut dataset = Dataset::open(&root().join("assets/fashion-mnist/test")).expect("test set");
    dataset.truncate(100);
    let total = dataset.len();
    let mut batches = (0..total).step_by(50).map(|s| quantize::run::dataset_batch(&dataset, s, 50, total));
    let mut seen = Vec::new();
    let noise = quantize::sensitivity::sensitivity(
        &float_model,
        &quantized,
        &mut batches,
        0,
        &CancelToken::new(),
        &mut |done| seen.push(done),
    )
    .expect("sensitivity");
    assert_eq!(seen, vec![50, 100]);
    let q_count =
        quantized.graph.as_ref().expect("graph").node.iter().filter(|n| n.op_type == "QuantizeLinear").count();
    assert_eq!(noise.len(), q_count, "one entry per quantized activation");
    assert!(noise.windows(2).all(|w| w[0].sqnr_db <= w[1].sqnr_db), "worst first");
    // 8-bit activations of a well-calibrated model: tens of dB, and the input's own Q/DQ is the cleanest.
    assert!(noise.iter().all(|n| n.sqnr_db.is_finite() && n.sqnr_db > 15.0 && n.sqnr_db < 80.0), "{noise:?}");
    let image = noise.iter().find(|n| n.tensor == "image").expect("input");
    assert!(image.sqnr_db > 35.0, "{image:?}");
}

#[test]
fn the_command_line_quantizes_and_lists_what_stays_float() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("dq");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_edgescope"))
        .args(["quantize", "--method", "dq", "--model"])
        .arg(zoo("mobilenet/base.toml"))
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run edgescope");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("mobilenet/dq (dq)") && stdout.contains("no rule for Clip"), "{stdout}");
    assert_eq!(
        std::fs::read(out.join("dq-base.onnx")).expect("written"),
        std::fs::read(zoo("mobilenet/dq.onnx")).expect("reference")
    );
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_edgescope"))
        .args(["quantize", "--method", "ptq", "--model"])
        .arg(zoo("mobilenet/ptq.onnx"))
        .args(["--calibration", "assets/fashion-mnist/calib", "--out"])
        .arg(dir.path().join("x.onnx"))
        .output()
        .expect("run edgescope");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("already quantized"), "{stderr}");
}

/// Top-1 on the 10 000 test images, batch 1 (DQ's activation scales depend on the batch), of freshly quantized
/// models equals the recipe's counts (`models/accuracy.json`: resnet PTQ 93.61 %, DQ 93.57 %; mobilenet PTQ
/// 92.60 %, DQ 92.70 %). Slow: `cargo test --test quantize -- --ignored`.
#[test]
#[ignore]
fn quantized_top1_equals_the_recipe_numbers() {
    use ort::session::Session;
    use ort::value::TensorRef;
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(zoo("accuracy.json")).expect("accuracy.json")).expect("json");
    let test = Dataset::open(&root().join("assets/fashion-mnist/test")).expect("test set");
    let environment = edgescope::runtime::ort_environment().expect("onnxruntime");
    for family in ["resnet", "mobilenet"] {
        let model = read_model(&zoo(&format!("{family}/base.onnx"))).expect("base");
        let ptq_options = QuantizeOptions::recipe_ptq();
        let ranges = calibrate(&model, &ptq_options);
        let made = [
            ("ptq", quantize::quantize_static(&model, &ranges, &ptq_options).expect("ptq").model),
            ("dq", quantize::quantize_dynamic(&model, &QuantizeOptions::recipe_dq()).expect("dq").model),
        ];
        for (method, q) in made {
            let mut session = Session::builder(environment)
                .expect("builder")
                .with_intra_threads(1)
                .expect("threads")
                .commit_from_memory(&encode_model(&q))
                .expect("session");
            let mut correct = 0u64;
            let mut input = Vec::new();
            for index in 0..test.len() {
                test.load_input(index, &mut input).expect("sample");
                let tensor = TensorRef::from_array_view(([1usize, 1, 28, 28], input.as_slice())).expect("tensor");
                let outputs = session.run(ort::inputs!["image" => tensor]).expect("run");
                let (_, logits) = outputs["logits"].try_extract_tensor::<f32>().expect("logits");
                let best = (0..logits.len()).fold(0, |b, i| if logits[i] > logits[b] { i } else { b });
                correct += u64::from(best as u32 == test.labels[index]);
            }
            let want = expected[format!("{family}/{method}")]["exits"][0].as_u64().expect("count");
            assert_eq!(correct, want, "{family}/{method}: top-1 {correct} / 10000, recipe {want}");
        }
    }
}

#[test]
fn an_accuracy_budget_keeps_the_most_sensitive_nodes_float() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut request = request(zoo("resnet/base.onnx"), Method::Ptq, dir.path().join("budget.onnx"));
    request.calibration_limit = Some(200);
    // A zero budget on 300 validation images: the search must keep nodes float, worst first, up to 2.
    request.budget = Some(quantize::Budget {
        max_drop_pp: 0.0,
        validation: root().join("assets/fashion-mnist/test"),
        limit: Some(300),
        max_nodes: 2,
    });
    let mut steps = 0;
    let outcome = quantize_to_disk(
        &request,
        &mut |e| {
            if matches!(e, quantize::QuantizeEvent::Budget { .. }) {
                steps += 1;
            }
        },
        &CancelToken::new(),
    )
    .expect("quantize with a budget");
    let budget = outcome.budget.expect("budget outcome");
    assert_eq!(budget.steps.len(), steps);
    assert!(budget.float_top1_percent > 85.0, "{budget:?}");
    let last = budget.steps.last().expect("a step");
    if !budget.within_budget {
        assert_eq!(last.excluded.len(), 2, "{budget:?}");
    }
    assert!(budget.steps.windows(2).all(|w| w[1].excluded.len() == w[0].excluded.len() + 1));
    let floats: Vec<&String> = outcome.segments[0].float_nodes.iter().map(|(n, _)| n).collect();
    for node in &last.excluded {
        assert!(floats.contains(&node), "{node} stays float: {floats:?}");
    }
    let manifest = std::fs::read_to_string(&outcome.manifest).expect("manifest");
    assert!(manifest.contains("accuracy budget 0 pp"), "{manifest}");
}
