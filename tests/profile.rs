//! Per-operator latency on the demo zoo with ONNX Runtime's profiler: the DQ variant's time goes to
//! ConvInteger and DynamicQuantizeLinear where the base runs Conv, and the operators (kernels plus the
//! executor's dispatch before each) come within 10 % of the latency measured around `Session::run`, the rest
//! shown as an "outside operators" remainder whose parts add up.

use std::path::PathBuf;

use edgescope::data::Dataset;
use edgescope::model::Variant;
use edgescope::record::{ProfileProgress, ProfileSettings, VariantProfile};
use edgescope::runtime::CancelToken;
use edgescope::runtime::profile::profile_variant;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn profile(manifest: &str) -> VariantProfile {
    let variant = Variant::open(&repo(manifest)).expect("zoo variant");
    let dataset = Dataset::open(&repo("assets/fashion-mnist/test")).expect("test split");
    let settings = ProfileSettings { samples: 60, warmup: 10, intra_threads: 1 };
    let mut last = ProfileProgress { done: 0, total: 0 };
    let profile =
        profile_variant(&variant, &dataset, &settings, &mut |p| last = p, &CancelToken::new()).expect("profile");
    assert_eq!(last, ProfileProgress { done: 60, total: 60 });
    profile
}

fn check_sums(p: &VariantProfile) {
    assert!(p.complete);
    for segment in &p.segments {
        let share = segment.explained();
        println!(
            "{} {}: measured {:.1} us ({:.1} us without the profiler), operators {:.1} us ({:.1} %: kernels {:.1} + \
             dispatch {:.1}), outside operators {:.1} us {:?}",
            p.variant,
            segment.path.display(),
            segment.measured_mean_us,
            segment.plain_mean_us,
            segment.operator_sum_us,
            share * 100.0,
            segment.kernel_us,
            segment.dispatch_us,
            segment.remainder_us(),
            segment.remainder_parts()
        );
        // Kernels and the executor's gaps run inside Session::run: they cannot take longer than it.
        assert!(segment.kernel_us > 0.0 && segment.dispatch_us >= 0.0 && share <= 1.0, "{share}");
        assert!(share >= 0.9, "the operators explain only {:.1} % of {}", share * 100.0, segment.path.display());
        assert!((segment.operator_sum_us - (segment.kernel_us + segment.dispatch_us)).abs() < 1e-6);
        // The remainder is shown in parts that add up to it, none negative beyond clock rounding.
        let parts = segment.remainder_parts();
        let sum: f64 = parts.iter().map(|(_, us)| us).sum();
        assert!((sum - segment.remainder_us()).abs() < 1e-6, "{parts:?}");
        assert!(parts.iter().all(|(_, us)| *us > -5.0), "{parts:?}");
        assert!(segment.executor_us > 0.0, "ONNX Runtime records its executor");
        assert!(segment.model_run_us <= segment.measured_mean_us);
        assert!(segment.plain_mean_us > 0.0);
        // Per type and per node, the times add up to the segment's operators.
        let by_type: f64 = segment.op_types.iter().map(|o| o.total_us()).sum();
        let by_node: f64 = segment.nodes.iter().map(|n| n.total_us()).sum();
        assert!((by_type - segment.operator_sum_us).abs() < 1e-6 * segment.operator_sum_us);
        assert!((by_node - segment.operator_sum_us).abs() < 1e-6 * segment.operator_sum_us);
    }
}

#[test]
fn dq_spends_its_time_in_conv_integer_and_dynamic_quantize_linear() {
    let base = profile("models/resnet/base.toml");
    let dq = profile("models/resnet/dq.toml");
    let types = |p: &VariantProfile| p.op_types.iter().map(|o| o.op_type.clone()).collect::<Vec<_>>();
    assert_eq!(base.runs + base.disturbed_runs, 60);
    assert!(types(&base).contains(&"Conv".to_string()), "{:?}", types(&base));
    assert!(!types(&base).iter().any(|t| t == "ConvInteger"));
    let dq_types = types(&dq);
    assert!(dq_types.contains(&"ConvInteger".to_string()) && dq_types.contains(&"DynamicQuantizeLinear".to_string()));
    // ResNet's 15 convolutions become 15 ConvInteger nodes, each fed by a dynamic quantization of its input.
    let conv = dq.op_types.iter().find(|o| o.op_type == "ConvInteger").expect("ConvInteger");
    assert_eq!(conv.nodes_per_run, 15.0);
    assert!(dq.op_types.iter().all(|o| o.provider == "CPUExecutionProvider"));
    assert_eq!(dq.top_nodes(3)[0].1.op_type, "ConvInteger");
    check_sums(&base);
    check_sums(&dq);
}

#[test]
fn an_early_exit_chain_is_profiled_segment_by_segment() {
    let chain = profile("models/mobilenet/ee5.toml");
    assert_eq!(chain.segments.len(), 2);
    check_sums(&chain);
    let whole: f64 = chain.op_types.iter().map(|o| o.total_us()).sum();
    assert!((whole - chain.operator_sum_us()).abs() < 1e-6 * whole.max(1.0));
}

#[test]
fn a_cancelled_profile_says_so() {
    let variant = Variant::open(&repo("models/mobilenet/base.toml")).expect("zoo variant");
    let dataset = Dataset::open(&repo("assets/fashion-mnist/test")).expect("test split");
    let cancel = CancelToken::new();
    cancel.cancel();
    let settings = ProfileSettings { samples: 20, warmup: 2, intra_threads: 1 };
    let error = profile_variant(&variant, &dataset, &settings, &mut |_| {}, &cancel).expect_err("cancelled");
    assert!(error.to_string().contains("cancelled"), "{error}");
}
