//! Power readers, so a run can report energy per inference where the board measures its own power.
//!
//! - **Jetson, JetPack 4** (L4T r32; Nano, TX2, Xavier): the `ina3221x` driver's IIO devices,
//!   `/sys/bus/i2c/drivers/ina3221x/<bus>-<addr>/iio:device<k>/` with `rail_name_<n>` and `in_power<n>_input`
//!   (milliwatts; also `in_voltage<n>_input` in mV and `in_current<n>_input` in mA).
//! - **Jetson, JetPack 5/6** (L4T r34+; Orin, Xavier on r35): the upstream `ina3221` hwmon driver,
//!   `/sys/bus/i2c/drivers/ina3221/<bus>-<addr>/hwmon/hwmon<k>/` (also `/sys/class/hwmon/hwmon<k>` with
//!   `name` = `ina3221`) with `in<K>_label`, `in<K>_input` (bus voltage, mV) and `curr<K>_input` (mA), K = 1..3;
//!   channels labelled `NC` are not connected.
//! - **Raspberry Pi 5**: `vcgencmd pmic_read_adc` prints each PMIC rail's current (`<RAIL>_A current(n)=...A`)
//!   and voltage (`<RAIL>_V volt(n)=...V`); the power is the sum of `V x I` over rails with both. The PMIC
//!   rails are what the board's own regulators deliver: the 5 V input side (USB devices, fan, the regulators'
//!   losses) is not in it. `vcgencmd get_throttled` gives the throttling flags.
//!
//! The total is the module's input rail when the board measures one (`VDD_IN`, `POM_5V_IN`: the whole module),
//! otherwise the sum of the measured rails. Every reader takes the filesystem root or the command output, so
//! the tests run them on recorded fake trees and outputs (`tests/fixtures/power/`); a reading that is not there
//! is `None`, never an error.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::record::{PowerSummary, ResourceTimeline};

/// One rail's reading.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RailReading {
    /// The rail's name, e.g. "VDD_IN", "VDD_CORE".
    pub name: String,
    /// Volts, where read.
    pub volts: Option<f64>,
    /// Amperes, where read.
    pub amps: Option<f64>,
    /// Watts.
    pub watts: f64,
}

/// Every rail of one reading and the total.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PowerReading {
    /// The rails, in the order the device lists them.
    pub rails: Vec<RailReading>,
    /// Board power, watts: the input rail when there is one, else the sum of the rails.
    pub total_w: f64,
    /// What `total_w` is: the input rail's name, or "sum of N rails".
    pub total_of: String,
}

impl PowerReading {
    /// The total of `rails` (see the module documentation); `None` without rails.
    pub fn of(rails: Vec<RailReading>) -> Option<Self> {
        if rails.is_empty() {
            return None;
        }
        let input = rails.iter().find(|r| is_input_rail(&r.name));
        let (total_w, total_of) = match input {
            Some(rail) => (rail.watts, rail.name.clone()),
            None => (rails.iter().map(|r| r.watts).sum(), format!("sum of {} rails", rails.len())),
        };
        Some(Self { rails, total_w, total_of })
    }
}

/// True for a rail that feeds the whole module (Jetson `VDD_IN`, Nano `POM_5V_IN`).
fn is_input_rail(name: &str) -> bool {
    let name = name.to_ascii_uppercase();
    name == "VDD_IN" || name.ends_with("_IN") && (name.starts_with("POM_") || name.starts_with("VDD_"))
}

fn read_text(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\0').to_string();
    (!text.is_empty()).then_some(text)
}

fn read_f64(path: &Path) -> Option<f64> {
    read_text(path)?.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Sub-folders of `dir` whose name starts with `prefix`, sorted by (length, name) so hwmon10 follows hwmon9.
fn children(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut found: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(name, path)| name.starts_with(prefix) && path.is_dir())
        .collect();
    found.sort_by(|a, b| (a.0.len(), &a.0).cmp(&(b.0.len(), &b.0)));
    found.into_iter().map(|(_, path)| path).collect()
}

/// The rails of one JetPack 4 `ina3221x` IIO device folder (`.../iio:device0`).
pub fn read_jetson_iio(device: &Path) -> Vec<RailReading> {
    (0..8)
        .filter_map(|n| {
            let name = read_text(&device.join(format!("rail_name_{n}")))?;
            let milliwatts = read_f64(&device.join(format!("in_power{n}_input")))?;
            Some(RailReading {
                name,
                volts: read_f64(&device.join(format!("in_voltage{n}_input"))).map(|mv| mv / 1000.0),
                amps: read_f64(&device.join(format!("in_current{n}_input"))).map(|ma| ma / 1000.0),
                watts: milliwatts / 1000.0,
            })
        })
        .collect()
}

/// The rails of one JetPack 5/6 `ina3221` hwmon folder (`.../hwmon/hwmon3`): power = bus voltage x current.
pub fn read_jetson_hwmon(device: &Path) -> Vec<RailReading> {
    (1..=8)
        .filter_map(|k| {
            let name = read_text(&device.join(format!("in{k}_label")))?;
            if name.eq_ignore_ascii_case("NC") {
                return None;
            }
            let millivolts = read_f64(&device.join(format!("in{k}_input")))?;
            let milliamps = read_f64(&device.join(format!("curr{k}_input")))?;
            Some(RailReading {
                name,
                volts: Some(millivolts / 1000.0),
                amps: Some(milliamps / 1000.0),
                watts: millivolts * milliamps / 1e6,
            })
        })
        .collect()
}

/// Parses `vcgencmd pmic_read_adc` output: one reading per rail with both a current and a voltage line.
pub fn parse_pmic_read_adc(output: &str) -> Vec<RailReading> {
    let mut currents: Vec<(String, f64)> = Vec::new();
    let mut voltages: Vec<(String, f64)> = Vec::new();
    for line in output.lines() {
        let mut words = line.split_whitespace();
        let (Some(label), Some(reading)) = (words.next(), words.next()) else { continue };
        let Some((kind, value)) = reading.split_once('=') else { continue };
        let number =
            |unit: char| value.strip_suffix(unit).and_then(|v| v.parse::<f64>().ok()).filter(|v| v.is_finite());
        if kind.starts_with("current(")
            && let (Some(rail), Some(amps)) = (label.strip_suffix("_A"), number('A'))
        {
            currents.push((rail.to_string(), amps));
        } else if kind.starts_with("volt(")
            && let (Some(rail), Some(volts)) = (label.strip_suffix("_V"), number('V'))
        {
            voltages.push((rail.to_string(), volts));
        }
    }
    currents
        .into_iter()
        .filter_map(|(name, amps)| {
            let volts = voltages.iter().find(|(rail, _)| *rail == name)?.1;
            Some(RailReading { name, volts: Some(volts), amps: Some(amps), watts: volts * amps })
        })
        .collect()
}

/// The Raspberry Pi firmware's throttling flags (`vcgencmd get_throttled`, or the firmware's sysfs file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThrottleFlags(pub u32);

impl ThrottleFlags {
    const NAMES: [(u32, &'static str); 8] = [
        (0, "under-voltage now"),
        (1, "ARM frequency capped now"),
        (2, "throttled now"),
        (3, "soft temperature limit now"),
        (16, "under-voltage has occurred"),
        (17, "ARM frequency capping has occurred"),
        (18, "throttling has occurred"),
        (19, "soft temperature limit has occurred"),
    ];

    /// True when nothing is or was throttled.
    pub fn is_clear(self) -> bool {
        self.0 == 0
    }

    /// True when the board is throttled or capped right now (bits 0-3).
    pub fn now(self) -> bool {
        self.0 & 0xF != 0
    }

    /// The set flags in words.
    pub fn describe(self) -> Vec<&'static str> {
        Self::NAMES.iter().filter(|(bit, _)| self.0 & (1 << bit) != 0).map(|(_, name)| *name).collect()
    }
}

/// Parses `vcgencmd get_throttled` output (`throttled=0x50000`) or a bare hex value.
pub fn parse_get_throttled(output: &str) -> Option<ThrottleFlags> {
    let text = output.trim();
    let value = text.strip_prefix("throttled=").unwrap_or(text);
    let hex = value.strip_prefix("0x").or_else(|| value.strip_prefix("0X"))?;
    u32::from_str_radix(hex, 16).ok().map(ThrottleFlags)
}

/// Where a board's power can be read.
#[derive(Clone, Debug, PartialEq)]
pub enum PowerSource {
    /// Jetson on JetPack 4: `ina3221x` IIO device folders.
    JetsonIio(Vec<PathBuf>),
    /// Jetson on JetPack 5/6: `ina3221` hwmon folders.
    JetsonHwmon(Vec<PathBuf>),
    /// Raspberry Pi 5: this `vcgencmd` program.
    RaspberryPiPmic(PathBuf),
}

/// Places `vcgencmd` is installed on Raspberry Pi OS.
const VCGENCMD_PATHS: [&str; 2] = ["/usr/bin/vcgencmd", "/opt/vc/bin/vcgencmd"];

impl PowerSource {
    /// Finds the power monitor under `root` (`/` on a device); `None` where the board has none readable.
    pub fn detect(root: &Path) -> Option<Self> {
        let iio: Vec<PathBuf> = children(&root.join("sys/bus/i2c/drivers/ina3221x"), "")
            .iter()
            .flat_map(|address| children(address, "iio:device"))
            .filter(|device| !read_jetson_iio(device).is_empty())
            .collect();
        if !iio.is_empty() {
            return Some(Self::JetsonIio(iio));
        }
        let mut hwmon: Vec<PathBuf> = children(&root.join("sys/bus/i2c/drivers/ina3221"), "")
            .iter()
            .flat_map(|address| children(&address.join("hwmon"), "hwmon"))
            .collect();
        if hwmon.is_empty() {
            hwmon = children(&root.join("sys/class/hwmon"), "hwmon")
                .into_iter()
                .filter(|d| read_text(&d.join("name")).is_some_and(|n| n == "ina3221"))
                .collect();
        }
        hwmon.retain(|device| !read_jetson_hwmon(device).is_empty());
        if !hwmon.is_empty() {
            return Some(Self::JetsonHwmon(hwmon));
        }
        let is_pi5 = read_text(&root.join("proc/device-tree/model")).is_some_and(|m| m.contains("Raspberry Pi 5"));
        if is_pi5 {
            let program = VCGENCMD_PATHS.iter().map(|p| root.join(p.trim_start_matches('/'))).find(|p| p.is_file())?;
            return Some(Self::RaspberryPiPmic(program));
        }
        None
    }

    /// What the source is, in words.
    pub fn describe(&self) -> String {
        match self {
            Self::JetsonIio(devices) => format!("Jetson INA3221 (ina3221x iio, {} device(s))", devices.len()),
            Self::JetsonHwmon(devices) => format!("Jetson INA3221 (hwmon, {} device(s))", devices.len()),
            Self::RaspberryPiPmic(_) => "Raspberry Pi 5 PMIC (vcgencmd pmic_read_adc)".into(),
        }
    }

    /// Reads every rail now; `None` when the reading failed.
    pub fn read(&self) -> Option<PowerReading> {
        let rails = match self {
            Self::JetsonIio(devices) => devices.iter().flat_map(|d| read_jetson_iio(d)).collect(),
            Self::JetsonHwmon(devices) => devices.iter().flat_map(|d| read_jetson_hwmon(d)).collect(),
            Self::RaspberryPiPmic(program) => {
                let output = std::process::Command::new(program).arg("pmic_read_adc").output().ok()?;
                if !output.status.success() {
                    return None;
                }
                parse_pmic_read_adc(&String::from_utf8_lossy(&output.stdout))
            }
        };
        PowerReading::of(rails)
    }

    /// The shortest sensible interval between readings: a file read is cheap, starting `vcgencmd` is not
    /// (a process and a firmware mailbox call), so the Pi is read at most twice a second.
    pub fn min_interval(&self) -> Duration {
        match self {
            Self::RaspberryPiPmic(_) => Duration::from_millis(500),
            _ => Duration::ZERO,
        }
    }
}

/// Reads a [`PowerSource`] no more often than it allows, repeating the last value in between.
#[derive(Debug)]
pub struct PowerSampler {
    source: PowerSource,
    last: Option<(Instant, f32)>,
}

impl PowerSampler {
    /// The board's power monitor under `root`, if it has one.
    pub fn detect(root: &Path) -> Option<Self> {
        PowerSource::detect(root).map(|source| Self { source, last: None })
    }

    /// The source.
    pub fn source(&self) -> &PowerSource {
        &self.source
    }

    /// Board power now, watts (the last reading when the source's minimum interval has not passed).
    pub fn sample_w(&mut self) -> Option<f32> {
        if let Some((at, watts)) = self.last
            && at.elapsed() < self.source.min_interval()
        {
            return Some(watts);
        }
        let watts = self.source.read()?.total_w as f32;
        self.last = Some((Instant::now(), watts));
        Some(watts)
    }

    /// Mean power over `duration` of readings every `interval` (the idle power before a run).
    pub fn mean_over(&mut self, duration: Duration, interval: Duration) -> Option<f64> {
        let started = Instant::now();
        let interval = interval.max(self.source.min_interval()).max(Duration::from_millis(1));
        let (mut sum, mut count) = (0.0, 0usize);
        loop {
            if let Some(watts) = self.source.read().map(|r| r.total_w) {
                sum += watts;
                count += 1;
            }
            if started.elapsed() + interval > duration {
                break;
            }
            std::thread::sleep(interval);
        }
        (count > 0).then(|| sum / count as f64)
    }
}

/// How long idle power is read before a run.
pub const IDLE_POWER_DURATION: Duration = Duration::from_secs(1);

/// The board's power monitor and its idle draw, read just before a run.
#[derive(Clone, Debug, PartialEq)]
pub struct IdlePower {
    /// [`PowerSource::describe`].
    pub source: String,
    /// What the total is.
    pub total_of: String,
    /// Mean idle power, watts.
    pub idle_w: Option<f64>,
}

impl IdlePower {
    /// The run's summary from the readings its sampler took; `None` when none had a power.
    pub fn summary(self, timeline: Option<&ResourceTimeline>) -> Option<PowerSummary> {
        let timeline = timeline?;
        Some(PowerSummary {
            mean_w: timeline.mean_power_w()?,
            readings: timeline.power_readings(),
            source: self.source,
            total_of: self.total_of,
            idle_w: self.idle_w,
        })
    }
}

/// Reads the board's idle power for [`IDLE_POWER_DURATION`] at the sampler's interval; `None` (and no delay)
/// on a board without a readable power monitor.
pub fn measure_idle(interval_ms: u64) -> Option<IdlePower> {
    let mut sampler = PowerSampler::detect(Path::new("/"))?;
    let total_of = sampler.source().read()?.total_of;
    let idle_w = sampler.mean_over(IDLE_POWER_DURATION, Duration::from_millis(interval_ms.max(1)));
    Some(IdlePower { source: sampler.source().describe(), total_of, idle_w })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_rail_is_the_total_and_otherwise_the_sum() {
        let rail = |name: &str, watts: f64| RailReading { name: name.into(), volts: None, amps: None, watts };
        let nano = PowerReading::of(vec![rail("POM_5V_IN", 4.0), rail("POM_5V_GPU", 1.0), rail("POM_5V_CPU", 2.0)]);
        assert_eq!(nano.map(|r| (r.total_w, r.total_of)), Some((4.0, "POM_5V_IN".into())));
        let agx = PowerReading::of(vec![rail("VDD_GPU_SOC", 3.0), rail("VDD_CPU_CV", 1.5)]).expect("rails");
        assert_eq!((agx.total_w, agx.total_of.as_str()), (4.5, "sum of 2 rails"));
        assert_eq!(PowerReading::of(Vec::new()), None);
    }

    #[test]
    fn throttled_flags_decode() {
        let flags = parse_get_throttled("throttled=0x50005\n").expect("flags");
        assert_eq!(flags.0, 0x50005);
        assert!(flags.now() && !flags.is_clear());
        assert_eq!(
            flags.describe(),
            vec!["under-voltage now", "throttled now", "under-voltage has occurred", "throttling has occurred"]
        );
        assert_eq!(parse_get_throttled("throttled=0x0"), Some(ThrottleFlags(0)));
        assert_eq!(parse_get_throttled("error=1 error_msg=\"Command not registered\""), None);
    }

    #[test]
    fn a_run_summary_averages_the_sampled_power() {
        use crate::record::{ResourceSample, ResourceTimeline};
        let sample = |power_w| ResourceSample { power_w, ..ResourceSample::default() };
        let timeline = ResourceTimeline {
            samples: vec![sample(Some(5.0)), sample(None), sample(Some(7.0))],
            ..ResourceTimeline::default()
        };
        let idle = IdlePower { source: "test".into(), total_of: "VDD_IN".into(), idle_w: Some(4.0) };
        let summary = idle.clone().summary(Some(&timeline)).expect("summary");
        assert_eq!((summary.mean_w, summary.readings, summary.idle_w), (6.0, 2, Some(4.0)));
        assert_eq!(idle.clone().summary(None), None);
        assert_eq!(idle.summary(Some(&ResourceTimeline::default())), None);
    }

    #[test]
    fn energy_is_power_times_latency() {
        let summary = PowerSummary {
            source: "test".into(),
            total_of: "VDD_IN".into(),
            mean_w: 6.0,
            idle_w: Some(4.5),
            readings: 10,
        };
        assert!((summary.energy_per_inference_j(2000.0) - 0.012).abs() < 1e-12);
        assert!((summary.energy_above_idle_j(2000.0).unwrap_or(0.0) - 0.003).abs() < 1e-12);
    }
}
