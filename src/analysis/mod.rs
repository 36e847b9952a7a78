//! Pure analysis: exit policies, outcomes, sweeps, Pareto fronts and operating points.
//!
//! Nothing here touches ONNX Runtime, files, threads or the GUI: every function maps data to data, so it
//! can run on every frame and be tested against hand-computed cases.

pub mod certify;
pub mod loyalty;
pub mod outcome;
pub mod policy;
pub mod random;
pub mod sweep;
pub mod trace;

pub use outcome::{LatencySummary, Outcome, PreparedTrace, compression_ratio};
pub use policy::{Criterion, Policy, thresholds_from_percentiles};
pub use sweep::{DEFAULT_BUDGET_PP, Sweep, SweepPoint, ThresholdGrid, pareto_front};
pub use trace::{ExitTrace, MAX_TOP_K, Trace};
