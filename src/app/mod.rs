//! The desktop app (feature `gui`): load variants and datasets, run them in the background, and explore
//! early-exit thresholds with live outcomes, Pareto plots and the study's tables.
//!
//! Shape: [`SavedState`] is what persists between starts; [`World`] is runtime state. Drawing code never
//! mutates the world: widgets push [`Command`]s, and [`EdgescopeApp::apply`] — the one place that changes
//! anything — runs them in `logic`, after the worker channels are drained.
//!
//! Files by responsibility: `commands` (what widgets can ask for), `handle` (applying commands), `background`
//! (draining worker channels), `top_bar` (file actions, tabs, messages), `capture` (screenshots and figure
//! export); one file per tab (`explore`, `compare`, `models`, `runs`) and per dialog.

use eframe::egui;

mod background;
mod capture;
mod certify;
mod commands;
mod compare;
mod devices;
mod exits_dialog;
mod explore;
mod figure_view;
mod handle;
mod loader;
mod models;
mod profile_view;
mod quantize_dialog;
mod runs;
mod sensitivity_view;
pub mod state;
mod study_wizard;
mod top_bar;
mod worker;
pub mod world;

use std::path::PathBuf;

pub use capture::ScreenshotScript;
pub use commands::{Command, Commands};
pub use state::{SavedState, Tab};
use world::World;

/// Key of the saved state in eframe's storage.
const STORAGE_KEY: &str = "edgescope-app";

/// The app.
pub struct EdgescopeApp {
    /// Saved between starts.
    pub saved: SavedState,
    /// Runtime state.
    pub world: World,
    /// Commands emitted while drawing, applied in the next `logic`.
    pending: Vec<Command>,
    ctx: egui::Context,
    /// Scripted screenshots for the README, if requested.
    script: Option<ScreenshotScript>,
    /// The edgescope executable local runs start a fresh process of (one per variant, so its memory is its
    /// own); `None` runs them in this process (tests, where the executable is the test harness).
    child_executable: Option<PathBuf>,
}

/// True when `path` is the bundled demo session (which Save never overwrites).
pub fn is_demo_session(path: &std::path::Path) -> bool {
    let canonical = |p: &std::path::Path| std::fs::canonicalize(p).ok();
    demo_session_path().and_then(|demo| canonical(&demo)).is_some_and(|demo| canonical(path) == Some(demo))
}

/// The demo session shipped with the repository, if present.
pub fn demo_session_path() -> Option<PathBuf> {
    let candidates =
        [PathBuf::from("sessions/demo.json"), PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sessions/demo.json")];
    candidates.into_iter().find(|p| p.is_file())
}

impl EdgescopeApp {
    /// Creates the app; opens `session` if given, else the last session, else the demo.
    pub fn new(cc: &eframe::CreationContext<'_>, session: Option<PathBuf>) -> Self {
        let saved: SavedState = cc.storage.and_then(|s| eframe::get_value(s, STORAGE_KEY)).unwrap_or_default();
        let mut app = Self::with_state(cc.egui_ctx.clone(), saved, session);
        app.child_executable = std::env::current_exe().ok();
        app
    }

    /// Creates the app from a saved state (used by tests).
    pub fn with_state(ctx: egui::Context, saved: SavedState, session: Option<PathBuf>) -> Self {
        let mut app =
            Self { saved, world: World::default(), pending: Vec::new(), ctx, script: None, child_executable: None };
        app.world.loader.set_context(app.ctx.clone());
        app.load_devices();
        let start =
            session.or_else(|| app.saved.session_path.clone().filter(|p| p.is_file())).or_else(demo_session_path);
        if let Some(path) = start {
            app.apply(Command::OpenSession(path));
        }
        app
    }

    /// True while background work (opening, saving, analyses) is under way; tests step until it settles.
    pub fn is_loading(&self) -> bool {
        self.world.loader.any_busy() || !self.pending.is_empty() || self.world.dialogs_busy()
    }

    /// Queues a command (tests use this as a user would use a widget).
    pub fn send(&mut self, command: Command) {
        self.pending.push(command);
        self.ctx.request_repaint();
    }

    /// Report options from the saved state.
    pub fn report_options(&self) -> crate::report::ReportOptions {
        crate::report::ReportOptions {
            criterion: self.saved.criterion,
            budget_pp: self.saved.budget_pp,
            ..crate::report::ReportOptions::default()
        }
    }
}

/// The variant the app first shows: a plain early-exit chain if there is one (the slider is the point of the
/// app), else any early-exit variant, else the first run.
fn first_early_exit_variant(world: &World) -> Option<String> {
    let runs: Vec<&crate::record::TraceRun> =
        world.session.runs.iter().filter(|r| !world.session.is_calibration_run(r)).collect();
    let plain_ee = |r: &&&crate::record::TraceRun| {
        r.trace.early_exit_count() == 1
            && world.session.variant(&r.info.variant).is_some_and(|v| v.tags.iter().all(|t| t == "ee"))
    };
    runs.iter()
        .find(plain_ee)
        .or_else(|| runs.iter().find(|r| r.trace.early_exit_count() > 0))
        .or_else(|| runs.first())
        .map(|r| r.info.variant.clone())
}

impl eframe::App for EdgescopeApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.drain(ctx);
        self.shortcuts_and_close(ctx);
        self.probe_devices();
        self.drive_script(ctx);
        self.apply_pending();
        if self.world.jobs.iter().any(|j| j.handle.is_some()) {
            // Keep the progress bars moving even when the worker's own repaints are rate-limited.
            ctx.request_repaint_after(std::time::Duration::from_millis(100));
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let mut queue = Vec::new();
        {
            let mut commands = Commands(&mut queue);
            egui::Panel::top("top_bar").show(ui, |ui| {
                self.top_bar_ui(ui, &mut commands);
                self.messages_ui(ui, &mut commands);
            });
            egui::CentralPanel::default().show(ui, |ui| match self.saved.tab {
                Tab::Explore => explore::explore_ui(ui, &self.saved, &self.world, &mut commands),
                Tab::Compare => compare::compare_ui(ui, &self.saved, &self.world, &mut commands),
                Tab::Models => models::models_ui(ui, &self.world, &mut commands),
                Tab::Runs => {
                    egui::ScrollArea::vertical().id_salt("runs_scroll").show(ui, |ui| {
                        runs::runs_ui(ui, &self.saved, &self.world, &mut commands);
                    });
                }
            });
            // Dialogs own their form state (ticks, text boxes) and draw it; what they start goes through commands.
            exits_dialog::window_ui(ui.ctx(), &mut self.world);
            profile_view::window_ui(ui.ctx(), &mut self.world);
            quantize_dialog::window_ui(ui.ctx(), &mut self.world);
            self.unsaved_prompt_ui(ui.ctx(), &mut commands);
        }
        study_wizard::window_ui(ui.ctx(), self);
        if !queue.is_empty() {
            self.pending.extend(queue);
            ui.ctx().request_repaint();
        }
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        // A scripted screenshot run leaves the user's saved layout alone.
        if self.script.is_none() {
            eframe::set_value(storage, STORAGE_KEY, &self.saved);
        }
    }
}

/// Opens the app window (blocking until it closes). With `screenshots`, takes the README's screenshots into
/// that folder and closes.
pub fn run_app(session: Option<PathBuf>, screenshots: Option<PathBuf>) -> Result<(), String> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("edgescope")
            .with_inner_size([1400.0, 900.0])
            .with_min_inner_size([900.0, 600.0]),
        ..Default::default()
    };
    eframe::run_native(
        "edgescope",
        options,
        Box::new(move |cc| {
            Ok(Box::new(match screenshots {
                // Screenshots start from a fresh layout, not the user's saved one, so they are reproducible.
                Some(directory) => EdgescopeApp::with_state(cc.egui_ctx.clone(), SavedState::default(), session)
                    .with_script(ScreenshotScript::new(directory)),
                None => EdgescopeApp::new(cc, session),
            }))
        }),
    )
    .map_err(|e| format!("cannot open the window: {e}; on Linux a display (X11 or Wayland) and OpenGL are needed"))
}
