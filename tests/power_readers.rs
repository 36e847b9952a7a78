//! Power readers against fake Jetson trees (JetPack 4 iio, JetPack 5/6 hwmon) and recorded Raspberry Pi 5
//! `vcgencmd` outputs (`tests/fixtures/power/`).

mod common;

use edgescope::runtime::power::{
    PowerReading, PowerSampler, PowerSource, parse_get_throttled, parse_pmic_read_adc, read_jetson_hwmon,
    read_jetson_iio,
};

fn root(board: &str) -> std::path::PathBuf {
    common::fixture(&format!("power/{board}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn jetson_nano_jetpack4_iio_reads_the_module_input_rail() {
    let root = root("jetson-nano-jp4");
    let device = root.join("sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0");
    let rails = read_jetson_iio(&device);
    let names: Vec<&str> = rails.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"]);
    assert!(close(rails[0].watts, 4.856) && rails[0].volts == Some(5.016) && rails[0].amps == Some(0.968));
    let source = PowerSource::detect(&root).expect("a power monitor");
    assert_eq!(source, PowerSource::JetsonIio(vec![device]));
    let reading = source.read().expect("reading");
    // The module input is the total; the GPU and CPU rails are inside it.
    assert_eq!(reading.total_of, "POM_5V_IN");
    assert!(close(reading.total_w, 4.856));
}

#[test]
fn jetson_agx_xavier_jetpack4_sums_two_devices_without_an_input_rail() {
    let source = PowerSource::detect(&root("jetson-agx-xavier-jp4")).expect("a power monitor");
    let PowerSource::JetsonIio(devices) = &source else { panic!("iio expected, got {source:?}") };
    assert_eq!(devices.len(), 2);
    let reading = source.read().expect("reading");
    assert_eq!(reading.rails.len(), 6);
    assert_eq!(reading.total_of, "sum of 6 rails");
    assert!(close(reading.total_w, 13.967), "{}", reading.total_w);
}

#[test]
fn jetson_orin_nano_jetpack6_hwmon_multiplies_millivolts_by_milliamps() {
    let root = root("jetson-orin-nano-jp6");
    let device = root.join("sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1");
    let rails = read_jetson_hwmon(&device);
    // Only the labelled channels are rails (in4..in7 are shunt voltages).
    let names: Vec<&str> = rails.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]);
    assert_eq!((rails[0].volts, rails[0].amps), (Some(5.064), Some(1.216)));
    let source = PowerSource::detect(&root).expect("a power monitor");
    assert_eq!(source, PowerSource::JetsonHwmon(vec![device]));
    let reading = source.read().expect("reading");
    assert_eq!(reading.total_of, "VDD_IN");
    assert!(close(reading.total_w, 5.064 * 1.216));
    assert!(source.describe().contains("hwmon"));
}

#[test]
fn jetson_agx_orin_jetpack5_through_class_hwmon_skips_unconnected_channels() {
    let source = PowerSource::detect(&root("jetson-agx-orin-jp5")).expect("a power monitor");
    let PowerSource::JetsonHwmon(devices) = &source else { panic!("hwmon expected, got {source:?}") };
    // hwmon0 is the fan, not an ina3221.
    assert_eq!(devices.len(), 2);
    let reading = source.read().expect("reading");
    let names: Vec<&str> = reading.rails.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"]);
    assert_eq!(reading.total_of, "sum of 4 rails");
    assert!(close(reading.total_w, 15.391232), "{}", reading.total_w);
}

#[test]
fn raspberry_pi_5_pmic_output_sums_volts_times_amps() {
    let root = root("raspberry-pi-5");
    let text = std::fs::read_to_string(root.join("pmic_read_adc.txt")).expect("recorded output");
    let rails = parse_pmic_read_adc(&text);
    // 12 rails have both a current and a voltage; EXT5V and BATT have only a voltage.
    assert_eq!(rails.len(), 12);
    let core = rails.iter().find(|r| r.name == "VDD_CORE").expect("VDD_CORE");
    assert_eq!((core.volts, core.amps), (Some(0.85168), Some(1.5204)));
    assert!(close(core.watts, 0.85168 * 1.5204));
    let reading = PowerReading::of(rails).expect("reading");
    assert_eq!(reading.total_of, "sum of 12 rails");
    assert!((reading.total_w - 2.415_954_742_709_19).abs() < 1e-9, "{}", reading.total_w);
    let throttled = std::fs::read_to_string(root.join("get_throttled.txt")).expect("recorded output");
    let flags = parse_get_throttled(&throttled).expect("flags");
    assert_eq!(flags.0, 0x50000);
    assert!(!flags.now());
    assert_eq!(flags.describe(), ["under-voltage has occurred", "throttling has occurred"]);
}

#[test]
fn raspberry_pi_5_runs_vcgencmd() {
    let root = root("raspberry-pi-5");
    let source = PowerSource::detect(&root).expect("a Pi 5 with vcgencmd");
    assert_eq!(source, PowerSource::RaspberryPiPmic(root.join("usr/bin/vcgencmd")));
    let reading = source.read().expect("the script prints the recorded output");
    assert!((reading.total_w - 2.415_954_742_709_19).abs() < 1e-9);
    let mut sampler = PowerSampler::detect(&root).expect("sampler");
    let first = sampler.sample_w().expect("reading");
    // Within the minimum interval the last value is repeated without starting vcgencmd again.
    assert_eq!(sampler.sample_w(), Some(first));
}

#[test]
fn boards_without_a_power_monitor_read_nothing() {
    // The Jetson and Pi trees of the platform readers have no power monitor; an empty root has nothing.
    assert_eq!(PowerSource::detect(&common::fixture("sysfs/jetson-orin-nano")), None);
    assert_eq!(PowerSource::detect(&common::fixture("sysfs/raspberry-pi-5")), None, "no vcgencmd in that tree");
    let dir = tempfile::tempdir().expect("temp dir");
    assert_eq!(PowerSource::detect(dir.path()), None);
    assert!(parse_pmic_read_adc("").is_empty());
    assert!(parse_pmic_read_adc("garbage line\nVDD_CORE_A current(7)=notanumberA").is_empty());
}

#[test]
fn tables_3_6_show_power_and_energy_when_a_run_has_them() {
    use edgescope::analysis::Trace;
    use edgescope::record::PowerSummary;
    use edgescope::record::{RunInfo, TraceRun};
    use edgescope::report::{self, ReportOptions};
    use edgescope::session::{Session, VariantEntry};

    // One sample, one segment of 2 ms: energy per inference = 6 W x 2 ms = 12 mJ, 3 mJ above 4.5 W idle.
    let mut trace = Trace::new(2, 1, &[0]);
    trace.labels.push(0);
    trace.preprocess_us.push(100.0);
    trace.segment_latency_us[0].push(2000.0);
    trace.exits[0].push_distribution(&[0.9, 0.1]);
    let mut session = Session::default();
    let tags = vec!["base".to_string()];
    session.variants.push(VariantEntry { name: "m/base".into(), tags, ..VariantEntry::default() });
    let power = PowerSummary {
        source: "Jetson INA3221 (hwmon, 1 device(s))".into(),
        total_of: "VDD_IN".into(),
        mean_w: 6.0,
        idle_w: Some(4.5),
        readings: 12,
    };
    let info = RunInfo { variant: "m/base".into(), complete: true, power: Some(power), ..RunInfo::default() };
    session.runs.push(TraceRun { info: info.clone(), trace });
    let options = ReportOptions::default();
    let performance = |session: &Session| {
        let tables = report::tables(&report::rows(session, &options), &options);
        tables.into_iter().find(|t| t.id == "table3-6").expect("Tables 3-6")
    };
    let table = performance(&session);
    let column = |name: &str| table.column(name).expect(name);
    assert_eq!(table.rows[0][column("Power (W)")].display(), "6.00");
    assert_eq!(table.rows[0][column("Idle (W)")].display(), "4.50");
    assert_eq!(table.rows[0][column("Energy/inf. (mJ)")].display(), "12.000");
    assert_eq!(table.rows[0][column("Above idle (mJ)")].display(), "3.000");
    let energy_mj = table.rows[0][column("Energy/inf. (mJ)")].number().expect("a number, not a string");
    assert!((energy_mj - 12.0).abs() < 1e-9, "{energy_mj}");
    // Without power anywhere the columns are left out.
    session.runs[0].info.power = None;
    assert!(!performance(&session).columns.iter().any(|c| c.name.starts_with("Power")));
}
