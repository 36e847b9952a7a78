//! Per-operator latency on the demo zoo with ONNX Runtime's profiler: the DQ variant's time goes to
//! ConvInteger and DynamicQuantizeLinear where the base runs Conv, and the operators account for most of the
//! measured latency, the rest shown as a remainder.

use std::path::PathBuf;

use edgescope::data::Dataset;
use edgescope::model::Variant;
use edgescope::runtime::profile::{VariantProfile, profile_variant};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn profile(manifest: &str) -> VariantProfile {
    let variant = Variant::open(&repo(manifest)).expect("zoo variant");
    let dataset = Dataset::open(&repo("assets/fashion-mnist/test")).expect("test split");
    profile_variant(&variant, &dataset, 60, 10, 1).expect("profile")
}

fn check_sums(p: &VariantProfile, floor: f64) {
    for segment in &p.segments {
        let share = segment.operator_sum_us / segment.measured_mean_us;
        println!(
            "{} {}: measured {:.1} us, operators {:.1} us ({:.1} %), remainder {:.1} us",
            p.variant,
            segment.path.display(),
            segment.measured_mean_us,
            segment.operator_sum_us,
            share * 100.0,
            segment.remainder_us()
        );
        // Kernels run inside Session::run: they cannot take longer than it. How much of it they explain
        // depends on the network (large kernels or many small ones) and the machine's load; the rest is shown, never hidden.
        assert!(segment.operator_sum_us > 0.0 && share <= 1.0, "{share}");
        assert!(share >= floor, "the operators explain only {:.1} % of {}", share * 100.0, segment.path.display());
        assert!((segment.remainder_us() - (segment.measured_mean_us - segment.operator_sum_us)).abs() < 1e-9);
        assert!(segment.model_run_us <= segment.measured_mean_us);
    }
}

#[test]
fn dq_spends_its_time_in_conv_integer_and_dynamic_quantize_linear() {
    let base = profile("models/resnet/base.toml");
    let dq = profile("models/resnet/dq.toml");
    let types = |p: &VariantProfile| p.op_types.iter().map(|o| o.op_type.clone()).collect::<Vec<_>>();
    assert_eq!(base.runs, 60);
    assert!(types(&base).contains(&"Conv".to_string()), "{:?}", types(&base));
    assert!(!types(&base).iter().any(|t| t == "ConvInteger"));
    let dq_types = types(&dq);
    assert!(dq_types.contains(&"ConvInteger".to_string()) && dq_types.contains(&"DynamicQuantizeLinear".to_string()));
    // ResNet's 15 convolutions become 15 ConvInteger nodes, each fed by a dynamic quantization of its input.
    let conv = dq.op_types.iter().find(|o| o.op_type == "ConvInteger").expect("ConvInteger");
    assert_eq!(conv.nodes_per_run, 15.0);
    assert!(dq.op_types.iter().all(|o| o.provider == "CPUExecutionProvider"));
    check_sums(&base, 0.6);
    check_sums(&dq, 0.6);
}

#[test]
fn an_early_exit_chain_is_profiled_segment_by_segment() {
    let chain = profile("models/mobilenet/ee5.toml");
    assert_eq!(chain.segments.len(), 2);
    // Many small operators: per-node overhead is a larger share of a small network.
    check_sums(&chain, 0.25);
    let whole: f64 = chain.op_types.iter().map(|o| o.mean_us).sum();
    assert!((whole - chain.operator_sum_us()).abs() < 1e-6 * whole.max(1.0));
}
