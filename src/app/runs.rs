//! The runs view: pick variants, a dataset and a device, run them in the background (one progress bar per
//! job, with rate, ETA and a cancel that really stops), and look at the resource timeline of any run.

use eframe::egui;

use egui_plot::{Legend, Line, Plot, PlotPoints};

use super::state::DeviceConfig;
use super::state::SavedState;
use super::world::{DeviceState, JobKind, THIS_MACHINE, World};
use super::{Command, Commands};

/// Draws the runs tab.
pub fn runs_ui(ui: &mut egui::Ui, saved: &SavedState, world: &World, commands: &mut Commands<'_>) {
    devices_ui(ui, world, commands);
    ui.separator();
    ui.heading("Run variants");
    ui.horizontal_wrapped(|ui| {
        ui.label("devices:").on_hover_text("each ticked variant runs on each ticked device");
        let mut names = vec![THIS_MACHINE.to_string()];
        names.extend(world.devices.iter().map(|d| d.name.clone()));
        for name in names {
            let mut ticked = world.run_devices.contains(&name);
            let hover =
                if name == THIS_MACHINE { "run here, one process per variant" } else { "run on this remote runner" };
            if ui.checkbox(&mut ticked, &name).on_hover_text(hover).changed() {
                commands.send(Command::ToggleRunDevice(name));
            }
        }
    });
    ui.horizontal(|ui| {
        let current = world.run_dataset.clone().unwrap_or_else(|| "choose…".into());
        egui::ComboBox::from_label("dataset to run on")
            .selected_text(current)
            .show_ui(ui, |ui| {
                for entry in &world.session.datasets {
                    let selected = world.run_dataset.as_deref() == Some(entry.name.as_str());
                    if ui.selectable_label(selected, format!("{} ({} samples)", entry.name, entry.samples)).clicked() {
                        commands.send(Command::SetRunDataset(entry.name.clone()));
                    }
                }
            })
            .response
            .on_hover_text("every sample is run through every exit; the trace records each exit's output and latency");
    });
    let (mut threads, mut warmup, mut limit) = (saved.run_threads, saved.run_warmup, saved.run_limit);
    ui.horizontal(|ui| {
        let mut changed = false;
        for (label, value, max, hover) in [
            ("intra-op threads (0 = auto)", &mut threads, 256, "ONNX Runtime's threads per operator; 0 lets it choose"),
            ("warm-up runs", &mut warmup, 10_000, "inferences run and discarded before timing starts"),
            ("sample limit (0 = all)", &mut limit, 10_000_000, "run only the first samples of the dataset"),
        ] {
            let label = ui.label(label).on_hover_text(hover);
            changed |=
                ui.add(egui::DragValue::new(value).range(0..=max)).labelled_by(label.id).on_hover_text(hover).changed();
        }
        if changed {
            commands.send(Command::SetRunSettings { threads, warmup, limit });
        }
    });
    ui.label("variants:").on_hover_text("tick the variants to run");
    ui.horizontal_wrapped(|ui| {
        for variant in &world.session.variants {
            let mut ticked = world.run_selection.contains(&variant.name);
            if ui.checkbox(&mut ticked, &variant.name).on_hover_text("run this variant").changed() {
                commands.send(Command::ToggleRunSelection(variant.name.clone()));
            }
        }
    });
    if ui
        .button("Run selected")
        .on_hover_text("record a trace of each ticked variant on the dataset, on each ticked device")
        .clicked()
    {
        commands.send(Command::StartRuns);
    }
    ui.separator();
    ui.heading("Jobs");
    if world.jobs.is_empty() {
        ui.weak("no jobs yet");
    }
    for job in world.jobs.iter().rev() {
        ui.horizontal(|ui| {
            let kind = match job.kind {
                JobKind::Trace => "trace",
                JobKind::Verify(..) => "verify",
            };
            ui.label(format!("{} on {}, {} ({kind})", job.variant, job.dataset, job.device));
            let fraction = job.done as f32 / job.total.max(1) as f32;
            let rate = job.rate().map_or(String::new(), |r| format!(", {r:.0} samples/s"));
            let eta = job.eta_s().filter(|_| job.handle.is_some()).map_or(String::new(), |e| format!(", ETA {e:.0} s"));
            let text = format!("{}/{} {}{rate}{eta}", job.done, job.total, job.phase);
            ui.add(egui::ProgressBar::new(fraction).desired_width(320.0).text(text))
                .on_hover_text("samples done / in all, what it is doing, samples per second and time left");
            if job.handle.is_some()
                && ui.button("Cancel").on_hover_text("stop now; the samples measured so far are kept").clicked()
            {
                commands.send(Command::CancelJob(job.id));
            }
            if job.failed
                && job.kind == JobKind::Trace
                && ui.button("Retry").on_hover_text("run this job again from the start").clicked()
            {
                commands.send(Command::RetryJob(job.id));
            }
        });
    }
    ui.separator();
    timeline_ui(ui, world, commands);
}

fn timeline_ui(ui: &mut egui::Ui, world: &World, commands: &mut Commands<'_>) {
    ui.heading("Resource timeline");
    let label = |i: usize| {
        let r = &world.session.runs[i].info;
        format!("{} on {} ({})", r.variant, r.dataset, r.device.host)
    };
    let current = world.timeline_run.filter(|&i| i < world.session.runs.len());
    egui::ComboBox::from_label("run")
        .selected_text(current.map_or("choose a run…".into(), label))
        .show_ui(ui, |ui| {
            for i in 0..world.session.runs.len() {
                if ui.selectable_label(current == Some(i), label(i)).clicked() {
                    commands.send(Command::ShowTimeline(i));
                }
            }
        })
        .response
        .on_hover_text("the run whose CPU, GPU and memory readings are plotted");
    let Some(index) = current else { return };
    let info = &world.session.runs[index].info;
    ui.label(format!("{} — {}", info.device.summary(), info.provider))
        .on_hover_text("the device the run was measured on, and ONNX Runtime's execution provider");
    let Some(timeline) = info.resources.as_ref().filter(|t| !t.samples.is_empty()) else {
        ui.weak("this run has no resource readings (sampler off or too short)");
        return;
    };
    ui.label(format!(
        "{} readings every {} ms; sampler cost {:.3} % of one core",
        timeline.samples.len(),
        timeline.interval_ms,
        timeline.sampler_overhead_percent
    ))
    .on_hover_text("CPU: % of one core summed over cores; RSS: resident memory in MB (10^6 bytes)");
    ui.columns(2, |columns| {
        let cpu: Vec<[f64; 2]> =
            timeline.samples.iter().map(|s| [f64::from(s.t_s), f64::from(s.cpu_percent)]).collect();
        let gpu: Vec<[f64; 2]> =
            timeline.samples.iter().filter_map(|s| s.gpu_percent.map(|g| [f64::from(s.t_s), f64::from(g)])).collect();
        Plot::new("cpu_timeline").height(220.0).legend(Legend::default()).x_axis_label("s").y_axis_label("%").show(
            &mut columns[0],
            |plot| {
                plot.line(Line::new("CPU (all cores)", PlotPoints::from(cpu)));
                if !gpu.is_empty() {
                    plot.line(Line::new("GPU", PlotPoints::from(gpu)));
                }
            },
        );
        let rss: Vec<[f64; 2]> =
            timeline.samples.iter().map(|s| [f64::from(s.t_s), s.rss_bytes as f64 / 1e6]).collect();
        Plot::new("rss_timeline")
            .height(220.0)
            .legend(Legend::default())
            .x_axis_label("s")
            .y_axis_label("MB")
            .show(&mut columns[1], |plot| plot.line(Line::new("RSS", PlotPoints::from(rss))));
    });
}

/// Configured remote runners with their state, and a form to add one.
fn devices_ui(ui: &mut egui::Ui, world: &World, commands: &mut Commands<'_>) {
    ui.heading("Devices");
    ui.label(format!("{THIS_MACHINE}: runs in this process"))
        .on_hover_text("remote runners below run variants on another machine (a board) over the network");
    for device in &world.devices {
        ui.horizontal_wrapped(|ui| {
            ui.strong(&device.name);
            ui.label(&device.address).on_hover_text("the runner's address (host:port)");
            match world.device_states.get(&device.name) {
                None | Some(DeviceState::Connecting) => {
                    ui.weak("connecting…");
                }
                Some(DeviceState::Connected(record)) => {
                    ui.label(format!("connected: {}", record.status_line()));
                }
                Some(DeviceState::Failed { error, backoff_s, .. }) => {
                    ui.colored_label(
                        ui.visuals().warn_fg_color,
                        format!("unavailable ({error}); retrying every {backoff_s} s"),
                    );
                }
            }
            if ui.small_button("remove").on_hover_text("forget this runner (its runs stay)").clicked() {
                commands.send(Command::RemoveDevice(device.name.clone()));
            }
        });
    }
    let form_id = ui.scope_id().with("add_device_form");
    let mut form: (String, String, String) = ui.data(|d| d.get_temp(form_id)).unwrap_or_default();
    let before = form.clone();
    ui.horizontal_wrapped(|ui| {
        for (label, value, hint, hover) in [
            ("device name", &mut form.0, "orin-nano", "the name runs and tables show"),
            ("address", &mut form.1, "tcp://192.168.1.20:7878", "where edgescope-runner listens"),
            ("token file", &mut form.2, "/path/to/token", "a file holding the runner's shared secret"),
        ] {
            let label = ui.label(label).on_hover_text(hover);
            ui.add(egui::TextEdit::singleline(value).hint_text(hint).desired_width(160.0))
                .labelled_by(label.id)
                .on_hover_text(hover);
        }
        if ui.button("Add device").on_hover_text("add this runner and connect to it").clicked() {
            commands.send(Command::AddDevice(DeviceConfig {
                name: form.0.trim().to_string(),
                address: form.1.trim().to_string(),
                token_file: form.2.trim().into(),
            }));
            form = Default::default();
        }
    });
    if form != before {
        ui.data_mut(|d| d.insert_temp(form_id, form));
    }
    ui.weak("start `edgescope-runner --listen 0.0.0.0:7878 --token-file TOKEN` on the device (see README)");
}
