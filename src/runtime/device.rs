//! Reads the device record of this machine (the record itself is plain data in `record`).

use crate::record::DeviceRecord;

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
            platform: crate::record::PlatformState::read(std::path::Path::new("/")),
        }
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
