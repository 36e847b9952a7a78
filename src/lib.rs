//! edgescope: evaluate optimized ONNX variants (pruned, quantized, early-exit) on a labelled dataset and
//! explore their accuracy / latency trade-offs.
//!
//! Layers, each importing only those listed before it: [`analysis`] (pure), [`format`] (file headers),
//! [`data`], [`model`], [`record`] (plain run records), [`runtime`] (ONNX Runtime), [`session`] (saved files),
//! [`optimize`] (new variants from existing ones), [`net`] (remote runners), [`report`] (tables), and the
//! binaries and the app on top.

pub mod analysis;
#[cfg(feature = "gui")]
pub mod app;
pub mod cli;
pub mod data;
pub mod format;
pub mod model;
pub mod net;
pub mod optimize;
pub mod record;
pub mod report;
pub mod runtime;
pub mod session;
