//! A per-operator latency profile of a variant: what `runtime::profile` measures on a device, `net` carries
//! back from a remote runner and the app and CLI show. Every time is a mean per inference in microseconds.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What a profile run does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileSettings {
    /// Samples profiled (after the warm-up), the first readable ones of the dataset.
    pub samples: usize,
    /// Untimed warm-up runs on the first sample.
    pub warmup: usize,
    /// Intra-op threads (0 = ONNX Runtime's default).
    pub intra_threads: usize,
}

impl Default for ProfileSettings {
    fn default() -> Self {
        Self { samples: 200, warmup: 20, intra_threads: 1 }
    }
}

/// Progress of a profile run: samples done of the total.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileProgress {
    /// Samples profiled so far.
    pub done: usize,
    /// Samples to profile.
    pub total: usize,
}

/// Time per operator type (and provider) within a segment or the whole variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperatorTypeTime {
    /// Operator type.
    pub op_type: String,
    /// Execution provider.
    pub provider: String,
    /// Nodes of this type run per inference.
    pub nodes_per_run: f64,
    /// Mean kernel time per inference, microseconds.
    pub mean_us: f64,
    /// Mean dispatch time per inference (the executor's gap before each kernel), microseconds.
    #[serde(default)]
    pub dispatch_us: f64,
}

impl OperatorTypeTime {
    /// Kernel plus dispatch, microseconds per inference.
    pub fn total_us(&self) -> f64 {
        self.mean_us + self.dispatch_us
    }
}

/// One node's mean time per inference.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeTime {
    /// Node name.
    pub node: String,
    /// Operator type.
    pub op_type: String,
    /// Execution provider.
    pub provider: String,
    /// Mean kernel time, microseconds.
    pub kernel_us: f64,
    /// Mean dispatch time, microseconds.
    pub dispatch_us: f64,
}

impl NodeTime {
    /// Kernel plus dispatch, microseconds per inference.
    pub fn total_us(&self) -> f64 {
        self.kernel_us + self.dispatch_us
    }
}

/// One segment's profile; every time is a mean per inference in microseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentProfile {
    /// The segment's ONNX file.
    pub path: PathBuf,
    /// Latency measured around `Session::run` with the profiler on.
    pub measured_mean_us: f64,
    /// Latency measured around `Session::run` of a session without the profiler, on the same samples
    /// (interleaved): what the profiler costs is `measured_mean_us - plain_mean_us`.
    #[serde(default)]
    pub plain_mean_us: f64,
    /// The operators: kernels plus dispatch.
    pub operator_sum_us: f64,
    /// The kernels alone.
    #[serde(default)]
    pub kernel_us: f64,
    /// The executor's gaps between kernels, charged to the node that follows.
    #[serde(default)]
    pub dispatch_us: f64,
    /// ONNX Runtime's `SequentialExecutor::Execute` (0 when not recorded).
    #[serde(default)]
    pub executor_us: f64,
    /// ONNX Runtime's own `model_run` time.
    pub model_run_us: f64,
    /// Per operator type, slowest first (kernel plus dispatch).
    pub op_types: Vec<OperatorTypeTime>,
    /// Per node, slowest first (kernel plus dispatch).
    #[serde(default)]
    pub nodes: Vec<NodeTime>,
}

impl SegmentProfile {
    /// What the operators do not explain ("outside operators"): measured minus their sum.
    pub fn remainder_us(&self) -> f64 {
        self.measured_mean_us - self.operator_sum_us
    }

    /// The remainder's parts: executor setup (before the first kernel, after the last), session work
    /// outside the executor, and the binding outside `model_run`. They add up to [`Self::remainder_us`]
    /// (with the executor unrecorded, its setup counts as session work).
    pub fn remainder_parts(&self) -> [(&'static str, f64); 3] {
        let executor = if self.executor_us > 0.0 { self.executor_us } else { self.operator_sum_us };
        [
            ("executor setup", executor - self.operator_sum_us),
            ("session outside the executor", self.model_run_us - executor),
            ("binding outside model_run", self.measured_mean_us - self.model_run_us),
        ]
    }

    /// The share of the measured latency the operators explain, in [0, 1] (0 when nothing was measured).
    pub fn explained(&self) -> f64 {
        if self.measured_mean_us > 0.0 { self.operator_sum_us / self.measured_mean_us } else { 0.0 }
    }
}

/// A variant's profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VariantProfile {
    /// Variant name.
    pub variant: String,
    /// Where it ran (host and runner), for display.
    #[serde(default)]
    pub device: String,
    /// Runs the means are over (after warm-up, disturbed runs left out).
    pub runs: usize,
    /// Runs left out because the machine interrupted them (see `runtime::profile::undisturbed_runs`).
    #[serde(default)]
    pub disturbed_runs: usize,
    /// Intra-op threads (0 = ONNX Runtime's default).
    pub intra_threads: usize,
    /// False when cancelled before every sample ran.
    #[serde(default = "yes")]
    pub complete: bool,
    /// Segments in chain order.
    pub segments: Vec<SegmentProfile>,
    /// Per operator type over the whole chain, slowest first.
    pub op_types: Vec<OperatorTypeTime>,
}

fn yes() -> bool {
    true
}

impl VariantProfile {
    /// Mean measured latency of the whole chain (profiler on), microseconds.
    pub fn measured_mean_us(&self) -> f64 {
        self.segments.iter().map(|s| s.measured_mean_us).sum()
    }

    /// Mean latency of the whole chain without the profiler, microseconds.
    pub fn plain_mean_us(&self) -> f64 {
        self.segments.iter().map(|s| s.plain_mean_us).sum()
    }

    /// Mean operator time (kernels plus dispatch) of the whole chain, microseconds.
    pub fn operator_sum_us(&self) -> f64 {
        self.segments.iter().map(|s| s.operator_sum_us).sum()
    }

    /// Mean kernel time of the whole chain, microseconds.
    pub fn kernel_us(&self) -> f64 {
        self.segments.iter().map(|s| s.kernel_us).sum()
    }

    /// Outside operators over the whole chain, microseconds.
    pub fn remainder_us(&self) -> f64 {
        self.measured_mean_us() - self.operator_sum_us()
    }

    /// The `count` slowest nodes of the chain, slowest first, with their segment index.
    pub fn top_nodes(&self, count: usize) -> Vec<(usize, &NodeTime)> {
        let mut nodes: Vec<(usize, &NodeTime)> =
            self.segments.iter().enumerate().flat_map(|(i, s)| s.nodes.iter().map(move |n| (i, n))).collect();
        nodes.sort_by(|a, b| b.1.total_us().total_cmp(&a.1.total_us()));
        nodes.truncate(count);
        nodes
    }

    /// Total time (kernel plus dispatch) of operator type `op_type` over the chain, microseconds.
    pub fn op_type_us(&self, op_type: &str) -> f64 {
        // Folded from +0.0: an empty float sum is -0.0.
        self.op_types.iter().filter(|o| o.op_type == op_type).map(OperatorTypeTime::total_us).fold(0.0, |a, b| a + b)
    }
}
