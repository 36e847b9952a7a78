//! Running variants with ONNX Runtime: library loading, sessions per segment, timing, resource sampling, the
//! [`Runner`] contract with its local implementation, and background jobs.

pub mod device;
pub mod engine;
pub mod environment;
pub mod isolated;
pub mod job;
pub mod platform;
pub mod power;
pub mod profile;
pub mod reference;
pub mod runner;
pub mod sampler;

use std::path::PathBuf;

pub use engine::LoadedVariant;
pub use environment::ort_environment;
pub use isolated::IsolatedRunner;
pub use job::{JobHandle, JobMessage, spawn_job};
pub use runner::{CancelToken, Job, LocalRunner, Runner, check_compatible};
pub use sampler::ResourceSampler;

/// Why a run could not happen or went wrong. Each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// libonnxruntime is missing or unusable.
    #[error("{0}")]
    OrtUnavailable(String),
    /// Another ONNX Runtime failure.
    #[error("ONNX Runtime: {0}")]
    Ort(String),
    /// A session could not be created for a segment.
    #[error("ONNX Runtime cannot load {}: {reason}", path.display())]
    Session {
        /// The segment file.
        path: PathBuf,
        /// ONNX Runtime's message.
        reason: String,
    },
    /// A segment failed while running.
    #[error("running {} failed: {reason}", path.display())]
    Inference {
        /// The segment file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The requested execution provider cannot be used.
    #[error("{0}")]
    Provider(String),
    /// The dataset does not fit the variant.
    #[error("{0}")]
    Incompatible(String),
    /// A dataset problem.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// A model problem.
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    /// The job was cancelled before it measured anything (for example while queued behind another run).
    #[error("cancelled before it started")]
    Cancelled,
    /// A remote runner failed or could not be reached; the message names it and says what to do.
    #[error("{0}")]
    Remote(String),
    /// A remote run broke off (runner died, link lost) after measuring some samples: they are kept, marked
    /// incomplete.
    #[error("{message}; the {} samples measured before are kept, marked incomplete", partial.trace.len())]
    Interrupted {
        /// What happened, naming the runner.
        message: String,
        /// The samples received so far.
        partial: Box<crate::record::TraceRun>,
    },
}
