//! The device record kept with every trace: what hardware, OS and ONNX Runtime produced the numbers.

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
    pub platform: super::platform::PlatformState,
}

impl DeviceRecord {
    /// Reads the record of this machine.
    pub fn this_machine() -> Self {
        let mut system = sysinfo::System::new().ok();
        if let Some(system) = system.as_mut() {
            system.refresh_cpu_all();
            system.refresh_memory();
        }
        let cpu_model = system
            .as_ref()
            .and_then(|s| s.cpus().first().map(|c| c.brand().trim().to_string()))
            .filter(|b| !b.is_empty())
            .or_else(cpu_model_from_proc)
            .unwrap_or_else(|| "unknown".into());
        Self {
            host: sysinfo::System::host_name().unwrap_or_default(),
            os: sysinfo::System::long_os_version().unwrap_or_else(|_| std::env::consts::OS.into()),
            kernel: sysinfo::System::kernel_version().unwrap_or_default(),
            arch: std::env::consts::ARCH.into(),
            cpu_model,
            physical_cores: sysinfo::System::physical_core_count().ok(),
            logical_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_governor: read_trimmed("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
            memory_bytes: system.as_ref().map_or(0, |s| s.total_memory()),
            ort_version: super::environment::ort_version().unwrap_or_else(|e| format!("unavailable: {e}")),
            ort_providers: super::environment::available_providers().unwrap_or_default(),
            power_mode: read_trimmed("/var/lib/nvpmodel/status"),
            platform: super::platform::PlatformState::read(std::path::Path::new("/")),
        }
    }

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

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn cpu_model_from_proc() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find(|l| l.starts_with("model name") || l.starts_with("Model"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}
