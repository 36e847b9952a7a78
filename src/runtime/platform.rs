//! Board-specific readings for the device record: board model, temperatures, CPU / GPU / memory clocks and
//! governors, Jetson power mode, Raspberry Pi throttling. Every reader takes the filesystem root, so tests run
//! them against fake `/sys` and `/proc` trees (there is no Jetson or Pi in CI); a reading that is not there is
//! `None`, never an error.

use std::path::Path;

use crate::record::PlatformState;

fn read(root: &Path, path: &str) -> Option<String> {
    let text = std::fs::read_to_string(root.join(path.trim_start_matches('/'))).ok()?;
    let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\0').to_string();
    (!text.is_empty()).then_some(text)
}

fn read_number(root: &Path, path: &str) -> Option<u64> {
    read(root, path)?.parse().ok()
}

/// Entries of a folder under `root`, sorted.
fn entries(root: &Path, path: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(root.join(path.trim_start_matches('/'))) else { return Vec::new() };
    let mut names: Vec<String> =
        dir.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort_by_key(|n| (n.len(), n.clone()));
    names
}

impl PlatformState {
    /// Reads everything readable under `root` (`/` on a real device).
    pub fn read(root: &Path) -> Self {
        let temperatures_c = entries(root, "/sys/class/thermal")
            .into_iter()
            .filter(|e| e.starts_with("thermal_zone"))
            .filter_map(|zone| {
                let kind = read(root, &format!("/sys/class/thermal/{zone}/type")).unwrap_or_else(|| zone.clone());
                let milli = read(root, &format!("/sys/class/thermal/{zone}/temp"))?.parse::<i64>().ok()?;
                Some((kind, milli as f32 / 1000.0))
            })
            .collect();
        let cpu_freq_mhz = entries(root, "/sys/devices/system/cpu")
            .into_iter()
            .filter(|e| e.strip_prefix("cpu").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
            .filter_map(|cpu| read_number(root, &format!("/sys/devices/system/cpu/{cpu}/cpufreq/scaling_cur_freq")))
            .map(|khz| (khz / 1000) as u32)
            .collect();
        // Jetson GPUs are devfreq devices named after their address, e.g. 17000000.ga10b (Orin) or 57000000.gpu.
        let gpu = entries(root, "/sys/class/devfreq")
            .into_iter()
            .find(|d| d.ends_with(".gpu") || d.ends_with(".ga10b") || d.ends_with(".gv11b") || d.ends_with(".gp10b"));
        let gpu_freq_mhz = gpu
            .as_ref()
            .and_then(|d| read_number(root, &format!("/sys/class/devfreq/{d}/cur_freq")))
            .map(|hz| (hz / 1_000_000) as u32);
        let gpu_governor = gpu.as_ref().and_then(|d| read(root, &format!("/sys/class/devfreq/{d}/governor")));
        Self {
            board: read(root, "/proc/device-tree/model"),
            temperatures_c,
            cpu_freq_mhz,
            gpu_freq_mhz,
            gpu_governor,
            emc_freq_mhz: read_number(root, "/sys/kernel/debug/bpmp/debug/clk/emc/rate")
                .map(|hz| (hz / 1_000_000) as u32),
            power_mode: read(root, "/var/lib/nvpmodel/status"),
            throttled: read(root, "/sys/devices/platform/soc/soc:firmware/get_throttled")
                .or_else(|| read(root, "/sys/devices/platform/soc@107c000000/soc@107c000000:firmware/get_throttled"))
                .map(|flags| match u64::from_str_radix(flags.trim_start_matches("0x"), 16) {
                    Ok(value) => format!("0x{value:x}"),
                    Err(_) => flags,
                }),
        }
    }
}
