//! The top bar (file actions, tabs) and the message strip (errors, notices, the first-start hint).

use eframe::egui;

use super::commands::UnsavedChoice;
use super::{Command, Commands, EdgescopeApp, Tab, demo_session_path};

/// Type scale in presentation mode (readable from the back of a room on a 1080p projector).
pub const PRESENTATION_ZOOM: f32 = 1.4;

/// What each tab shows (its tab button's tooltip).
fn tab_help(tab: Tab) -> &'static str {
    match tab {
        Tab::Explore => "one variant: drag exit thresholds, see accuracy, exit rates and latency live",
        Tab::Compare => "every variant side by side: the study's tables and Pareto plots",
        Tab::Models => "the session's models and datasets: sizes, operators, samples; quantize, add exits, profile",
        Tab::Runs => "measure variants on datasets and devices; jobs with progress, cancel and retry",
    }
}

impl EdgescopeApp {
    pub(super) fn top_bar_ui(&mut self, ui: &mut egui::Ui, commands: &mut Commands<'_>) {
        if self.saved.presentation {
            // Presentation: the tabs and the way out; file and editing controls are hidden.
            ui.horizontal_wrapped(|ui| {
                for tab in [Tab::Explore, Tab::Compare] {
                    if ui.selectable_label(self.saved.tab == tab, tab.title()).on_hover_text(tab_help(tab)).clicked() {
                        commands.send(Command::SelectTab(tab));
                    }
                }
                ui.separator();
                if ui
                    .button("Leave presentation (Esc)")
                    .on_hover_text("back to the dark theme, normal type and every control")
                    .clicked()
                {
                    commands.send(Command::SetPresentation(false));
                }
            });
            return;
        }
        ui.horizontal_wrapped(|ui| {
            ui.strong("edgescope");
            ui.separator();
            if ui.button("Open…").on_hover_text("Open a session (Ctrl+O)").clicked() {
                commands.send(Command::PickSessionToOpen);
            }
            let save_label = if self.world.dirty { "Save*" } else { "Save" };
            if ui.button(save_label).on_hover_text("Save the session (Ctrl+S)").clicked() {
                commands.send(Command::SaveSession);
            }
            if ui.button("Save as…").on_hover_text("Save the session to a new file").clicked() {
                commands.send(Command::PickSessionToSave);
            }
            ui.menu_button("Recent", |ui| {
                ui.weak("sessions opened lately, the bundled demo, or a new empty session");
                if self.saved.recent_sessions.is_empty() {
                    ui.label("no recent sessions");
                }
                for path in &self.saved.recent_sessions {
                    if ui.button(path.display().to_string()).on_hover_text("open this session").clicked() {
                        commands.send(Command::OpenSession(path.clone()));
                        ui.close();
                    }
                }
                if let Some(demo) = demo_session_path()
                    && ui
                        .button("Demo session")
                        .on_hover_text("the bundled session (read-only: Save asks for a new name)")
                        .clicked()
                {
                    commands.send(Command::OpenSession(demo));
                    ui.close();
                }
                if ui.button("New empty session").on_hover_text("no variants, datasets or runs").clicked() {
                    commands.send(Command::NewSession);
                    ui.close();
                }
            });
            if ui
                .button("Add files…")
                .on_hover_text("ONNX models, manifests, datasets; or drop them on the window")
                .clicked()
            {
                commands.send(Command::PickFilesToAdd);
            }
            super::study_wizard::open_button_ui(ui, None, commands);
            ui.separator();
            for tab in Tab::ALL {
                if ui.selectable_label(self.saved.tab == tab, tab.title()).on_hover_text(tab_help(tab)).clicked() {
                    commands.send(Command::SelectTab(tab));
                }
            }
            ui.separator();
            if ui
                .button("Present")
                .on_hover_text(
                    "Presentation mode: light theme, large type, controls hidden, full screen (F11; Esc leaves)",
                )
                .clicked()
            {
                commands.send(Command::SetPresentation(true));
            }
            let name = self.world.session_path.as_ref().map_or("unsaved session".into(), |p| p.display().to_string());
            ui.weak(name).on_hover_text(if self.world.dirty {
                "the session file; Save* means unsaved changes"
            } else {
                "the session file"
            });
        });
    }

    pub(super) fn messages_ui(&mut self, ui: &mut egui::Ui, commands: &mut Commands<'_>) {
        for (index, error) in self.world.errors.iter().enumerate() {
            ui.horizontal(|ui| {
                ui.colored_label(ui.visuals().error_fg_color, format!("Error: {error}"));
                if ui.small_button("dismiss").on_hover_text("hide this error").clicked() {
                    commands.send(Command::DismissError(index));
                }
            });
        }
        if let Some(notice) = &self.world.notice {
            ui.weak(notice);
        }
        if !self.saved.hint_dismissed && !self.saved.presentation {
            ui.horizontal_wrapped(|ui| {
                ui.label(
                    "Start here: pick an early-exit variant in Explore and drag its exit threshold — accuracy, exit \
                     rate and latency follow live. Compare shows the study's tables; drop ONNX files or datasets on \
                     the window to add your own, then run them in Runs.",
                );
                if ui.small_button("got it").on_hover_text("hide this hint for good").clicked() {
                    commands.send(Command::DismissHint);
                }
            });
        }
    }

    /// Ctrl+S saves, Ctrl+O opens; closing the window with unsaved changes asks first.
    pub(super) fn shortcuts_and_close(&mut self, ctx: &egui::Context) {
        let save = egui::KeyboardShortcut::new(egui::Modifiers::COMMAND, egui::Key::S);
        let open = egui::KeyboardShortcut::new(egui::Modifiers::COMMAND, egui::Key::O);
        if ctx.input_mut(|i| i.consume_shortcut(&save)) {
            self.pending.push(Command::SaveSession);
        }
        if ctx.input_mut(|i| i.consume_shortcut(&open)) {
            self.pending.push(Command::PickSessionToOpen);
        }
        if ctx.input_mut(|i| i.consume_key(egui::Modifiers::NONE, egui::Key::F11)) {
            self.pending.push(Command::SetPresentation(!self.saved.presentation));
        }
        if self.saved.presentation && ctx.input_mut(|i| i.consume_key(egui::Modifiers::NONE, egui::Key::Escape)) {
            self.pending.push(Command::SetPresentation(false));
        }
        // The theme follows presentation mode: light, larger type and full screen while presenting.
        if self.world.presentation_applied != Some(self.saved.presentation) {
            let on = self.saved.presentation;
            ctx.set_visuals(if on { egui::Visuals::light() } else { egui::Visuals::dark() });
            ctx.set_zoom_factor(if on { PRESENTATION_ZOOM } else { 1.0 });
            if self.world.presentation_applied.is_some() {
                ctx.send_viewport_cmd(egui::ViewportCommand::Fullscreen(on));
            }
            self.world.presentation_applied = Some(on);
        }
        if ctx.input(|i| i.viewport().close_requested()) && self.world.dirty && !self.world.quitting {
            ctx.send_viewport_cmd(egui::ViewportCommand::CancelClose);
            self.world.unsaved_prompt = Some(Command::Quit);
        }
    }

    /// The "save changes?" prompt, while a command that would discard them waits.
    pub(super) fn unsaved_prompt_ui(&self, ctx: &egui::Context, commands: &mut Commands<'_>) {
        let Some(waiting) = &self.world.unsaved_prompt else { return };
        let what = match waiting {
            Command::Quit => "quitting",
            Command::NewSession => "starting a new session",
            _ => "opening another session",
        };
        let name = self.world.session_path.as_ref().map_or("this session".into(), |p| p.display().to_string());
        egui::Modal::new(egui::Id::unique("edgescope_unsaved_prompt")).show(ctx, |ui| {
            ui.heading("Unsaved changes");
            ui.label(format!("Save the changes to {name} before {what}?"));
            ui.horizontal(|ui| {
                if ui.button("Save").on_hover_text("save, then go on").clicked() {
                    commands.send(Command::ResolveUnsaved(UnsavedChoice::Save));
                }
                if ui.button("Don't save").on_hover_text("go on; the changes are lost").clicked() {
                    commands.send(Command::ResolveUnsaved(UnsavedChoice::Discard));
                }
                if ui.button("Cancel").on_hover_text("stay on this session").clicked() {
                    commands.send(Command::ResolveUnsaved(UnsavedChoice::Cancel));
                }
            });
        });
    }
}
