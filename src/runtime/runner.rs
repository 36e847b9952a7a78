//! The runner contract and the local runner.
//!
//! A [`Runner`] executes a [`Job`] — a variant over a dataset, in trace or dynamic mode — and reports
//! [`RunEvent`]s while it works. The local runner does it in this process; the remote runner (net) sends the
//! same job to a device. Both implement this one trait and share one test body.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::RuntimeError;
use super::engine::LoadedVariant;
use super::reference::ReferencePass;
use super::sampler::ResourceSampler;
use crate::analysis::trace::Trace;
use crate::data::Dataset;
use crate::model::Variant;
use crate::record::{
    DeviceRecord, DynamicRun, RunEvent, RunInfo, RunMode, RunOutput, RunSettings, SkippedSample, TraceRun,
};
use ort::session::RunOptions;

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
    /// The variant loyalty is measured against (the base), when the trace cannot hold every class: a trace
    /// run then measures the divergence of every sample against it (see [`super::reference`]).
    pub reference: Option<Arc<Variant>>,
}

/// Samples whose kind is checked before warm-up (see [`LoadedVariant::confirm_output_kinds`]).
const OUTPUT_KIND_PROBE_SAMPLES: usize = 4;

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
        let _turn = wait_for_measurement_turn(events, cancel)?;
        run_local(job, device, events, cancel)
    }
}

/// One measurement at a time in this process: runs measured while competing for cores would report the
/// competition, not the model. Local runs queue here.
static MEASUREMENT_TURN: Mutex<()> = Mutex::new(());

/// Waits for the measurement turn, reporting [`RunEvent::Queued`] while another run holds it;
/// [`RuntimeError::Cancelled`] when cancelled while waiting.
pub(crate) fn wait_for_measurement_turn(
    events: &mut dyn FnMut(RunEvent),
    cancel: &CancelToken,
) -> Result<std::sync::MutexGuard<'static, ()>, RuntimeError> {
    let mut announced = false;
    loop {
        match MEASUREMENT_TURN.try_lock() {
            Ok(guard) => return Ok(guard),
            // A run that panicked held the turn; the guard protects no data, so the turn is simply taken over.
            Err(std::sync::TryLockError::Poisoned(poisoned)) => return Ok(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => {}
        }
        if cancel.is_cancelled() {
            return Err(RuntimeError::Cancelled);
        }
        if !announced {
            events(RunEvent::Queued);
            announced = true;
        }
        std::thread::sleep(Duration::from_millis(20));
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
    if settings.limit == Some(0) {
        return Err(RuntimeError::Incompatible("a sample limit of 0 measures nothing; give at least 1".into()));
    }
    check_compatible(variant, dataset)?;
    events(RunEvent::Loading);
    let baseline_rss_bytes = super::sampler::current_rss_bytes();
    let mut loaded = LoadedVariant::load(variant, settings.intra_threads, settings.provider)?;
    let run_options = Arc::new(RunOptions::new().map_err(|e| RuntimeError::Ort(e.to_string()))?);
    cancel.attach(Arc::clone(&run_options));

    let total = settings.limit.map_or(dataset.len(), |l| l.min(dataset.len()));
    let input_shape = dataset.input_shape();
    let mut segment_us = vec![0f32; loaded.segment_count()];
    let exit_segments = variant.exit_segments();
    let early_exits = exit_segments.len() - 1;

    // The first readable samples settle what each exit holds and serve the warm-up.
    let mut probe = Vec::new();
    for index in 0..total {
        let mut input = Vec::new();
        if dataset.load_input(index, &mut input).is_ok() {
            probe.push(input);
            if probe.len() == OUTPUT_KIND_PROBE_SAMPLES {
                break;
            }
        }
    }
    let Some(warmup_input) = probe.first().cloned() else {
        let mut reason = String::new();
        if let Err(e) = dataset.load_input(0, &mut Vec::new()) {
            reason = format!(" (the first: {e})");
        }
        return Err(RuntimeError::Incompatible(format!(
            "none of the {total} samples of dataset {} could be read{reason}",
            dataset.source.display()
        )));
    };
    match loaded.confirm_output_kinds(&probe, input_shape, &run_options) {
        // Cancelled while probing: the measuring loop below stops at once with nothing measured.
        Err(_) if cancel.is_cancelled() => {}
        other => other?,
    }
    drop(probe);

    events(RunEvent::WarmingUp);
    for _ in 0..settings.warmup_runs {
        if cancel.is_cancelled() {
            break;
        }
        match loaded.run_sample(&warmup_input, input_shape, &run_options, &mut segment_us, |_, _| false) {
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
        dataset_samples: dataset.len(),
        output_kinds: loaded.exit_kinds(),
        baseline_rss_bytes,
        ..RunInfo::default()
    };
    // Idle power, just before the measured part: sessions loaded, nothing running.
    let idle_power =
        if settings.sample_resources { super::power::measure_idle(settings.sampler_interval_ms) } else { None };
    let sampler = if settings.sample_resources {
        ResourceSampler::start(Duration::from_millis(settings.sampler_interval_ms.max(1))).ok()
    } else {
        None
    };
    let started = Instant::now();
    let mut measure = SampleLoop {
        dataset,
        total,
        cancel,
        events,
        input: Vec::new(),
        last_event: Instant::now(),
        skipped: Vec::new(),
    };

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
    let measured = match &output {
        RunOutput::Trace(t) => t.trace.len(),
        RunOutput::Dynamic(d) => d.labels.len(),
    };
    let skipped = std::mem::take(&mut measure.skipped);
    let done = measured + skipped.len();
    if failure.is_none() {
        measure.report(done, true);
    }
    if measured == 0
        && let Some(error) = failure
    {
        // Nothing measured: the failure is the whole story.
        return Err(error);
    }
    let info = match &mut output {
        RunOutput::Trace(t) => &mut t.info,
        RunOutput::Dynamic(d) => &mut d.info,
    };
    info.samples_done = done;
    info.skipped = skipped;
    info.wall_time_s = wall_time_s;
    info.power = idle_power.and_then(|idle| idle.summary(resources.as_ref()));
    info.resources = resources;
    info.complete = failure.is_none() && done == total && !cancel.is_cancelled();
    info.failure = failure.map(|e| format!("stopped after {measured} measured samples: {e}"));
    if let (RunOutput::Trace(run), Some(reference)) = (&mut output, &job.reference)
        && variant.needs_reference_pass(reference)
        && !run.trace.is_empty()
        && !cancel.is_cancelled()
    {
        let indices = run.info.measured_indices(run.trace.len());
        let pass = ReferencePass {
            loaded: &mut loaded,
            reference,
            dataset,
            indices: &indices,
            settings,
            cancel,
            run_options: &run_options,
        };
        if let Err(e) = pass.run(&mut run.trace, events) {
            for exit in &mut run.trace.exits {
                exit.reference_jsd_bits.clear();
            }
            run.trace.reference = None;
            run.info.reference_failure = Some(match e {
                RuntimeError::Cancelled => "cancelled while comparing with the reference".into(),
                e => format!("comparing with reference {} failed: {e}", reference.name),
            });
        }
    }
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
    skipped: Vec<SkippedSample>,
}

impl SampleLoop<'_> {
    /// Calls `body(sample, input, preprocess_us)` for every readable sample until done, cancelled or failed,
    /// passing on the event it may return (unreadable samples are recorded in `skipped`); returns the failure (a failure caused by cancelling, such as a terminated ONNX
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
                // One unreadable image does not cost the run: it is listed and left out of every denominator.
                self.skipped.push(SkippedSample {
                    index: sample,
                    source: self.dataset.sample_source(sample).map(|p| p.display().to_string()),
                    reason: e.to_string(),
                });
                self.report(sample + 1, false);
                continue;
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
