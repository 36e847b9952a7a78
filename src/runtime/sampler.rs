//! The resource sampler: CPU % over all cores, process RSS and GPU load (where readable), at a fixed rate on
//! its own thread. It measures its own cost so the overhead it adds to a run is known, and can be switched off.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::record::{ResourceSample, ResourceTimeline};

/// GPU load files: Jetson (per-mille).
const GPU_LOAD_PATHS: [&str; 2] = ["/sys/devices/gpu.0/load", "/sys/devices/platform/gpu.0/load"];

/// Reads the GPU load in percent from a Jetson-style sysfs file under `root` (per-mille values): the classic
/// `gpu.0/load`, or the `load` of the GPU's devfreq device (Orin).
pub fn read_gpu_percent(root: &std::path::Path) -> Option<f32> {
    let parse = |path: std::path::PathBuf| {
        let text = std::fs::read_to_string(path).ok()?;
        text.trim().parse::<f32>().ok().map(|per_mille| per_mille / 10.0)
    };
    GPU_LOAD_PATHS.iter().find_map(|p| parse(root.join(p.trim_start_matches('/')))).or_else(|| {
        let devfreq = root.join("sys/class/devfreq");
        let gpu = std::fs::read_dir(&devfreq).ok()?.filter_map(Result::ok).find(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.ends_with(".gpu") || name.ends_with(".ga10b") || name.ends_with(".gv11b") || name.ends_with(".gp10b")
        })?;
        parse(gpu.path().join("device/load"))
    })
}

/// This process's resident memory now, bytes (`None` where the platform does not say).
pub fn current_rss_bytes() -> Option<u64> {
    use sysinfo::{ProcessRefreshKind, ProcessesToUpdate};
    let pid = sysinfo::get_current_pid().ok()?;
    let mut system = sysinfo::System::new().ok()?;
    system.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        false,
        ProcessRefreshKind::nothing().with_memory(),
    );
    system.process(pid).map(|p| p.memory()).filter(|&rss| rss > 0)
}

/// A running sampler; [`ResourceSampler::stop`] returns the timeline.
pub struct ResourceSampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<ResourceTimeline>>,
}

impl ResourceSampler {
    /// Starts sampling every `interval` on a thread named `edgescope-sampler`.
    pub fn start(interval: Duration) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("edgescope-sampler".into())
            .spawn(move || sample_until(&flag, interval))?;
        Ok(Self { stop, handle: Some(handle) })
    }

    /// Stops the thread and returns what it read.
    pub fn stop(mut self) -> ResourceTimeline {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().and_then(|h| h.join().ok()).unwrap_or_default()
    }
}

impl Drop for ResourceSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn sample_until(stop: &AtomicBool, interval: Duration) -> ResourceTimeline {
    use sysinfo::{ProcessRefreshKind, ProcessesToUpdate};
    let started = Instant::now();
    let mut timeline = ResourceTimeline { interval_ms: interval.as_millis() as u64, ..Default::default() };
    let (Ok(mut system), Ok(pid)) = (sysinfo::System::new(), sysinfo::get_current_pid()) else {
        return timeline;
    };
    let root = std::path::Path::new("/");
    system.refresh_cpu_usage();
    system.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        false,
        ProcessRefreshKind::nothing().with_cpu(),
    );
    let cores = system.cpus().len().max(1) as f32;
    let mut power = super::power::PowerSampler::detect(root);
    let mut busy = Duration::ZERO;
    let mut next = started + interval;
    let mut read = |timeline: &mut ResourceTimeline, system: &mut sysinfo::System| {
        let read_start = Instant::now();
        system.refresh_cpu_usage();
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            false,
            ProcessRefreshKind::nothing().with_memory().with_cpu(),
        );
        let process = system.process(pid);
        let rss_bytes = process.map_or(0, |p| p.memory());
        // sysinfo gives a process's CPU in percent of one core; the global figure is over all cores.
        let process_cpu_percent = process.map(|p| p.cpu_usage() / cores);
        let load = sysinfo::System::load_average().map_or(0.0, |l| l.one);
        timeline.samples.push(ResourceSample {
            t_s: started.elapsed().as_secs_f32(),
            cpu_percent: system.global_cpu_usage(),
            rss_bytes,
            gpu_percent: read_gpu_percent(root),
            process_cpu_percent,
            load_average_1m: (load > 0.0).then_some(load as f32),
            power_w: power.as_mut().and_then(super::power::PowerSampler::sample_w),
        });
        busy += read_start.elapsed();
    };
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < next {
            // Sleep in short steps so stopping is prompt.
            std::thread::sleep((next - now).min(Duration::from_millis(20)));
            continue;
        }
        next += interval;
        read(&mut timeline, &mut system);
    }
    // A run shorter than one interval still gets one reading, covering the whole run.
    let last_t_s = timeline.samples.last().map_or(0.0, |s| s.t_s);
    if timeline.samples.is_empty() || started.elapsed().as_secs_f32() - last_t_s >= interval.as_secs_f32() / 2.0 {
        read(&mut timeline, &mut system);
    }
    timeline.sampler_busy_us = busy.as_micros() as u64;
    let wall = started.elapsed().as_secs_f64();
    timeline.sampler_overhead_percent = if wall > 0.0 { busy.as_secs_f64() / wall * 100.0 } else { 0.0 };
    timeline
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_jetson_gpu_load_from_a_fake_sysfs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("sys/devices/gpu.0/load");
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(&file, "734\n").expect("write");
        assert_eq!(read_gpu_percent(dir.path()), Some(73.4));
        assert_eq!(read_gpu_percent(&dir.path().join("nothing")), None);
    }

    #[test]
    fn sampler_records_rss_and_its_own_cost() {
        let sampler = ResourceSampler::start(Duration::from_millis(10)).expect("spawn");
        std::thread::sleep(Duration::from_millis(120));
        let timeline = sampler.stop();
        assert!(timeline.samples.len() >= 3, "{} samples", timeline.samples.len());
        assert!(timeline.samples.iter().all(|s| s.rss_bytes > 0));
        assert!(timeline.sampler_busy_us > 0);
    }
}
