//! The profile window ("Profile…" on a variant in the Models tab): per-operator latency of one or two variants
//! ([`crate::runtime::profile`]), on this machine or a remote runner, as bar charts of the time per operator
//! type with the "outside operators" remainder as its own bar, the slowest nodes, and, for two variants side by
//! side (the base and its DQ variant by default), the operator types that got slower. Profiling runs on a named
//! worker thread with a bounded channel, progress and cancel; local profiles queue behind local runs.

use std::sync::Arc;

use crossbeam_channel::{Receiver, bounded};
use eframe::egui;

use super::world::{THIS_MACHINE, World};
use crate::data::Dataset;
use crate::model::Variant;
use crate::net::RemoteRunner;
use crate::record::{ProfileProgress, ProfileSettings, VariantProfile};
use crate::runtime::CancelToken;
use crate::runtime::profile::profile_variant;

/// Progress messages kept in flight at most (older progress is dropped, results never are).
const CHANNEL_CAPACITY: usize = 64;
/// Operator types drawn per variant (the rest are summed into one bar).
const TYPES_SHOWN: usize = 10;
/// Slowest nodes listed per variant.
const NODES_SHOWN: usize = 5;

/// A variant to profile, with its slot (left or right) and the dataset.
type SlotJob = (usize, Variant, Arc<Dataset>);

/// What the worker reports.
enum WorkerMessage {
    Progress { slot: usize, progress: ProfileProgress },
    Profiled { slot: usize, profile: Box<VariantProfile> },
    Done(Result<(), String>),
}

/// Profiling in progress.
struct Worker {
    messages: Receiver<WorkerMessage>,
    cancel: CancelToken,
}

/// The window's state (runtime only, never saved).
pub struct ProfileView {
    /// The variants profiled: the left one and, optionally, the one beside it.
    variants: [Option<String>; 2],
    /// [`THIS_MACHINE`] or a configured device's name.
    device: String,
    settings: ProfileSettings,
    results: [Option<VariantProfile>; 2],
    worker: Option<Worker>,
    progress: (f32, String),
    error: Option<String>,
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
            worker: None,
            progress: (0.0, String::new()),
            error: None,
        }
    }

    /// True while profiling.
    pub fn is_busy(&self) -> bool {
        self.worker.is_some()
    }

    /// The profiles shown, left to right.
    pub fn results(&self) -> impl Iterator<Item = &VariantProfile> {
        self.results.iter().flatten()
    }

    /// Starts profiling the chosen variants on the chosen device (one worker at a time).
    pub fn start(&mut self, world: &mut World, ctx: &egui::Context) {
        if self.worker.is_some() {
            self.error = Some("a profile is running; wait for it or cancel it".into());
            return;
        }
        match self.prepare(world) {
            Ok((jobs, remote)) => self.spawn(jobs, remote, ctx),
            Err(e) => self.error = Some(e),
        }
    }

    /// The variants to profile (by slot), the dataset, and the remote runner if any.
    fn prepare(&self, world: &mut World) -> Result<(Vec<SlotJob>, Option<RemoteRunner>), String> {
        let dataset_name = world
            .run_dataset
            .clone()
            .or_else(|| world.session.datasets.iter().find(|d| !world.is_calibration(&d.name)).map(|d| d.name.clone()))
            .ok_or("the session has no dataset to profile on; add one with \"Add files…\"")?;
        let dataset = world
            .dataset_if_ready(&dataset_name)?
            .ok_or_else(|| format!("opening dataset {dataset_name} in the background; start again in a moment"))?;
        let mut jobs = Vec::new();
        for (slot, name) in self.variants.iter().enumerate() {
            let Some(name) = name else { continue };
            let entry = world.session.variant(name).ok_or_else(|| format!("no variant {name:?} in the session"))?;
            let variant = entry.open().map_err(|e| format!("opening {name}: {e}"))?;
            jobs.push((slot, variant, Arc::clone(&dataset)));
        }
        if jobs.is_empty() {
            return Err("choose a variant to profile".into());
        }
        let remote = if self.device == THIS_MACHINE {
            None
        } else {
            let config = world
                .devices
                .iter()
                .find(|d| d.name == self.device)
                .ok_or_else(|| format!("no device called {} is configured", self.device))?;
            let token =
                crate::net::protocol::read_token(&config.token_file).map_err(|e| format!("{}: {e}", config.name))?;
            Some(RemoteRunner::new(&config.address, token))
        };
        Ok((jobs, remote))
    }

    fn spawn(&mut self, jobs: Vec<SlotJob>, mut remote: Option<RemoteRunner>, ctx: &egui::Context) {
        let (sender, messages) = bounded(CHANNEL_CAPACITY);
        let cancel = CancelToken::new();
        let worker_cancel = cancel.clone();
        let settings = self.settings.clone();
        let repaint = ctx.clone();
        let spawned = std::thread::Builder::new().name("edgescope-profile".into()).spawn(move || {
            let mut outcome = Ok(());
            for (slot, variant, dataset) in jobs {
                let mut progress = |progress: ProfileProgress| {
                    let _ = sender.try_send(WorkerMessage::Progress { slot, progress });
                    repaint.request_repaint();
                };
                let result = match &mut remote {
                    Some(runner) => runner.profile(&variant, &dataset, &settings, &mut progress, &worker_cancel),
                    None => {
                        profile_variant(&variant, &dataset, &settings, &mut progress, &worker_cancel).map(|mut p| {
                            p.device = THIS_MACHINE.to_string();
                            p
                        })
                    }
                };
                match result {
                    Ok(profile) => {
                        let _ = sender.send(WorkerMessage::Profiled { slot, profile: Box::new(profile) });
                    }
                    Err(e) => {
                        outcome = Err(format!("profiling {}: {e}", variant.name));
                        break;
                    }
                }
                repaint.request_repaint();
            }
            let _ = sender.send(WorkerMessage::Done(outcome));
            repaint.request_repaint();
        });
        match spawned {
            Ok(_) => {
                self.worker = Some(Worker { messages, cancel });
                self.error = None;
                self.results = [None, None];
                self.progress = (0.0, "starting".into());
            }
            Err(e) => self.error = Some(format!("cannot start the profiling thread: {e}")),
        }
    }
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

/// Drains the worker's messages into the window (once per frame, from the app's logic).
pub fn drain(world: &mut World) {
    let Some(view) = world.profile_view.as_mut() else { return };
    let Some(worker) = &view.worker else { return };
    let mut finished = None;
    while let Ok(message) = worker.messages.try_recv() {
        match message {
            WorkerMessage::Progress { slot, progress } => {
                let name = view.variants[slot].clone().unwrap_or_default();
                let fraction = progress.done as f32 / progress.total.max(1) as f32;
                view.progress = (fraction, format!("{name}: {}/{} samples", progress.done, progress.total));
            }
            WorkerMessage::Profiled { slot, profile } => view.results[slot] = Some(*profile),
            WorkerMessage::Done(result) => finished = Some(result),
        }
    }
    if let Some(result) = finished {
        view.worker = None;
        view.error = result.err();
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
                if view.worker.is_none() {
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
    if !open && let Some(worker) = &view.worker {
        worker.cancel.cancel();
    }
    if open {
        world.profile_view = Some(view);
    }
}

fn controls_ui(ui: &mut egui::Ui, world: &World, view: &mut ProfileView, start: &mut bool) {
    let busy = view.worker.is_some();
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
                    .labelled_by(label.id);
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
                .labelled_by(label.id);
            let label = ui.label("samples");
            ui.add(egui::DragValue::new(&mut view.settings.samples).range(1..=10_000)).labelled_by(label.id);
            let label = ui.label("warm-up");
            ui.add(egui::DragValue::new(&mut view.settings.warmup).range(0..=1000)).labelled_by(label.id);
            let label = ui.label("threads");
            ui.add(egui::DragValue::new(&mut view.settings.intra_threads).range(0..=64))
                .labelled_by(label.id)
                .on_hover_text("intra-op threads; 0 lets ONNX Runtime choose");
        });
    });
    ui.horizontal(|ui| {
        if busy {
            if ui.button("Cancel").clicked()
                && let Some(worker) = &view.worker
            {
                worker.cancel.cancel();
            }
            ui.add(egui::ProgressBar::new(view.progress.0).desired_width(320.0).text(view.progress.1.clone()));
        } else if ui.button("Profile").clicked() {
            *start = true;
        }
    });
    if let Some(error) = &view.error {
        ui.colored_label(ui.visuals().error_fg_color, error);
    }
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
        bar_ui(ui, text, others, scale_us, None);
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
    ui.label("slowest nodes:");
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
