//! edgescope: evaluate optimized ONNX variants (pruned, quantized, early-exit) on a labelled dataset and
//! explore their accuracy / latency trade-offs.
//!
//! Layers, each importing only those listed before it: [`analysis`] (pure), [`data`], [`model`],
//! [`runtime`] (ONNX Runtime), [`optimize`] (new variants from existing ones), [`session`] (saved files),
//! [`report`] (tables), and the binaries on top.

pub mod analysis;
#[cfg(feature = "gui")]
pub mod app;
pub mod cli;
pub mod data;
pub mod model;
pub mod net;
pub mod optimize;
pub mod record;
pub mod report;
pub mod runtime;
pub mod session;
