//! Plain records that several layers share: how a run was asked for ([`RunSettings`], [`RunMode`]), what it
//! reports while it works ([`RunEvent`]), what it produced ([`TraceRun`], [`DynamicRun`], [`RunInfo`] with the
//! [`DeviceRecord`] and [`ResourceTimeline`]) and a per-operator [`VariantProfile`].
//!
//! `runtime` fills these, `session` saves them, `net` carries them and `report` reads them; none of those
//! imports another for their sake. No logic here beyond small derived figures (means, labels).

pub mod columns;
pub mod device;
pub mod profile;
pub mod resources;
pub mod run;

pub use device::{DeviceRecord, PlatformState};
pub use profile::{NodeTime, OperatorTypeTime, ProfileProgress, ProfileSettings, SegmentProfile, VariantProfile};
pub use resources::{NOISY_OTHER_CPU_PERCENT, PowerSummary, ResourceSample, ResourceTimeline};
pub use run::{
    DEFAULT_SAMPLER_INTERVAL_MS, DEFAULT_WARMUP_RUNS, DynamicRun, ProviderChoice, RunEvent, RunInfo, RunMode,
    RunOutput, RunSettings, SkippedSample, TraceRun,
};
