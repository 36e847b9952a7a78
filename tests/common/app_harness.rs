//! Driving the app in tests and benchmarks (egui_kittest).

/// Runs frames until the app's background work (opening, analyses, thumbnails) has arrived and it is idle: the
/// UI thread never waits for files, so a test steps until they are in. Spinners repaint continuously while
/// something loads, so this steps frame by frame rather than waiting for the UI to stop repainting.
pub fn settle(harness: &mut egui_kittest::Harness<'_, edgescope::app::EdgescopeApp>) {
    use std::time::{Duration, Instant};
    let started = Instant::now();
    let mut idle_frames = 0;
    while idle_frames < 3 {
        harness.step();
        idle_frames = if harness.state().is_loading() { 0 } else { idle_frames + 1 };
        assert!(started.elapsed() < Duration::from_secs(60), "background work did not settle");
        std::thread::sleep(Duration::from_millis(2));
    }
    harness.run();
}
