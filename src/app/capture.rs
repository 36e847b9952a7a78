//! Screenshots and figure capture: the README's scripted screenshots and viewport captures saved as PNG.

use std::path::{Path, PathBuf};

use eframe::egui;

use super::{Command, EdgescopeApp, Tab};
use crate::session::write_atomically;

/// Takes the README's screenshots: shows each tab, waits for it to settle, captures the window, then closes.
pub struct ScreenshotScript {
    directory: PathBuf,
    steps: Vec<(Tab, &'static str)>,
    frames_on_step: u32,
    waiting_for_capture: bool,
}

impl ScreenshotScript {
    /// Screenshots of the explore, compare, models and runs tabs into `directory`.
    pub fn new(directory: PathBuf) -> Self {
        Self {
            directory,
            steps: vec![
                (Tab::Explore, "explore.png"),
                (Tab::Compare, "compare.png"),
                (Tab::Models, "models.png"),
                (Tab::Runs, "runs.png"),
            ],
            frames_on_step: 0,
            waiting_for_capture: false,
        }
    }
}

impl EdgescopeApp {
    /// Runs `script` (the README's screenshots) and closes the window when it is done.
    pub fn with_script(mut self, script: ScreenshotScript) -> Self {
        self.saved.hint_dismissed = true;
        self.saved.tab = Tab::Explore;
        self.script = Some(script);
        self
    }

    /// Advances the screenshot script by one frame.
    pub(super) fn drive_script(&mut self, ctx: &egui::Context) {
        let Some(script) = self.script.as_mut() else { return };
        if script.waiting_for_capture {
            if self.world.capture_done {
                self.world.capture_done = false;
                script.waiting_for_capture = false;
                script.steps.remove(0);
                script.frames_on_step = 0;
            }
            ctx.request_repaint();
            return;
        }
        self.world.notice = None;
        let Some(&(tab, file)) = script.steps.first() else {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            return;
        };
        if self.saved.tab != tab {
            self.saved.tab = tab;
        }
        script.frames_on_step += 1;
        // A few frames let plots lay out and textures upload before the capture.
        if script.frames_on_step >= 10 {
            script.waiting_for_capture = true;
            let path = script.directory.join(file);
            self.pending.push(Command::CaptureViewport(path, false));
        }
        ctx.request_repaint();
    }
}

/// Saves a viewport capture (optionally cropped to `region`, in points) as PNG.
pub(super) fn save_capture(
    path: &Path,
    region: Option<egui::Rect>,
    pixels_per_point: f32,
    image: &egui::ColorImage,
) -> Result<(), String> {
    let [width, height] = image.size;
    let (x0, y0, x1, y1) = match region {
        Some(r) => (
            ((r.min.x * pixels_per_point) as usize).min(width),
            ((r.min.y * pixels_per_point) as usize).min(height),
            ((r.max.x * pixels_per_point).ceil() as usize).min(width),
            ((r.max.y * pixels_per_point).ceil() as usize).min(height),
        ),
        None => (0, 0, width, height),
    };
    if x1 <= x0 || y1 <= y0 {
        return Err("the region to capture is empty".into());
    }
    let mut rgba = Vec::with_capacity((x1 - x0) * (y1 - y0) * 4);
    for y in y0..y1 {
        for x in x0..x1 {
            rgba.extend_from_slice(&image.pixels[y * width + x].to_array());
        }
    }
    let buffer = image::RgbaImage::from_raw((x1 - x0) as u32, (y1 - y0) as u32, rgba).ok_or("bad image size")?;
    let mut png = Vec::new();
    buffer.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).map_err(|e| e.to_string())?;
    write_atomically(path, &png).map_err(|e| e.to_string())
}

/// Where egui memory keeps the rectangle of the plot "Save plot as PNG" crops to.
fn plot_rect_id() -> egui::Id {
    egui::Id::unique("edgescope_exported_plot_rect")
}

/// Remembers where the exportable plot was drawn this frame (points).
pub(super) fn remember_plot_rect(ctx: &egui::Context, rect: egui::Rect) {
    ctx.data_mut(|d| d.insert_temp(plot_rect_id(), rect));
}

/// Where the exportable plot was drawn last, if any.
pub(super) fn plot_rect(ctx: &egui::Context) -> Option<egui::Rect> {
    ctx.data(|d| d.get_temp(plot_rect_id()))
}
