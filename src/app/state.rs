//! What the app saves between starts (apart from the session file itself): layout, recent sessions, the
//! exploration settings. Runtime state — the loaded session, workers, caches — lives in [`super::World`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::analysis::{Criterion, DEFAULT_BUDGET_PP};

/// The app's tabs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tab {
    /// Early-exit thresholds, live outcomes and plots.
    #[default]
    Explore,
    /// The study's tables and scatter plots across techniques.
    Compare,
    /// Variants and datasets: what they contain.
    Models,
    /// Running variants: jobs, progress, resource timelines.
    Runs,
}

impl Tab {
    /// All tabs in display order.
    pub const ALL: [Tab; 4] = [Tab::Explore, Tab::Compare, Tab::Models, Tab::Runs];

    /// Title on the tab bar.
    pub fn title(self) -> &'static str {
        match self {
            Tab::Explore => "Explore",
            Tab::Compare => "Compare",
            Tab::Models => "Models & data",
            Tab::Runs => "Runs",
        }
    }
}

/// Saved with eframe's storage (`persistence`); every field has a default so older saves load.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SavedState {
    /// The session that was open.
    pub session_path: Option<PathBuf>,
    /// Recently opened sessions, newest first.
    pub recent_sessions: Vec<PathBuf>,
    /// The tab shown.
    pub tab: Tab,
    /// The variant explored.
    pub selected_variant: Option<String>,
    /// The exit criterion.
    pub criterion: Criterion,
    /// inf-opt accuracy budget, percentage points.
    pub budget_pp: f64,
    /// The first-start hint was closed.
    pub hint_dismissed: bool,
    /// Intra-op threads for runs (0 = ONNX Runtime's choice).
    pub run_threads: usize,
    /// Warm-up runs.
    pub run_warmup: usize,
    /// Only the first N samples (0 = all).
    pub run_limit: usize,
    /// Remote runners saved here by versions before the shared devices list: read once, moved into the list
    /// (`net::devices`), never written again.
    #[serde(rename = "devices", skip_serializing)]
    pub legacy_devices: Vec<DeviceConfig>,
    /// The devices list the app shares with the CLI; `None` for its default place (`$EDGESCOPE_DEVICES`, else
    /// `~/.config/edgescope/devices.toml`).
    pub devices_file: Option<PathBuf>,
    /// Presentation mode: light theme, large type, editing controls hidden, full screen.
    pub presentation: bool,
    /// Latency axes on a logarithmic scale.
    pub log_latency: bool,
}

/// A remote runner as the user configured it: an entry of the devices list the CLI shares.
pub use crate::net::DeviceConfig;

impl Default for SavedState {
    fn default() -> Self {
        Self {
            session_path: None,
            recent_sessions: Vec::new(),
            tab: Tab::Explore,
            selected_variant: None,
            criterion: Criterion::Entropy,
            budget_pp: DEFAULT_BUDGET_PP,
            hint_dismissed: false,
            run_threads: 0,
            run_warmup: crate::record::DEFAULT_WARMUP_RUNS,
            run_limit: 0,
            legacy_devices: Vec::new(),
            devices_file: None,
            presentation: false,
            log_latency: false,
        }
    }
}

impl SavedState {
    /// Puts `path` first in the recent list (at most 8).
    pub fn remember_session(&mut self, path: PathBuf) {
        self.recent_sessions.retain(|p| p != &path);
        self.recent_sessions.insert(0, path.clone());
        self.recent_sessions.truncate(8);
        self.session_path = Some(path);
    }
}
