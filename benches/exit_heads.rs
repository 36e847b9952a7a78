//! Head training time for `exits add`, feature extraction included, on the demo ResNet with the committed
//! 10 000-image training subset: one exit per run at each of the zoo's ee2 / ee4 / ee5 tensors, then all three in
//! one run (target: < 30 s per exit on the 2-core reference machine). Same-run baseline: plain batched ONNX
//! Runtime inference of the base model over the same 10 000 images (same batch, same threads, same
//! preprocessing), and the ratio. Run with `cargo bench --bench exit_heads`.

use std::path::PathBuf;
use std::time::Instant;

use edgescope::data::Dataset;
use edgescope::optimize::exits_add::{AddExitsRequest, add_exits};
use edgescope::runtime::{CancelToken, ort_environment};
use ort::session::Session;
use ort::value::TensorRef;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The base tensors the zoo's ee2 / ee4 / ee5 chains carry (tests/exits_add.rs finds them from the zoo's files).
const ZOO_EXITS: [(&str, &str); 3] =
    [("ee2", "/blocks.1/Relu_1_output_0"), ("ee4", "/blocks.3/Relu_1_output_0"), ("ee5", "/blocks.4/Relu_1_output_0")];
const BATCH: usize = 100;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model = repo("models/resnet/base.onnx");
    let train_path = repo("assets/fashion-mnist/train");
    let dataset = Dataset::open(&train_path)?;
    let samples = dataset.len();

    // Baseline: the base model over the same images, batched like the feature pass.
    let started = Instant::now();
    let mut session = Session::builder(ort_environment()?)?.commit_from_file(&model)?;
    let shape = dataset.input_shape();
    let (mut one, mut input) = (Vec::new(), Vec::new());
    let mut start = 0;
    while start < samples {
        let count = BATCH.min(samples - start);
        input.clear();
        for index in start..start + count {
            dataset.load_input(index, &mut one)?;
            input.extend_from_slice(&one);
        }
        let tensor = TensorRef::from_array_view(([count, shape[1], shape[2], shape[3]], input.as_slice()))?;
        let outputs = session.run(ort::inputs!["image" => tensor])?;
        std::hint::black_box(outputs["logits"].try_extract_tensor::<f32>()?.1[0]);
        start += count;
    }
    drop(session);
    let baseline_s = started.elapsed().as_secs_f64();
    println!("baseline: ONNX Runtime inference of base.onnx over {samples} images (batch {BATCH}): {baseline_s:.2} s");

    let scratch = tempfile::tempdir()?;
    let mut runs: Vec<(String, Vec<String>)> =
        ZOO_EXITS.iter().map(|(name, tensor)| (name.to_string(), vec![tensor.to_string()])).collect();
    runs.push(("ee2+ee4+ee5".into(), ZOO_EXITS.iter().map(|(_, t)| t.to_string()).collect()));
    for (index, (name, at)) in runs.iter().enumerate() {
        let mut request = AddExitsRequest::new(
            model.clone(),
            at.clone(),
            train_path.clone(),
            scratch.path().join(format!("{index}")),
        );
        request.batch_size = BATCH;
        let started = Instant::now();
        let outcome = add_exits(&request, &mut |_| {}, &CancelToken::new())?;
        let total_s = started.elapsed().as_secs_f64();
        let training_s: f64 = outcome.exits.iter().map(|e| e.training_s).sum();
        let accuracies: Vec<String> =
            outcome.exits.iter().map(|e| format!("{:.2} %", 100.0 * e.val_accuracy)).collect();
        println!(
            "exits add {name:<12} {} exit(s): {total_s:6.2} s in all = {:.2} s per exit (features {:.2} s, training \
             {training_s:.2} s; {:.2}x the baseline); validation accuracy {}",
            at.len(),
            total_s / at.len() as f64,
            outcome.features_s,
            total_s / baseline_s,
            accuracies.join(" / ")
        );
    }
    Ok(())
}
