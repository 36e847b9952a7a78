//! What a run produces and how it was asked for: settings, events, the run facts kept with every trace, trace
//! and dynamic runs. Plain data shared by `runtime` (which fills it), `session` (which saves it), `net` (which
//! carries it) and `report` (which reads it).

use serde::{Deserialize, Serialize};

use super::device::DeviceRecord;
use super::resources::{PowerSummary, ResourceTimeline};
use crate::analysis::policy::Policy;
use crate::analysis::trace::Trace;
use crate::model::OutputKind;

/// Default warm-up runs of the whole chain before timing (onnxruntime_perf_test and trtexec both warm up
/// before measuring; ten runs settle allocator arenas and caches for the models we target).
pub const DEFAULT_WARMUP_RUNS: usize = 10;
/// Default resource sampling interval.
pub const DEFAULT_SAMPLER_INTERVAL_MS: u64 = 100;

/// How a job runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunSettings {
    /// Intra-op threads; 0 lets ONNX Runtime choose.
    pub intra_threads: usize,
    /// Untimed runs of the whole chain before measuring.
    pub warmup_runs: usize,
    /// Execution provider to use.
    pub provider: ProviderChoice,
    /// Whether the resource sampler runs.
    pub sample_resources: bool,
    /// Sampling interval, milliseconds.
    pub sampler_interval_ms: u64,
    /// Only the first N samples, for a quick look.
    pub limit: Option<usize>,
    /// Emit the samples measured so far as a [`RunEvent::Checkpoint`] every N samples (remote runners stream
    /// them, so a dropped link keeps what was measured).
    pub checkpoint_every: Option<usize>,
}

impl Default for RunSettings {
    fn default() -> Self {
        Self {
            intra_threads: 0,
            warmup_runs: DEFAULT_WARMUP_RUNS,
            provider: ProviderChoice::Cpu,
            sample_resources: true,
            sampler_interval_ms: DEFAULT_SAMPLER_INTERVAL_MS,
            limit: None,
            checkpoint_every: None,
        }
    }
}

/// Trace mode runs every segment for every sample; dynamic mode really skips segments at a policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RunMode {
    /// Record every exit of every sample.
    Trace,
    /// Leave at the first exit the policy accepts, as a deployment would.
    Dynamic(Policy),
}

/// What a runner reports while it works.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RunEvent {
    /// Waiting for another measurement on this machine to finish (local runs never overlap).
    Queued,
    /// Creating sessions.
    Loading,
    /// Untimed warm-up runs.
    WarmingUp,
    /// Measured samples so far.
    Progress {
        /// Samples done.
        done: usize,
        /// Samples in the job.
        total: usize,
    },
    /// After the measured loop: samples compared with the reference variant so far (untimed; see
    /// `runtime::reference`). Sent only for jobs that name a reference.
    ComparingWithReference {
        /// Samples done.
        done: usize,
        /// Samples to compare.
        total: usize,
    },
    /// The samples measured since the previous checkpoint (trace mode, when `checkpoint_every` is set).
    Checkpoint {
        /// Index of the first sample in `samples`.
        first_sample: usize,
        /// Those samples.
        samples: Box<Trace>,
    },
}

/// A sample the run could not use (an unreadable or undecodable image), with why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedSample {
    /// Index in the dataset.
    pub index: usize,
    /// Where it came from (the image file for folders), if it has a file of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// What was wrong.
    pub reason: String,
}

/// Facts about a run, common to trace and dynamic runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunInfo {
    /// Variant name.
    pub variant: String,
    /// Dataset name.
    pub dataset: String,
    /// Where it ran.
    pub device: DeviceRecord,
    /// The remote runner's address; `None` for this process.
    pub runner: Option<String>,
    /// How it ran.
    pub settings: RunSettings,
    /// The execution provider that really ran.
    pub provider: String,
    /// Start time, seconds since the Unix epoch.
    pub started_unix_s: u64,
    /// Wall time of the measured part, seconds.
    pub wall_time_s: f64,
    /// Samples measured.
    pub samples_done: usize,
    /// Samples asked for.
    pub samples_total: usize,
    /// Samples in the dataset (more than `samples_total` for a run limited to the first N).
    pub dataset_samples: usize,
    /// Samples that could not be read, in dataset order; they are in no trace column and no metric's
    /// denominator. A sample's dataset index is its trace index plus the skipped samples before it.
    pub skipped: Vec<SkippedSample>,
    /// False when the run was cancelled or failed part-way: the trace holds the samples done so far.
    pub complete: bool,
    /// Why the run stopped early, when it failed part-way (the samples before it are kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// What each exit held (softmax applied to logits only), in depth order.
    pub output_kinds: Vec<OutputKind>,
    /// Why probability loyalty is an estimate although a reference was named (the reference pass failed or was
    /// cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_failure: Option<String>,
    /// True when the run had a fresh process of its own (`runtime::IsolatedRunner`): its peak RSS is
    /// then the memory of running this variant alone.
    #[serde(default)]
    pub isolated: bool,
    /// Resident memory of the measuring process just before the variant's sessions were created, bytes: the
    /// variant's own memory is the run's peak RSS minus this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_rss_bytes: Option<u64>,
    /// Resource timeline, when sampling was on.
    pub resources: Option<ResourceTimeline>,
    /// Board power during the run and at rest before it, where the board measures it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<PowerSummary>,
}

/// A trace-mode run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceRun {
    /// Facts about the run.
    pub info: RunInfo,
    /// What was recorded.
    pub trace: Trace,
}

/// A dynamic-mode run: what really happened at one policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DynamicRun {
    /// Facts about the run.
    pub info: RunInfo,
    /// The policy applied.
    pub policy: Option<Policy>,
    /// Exit each sample left at (the final exit is the number of early exits).
    pub exit_taken: Vec<u8>,
    /// Measured inference latency of each sample, microseconds.
    pub latency_us: Vec<f32>,
    /// Preprocessing time of each sample, microseconds.
    pub preprocess_us: Vec<f32>,
    /// Predicted class of each sample.
    pub predicted: Vec<u16>,
    /// True label of each sample.
    pub labels: Vec<u32>,
}

/// The result of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RunOutput {
    /// From [`RunMode::Trace`].
    Trace(TraceRun),
    /// From [`RunMode::Dynamic`].
    Dynamic(DynamicRun),
}

impl RunInfo {
    /// A label that tells devices apart: host, remote address when remote, provider.
    pub fn device_label(&self) -> String {
        let provider = self.provider.trim_end_matches("ExecutionProvider");
        match &self.runner {
            Some(address) => format!("{} via {address} ({provider})", self.device.host),
            None => format!("{} ({provider})", self.device.host),
        }
    }

    /// Samples measured and left out: `9 990 of 10 000 samples; 10 skipped`.
    pub fn sample_summary(&self) -> String {
        let measured = self.samples_done.saturating_sub(self.skipped.len());
        let mut text = format!("{measured} of {} samples", self.dataset_samples.max(self.samples_total));
        if !self.skipped.is_empty() {
            text += &format!("; {} skipped", self.skipped.len());
        }
        if self.samples_total < self.dataset_samples {
            text += &format!("; limited to the first {}", self.samples_total);
        }
        if !self.complete {
            text += "; incomplete";
        }
        text
    }

    /// `Some(N)` for a run limited to the first N samples of a larger dataset: kept beside the full trace.
    pub fn sample_limit(&self) -> Option<usize> {
        (self.dataset_samples > self.samples_total).then_some(self.samples_total)
    }

    /// The variant's own memory: peak RSS during the run minus the RSS before its sessions were created.
    pub fn model_memory_bytes(&self) -> Option<u64> {
        let peak = self.resources.as_ref()?.peak_rss_bytes()?;
        Some(peak.saturating_sub(self.baseline_rss_bytes?))
    }

    /// The memory figure of the study's RAM column: the peak RSS of a process that ran only this variant
    /// (ONNX Runtime and the dataset included) when the run was isolated, else the variant's own memory above
    /// the process's baseline (an in-process run shares its process with whatever else it holds).
    pub fn memory_bytes(&self) -> Option<u64> {
        if self.isolated { self.resources.as_ref()?.peak_rss_bytes() } else { self.model_memory_bytes() }
    }

    /// Dataset index of every measured sample (trace order), for a trace of `measured` samples: the indices
    /// from 0 without the skipped ones.
    pub fn measured_indices(&self, measured: usize) -> Vec<usize> {
        let skipped: std::collections::BTreeSet<usize> = self.skipped.iter().map(|s| s.index).collect();
        (0..measured + skipped.len()).filter(|i| !skipped.contains(i)).take(measured).collect()
    }

    /// True when both runs come from the same device, runner and provider.
    pub fn same_device(&self, other: &RunInfo) -> bool {
        self.device.host == other.device.host && self.runner == other.runner && self.provider == other.provider
    }
}

impl RunOutput {
    /// Facts about the run.
    pub fn info(&self) -> &RunInfo {
        match self {
            RunOutput::Trace(t) => &t.info,
            RunOutput::Dynamic(d) => &d.info,
        }
    }
}

/// Which execution provider to ask ONNX Runtime for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderChoice {
    /// The CPU provider (always there).
    #[default]
    Cpu,
    /// NVIDIA CUDA.
    Cuda,
    /// NVIDIA TensorRT (falls back to CUDA, then CPU, for nodes it cannot take).
    Tensorrt,
}

impl ProviderChoice {
    /// Name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ProviderChoice::Cpu => "cpu",
            ProviderChoice::Cuda => "cuda",
            ProviderChoice::Tensorrt => "tensorrt",
        }
    }

    /// Parses [`Self::name`].
    pub fn parse(text: &str) -> Option<Self> {
        [ProviderChoice::Cpu, ProviderChoice::Cuda, ProviderChoice::Tensorrt].into_iter().find(|p| p.name() == text)
    }
}
