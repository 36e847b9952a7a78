//! The reference pass: exact probability loyalty beyond the top-k classes a trace keeps.
//!
//! A trace keeps the top [`crate::analysis::trace::MAX_TOP_K`] classes per sample and exit. With more classes than that, the rest of
//! each distribution is gone, and probability loyalty (a divergence over every class) can only be estimated
//! (on ImageNet photos 25-40 % of the mass lies outside the top 16). So after the measured loop, when the job
//! names a reference (the base variant), the runner goes over the measured samples once more, untimed, runs the
//! variant and the reference on each, and records per exit the Jensen-Shannon divergence between the two full
//! distributions: 4 bytes per sample and exit, exact whatever the class count.
//!
//! It runs after the resource sampler has stopped and the latencies are recorded, so neither the latency nor
//! the memory figures include the reference model.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ort::session::RunOptions;

use super::engine::LoadedVariant;
use super::{CancelToken, RuntimeError};
use crate::analysis::loyalty::jsd_bits_full;
use crate::analysis::trace::Trace;
use crate::data::Dataset;
use crate::model::Variant;
use crate::record::{RunEvent, RunSettings};

/// Everything the pass needs from the run that precedes it.
pub(crate) struct ReferencePass<'a> {
    /// The variant, loaded (its exit kinds already confirmed).
    pub loaded: &'a mut LoadedVariant,
    /// The reference variant.
    pub reference: &'a Variant,
    /// The dataset.
    pub dataset: &'a Dataset,
    /// Dataset index of every trace sample, in trace order.
    pub indices: &'a [usize],
    /// Settings of the run (threads, provider).
    pub settings: &'a RunSettings,
    /// Cancels the pass.
    pub cancel: &'a CancelToken,
    /// The run's options (terminated on cancel).
    pub run_options: &'a Arc<RunOptions>,
}

impl ReferencePass<'_> {
    /// Fills every exit's [`crate::analysis::trace::ExitTrace::reference_jsd_bits`] and `trace.reference`.
    ///
    /// On error or cancel the trace is left without divergences (probability loyalty then falls back to the
    /// top-k estimate, shown with its bound) and the error says why.
    pub fn run(self, trace: &mut Trace, events: &mut dyn FnMut(RunEvent)) -> Result<(), RuntimeError> {
        let total = self.indices.len();
        let mut reference = LoadedVariant::load(self.reference, self.settings.intra_threads, self.settings.provider)?;
        let input_shape = self.dataset.input_shape();
        let mut input = Vec::new();
        let mut probe = Vec::new();
        for &index in self.indices.iter().take(4) {
            self.dataset.load_input(index, &mut input)?;
            probe.push(input.clone());
        }
        reference.confirm_output_kinds(&probe, input_shape, self.run_options)?;

        let exits = trace.exits.len();
        let mut divergences: Vec<Vec<f32>> = vec![Vec::with_capacity(total); exits];
        let mut variant_probs: Vec<Vec<f32>> = vec![Vec::new(); exits];
        let mut reference_probs: Vec<f32> = Vec::new();
        let mut reference_us = vec![0f32; reference.segment_count()];
        let mut variant_us = vec![0f32; self.loaded.segment_count()];
        let mut last_event = Instant::now();
        for (done, &index) in self.indices.iter().enumerate() {
            if self.cancel.is_cancelled() {
                return Err(RuntimeError::Cancelled);
            }
            self.dataset.load_input(index, &mut input)?;
            self.loaded.run_sample(&input, input_shape, self.run_options, &mut variant_us, |exit, probs| {
                variant_probs[exit].clear();
                variant_probs[exit].extend_from_slice(probs);
                false
            })?;
            let reference_exits = reference.exit_count();
            reference.run_sample(&input, input_shape, self.run_options, &mut reference_us, |exit, probs| {
                if exit + 1 == reference_exits {
                    reference_probs.clear();
                    reference_probs.extend_from_slice(probs);
                }
                false
            })?;
            for (exit, probs) in variant_probs.iter().enumerate() {
                divergences[exit].push(jsd_bits_full(&reference_probs, probs) as f32);
            }
            if last_event.elapsed() >= Duration::from_millis(50) || done + 1 == total {
                events(RunEvent::ComparingWithReference { done: done + 1, total });
                last_event = Instant::now();
            }
        }
        for (exit, column) in trace.exits.iter_mut().zip(divergences) {
            exit.reference_jsd_bits = column;
        }
        trace.reference = Some(self.reference.name.clone());
        Ok(())
    }
}
