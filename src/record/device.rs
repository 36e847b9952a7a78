//! The device record kept with every trace: what hardware, OS and ONNX Runtime produced the numbers, and what
//! the board said about itself (`runtime` reads them on the device).

use serde::{Deserialize, Serialize};

/// Hardware and software state of the machine that ran a job.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceRecord {
    /// Host name.
    pub host: String,
    /// Operating system, long form.
    pub os: String,
    /// Kernel version.
    pub kernel: String,
    /// CPU architecture (`x86_64`, `aarch64`).
    pub arch: String,
    /// CPU model name.
    pub cpu_model: String,
    /// Physical cores, when known.
    pub physical_cores: Option<usize>,
    /// Logical cores.
    pub logical_cores: usize,
    /// CPU frequency governor of cpu0 (`performance`, `schedutil`, ...), when readable.
    pub cpu_governor: Option<String>,
    /// Total memory, bytes.
    pub memory_bytes: u64,
    /// ONNX Runtime version.
    pub ort_version: String,
    /// Execution providers compiled into that ONNX Runtime.
    pub ort_providers: Vec<String>,
    /// Jetson power mode (nvpmodel), when readable.
    pub power_mode: Option<String>,
    /// Board readings: model, temperatures, clocks, throttling (Jetson, Raspberry Pi).
    pub platform: PlatformState,
}

impl DeviceRecord {
    /// One line for the devices list: architecture, CPU, cores, ONNX Runtime, providers, power mode, board.
    pub fn status_line(&self) -> String {
        format!(
            "{} | {} | {} cores | ONNX Runtime {} | {} | power mode {} | {}",
            self.arch,
            self.cpu_model,
            self.logical_cores,
            self.ort_version,
            self.ort_providers.join(", "),
            self.power_mode.as_deref().unwrap_or("-"),
            self.platform.summary()
        )
    }

    /// One line for tables and logs.
    pub fn summary(&self) -> String {
        format!(
            "{} ({}, {} cores, {}), ONNX Runtime {}",
            self.host,
            self.cpu_model,
            self.logical_cores,
            self.cpu_governor.as_deref().unwrap_or("governor unknown"),
            self.ort_version
        )
    }
}

/// What the board tells about itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlatformState {
    /// Board model (`/proc/device-tree/model`), e.g. "Raspberry Pi 5 Model B Rev 1.0".
    pub board: Option<String>,
    /// Thermal zones: (type, degrees Celsius).
    pub temperatures_c: Vec<(String, f32)>,
    /// Current frequency of each CPU, MHz.
    pub cpu_freq_mhz: Vec<u32>,
    /// GPU frequency, MHz (Jetson devfreq).
    pub gpu_freq_mhz: Option<u32>,
    /// GPU frequency governor (Jetson devfreq).
    pub gpu_governor: Option<String>,
    /// External memory controller frequency, MHz (Jetson; needs debugfs).
    pub emc_freq_mhz: Option<u32>,
    /// Jetson power mode (nvpmodel), e.g. "pmode:0002".
    pub power_mode: Option<String>,
    /// Raspberry Pi throttling flags (`get_throttled`, hex), "0x0" when never throttled.
    pub throttled: Option<String>,
}

impl PlatformState {
    /// One line for tables and the Devices panel.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(board) = &self.board {
            parts.push(board.clone());
        }
        if let Some(mode) = &self.power_mode {
            parts.push(format!("power mode {mode}"));
        }
        if let Some(hottest) = self.temperatures_c.iter().map(|t| t.1).reduce(f32::max) {
            parts.push(format!("max {hottest:.1} °C"));
        }
        if let Some(max) = self.cpu_freq_mhz.iter().max() {
            parts.push(format!("CPU up to {max} MHz"));
        }
        if let Some(gpu) = self.gpu_freq_mhz {
            parts.push(format!("GPU {gpu} MHz ({})", self.gpu_governor.as_deref().unwrap_or("?")));
        }
        if let Some(emc) = self.emc_freq_mhz {
            parts.push(format!("EMC {emc} MHz"));
        }
        if let Some(throttled) = &self.throttled {
            parts.push(if throttled == "0x0" { "never throttled".into() } else { format!("throttled {throttled}") });
        }
        parts.join(", ")
    }
}
