//! Background work seen from the UI thread: draining job, probe, dialog and capture channels.

use std::path::PathBuf;

use eframe::egui;

use super::capture::save_capture;
use super::loader::{Loaded, key};
use super::world::{self, DialogResult, JobKind};
use super::{Command, EdgescopeApp, exits_dialog, profile_view, quantize_dialog, study_wizard};
use crate::record::{RunEvent, RunOutput};
use crate::runtime::JobMessage;

impl EdgescopeApp {
    /// Probes remote runners that have no state yet, or whose retry time has come (backoff up to a minute).
    pub(super) fn probe_devices(&mut self) {
        let now = std::time::Instant::now();
        let devices = self.world.devices.clone();
        for device in &devices {
            let due = match self.world.device_states.get(&device.name) {
                None => true,
                Some(world::DeviceState::Failed { retry_at, .. }) => now >= *retry_at,
                Some(_) => false,
            };
            if !due {
                continue;
            }
            self.world.device_states.insert(device.name.clone(), world::DeviceState::Connecting);
            let sender = self.world.probes.0.clone();
            let ctx = self.ctx.clone();
            let device = device.clone();
            let spawned =
                std::thread::Builder::new().name(format!("edgescope-probe-{}", device.name)).spawn(move || {
                    let result = crate::net::protocol::read_token(&device.token_file).and_then(|token| {
                        use crate::runtime::Runner;
                        crate::net::RemoteRunner::new(&device.address, token).device().map_err(|e| e.to_string())
                    });
                    let _ = sender.send((device.name, result));
                    ctx.request_repaint();
                });
            if let Err(e) = spawned {
                self.world.error(format!("cannot probe a device: {e}"));
            }
        }
        while let Ok((name, result)) = self.world.probes.1.try_recv() {
            let previous_backoff = match self.world.device_states.get(&name) {
                Some(world::DeviceState::Failed { backoff_s, .. }) => *backoff_s,
                _ => 0,
            };
            let state = match result {
                Ok(record) => world::DeviceState::Connected(Box::new(record)),
                Err(error) => {
                    let backoff_s = (previous_backoff * 2).clamp(5, 60);
                    world::DeviceState::Failed {
                        error,
                        retry_at: std::time::Instant::now() + std::time::Duration::from_secs(backoff_s),
                        backoff_s,
                    }
                }
            };
            self.world.device_states.insert(name, state);
        }
        if self.world.device_states.values().any(|s| matches!(s, world::DeviceState::Failed { .. })) {
            self.ctx.request_repaint_after(std::time::Duration::from_secs(1));
        }
    }

    /// Drains worker, dialog and capture channels, and turns dropped files into commands.
    pub(super) fn drain(&mut self, ctx: &egui::Context) {
        let dropped: Vec<PathBuf> = ctx.input(|i| i.raw.dropped_files.iter().map(|f| f.path().to_path_buf()).collect());
        if !dropped.is_empty() {
            self.pending.push(Command::AddFiles(dropped));
        }
        while let Ok(result) = self.world.dialog_results.try_recv() {
            self.world.dialog_open = false;
            match result {
                DialogResult::Add(paths) => self.pending.push(Command::AddFiles(paths)),
                DialogResult::Open(path) => self.pending.push(Command::OpenSession(path)),
                DialogResult::SaveAs(path) => self.pending.push(Command::SaveSessionAs(path)),
                DialogResult::ExportTables(path, format) => self.pending.push(Command::ExportTables(path, format)),
                DialogResult::ExportFigure(path) => self.pending.push(Command::ExportFigure(path)),
                DialogResult::Nothing => {
                    // Whatever waited for a save (open, quit) waits no more.
                    self.world.after_save = None;
                    self.world.notice = Some(
                        "no file chosen — if no dialog appeared, install xdg-desktop-portal (with a GTK or KDE \
                         backend) or zenity, or drag files onto the window"
                            .into(),
                    );
                }
            }
        }
        while let Ok((path, image)) = self.world.captures.1.try_recv() {
            // PNG encoding runs on a worker; the capture counts as done when the file is written.
            let spawned = self.world.loader.spawn(key::written(&path), move || {
                let written = save_capture(&path, &image).map_err(|e| format!("cannot save {}: {e}", path.display()));
                Loaded::Written(path, written)
            });
            if let Err(e) = spawned {
                self.world.error(e);
            }
        }
        while let Ok(loaded) = self.world.loader.results.try_recv() {
            self.loaded(ctx, loaded);
        }
        self.drain_jobs();
        exits_dialog::drain(self);
        profile_view::drain(&mut self.world);
        study_wizard::drain(self);
        quantize_dialog::drain(self);
    }

    /// Takes in what a background task produced.
    fn loaded(&mut self, ctx: &egui::Context, loaded: Loaded) {
        match loaded {
            Loaded::Session(path, result) => {
                self.world.loader.finished(&key::session(&path));
                if self.world.opening.as_ref() == Some(&path) {
                    self.world.opening = None;
                }
                match result {
                    Ok((session, telling)) => self.session_opened(path, *session, telling),
                    Err(e) => self.world.error(e),
                }
            }
            Loaded::Saved(path, revision, result) => {
                self.world.loader.finished(key::SAVE);
                match result {
                    Ok(()) => {
                        self.world.session_path = Some(path.clone());
                        // Changes made while it was being written keep the session unsaved.
                        self.world.dirty = revision != self.world.revision;
                        self.world.notice = Some(format!("saved {}", path.display()));
                        self.saved.remember_session(path);
                        if let Some(after) = self.world.after_save.take() {
                            self.pending.push(after);
                        }
                    }
                    Err(e) => {
                        self.world.after_save = None;
                        self.world.error(e);
                    }
                }
            }
            Loaded::Files(files) => {
                let key = format!(
                    "{} {}",
                    key::FILES,
                    files.first().map(|(p, _)| p.display().to_string()).unwrap_or_default()
                );
                self.world.loader.finished(&key);
                for (path, opened) in files {
                    match opened {
                        Ok(opened) => self.add_opened(&path, opened),
                        Err(e) => self.world.error(e),
                    }
                }
            }
            Loaded::Dataset(name, opened) => {
                self.world.loader.finished(&key::dataset(&name));
                let ready = self.world.store_dataset(name, opened);
                self.pending.extend(ready);
            }
            Loaded::Thumbnails(name, images) => {
                self.world.loader.finished(&key::thumbnails(&name));
                for (sample, image) in images {
                    let texture = image.map(|image| {
                        ctx.load_texture(format!("{name}#{sample}"), image, egui::TextureOptions::NEAREST)
                    });
                    self.world.thumbnails.insert((name.clone(), sample), texture);
                }
            }
            Loaded::Analyses(index, runs_revision, analyses) => {
                self.world.loader.finished(&key::analysis(index));
                self.world.store_analyses(index, runs_revision, analyses);
            }
            Loaded::Rows(criterion, budget_bits, revision, rows) => {
                self.world.loader.finished(key::ROWS);
                self.world.rows_cache = Some((criterion, budget_bits, revision, rows));
            }
            Loaded::Devices(path, list) => self.devices_loaded(path, list),
            Loaded::DevicesSaved(path, saved) => self.devices_saved(path, saved),
            Loaded::Percentile(variant, revision, policy) => {
                self.world.loader.finished(key::PERCENTILE);
                match policy {
                    // A session changed meanwhile (another run, other thresholds) keeps what the user did since.
                    Ok(policy) if revision == self.world.revision => self.apply(Command::SetPolicy(variant, policy)),
                    Ok(_) => {
                        self.world.notice = Some(format!(
                            "the percentile thresholds of {variant} were not applied: the session changed while they \
                             were computed; press Apply again"
                        ));
                    }
                    Err(e) => self.world.error(e),
                }
            }
            Loaded::Certificate(key, result) => super::certify::store(&mut self.world, key, result),
            Loaded::Written(path, result) => {
                self.world.loader.finished(&key::written(&path));
                match result {
                    Ok(()) => self.world.notice = Some(format!("saved {}", path.display())),
                    Err(e) => self.world.error(e),
                }
                self.world.capture_done = true;
            }
        }
    }

    pub(super) fn drain_jobs(&mut self) {
        let mut finished = Vec::new();
        let mut dead = Vec::new();
        for (slot_index, slot) in self.world.jobs.iter_mut().enumerate() {
            let Some(handle) = &slot.handle else { continue };
            loop {
                let message = match handle.messages.try_recv() {
                    Ok(message) => message,
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                    // The worker hung up without a result (it panicked or was killed): the job ends here.
                    Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        dead.push(slot_index);
                        break;
                    }
                };
                match message {
                    JobMessage::Event(RunEvent::Queued) => slot.phase = "queued behind another run".into(),
                    JobMessage::Event(RunEvent::Loading) => slot.phase = "loading".into(),
                    JobMessage::Event(RunEvent::WarmingUp) => slot.phase = "warming up".into(),
                    JobMessage::Event(RunEvent::Checkpoint { .. }) => {}
                    JobMessage::Event(RunEvent::ComparingWithReference { done, total }) => {
                        slot.phase = format!("comparing with the base for exact loyalty ({done}/{total})");
                    }
                    JobMessage::Event(RunEvent::Progress { done, total }) => {
                        slot.measuring_since.get_or_insert_with(std::time::Instant::now);
                        slot.phase = "measuring".into();
                        slot.done = done;
                        slot.total = total;
                    }
                    JobMessage::Finished(result) => {
                        finished.push((slot_index, *result));
                        break;
                    }
                }
            }
        }
        let now = std::time::Instant::now();
        for slot_index in dead {
            let slot = &mut self.world.jobs[slot_index];
            slot.handle = None;
            slot.ended = Some(now);
            slot.failed = true;
            slot.phase = "failed: its worker stopped".into();
            let message = format!(
                "{} on {}: the worker thread stopped without a result (a crash in the runner); the samples it \
                 measured are lost — run it again, and report this if it repeats",
                slot.variant, slot.device
            );
            self.world.error(message);
        }
        for (slot_index, result) in finished {
            let slot = &mut self.world.jobs[slot_index];
            slot.handle = None;
            slot.ended = Some(now);
            let variant = slot.variant.clone();
            let device = slot.device.clone();
            let kind = slot.kind.clone();
            match result {
                Err(crate::runtime::RuntimeError::Cancelled) => slot.phase = "cancelled before it started".into(),
                Err(e) => {
                    slot.phase = "failed".into();
                    slot.failed = true;
                    if let crate::runtime::RuntimeError::Interrupted { partial, .. } = &e
                        && self.world.session.keep_partial((**partial).clone())
                    {
                        self.world.runs_changed();
                    }
                    self.world.error(format!("{variant} on {device}: {e}"));
                }
                Ok(RunOutput::Trace(run)) if run.info.complete => {
                    slot.phase = "done".into();
                    if !run.info.skipped.is_empty() || run.info.resources.as_ref().is_some_and(|r| r.is_noisy()) {
                        let notes = crate::report::run_notes(&run.info);
                        self.world.notice = Some(format!("{variant}: {}", notes.join("; ")));
                    }
                    self.world.session.upsert_run(run);
                    self.world.runs_changed();
                    if self.saved.selected_variant.is_none() {
                        self.saved.selected_variant = Some(variant);
                    }
                }
                Ok(RunOutput::Trace(run)) => {
                    let measured = run.trace.len();
                    let failure = run.info.failure.clone();
                    match &failure {
                        Some(_) => {
                            slot.phase = "failed".into();
                            slot.failed = true;
                        }
                        None => slot.phase = format!("cancelled after {measured} samples"),
                    }
                    let kept = measured > 0 && self.world.session.keep_partial(run);
                    if kept {
                        self.world.runs_changed();
                    }
                    let what = if kept {
                        format!("its {measured} measured samples are kept, marked incomplete")
                    } else {
                        "the complete trace already there is kept".into()
                    };
                    match failure {
                        Some(failure) => self.world.error(format!("{variant}: {failure}; {what}")),
                        None => self.world.notice = Some(format!("{variant}: cancelled; {what}")),
                    }
                }
                Ok(RunOutput::Dynamic(run)) => {
                    slot.phase = if run.info.complete { "done".into() } else { "cancelled".into() };
                    if let (true, JobKind::Verify(policy, _)) = (run.info.complete, kind) {
                        self.finish_verification(variant, device, run, &policy);
                    }
                }
            }
        }
    }
}
