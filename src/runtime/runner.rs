//! The runner contract and the local runner.
//!
//! A [`Runner`] executes a [`Job`] — a variant over a dataset, in trace or dynamic mode — and reports
//! [`RunEvent`]s while it works. The local runner does it in this process; the remote runner (net) sends the
//! same job to a device. Both implement this one trait and share one test body.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ort::session::RunOptions;
use serde::{Deserialize, Serialize};

use super::RuntimeError;
use super::device::DeviceRecord;
use super::engine::{LoadedVariant, ProviderChoice};
use super::sampler::{ResourceSampler, ResourceTimeline};
use crate::analysis::policy::Policy;
use crate::analysis::trace::Trace;
use crate::data::Dataset;
use crate::model::Variant;

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

/// What to run.
#[derive(Clone, Debug)]
pub struct Job {
    /// The variant.
    pub variant: Arc<Variant>,
    /// The dataset.
    pub dataset: Arc<Dataset>,
    /// Settings.
    pub settings: RunSettings,
    /// Trace or dynamic.
    pub mode: RunMode,
}

/// What a runner reports while it works.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RunEvent {
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
    /// The samples measured since the previous checkpoint (trace mode, when `checkpoint_every` is set).
    Checkpoint {
        /// Index of the first sample in `samples`.
        first_sample: usize,
        /// Those samples.
        samples: Box<Trace>,
    },
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
    /// False when the run was cancelled or failed part-way: the trace holds the samples done so far.
    pub complete: bool,
    /// Resource timeline, when sampling was on.
    pub resources: Option<ResourceTimeline>,
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

/// Cancels a job, including an ONNX Runtime call in flight (`RunOptions::terminate`).
#[derive(Clone, Default)]
pub struct CancelToken {
    inner: Arc<CancelInner>,
}

#[derive(Default)]
struct CancelInner {
    cancelled: AtomicBool,
    in_flight: Mutex<Option<Arc<RunOptions>>>,
}

impl CancelToken {
    /// A fresh token.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the job to stop as soon as possible.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        if let Ok(guard) = self.inner.in_flight.lock()
            && let Some(options) = guard.as_ref()
        {
            let _ = options.terminate();
        }
    }

    /// True once [`Self::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Lets `cancel` terminate calls made with `options`.
    pub fn attach(&self, options: Arc<RunOptions>) {
        if let Ok(mut guard) = self.inner.in_flight.lock() {
            *guard = Some(Arc::clone(&options));
        }
        if self.is_cancelled() {
            let _ = options.terminate();
        }
    }
}

/// Something that runs jobs: this process, or a remote device.
pub trait Runner {
    /// Describes the device the jobs run on.
    fn device(&mut self) -> Result<DeviceRecord, RuntimeError>;

    /// Runs a job, reporting progress to `events`. A cancelled run returns its partial result with
    /// `complete == false`; errors before measuring starts are returned as errors.
    fn run(
        &mut self,
        job: &Job,
        events: &mut dyn FnMut(RunEvent),
        cancel: &CancelToken,
    ) -> Result<RunOutput, RuntimeError>;
}

/// Runs jobs in this process with ONNX Runtime.
#[derive(Default)]
pub struct LocalRunner {
    device: Option<DeviceRecord>,
}

impl LocalRunner {
    /// A local runner.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Runner for LocalRunner {
    fn device(&mut self) -> Result<DeviceRecord, RuntimeError> {
        super::environment::ort_environment()?;
        Ok(self.device.get_or_insert_with(DeviceRecord::this_machine).clone())
    }

    fn run(
        &mut self,
        job: &Job,
        events: &mut dyn FnMut(RunEvent),
        cancel: &CancelToken,
    ) -> Result<RunOutput, RuntimeError> {
        let device = self.device()?;
        run_local(job, device, events, cancel)
    }
}

/// Checks that the dataset fits the variant before anything runs.
pub fn check_compatible(variant: &Variant, dataset: &Dataset) -> Result<(), RuntimeError> {
    let input =
        variant.input().ok_or_else(|| RuntimeError::Incompatible(format!("{} has no image input", variant.name)))?;
    if input.dtype != "float32" {
        return Err(RuntimeError::Incompatible(format!(
            "{} takes {} input {:?}; edgescope feeds float32 images",
            variant.segments[0].path.display(),
            input.dtype,
            input.name
        )));
    }
    let expected: Vec<Option<i64>> = input.shape.iter().map(|d| d.fixed()).collect();
    if !expected.is_empty() {
        dataset.check_input_shape(&expected)?;
    }
    if let Some((index, label)) = dataset.labels.iter().enumerate().find(|(_, l)| **l as usize >= variant.num_classes) {
        return Err(RuntimeError::Incompatible(format!(
            "dataset {}: sample {index} has label {label} but {} has only {} classes; is this the right dataset?",
            dataset.source.display(),
            variant.name,
            variant.num_classes
        )));
    }
    Ok(())
}

fn run_local(
    job: &Job,
    device: DeviceRecord,
    events: &mut dyn FnMut(RunEvent),
    cancel: &CancelToken,
) -> Result<RunOutput, RuntimeError> {
    let variant = &job.variant;
    let dataset = &job.dataset;
    let settings = &job.settings;
    check_compatible(variant, dataset)?;
    events(RunEvent::Loading);
    let mut loaded = LoadedVariant::load(variant, settings.intra_threads, settings.provider)?;
    let run_options = Arc::new(RunOptions::new().map_err(|e| RuntimeError::Ort(e.to_string()))?);
    cancel.attach(Arc::clone(&run_options));

    let total = settings.limit.map_or(dataset.len(), |l| l.min(dataset.len()));
    let input_shape = dataset.input_shape();
    let mut input = Vec::new();
    let mut segment_us = vec![0f32; loaded.segment_count()];
    let exit_segments = variant.exit_segments();
    let early_exits = exit_segments.len() - 1;

    events(RunEvent::WarmingUp);
    for _ in 0..settings.warmup_runs {
        if cancel.is_cancelled() {
            break;
        }
        dataset.load_input(0, &mut input)?;
        match loaded.run_sample(&input, input_shape, &run_options, &mut segment_us, |_, _| false) {
            Ok(_) => {}
            Err(_) if cancel.is_cancelled() => break,
            Err(e) => return Err(e),
        }
    }

    let info = RunInfo {
        variant: variant.name.clone(),
        dataset: dataset.name.clone(),
        device,
        settings: settings.clone(),
        provider: loaded.provider.clone(),
        started_unix_s: SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        samples_total: total,
        ..RunInfo::default()
    };
    let sampler = if settings.sample_resources {
        ResourceSampler::start(Duration::from_millis(settings.sampler_interval_ms.max(1))).ok()
    } else {
        None
    };
    let started = Instant::now();
    let mut measure = SampleLoop { dataset, total, cancel, events, input: Vec::new(), last_event: Instant::now() };

    let (mut output, failure) = match &job.mode {
        RunMode::Trace => {
            let mut trace = Trace::new(variant.num_classes, loaded.segment_count(), &exit_segments);
            let mut checkpointed = 0usize;
            let failure = measure.run(|sample, input, preprocess_us| {
                let exits = &mut trace.exits;
                let result = loaded.run_sample(input, input_shape, &run_options, &mut segment_us, |exit, probs| {
                    exits[exit].push_distribution(probs);
                    false
                });
                if let Err(e) = result {
                    // Drop the partial sample so every column keeps the same length.
                    let done = trace.labels.len();
                    for exit in &mut trace.exits {
                        exit.top_classes.truncate(done * exit.top_k);
                        exit.top_probs.truncate(done * exit.top_k);
                        exit.entropy_nats.truncate(done);
                    }
                    return Err(e);
                }
                trace.labels.push(dataset.labels[sample]);
                trace.preprocess_us.push(preprocess_us);
                for (column, &us) in trace.segment_latency_us.iter_mut().zip(&segment_us) {
                    column.push(us);
                }
                if let Some(every) = settings.checkpoint_every.filter(|&n| n > 0)
                    && trace.len() - checkpointed >= every
                {
                    let event = RunEvent::Checkpoint {
                        first_sample: checkpointed,
                        samples: Box::new(trace.tail(checkpointed)),
                    };
                    checkpointed = trace.len();
                    return Ok(Some(event));
                }
                Ok(None)
            });
            (RunOutput::Trace(TraceRun { info, trace }), failure)
        }
        RunMode::Dynamic(policy) => {
            let mut run = DynamicRun { policy: Some(policy.clone()), info, ..DynamicRun::default() };
            let cuts = policy.cuts();
            let failure = measure.run(|sample, input, preprocess_us| {
                let mut taken = (0u8, 0u16);
                let segments_run =
                    loaded.run_sample(input, input_shape, &run_options, &mut segment_us, |exit, probs| {
                        // The first of equal maxima, as in the trace's top-k order and numpy's argmax.
                        let predicted =
                            (0..probs.len()).fold(0, |best, i| if probs[i] > probs[best] { i } else { best }) as u16;
                        taken = (exit as u8, predicted);
                        exit < early_exits
                            && cuts
                                .get(exit)
                                .is_some_and(|&cut| policy.criterion.confidence_of_distribution(probs) >= cut)
                    })?;
                run.latency_us.push(segment_us[..segments_run].iter().sum());
                run.exit_taken.push(taken.0);
                run.predicted.push(taken.1);
                run.labels.push(dataset.labels[sample]);
                run.preprocess_us.push(preprocess_us);
                Ok(None)
            });
            (RunOutput::Dynamic(run), failure)
        }
    };
    let wall_time_s = started.elapsed().as_secs_f64();
    let resources = sampler.map(ResourceSampler::stop);
    if let Some(error) = failure {
        return Err(error);
    }
    let done = match &output {
        RunOutput::Trace(t) => t.trace.len(),
        RunOutput::Dynamic(d) => d.labels.len(),
    };
    measure.report(done, true);
    let info = match &mut output {
        RunOutput::Trace(t) => &mut t.info,
        RunOutput::Dynamic(d) => &mut d.info,
    };
    info.samples_done = done;
    info.wall_time_s = wall_time_s;
    info.resources = resources;
    info.complete = done == total && !cancel.is_cancelled();
    Ok(output)
}

/// The measured loop shared by trace and dynamic runs: cancellation, timed preprocessing, progress events.
struct SampleLoop<'a> {
    dataset: &'a Dataset,
    total: usize,
    cancel: &'a CancelToken,
    events: &'a mut dyn FnMut(RunEvent),
    input: Vec<f32>,
    last_event: Instant,
}

impl SampleLoop<'_> {
    /// Calls `body(sample, input, preprocess_us)` for every sample until done, cancelled or failed, passing on
    /// the event it may return; returns the failure (a failure caused by cancelling, such as a terminated ONNX
    /// Runtime call, is not one).
    fn run(
        &mut self,
        mut body: impl FnMut(usize, &[f32], f32) -> Result<Option<RunEvent>, RuntimeError>,
    ) -> Option<RuntimeError> {
        for sample in 0..self.total {
            if self.cancel.is_cancelled() {
                return None;
            }
            let prep_started = Instant::now();
            if let Err(e) = self.dataset.load_input(sample, &mut self.input) {
                return Some(e.into());
            }
            let preprocess_us = prep_started.elapsed().as_secs_f32() * 1e6;
            match body(sample, &self.input, preprocess_us) {
                Err(e) => return (!self.cancel.is_cancelled()).then_some(e),
                Ok(Some(event)) => (self.events)(event),
                Ok(None) => {}
            }
            self.report(sample + 1, false);
        }
        None
    }

    /// Sends a progress event, at most every 50 ms unless forced.
    fn report(&mut self, done: usize, force: bool) {
        if force || self.last_event.elapsed() >= Duration::from_millis(50) {
            (self.events)(RunEvent::Progress { done, total: self.total });
            self.last_event = Instant::now();
        }
    }
}
