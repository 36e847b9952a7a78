//! ONNX Runtime sessions for one variant: one session per segment, run in order, the carried tensor handed
//! from one to the next without copying, every segment timed on a monotonic clock.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use ort::session::{RunOptions, Session};
use ort::value::{DynValue, TensorRef};

use super::RuntimeError;
use super::environment::ort_environment;
use crate::analysis::trace::softmax;
use crate::model::{KindOrigin, OutputKind, Variant};
use crate::record::ProviderChoice;

struct LoadedSegment {
    session: Session,
    path: PathBuf,
    input: String,
    exit: Option<String>,
    carry: Option<String>,
}

/// A variant's sessions, ready to run samples.
pub struct LoadedVariant {
    segments: Vec<LoadedSegment>,
    num_classes: usize,
    /// What each exit holds, in depth order, and whether the manifest or command line stated it.
    exit_kinds: Vec<(OutputKind, bool)>,
    /// The provider the sessions really use.
    pub provider: String,
    probs: Vec<f32>,
}

impl LoadedVariant {
    /// Creates one session per segment with `intra_threads` (0 = ONNX Runtime's default) on `provider`.
    ///
    /// A provider the library lacks, or that fails to register, is an error: a CPU fallback would silently
    /// measure the wrong thing.
    pub fn load(variant: &Variant, intra_threads: usize, provider: ProviderChoice) -> Result<Self, RuntimeError> {
        use ort::ep::ExecutionProvider;
        let environment = ort_environment()?;
        let (available, provider_name) = match provider {
            ProviderChoice::Cpu => (true, "CPUExecutionProvider"),
            ProviderChoice::Cuda => (ort::ep::CUDA::is_available().unwrap_or(false), "CUDAExecutionProvider"),
            ProviderChoice::Tensorrt => {
                (ort::ep::TensorRT::is_available().unwrap_or(false), "TensorrtExecutionProvider")
            }
        };
        if !available {
            return Err(RuntimeError::Provider(format!(
                "the loaded ONNX Runtime ({}) has no {provider_name}; point ORT_DYLIB_PATH at a build with it \
                 (e.g. the onnxruntime-gpu wheel or JetPack's) or choose --ep cpu",
                super::environment::loaded_library().map_or_else(|| "?".into(), |p| p.display().to_string())
            )));
        }
        let mut segments = Vec::with_capacity(variant.segments.len());
        for segment in &variant.segments {
            let ort_error = |e: String| RuntimeError::Session { path: segment.path.clone(), reason: e };
            let mut builder = Session::builder(environment).map_err(|e| ort_error(e.to_string()))?;
            if intra_threads > 0 {
                builder = builder.with_intra_threads(intra_threads).map_err(|e| ort_error(e.to_string()))?;
            }
            let providers = match provider {
                ProviderChoice::Cpu => vec![],
                ProviderChoice::Cuda => vec![ort::ep::CUDA::default().build().error_on_failure()],
                ProviderChoice::Tensorrt => vec![
                    ort::ep::TensorRT::default().build().error_on_failure(),
                    ort::ep::CUDA::default().build().error_on_failure(),
                ],
            };
            if !providers.is_empty() {
                builder = builder.with_execution_providers(providers).map_err(|e| {
                    RuntimeError::Provider(format!(
                        "{provider_name} failed to start for {}: {e}",
                        segment.path.display()
                    ))
                })?;
            }
            let session = builder.commit_from_file(&segment.path).map_err(|e| ort_error(e.to_string()))?;
            segments.push(LoadedSegment {
                session,
                path: segment.path.clone(),
                input: segment.input.clone(),
                exit: segment.exit.clone(),
                carry: segment.carry.clone(),
            });
        }
        Ok(Self {
            segments,
            num_classes: variant.num_classes,
            exit_kinds: variant
                .segments
                .iter()
                .filter(|s| s.exit.is_some())
                .map(|s| (s.exit_kind, s.exit_kind_origin == KindOrigin::Stated))
                .collect(),
            provider: provider_name.into(),
            probs: Vec::with_capacity(variant.num_classes),
        })
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Number of exits (the final one included).
    pub fn exit_count(&self) -> usize {
        self.exit_kinds.len()
    }

    /// What each exit holds, in depth order, as settled by [`Self::confirm_output_kinds`].
    pub fn exit_kinds(&self) -> Vec<OutputKind> {
        self.exit_kinds.iter().map(|(kind, _)| *kind).collect()
    }

    /// Checks each exit's kind on the raw outputs of a few samples (untimed, before warm-up): probabilities must
    /// be non-negative rows summing to 1, log-probabilities rows whose exponentials sum to 1. A kind read off the
    /// graph or stated that the numbers contradict is an error naming the file and what to state instead; logits
    /// (the default when the graph shows no softmax) whose every row is already a distribution are taken as
    /// probabilities, so softmax is never applied twice.
    pub fn confirm_output_kinds(
        &mut self,
        inputs: &[Vec<f32>],
        input_shape: [usize; 4],
        run_options: &Arc<RunOptions>,
    ) -> Result<(), RuntimeError> {
        let exits = self.exit_kinds.len();
        let mut looks_like: Vec<[bool; 2]> = vec![[true, true]; exits];
        let mut evidence: Vec<String> = vec![String::new(); exits];
        let mut segment_us = vec![0f32; self.segments.len()];
        for input in inputs {
            self.run_raw(input, input_shape, run_options, &mut segment_us, |exit, values| {
                let (is_distribution, is_log_distribution) = distribution_checks(values);
                looks_like[exit][0] &= is_distribution;
                looks_like[exit][1] &= is_log_distribution;
                if evidence[exit].is_empty() {
                    evidence[exit] = summarize_row(values);
                }
                false
            })?;
        }
        if inputs.is_empty() {
            return Ok(());
        }
        let exit_paths: Vec<PathBuf> =
            self.segments.iter().filter(|s| s.exit.is_some()).map(|s| s.path.clone()).collect();
        for (exit, (kind, stated)) in self.exit_kinds.iter_mut().enumerate() {
            let [is_distribution, is_log_distribution] = looks_like[exit];
            let contradiction = match *kind {
                OutputKind::Probabilities if !is_distribution => Some("probabilities"),
                OutputKind::LogProbabilities if !is_log_distribution => Some("log-probabilities"),
                OutputKind::Logits if is_distribution && !*stated => {
                    *kind = OutputKind::Probabilities;
                    None
                }
                _ => None,
            };
            if let Some(claimed) = contradiction {
                let advice = if is_distribution {
                    "state outputs = \"probabilities\""
                } else if is_log_distribution {
                    "state outputs = \"log-probabilities\""
                } else {
                    "state outputs = \"logits\""
                };
                return Err(RuntimeError::Inference {
                    path: exit_paths.get(exit).cloned().unwrap_or_default(),
                    reason: format!(
                        "exit {} is taken as {claimed} but its outputs on the first {} samples are not ({}); {advice} \
                         in the manifest (or --outputs for a bare ONNX file)",
                        exit + 1,
                        inputs.len(),
                        evidence[exit]
                    ),
                });
            }
        }
        Ok(())
    }

    /// Runs one sample of shape `input_shape` through the chain.
    ///
    /// `segment_us[s]` receives the latency of segment `s`. After each exit, `on_exit(exit_index, probabilities)`
    /// decides whether to stop there (`true`): the trace mode always continues, the dynamic mode stops at the
    /// first confident exit. Returns the number of segments that ran.
    pub fn run_sample(
        &mut self,
        input: &[f32],
        input_shape: [usize; 4],
        run_options: &Arc<RunOptions>,
        segment_us: &mut [f32],
        mut on_exit: impl FnMut(usize, &[f32]) -> bool,
    ) -> Result<usize, RuntimeError> {
        let mut probs = std::mem::take(&mut self.probs);
        let kinds: Vec<OutputKind> = self.exit_kinds.iter().map(|(kind, _)| *kind).collect();
        let result = self.run_raw(input, input_shape, run_options, segment_us, |exit, values| {
            to_distribution(kinds[exit], values, &mut probs);
            on_exit(exit, &probs)
        });
        self.probs = probs;
        result
    }

    /// [`Self::run_sample`] on the raw exit outputs.
    fn run_raw(
        &mut self,
        input: &[f32],
        input_shape: [usize; 4],
        run_options: &Arc<RunOptions>,
        segment_us: &mut [f32],
        mut on_exit: impl FnMut(usize, &[f32]) -> bool,
    ) -> Result<usize, RuntimeError> {
        let mut carried: Option<DynValue> = None;
        let mut exit_index = 0;
        let num_classes = self.num_classes;
        for (index, segment) in self.segments.iter_mut().enumerate() {
            let run_error =
                |e: ort::Error| RuntimeError::Inference { path: segment.path.clone(), reason: e.to_string() };
            let started = Instant::now();
            let mut outputs = match carried.take() {
                None => {
                    let tensor = TensorRef::from_array_view((input_shape, input)).map_err(run_error)?;
                    segment
                        .session
                        .run_with_options(ort::inputs![segment.input.as_str() => tensor], run_options.as_ref())
                        .map_err(run_error)?
                }
                Some(value) => segment
                    .session
                    .run_with_options(ort::inputs![segment.input.as_str() => value], run_options.as_ref())
                    .map_err(run_error)?,
            };
            segment_us[index] = started.elapsed().as_secs_f32() * 1e6;
            if let Some(carry) = &segment.carry {
                carried = outputs.remove(carry.as_str());
                if carried.is_none() {
                    return Err(RuntimeError::Inference {
                        path: segment.path.clone(),
                        reason: format!("produced no output {carry:?}"),
                    });
                }
            }
            if let Some(exit) = &segment.exit {
                let value = outputs.get(exit.as_str()).ok_or_else(|| RuntimeError::Inference {
                    path: segment.path.clone(),
                    reason: format!("produced no output {exit:?}"),
                })?;
                let (_, values) = value.try_extract_tensor::<f32>().map_err(|e| RuntimeError::Inference {
                    path: segment.path.clone(),
                    reason: format!("exit {exit:?} is not a float32 tensor ({e})"),
                })?;
                if values.len() != num_classes {
                    return Err(RuntimeError::Inference {
                        path: segment.path.clone(),
                        reason: format!(
                            "exit {exit:?} gave {} values for one sample, expected {num_classes} classes",
                            values.len()
                        ),
                    });
                }
                let stop = on_exit(exit_index, values);
                exit_index += 1;
                if stop {
                    return Ok(index + 1);
                }
            }
        }
        Ok(self.segments.len())
    }
}

/// Turns one exit's raw output into a probability distribution: softmax of logits, the exponentials of
/// log-probabilities (softmax computes exactly that, normalized), probabilities divided by their sum.
pub fn to_distribution(kind: OutputKind, values: &[f32], probs: &mut Vec<f32>) {
    match kind {
        OutputKind::Logits | OutputKind::LogProbabilities => softmax(values, probs),
        OutputKind::Probabilities => {
            probs.clear();
            let sum: f64 = values.iter().map(|&v| f64::from(v.max(0.0))).sum();
            if sum > 0.0 && sum.is_finite() {
                probs.extend(values.iter().map(|&v| (f64::from(v.max(0.0)) / sum) as f32));
            } else {
                let uniform = 1.0 / values.len().max(1) as f32;
                probs.extend(values.iter().map(|_| uniform));
            }
        }
    }
}

/// Largest distance from 1 that a row of probabilities may sum to: a quantized softmax (8-bit, steps of 1/256)
/// rounds every class, so its rows sum to 1 only within a few steps.
const DISTRIBUTION_SUM_TOLERANCE: f64 = 0.05;

/// Whether a row is a probability distribution, and whether it is one in log space.
fn distribution_checks(values: &[f32]) -> (bool, bool) {
    let finite = values.iter().all(|v| v.is_finite());
    let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
    let is_distribution = finite
        && values.iter().all(|&v| v >= -1e-6)
        && (sum - 1.0).abs() <= DISTRIBUTION_SUM_TOLERANCE
        && values.len() > 1;
    let exp_sum: f64 = values.iter().map(|&v| f64::from(v).exp()).sum();
    let is_log_distribution = values.iter().all(|&v| v <= 1e-6 && !v.is_nan())
        && (exp_sum - 1.0).abs() <= DISTRIBUTION_SUM_TOLERANCE
        && !is_distribution;
    (is_distribution, is_log_distribution)
}

/// `min -3.2, max 7.1, sum 12.4` for an error message.
fn summarize_row(values: &[f32]) -> String {
    let min = values.iter().copied().fold(f32::INFINITY, f32::min);
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
    format!("first row: min {min:.4}, max {max:.4}, sum {sum:.4}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_are_never_softmaxed_again() {
        let mut probs = Vec::new();
        to_distribution(OutputKind::Probabilities, &[0.7, 0.2, 0.1], &mut probs);
        assert!((probs[0] - 0.7).abs() < 1e-7 && (probs[2] - 0.1).abs() < 1e-7, "{probs:?}");
        to_distribution(OutputKind::Logits, &[0.7, 0.2, 0.1], &mut probs);
        assert!((probs[0] - 0.7).abs() > 0.1, "logits are softmaxed: {probs:?}");
    }

    #[test]
    fn log_probabilities_become_their_exponentials() {
        let mut probs = Vec::new();
        let logs = [0.7f32.ln(), 0.2f32.ln(), 0.1f32.ln()];
        to_distribution(OutputKind::LogProbabilities, &logs, &mut probs);
        for (p, e) in probs.iter().zip([0.7, 0.2, 0.1]) {
            assert!((p - e).abs() < 1e-6, "{probs:?}");
        }
    }

    #[test]
    fn checks_tell_the_kinds_apart() {
        assert_eq!(distribution_checks(&[0.7, 0.2, 0.1]), (true, false));
        assert_eq!(distribution_checks(&[0.7f32.ln(), 0.2f32.ln(), 0.1f32.ln()]), (false, true));
        assert_eq!(distribution_checks(&[2.0, -1.0, 0.5]), (false, false));
        // A quantized softmax sums to 1 only within its steps.
        assert_eq!(distribution_checks(&[0.6953125, 0.19921875, 0.09765625]), (true, false));
    }
}
