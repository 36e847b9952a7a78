//! Variants and their files: manifests, ONNX inspection (inputs, outputs, opsets, parameters, operators), the
//! full ONNX protobuf for writing models, and pure graph analysis and rewriting (cut points, splitting).

pub mod cuts;
pub mod graph;
pub mod heads;
pub mod onnx;
pub mod proto;
pub mod variant;

use std::path::PathBuf;

pub use onnx::{DetectedKind, Dim, ModelInfo, OutputKind, TensorInfo, format_shape, inspect};
pub use variant::{KindOrigin, Manifest, Segment, SegmentManifest, Variant};

/// Why a model or manifest could not be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a usable ONNX model.
    #[error("{} is not a usable ONNX model: {reason}; re-export it or check that the download completed", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The manifest or model is inconsistent.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The file was written by a newer edgescope.
    #[error("{} is manifest version {found}, newer than this edgescope reads (up to {supported}); update edgescope", path.display())]
    NewerVersion {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
}
