//! Time to quantize `models/resnet/base.onnx` with PTQ (QDQ, per-channel, MinMax on the 1000 calibration
//! images in batches of 50, Gemm outputs float: the recipe's settings): edgescope against ONNX Runtime's Python
//! `quantize_static` with the same settings, in the same run on the same machine. The Python side runs only when
//! `python3 -c "import onnxruntime"` works. Data loading is excluded on both sides; model reading, shape
//! inference, calibration, quantization and writing the file are included.
//!
//!     cargo bench --bench quantize            # RUNS=5 for more runs

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use edgescope::data::Dataset;
use edgescope::model::proto::{encode_model, read_model};
use edgescope::optimize::quantize::{self, QuantizeOptions, calibrate::MinMax, run::dataset_batch};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn edgescope_once(root: &Path, batches: &[quantize::Batch], out: &Path) -> f64 {
    let started = Instant::now();
    let model = read_model(&root.join("models/resnet/base.onnx")).expect("model");
    let options = QuantizeOptions::recipe_ptq();
    let mut prepared = model.clone();
    quantize::prepare(&mut prepared);
    let mut calibrator = MinMax::new(&prepared, &options.op_type_set(), 0).expect("calibrator");
    for batch in batches {
        calibrator.collect(batch).expect("batch");
    }
    let ranges = calibrator.ranges().expect("ranges");
    let q = quantize::quantize_static(&model, &ranges, &options).expect("quantize");
    std::fs::write(out, encode_model(&q.model)).expect("write");
    started.elapsed().as_secs_f64()
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let runs: usize = std::env::var("RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(3).max(1);
    let dataset = Dataset::open(&root.join("assets/fashion-mnist/calib")).expect("calibration set");
    let batches: Vec<quantize::Batch> =
        (0..dataset.len()).step_by(50).map(|s| dataset_batch(&dataset, s, 50, dataset.len()).expect("batch")).collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let ours_file = dir.path().join("edgescope.onnx");
    edgescope_once(&root, &batches, &ours_file); // warm-up: loads ONNX Runtime
    let ours: Vec<f64> = (0..runs).map(|_| edgescope_once(&root, &batches, &ours_file)).collect();
    let ours_s = median(ours.clone());
    println!("edgescope quantize (PTQ, resnet/base, 1000 images): median {ours_s:.3} s over {runs} runs {ours:.3?}");
    let identical = std::fs::read(&ours_file).ok() == std::fs::read(root.join("models/resnet/ptq.onnx")).ok();
    println!("  output identical to models/resnet/ptq.onnx: {identical}");
    let python_ok =
        Command::new("python3").args(["-c", "import onnxruntime"]).output().is_ok_and(|o| o.status.success());
    if !python_ok {
        println!("ONNX Runtime's Python quantizer: skipped (python3 -c \"import onnxruntime\" fails)");
        return;
    }
    let output = Command::new("python3")
        .arg(root.join("benches/quantize_ort.py"))
        .arg(runs.to_string())
        .arg(dir.path())
        .output()
        .expect("python3");
    let times: Vec<f64> =
        String::from_utf8_lossy(&output.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect();
    if times.is_empty() {
        println!("ONNX Runtime's Python quantizer failed: {}", String::from_utf8_lossy(&output.stderr));
        return;
    }
    let theirs_s = median(times.clone());
    println!(
        "ORT Python quantize_static (same settings): median {theirs_s:.3} s over {} runs {times:.3?}",
        times.len()
    );
    println!("  ratio ORT / edgescope: {:.2}x", theirs_s / ours_s);
    let same = std::fs::read(dir.path().join("ort-0.onnx")).ok() == std::fs::read(&ours_file).ok();
    println!("  the two outputs are byte-identical: {same}");
}
