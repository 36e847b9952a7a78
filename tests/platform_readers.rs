//! Board readers against fake /sys and /proc trees of a Jetson Orin Nano and a Raspberry Pi 5.

mod common;

use edgescope::record::PlatformState;
use edgescope::runtime::sampler::read_gpu_percent;

#[test]
fn jetson_orin_nano() {
    let root = common::fixture("sysfs/jetson-orin-nano");
    let state = PlatformState::read(&root);
    assert_eq!(state.board.as_deref(), Some("NVIDIA Jetson Orin Nano Developer Kit"));
    assert_eq!(state.power_mode.as_deref(), Some("pmode:0000"));
    assert_eq!(state.temperatures_c.len(), 4);
    assert_eq!(state.temperatures_c[0], ("cpu-thermal".to_string(), 48.25));
    assert_eq!(state.cpu_freq_mhz, vec![1510, 1510, 1510, 1510, 729, 729]);
    assert_eq!(state.gpu_freq_mhz, Some(624));
    assert_eq!(state.gpu_governor.as_deref(), Some("nvhost_podgov"));
    assert_eq!(state.emc_freq_mhz, Some(2133));
    assert_eq!(state.throttled, None);
    assert_eq!(read_gpu_percent(&root), Some(73.4));
    let summary = state.summary();
    assert!(summary.contains("power mode pmode:0000") && summary.contains("GPU 624 MHz"), "{summary}");
}

#[test]
fn raspberry_pi_5() {
    let root = common::fixture("sysfs/raspberry-pi-5");
    let state = PlatformState::read(&root);
    assert_eq!(state.board.as_deref(), Some("Raspberry Pi 5 Model B Rev 1.0"));
    assert_eq!(state.temperatures_c, vec![("cpu-thermal".to_string(), 61.35)]);
    assert_eq!(state.cpu_freq_mhz, vec![2400; 4]);
    assert_eq!(state.throttled.as_deref(), Some("0x50000"));
    assert_eq!((state.gpu_freq_mhz, state.power_mode.clone(), state.emc_freq_mhz), (None, None, None));
    assert_eq!(read_gpu_percent(&root), None);
    assert!(state.summary().contains("throttled 0x50000"));
}

#[test]
fn an_empty_root_reads_nothing_and_does_not_fail() {
    let dir = tempfile::tempdir().expect("temp dir");
    assert_eq!(PlatformState::read(dir.path()), PlatformState::default());
}
