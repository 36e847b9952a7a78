//! Screenshots and figure capture: the README's scripted screenshots and viewport captures saved as PNG.

use std::path::{Path, PathBuf};

use eframe::egui;

use super::{Command, EdgescopeApp, Tab};
use crate::session::write_atomically;

/// One screenshot: what to show, and the file.
#[derive(Clone, Copy)]
enum Shot {
    /// A tab, as it looks at work.
    Tab(Tab),
    /// A tab in presentation mode.
    Presenting(Tab),
    /// The Explore figure exported as PNG (not a window capture).
    Figure,
}

/// Takes the README's screenshots: shows each tab (and presentation mode), waits for it to settle, captures the
/// window, exports the Explore figure, then closes.
pub struct ScreenshotScript {
    directory: PathBuf,
    steps: Vec<(Shot, &'static str)>,
    frames_on_step: u32,
    waiting_for_capture: bool,
}

impl ScreenshotScript {
    /// Screenshots of the explore, compare, models and runs tabs into `directory`.
    pub fn new(directory: PathBuf) -> Self {
        Self {
            directory,
            steps: vec![
                (Shot::Tab(Tab::Explore), "explore.png"),
                (Shot::Tab(Tab::Compare), "compare.png"),
                (Shot::Tab(Tab::Models), "models.png"),
                (Shot::Tab(Tab::Runs), "runs.png"),
                (Shot::Figure, "figure.png"),
                (Shot::Presenting(Tab::Explore), "presentation.png"),
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
        let Some(&(shot, file)) = script.steps.first() else {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            return;
        };
        let (tab, presenting) = match shot {
            Shot::Tab(tab) => (tab, false),
            Shot::Presenting(tab) => (tab, true),
            Shot::Figure => (Tab::Explore, false),
        };
        self.saved.tab = tab;
        self.saved.presentation = presenting;
        // Background work (the trace's analysis, thumbnails) must be in before the capture.
        if !self.world.loader.any_busy() {
            script.frames_on_step += 1;
        }
        // A few frames let plots lay out and textures upload before the capture.
        if script.frames_on_step >= 10 {
            script.waiting_for_capture = true;
            let path = script.directory.join(file);
            match shot {
                Shot::Figure => self.pending.push(Command::ExportFigure(path)),
                _ => self.pending.push(Command::CaptureViewport(path)),
            }
        }
        ctx.request_repaint();
    }
}

/// Saves a viewport capture as PNG.
pub(super) fn save_capture(path: &Path, image: &egui::ColorImage) -> Result<(), String> {
    let [width, height] = image.size;
    let rgba: Vec<u8> = image.pixels.iter().flat_map(|p| p.to_array()).collect();
    let buffer = image::RgbaImage::from_raw(width as u32, height as u32, rgba).ok_or("bad image size")?;
    let mut png = Vec::new();
    buffer.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).map_err(|e| e.to_string())?;
    write_atomically(path, &png).map_err(|e| e.to_string())
}

/// Where egui memory keeps the figure the current tab drew last (for "Export figure…").
fn figure_id() -> egui::Id {
    egui::Id::unique("edgescope_exported_figure")
}

/// Remembers the figure this frame drew (the export writes exactly what is on screen).
pub(super) fn remember_figure(ctx: &egui::Context, figure: crate::report::figure::Figure) {
    ctx.data_mut(|d| d.insert_temp(figure_id(), std::sync::Arc::new(figure)));
}

/// The figure drawn last, if any.
pub(super) fn last_figure(ctx: &egui::Context) -> Option<std::sync::Arc<crate::report::figure::Figure>> {
    ctx.data(|d| d.get_temp(figure_id()))
}

/// The fonts egui ships (Ubuntu Light, Hack), for drawing the text of PNG figures the same on every machine.
pub(super) fn figure_fonts() -> Vec<Vec<u8>> {
    egui::FontDefinitions::default().font_data.values().map(|data| (*data.font).as_ref().to_vec()).collect()
}

/// Writes `figure` as SVG, or as PNG at twice its size when the file ends in `.png`.
pub(super) fn write_figure(
    path: &Path,
    figure: &crate::report::figure::Figure,
    fonts: &[Vec<u8>],
) -> Result<(), String> {
    let svg = crate::report::figure::to_svg(figure);
    let is_png = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
    let bytes = if is_png { svg_to_png(&svg, 2.0, fonts)? } else { svg.into_bytes() };
    write_atomically(path, &bytes).map_err(|e| e.to_string())
}

/// Rasterises an SVG at `scale` with the given fonts (the first is the sans-serif face).
pub(super) fn svg_to_png(svg: &str, scale: f32, fonts: &[Vec<u8>]) -> Result<Vec<u8>, String> {
    use resvg::{tiny_skia, usvg};
    let mut options = usvg::Options::default();
    let database = options.fontdb_mut();
    for font in fonts {
        database.load_font_data(font.clone());
    }
    // Generic families resolve to the bundled proportional face (the first one egui lists that is not monospace).
    let family =
        database.faces().find(|f| !f.monospaced).and_then(|f| f.families.first().map(|(name, _)| name.clone()));
    if let Some(family) = family {
        database.set_sans_serif_family(family.clone());
        options.font_family = family;
    }
    let tree = usvg::Tree::from_str(svg, &options).map_err(|e| format!("the figure is not valid SVG: {e}"))?;
    let size = tree.size().to_int_size().scale_by(scale).ok_or("the figure has no size")?;
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height()).ok_or("the figure is too large")?;
    resvg::render(&tree, tiny_skia::Transform::from_scale(scale, scale), &mut pixmap.as_mut());
    pixmap.encode_png().map_err(|e| e.to_string())
}
