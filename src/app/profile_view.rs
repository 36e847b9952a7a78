//! The profile window ("Profile…" on a variant in the Models tab): per-operator latency of one or two variants
//! ([`crate::runtime::profile`]), on this machine or a remote runner, as bar charts of the time per operator
//! type with the "outside operators" remainder as its own bar, the slowest nodes, and, for two variants side by
//! side (the base and its DQ variant by default), the operator types that got slower. Profiling runs on a named
//! worker thread with a bounded channel, progress and cancel; local profiles queue behind local runs.

use std::path::PathBuf;
use std::sync::Arc;

use eframe::egui;

use super::state::DeviceConfig;
use super::worker::{DialogTask, Progress, Reporter};
use super::world::{THIS_MACHINE, World};
use crate::data::Dataset;
use crate::model::Variant;
use crate::net::RemoteRunner;
use crate::record::{ProfileProgress, ProfileSettings, VariantProfile};
use crate::runtime::CancelToken;
use crate::runtime::profile::profile_variant;

/// Operator types drawn per variant (the rest are summed into one bar).
const TYPES_SHOWN: usize = 10;
/// Slowest nodes listed per variant.
const NODES_SHOWN: usize = 5;

/// The dataset to profile on: opened already, or its file (opened on the worker).
enum DatasetSource {
    Ready(Arc<Dataset>),
    File(PathBuf),
}

/// What the profiling thread needs: the variants (slot, name, file), the dataset, the remote runner if any.
struct ProfileJob {
    variants: Vec<(usize, String, PathBuf)>,
    dataset: DatasetSource,
    remote: Option<DeviceConfig>,
    settings: ProfileSettings,
}

/// What the worker reports.
enum ProfileEvent {
    Progress { slot: usize, progress: ProfileProgress },
    Profiled { slot: usize, profile: Box<VariantProfile> },
}

/// The window's state (runtime only, never saved).
pub struct ProfileView {
    /// The variants profiled: the left one and, optionally, the one beside it.
    variants: [Option<String>; 2],
    /// [`THIS_MACHINE`] or a configured device's name.
    device: String,
    settings: ProfileSettings,
    results: [Option<VariantProfile>; 2],
    /// Profiling; the profiles arrive as events, one per variant.
    work: DialogTask<ProfileEvent, ()>,
}

impl ProfileView {
    /// Opens the window for `variant`: beside its base when it has one (base on the left), else alone.
    pub fn open(world: &World, variant: &str) -> Self {
        let base = world.session.base_of(variant).filter(|b| b != variant && world.session.variant(b).is_some());
        let variants = match base {
            Some(base) => [Some(base), Some(variant.to_string())],
            None => [Some(variant.to_string()), None],
        };
        Self {
            variants,
            device: THIS_MACHINE.to_string(),
            settings: ProfileSettings::default(),
            results: [None, None],
            work: DialogTask::default(),
        }
    }

    /// True while profiling.
    pub fn is_busy(&self) -> bool {
        self.work.is_running()
    }

    /// The profiles shown, left to right.
    pub fn results(&self) -> impl Iterator<Item = &VariantProfile> {
        self.results.iter().flatten()
    }

    /// Starts profiling the chosen variants on the chosen device (one worker at a time); the variants, the
    /// dataset (unless the session has it open) and the token are read on the worker.
    pub fn start(&mut self, world: &World, ctx: &egui::Context) {
        if self.work.is_running() {
            return self.work.fail("a profile is running; wait for it or cancel it");
        }
        match self.prepare(world) {
            Ok(job) => {
                self.results = [None, None];
                self.work.start("profile", ctx, move |reporter, cancel| run_profiles(job, reporter, cancel));
            }
            Err(e) => self.work.fail(e),
        }
    }

    /// What to profile, from the session (no file is read here).
    fn prepare(&self, world: &World) -> Result<ProfileJob, String> {
        let dataset_name = world
            .run_dataset
            .clone()
            .or_else(|| world.session.datasets.iter().find(|d| !world.is_calibration(&d.name)).map(|d| d.name.clone()))
            .ok_or("the session has no dataset to profile on; add one with \"Add files…\"")?;
        let dataset = match world.loaded_dataset(&dataset_name) {
            Some(Ok(dataset)) => DatasetSource::Ready(Arc::clone(dataset)),
            _ => {
                let entry = world.session.datasets.iter().find(|d| d.name == dataset_name);
                DatasetSource::File(entry.map(|d| d.path.clone()).ok_or("the run dataset is not in the session")?)
            }
        };
        let mut variants = Vec::new();
        for (slot, name) in self.variants.iter().enumerate() {
            let Some(name) = name else { continue };
            let entry = world.session.variant(name).ok_or_else(|| format!("no variant {name:?} in the session"))?;
            variants.push((slot, name.clone(), entry.path.clone()));
        }
        if variants.is_empty() {
            return Err("choose a variant to profile".into());
        }
        let remote = if self.device == THIS_MACHINE {
            None
        } else {
            let config = world.devices.iter().find(|d| d.name == self.device);
            Some(config.cloned().ok_or_else(|| format!("no device called {} is configured", self.device))?)
        };
        Ok(ProfileJob { variants, dataset, remote, settings: self.settings.clone() })
    }
}

/// Profiles each variant of `job` in turn (on the worker), sending each profile as it is done.
fn run_profiles(job: ProfileJob, reporter: &Reporter<ProfileEvent, ()>, cancel: &CancelToken) -> Result<(), String> {
    let dataset = match job.dataset {
        DatasetSource::Ready(dataset) => dataset,
        DatasetSource::File(path) => Arc::new(Dataset::open(&path).map_err(|e| e.to_string())?),
    };
    let mut remote = match &job.remote {
        Some(config) => {
            let token =
                crate::net::protocol::read_token(&config.token_file).map_err(|e| format!("{}: {e}", config.name))?;
            Some(RemoteRunner::new(&config.address, token))
        }
        None => None,
    };
    for (slot, name, path) in job.variants {
        let variant = Variant::open(&path).map_err(|e| format!("opening {name}: {e}"))?;
        let mut progress = |progress: ProfileProgress| reporter.progress(ProfileEvent::Progress { slot, progress });
        let result = match &mut remote {
            Some(runner) => runner.profile(&variant, &dataset, &job.settings, &mut progress, cancel),
            None => profile_variant(&variant, &dataset, &job.settings, &mut progress, cancel).map(|mut p| {
                p.device = THIS_MACHINE.to_string();
                p
            }),
        };
        let profile = result.map_err(|e| format!("profiling {}: {e}", variant.name))?;
        reporter.event(ProfileEvent::Profiled { slot, profile: Box::new(profile) });
    }
    Ok(())
}

/// The "Profile…" button of a variant in the Models tab.
pub fn open_button_ui(ui: &mut egui::Ui, variant: &str, commands: &mut super::Commands<'_>) {
    let hover = "per-operator latency with ONNX Runtime's profiler, beside the base when there is one";
    if ui.button("Profile…").on_hover_text(hover).clicked() {
        commands.send(super::Command::OpenProfileView(variant.to_string()));
    }
}

/// Opens the window on `variant` (beside its base), unless a profile is running.
pub fn open(world: &mut World, variant: &str) {
    if world.profile_view.as_ref().is_some_and(ProfileView::is_busy) {
        world.error("a profile is running; wait for it or cancel it in the profile window");
    } else {
        world.profile_view = Some(ProfileView::open(world, variant));
    }
}

/// Drains the worker's events into the window (once per frame, from the app's logic).
pub fn drain(world: &mut World) {
    let Some(view) = world.profile_view.as_mut() else { return };
    for event in view.work.drain().events {
        match event {
            ProfileEvent::Progress { slot, progress } => {
                let name = view.variants[slot].clone().unwrap_or_default();
                let line = format!("{name}: {}/{} samples", progress.done, progress.total);
                view.work.set_progress(Progress::count(progress.done, progress.total, line));
            }
            ProfileEvent::Profiled { slot, profile } => view.results[slot] = Some(*profile),
        }
    }
}

/// Draws the window, if open. Closing it cancels a running profile.
pub fn window_ui(ctx: &egui::Context, world: &mut World) {
    let Some(mut view) = world.profile_view.take() else { return };
    let mut open = true;
    let mut start = false;
    egui::Window::new("Per-operator latency")
        .open(&mut open)
        .resizable(true)
        .default_width(900.0)
        .default_height(720.0)
        .show(ctx, |ui| {
            controls_ui(ui, world, &mut view, &mut start);
            ui.separator();
            let shown: Vec<&VariantProfile> = view.results().collect();
            if shown.is_empty() {
                if !view.work.is_running() {
                    ui.weak("choose the variants and press Profile");
                }
                return;
            }
            let scale_us = shown.iter().map(|p| largest_bar_us(p)).fold(1.0, f64::max);
            egui::ScrollArea::vertical().max_height(560.0).show(ui, |ui| {
                ui.columns(shown.len(), |columns| {
                    for (column, profile) in columns.iter_mut().zip(&shown) {
                        profile_ui(column, profile, scale_us);
                    }
                });
                if let [a, b] = shown.as_slice() {
                    ui.separator();
                    comparison_ui(ui, a, b);
                }
            });
        });
    if start {
        view.start(world, ctx);
    }
    // Closing the window drops it, which cancels a running profile.
    if open {
        world.profile_view = Some(view);
    }
}

fn controls_ui(ui: &mut egui::Ui, world: &World, view: &mut ProfileView, start: &mut bool) {
    let busy = view.work.is_running();
    let names: Vec<String> = world.session.variants.iter().map(|v| v.name.clone()).collect();
    ui.add_enabled_ui(!busy, |ui| {
        ui.horizontal(|ui| {
            for (slot, title) in ["variant", "beside it"].into_iter().enumerate() {
                let label = ui.label(title);
                let none = if slot == 0 { "choose…" } else { "none" };
                egui::ComboBox::from_id_salt(("profile-variant", slot))
                    .selected_text(view.variants[slot].clone().unwrap_or_else(|| none.into()))
                    .show_ui(ui, |ui| {
                        if slot == 1 {
                            ui.selectable_value(&mut view.variants[1], None, "none");
                        }
                        for name in &names {
                            ui.selectable_value(&mut view.variants[slot], Some(name.clone()), name);
                        }
                    })
                    .response
                    .labelled_by(label.id)
                    .on_hover_text(if slot == 0 {
                        "the variant profiled (left column)"
                    } else {
                        "a second variant profiled beside it, for the per-operator comparison"
                    });
            }
            let label = ui.label("on");
            egui::ComboBox::from_id_salt("profile-device")
                .selected_text(view.device.clone())
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut view.device, THIS_MACHINE.to_string(), THIS_MACHINE);
                    for device in &world.devices {
                        ui.selectable_value(&mut view.device, device.name.clone(), &device.name);
                    }
                })
                .response
                .labelled_by(label.id)
                .on_hover_text("where to profile: here or on a remote runner");
            let label = ui.label("samples");
            ui.add(egui::DragValue::new(&mut view.settings.samples).range(1..=10_000))
                .labelled_by(label.id)
                .on_hover_text("inferences profiled per variant; times are means over them");
            let label = ui.label("warm-up");
            ui.add(egui::DragValue::new(&mut view.settings.warmup).range(0..=1000))
                .labelled_by(label.id)
                .on_hover_text("inferences run and discarded before profiling starts");
            let label = ui.label("threads");
            ui.add(egui::DragValue::new(&mut view.settings.intra_threads).range(0..=64))
                .labelled_by(label.id)
                .on_hover_text("intra-op threads; 0 lets ONNX Runtime choose");
        });
    });
    view.work.progress_ui(ui, "stop profiling; profiles finished so far stay shown");
    if !busy
        && ui
            .button("Profile")
            .on_hover_text("run each variant with ONNX Runtime's profiler and time every operator")
            .clicked()
    {
        *start = true;
    }
    view.work.status_ui(ui);
}

/// The longest bar a profile draws, microseconds (bars of both columns share one scale).
fn largest_bar_us(profile: &VariantProfile) -> f64 {
    profile.op_types.iter().map(|o| o.total_us()).fold(profile.remainder_us().max(0.0), f64::max)
}

/// One bar: a progress bar whose length is `us / scale_us`, its text the label (readable by screen readers).
fn bar_ui(ui: &mut egui::Ui, text: String, us: f64, scale_us: f64, fill: Option<egui::Color32>) -> egui::Response {
    let mut bar = egui::ProgressBar::new((us.max(0.0) / scale_us.max(1e-9)) as f32).text(text);
    if let Some(fill) = fill {
        bar = bar.fill(fill);
    }
    ui.add(bar)
}

/// One variant's column: its figures, a bar per operator type and the outside-operators bar, the slowest nodes.
fn profile_ui(ui: &mut egui::Ui, profile: &VariantProfile, scale_us: f64) {
    let measured = profile.measured_mean_us();
    let share = |us: f64| 100.0 * us / measured.max(1e-9);
    ui.heading(&profile.variant);
    ui.weak(format!(
        "{}, {} runs{}{}",
        profile.device,
        profile.runs,
        if profile.disturbed_runs > 0 {
            format!(" ({} disturbed left out)", profile.disturbed_runs)
        } else {
            String::new()
        },
        if profile.complete { "" } else { ", cancelled" }
    ));
    ui.label(format!(
        "measured {measured:.0} us per inference with the profiler ({:.0} us without); operators {:.1} %",
        profile.plain_mean_us(),
        share(profile.operator_sum_us())
    ))
    .on_hover_text(
        "operators: each node's kernel plus the executor's dispatch before it; outside operators: the session's \
         work around them (executor setup, session, input and output binding)",
    );
    let mut others = 0.0;
    for (index, op) in profile.op_types.iter().enumerate() {
        if index >= TYPES_SHOWN {
            others += op.total_us();
            continue;
        }
        let text =
            format!("{} x{}  {:.1} us ({:.1} %)", op.op_type, op.nodes_per_run, op.total_us(), share(op.total_us()));
        bar_ui(ui, text, op.total_us(), scale_us, None).on_hover_text(format!(
            "kernel {:.1} us + dispatch {:.1} us per inference, on {}",
            op.mean_us, op.dispatch_us, op.provider
        ));
    }
    if others > 0.0 {
        let text =
            format!("{} other type(s)  {others:.1} us ({:.1} %)", profile.op_types.len() - TYPES_SHOWN, share(others));
        bar_ui(ui, text, others, scale_us, None).on_hover_text("the remaining operator types, summed");
    }
    let remainder = profile.remainder_us();
    let parts: Vec<String> = profile
        .segments
        .iter()
        .flat_map(|s| s.remainder_parts())
        .fold(Vec::<(&str, f64)>::new(), |mut sums, (name, us)| {
            match sums.iter_mut().find(|(n, _)| *n == name) {
                Some(sum) => sum.1 += us,
                None => sums.push((name, us)),
            }
            sums
        })
        .into_iter()
        .map(|(name, us)| format!("{name} {us:.1} us"))
        .collect();
    let fill = ui.visuals().warn_fg_color.gamma_multiply(0.6);
    bar_ui(
        ui,
        format!("outside operators  {remainder:.1} us ({:.1} %)", share(remainder)),
        remainder,
        scale_us,
        Some(fill),
    )
    .on_hover_text(parts.join(", "));
    ui.label("slowest nodes:").on_hover_text("kernel plus dispatch per inference, microseconds");
    for (segment, node) in profile.top_nodes(NODES_SHOWN) {
        ui.small(format!("{:.1} us  {} ({}, segment {segment})", node.total_us(), node.node, node.op_type));
    }
}

/// Operator types of `b` against `a`: the ones that got slower first.
fn comparison_ui(ui: &mut egui::Ui, a: &VariantProfile, b: &VariantProfile) {
    let mut types: Vec<&str> = a.op_types.iter().chain(&b.op_types).map(|o| o.op_type.as_str()).collect();
    types.sort_unstable();
    types.dedup();
    let mut rows: Vec<(&str, f64, f64)> = types.into_iter().map(|t| (t, a.op_type_us(t), b.op_type_us(t))).collect();
    rows.sort_by(|x, y| (y.2 - y.1).total_cmp(&(x.2 - x.1)));
    ui.strong(format!(
        "{} against {}: {:+.0} us per inference measured ({:+.0} us without the profiler)",
        b.variant,
        a.variant,
        b.measured_mean_us() - a.measured_mean_us(),
        b.plain_mean_us() - a.plain_mean_us()
    ));
    egui::Grid::new("profile-comparison").striped(true).num_columns(4).show(ui, |ui| {
        ui.strong("operator type");
        ui.strong(&a.variant);
        ui.strong(&b.variant);
        ui.strong("difference");
        ui.end_row();
        let remainder = ("outside operators", a.remainder_us(), b.remainder_us());
        for (name, x, y) in rows.into_iter().chain(std::iter::once(remainder)) {
            ui.label(name);
            ui.label(format!("{x:.1} us"));
            ui.label(format!("{y:.1} us"));
            let text = format!("{:+.1} us", y - x);
            if y - x > 0.05 * b.measured_mean_us() {
                ui.colored_label(ui.visuals().warn_fg_color, format!("{text} slower"));
            } else {
                ui.label(text);
            }
            ui.end_row();
        }
    });
}
