//! ONNX Runtime sessions for one variant: one session per segment, run in order, the carried tensor handed
//! from one to the next without copying, every segment timed on a monotonic clock.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use ort::session::{RunOptions, Session};
use ort::value::{DynValue, TensorRef};
use serde::{Deserialize, Serialize};

use super::RuntimeError;
use super::environment::ort_environment;
use crate::analysis::trace::softmax;
use crate::model::{OutputKind, Variant};

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
    outputs: OutputKind,
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
            outputs: variant.outputs,
            provider: provider_name.into(),
            probs: Vec::with_capacity(variant.num_classes),
        })
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
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
                let (_, logits) = value.try_extract_tensor::<f32>().map_err(|e| RuntimeError::Inference {
                    path: segment.path.clone(),
                    reason: format!("exit {exit:?} is not a float32 tensor ({e})"),
                })?;
                if logits.len() != num_classes {
                    return Err(RuntimeError::Inference {
                        path: segment.path.clone(),
                        reason: format!(
                            "exit {exit:?} gave {} values for one sample, expected {num_classes} classes",
                            logits.len()
                        ),
                    });
                }
                match self.outputs {
                    OutputKind::Logits => softmax(logits, &mut self.probs),
                    OutputKind::Probabilities => {
                        self.probs.clear();
                        self.probs.extend_from_slice(logits);
                    }
                }
                let stop = on_exit(exit_index, &self.probs);
                exit_index += 1;
                if stop {
                    return Ok(index + 1);
                }
            }
        }
        Ok(self.segments.len())
    }
}
