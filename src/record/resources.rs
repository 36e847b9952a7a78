//! What the resource sampler and the board's power meters recorded during a run: plain data kept with every
//! trace, with the means the report shows.

use serde::{Deserialize, Serialize};

/// One reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceSample {
    /// Seconds since the sampler started.
    pub t_s: f32,
    /// CPU load averaged over all logical cores, percent.
    pub cpu_percent: f32,
    /// Resident set size of this process, bytes.
    pub rss_bytes: u64,
    /// GPU load percent, where the platform exposes it.
    pub gpu_percent: Option<f32>,
    /// CPU used by this process, percent of all logical cores (so `cpu_percent - process_cpu_percent` is what
    /// other processes used). `None` in files from before it was recorded.
    #[serde(default)]
    pub process_cpu_percent: Option<f32>,
    /// The machine's one-minute load average (runnable tasks, this process's included), where readable.
    #[serde(default)]
    pub load_average_1m: Option<f32>,
    /// Board power, watts, where the board measures it (`runtime::power`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_w: Option<f32>,
}

/// Mean CPU of other processes, percent of all cores, above which a run is flagged noisy: their work competed
/// with the measured one for cores and caches, so its latencies are not the machine's own.
pub const NOISY_OTHER_CPU_PERCENT: f64 = 10.0;

/// The readings of one run plus what sampling cost.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceTimeline {
    /// Interval between readings, milliseconds.
    pub interval_ms: u64,
    /// The readings.
    pub samples: Vec<ResourceSample>,
    /// Time the sampler thread spent reading, microseconds.
    pub sampler_busy_us: u64,
    /// `sampler_busy_us` as a share of one core over the run, percent.
    pub sampler_overhead_percent: f64,
}

impl ResourceTimeline {
    /// Mean CPU percent over the readings.
    pub fn mean_cpu_percent(&self) -> Option<f64> {
        mean(self.samples.iter().map(|s| f64::from(s.cpu_percent)))
    }

    /// Mean RSS in bytes over the readings.
    pub fn mean_rss_bytes(&self) -> Option<f64> {
        mean(self.samples.iter().map(|s| s.rss_bytes as f64))
    }

    /// Peak RSS in bytes.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        self.samples.iter().map(|s| s.rss_bytes).max()
    }

    /// Mean CPU used by other processes during the run, percent of all cores (readings that recorded it).
    pub fn mean_other_cpu_percent(&self) -> Option<f64> {
        mean(
            self.samples
                .iter()
                .filter_map(|s| s.process_cpu_percent.map(|own| f64::from((s.cpu_percent - own).max(0.0)))),
        )
    }

    /// Mean one-minute load average over the readings.
    pub fn mean_load_average(&self) -> Option<f64> {
        mean(self.samples.iter().filter_map(|s| s.load_average_1m.map(f64::from)))
    }

    /// True when other processes used more than [`NOISY_OTHER_CPU_PERCENT`] of the machine during the run.
    pub fn is_noisy(&self) -> bool {
        self.mean_other_cpu_percent().is_some_and(|p| p > NOISY_OTHER_CPU_PERCENT)
    }

    /// Mean board power over the readings that have one, watts.
    pub fn mean_power_w(&self) -> Option<f64> {
        mean(self.samples.iter().filter_map(|s| s.power_w.map(f64::from)))
    }

    /// Readings with a board power.
    pub fn power_readings(&self) -> usize {
        self.samples.iter().filter(|s| s.power_w.is_some()).count()
    }

    /// Mean GPU percent over the readings that have one.
    pub fn mean_gpu_percent(&self) -> Option<f64> {
        mean(self.samples.iter().filter_map(|s| s.gpu_percent.map(f64::from)))
    }
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, count) = values.fold((0.0, 0usize), |(s, c), v| (s + v, c + 1));
    (count > 0).then(|| sum / count as f64)
}

/// A run's power: the board's draw during the measured part and at rest just before it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PowerSummary {
    /// Where it was read (`runtime::power::PowerSource::describe`).
    pub source: String,
    /// What the total is (the input rail, or the sum of the rails).
    pub total_of: String,
    /// Mean board power during the measured samples, watts.
    pub mean_w: f64,
    /// Mean board power at rest just before the run (sessions loaded, nothing running), watts.
    pub idle_w: Option<f64>,
    /// Readings behind `mean_w`.
    pub readings: usize,
}

impl PowerSummary {
    /// Energy of one inference of mean latency `latency_us`: power x latency (seed 002), joules.
    pub fn energy_per_inference_j(&self, latency_us: f64) -> f64 {
        self.mean_w * latency_us * 1e-6
    }

    /// The part of [`Self::energy_per_inference_j`] above the idle draw, joules (`None` without idle power).
    pub fn energy_above_idle_j(&self, latency_us: f64) -> Option<f64> {
        self.idle_w.map(|idle| (self.mean_w - idle).max(0.0) * latency_us * 1e-6)
    }
}
