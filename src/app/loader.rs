//! Background file and analysis work for the app, so the UI thread only draws: session open and save, variant
//! and dataset loading, thumbnail decoding, trace analyses, comparison rows and PNG encoding each run on a named
//! thread and come back as a [`Loaded`] message through one bounded channel, drained at the start of a frame.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, bounded};
use eframe::egui;

use super::world::Analysis;
use crate::analysis::Criterion;
use crate::data::Dataset;
use crate::model::Variant;
use crate::session::Session;

/// Results waiting to be drained at most; a worker whose result finds the channel full waits for the next frame.
const CHANNEL_CAPACITY: usize = 64;

/// A session read from its file, with the variant (and inf-opt policy) that shows the most on opening.
pub type OpenedSession = (Box<Session>, Option<(String, crate::analysis::Policy)>);

/// One file picked or dropped, opened.
pub enum OpenedFile {
    /// A model or manifest.
    Variant(Box<Variant>),
    /// A dataset.
    Dataset(Box<Dataset>),
}

/// What a background task produced.
pub enum Loaded {
    /// A session file was read, with the variant (and inf-opt policy) that shows the most on opening.
    Session(PathBuf, Result<OpenedSession, String>),
    /// A session was written; `revision` is the world revision it holds (later changes keep it dirty).
    Saved(PathBuf, u64, Result<(), String>),
    /// Dropped or picked files, each opened or its error (which names the file).
    Files(Vec<(PathBuf, Result<OpenedFile, String>)>),
    /// A dataset the session lists, opened.
    Dataset(String, Result<Arc<Dataset>, String>),
    /// Decoded thumbnails: (dataset, sample) and the image, or `None` when the sample cannot be decoded.
    Thumbnails(String, Vec<(usize, Option<egui::ColorImage>)>),
    /// Every criterion's analysis of run `index`, for the runs revision it was computed on.
    Analyses(usize, u64, Vec<(Criterion, Arc<Analysis>)>),
    /// Comparison rows for (criterion, budget bits, revision).
    Rows(Criterion, u64, u64, Arc<Vec<crate::report::Row>>),
    /// A certificate of the explored variant's thresholds, for its inputs.
    /// Thresholds from a calibration percentile: (variant, session revision asked at, the policy or why not).
    Percentile(String, u64, Result<crate::analysis::Policy, String>),
    /// A certificate computed for its key.
    Certificate(super::certify::CertifyKey, Arc<Result<crate::analysis::certify::Certificate, String>>),
    /// A PNG or SVG figure was written.
    Written(PathBuf, Result<(), String>),
    /// The devices list read from its file.
    Devices(PathBuf, Result<crate::net::DeviceList, String>),
    /// The devices list written to its file.
    DevicesSaved(PathBuf, Result<(), String>),
}

/// The channel and the set of tasks in flight (so a frame that asks again does not start a second one).
pub struct Loader {
    sender: Sender<Loaded>,
    /// Results arrive here.
    pub results: Receiver<Loaded>,
    in_flight: HashSet<String>,
    ctx: Option<egui::Context>,
}

impl Default for Loader {
    fn default() -> Self {
        let (sender, results) = bounded(CHANNEL_CAPACITY);
        Self { sender, results, in_flight: HashSet::new(), ctx: None }
    }
}

impl Loader {
    /// The context to wake when a result arrives.
    pub fn set_context(&mut self, ctx: egui::Context) {
        self.ctx = Some(ctx);
    }

    /// True while any task runs (tests wait for this to settle).
    pub fn any_busy(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// True while the task `key` runs.
    pub fn is_running(&self, key: &str) -> bool {
        self.in_flight.contains(key)
    }

    /// Marks a task done (called when its result is drained).
    pub fn finished(&mut self, key: &str) {
        self.in_flight.remove(key);
    }

    /// Runs `work` on a thread named `edgescope-{key}` unless a task with that key is already running; returns
    /// false (and an error text) only when no thread could be started.
    pub fn spawn(&mut self, key: String, work: impl FnOnce() -> Loaded + Send + 'static) -> Result<(), String> {
        if self.in_flight.contains(&key) {
            return Ok(());
        }
        let sender = self.sender.clone();
        let ctx = self.ctx.clone();
        let name: String = format!("edgescope-{key}").chars().take(60).collect();
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            let result = work();
            // The app is gone when the channel is closed; nothing to deliver then.
            let _ = sender.send(result);
            if let Some(ctx) = ctx {
                ctx.request_repaint();
            }
        });
        match spawned {
            Ok(_) => {
                self.in_flight.insert(key);
                Ok(())
            }
            Err(e) => Err(format!("cannot start a background thread: {e}")),
        }
    }
}

/// Task keys, one place so the drain and the requests agree.
pub mod key {
    use std::path::Path;

    /// Opening a session file.
    pub fn session(path: &Path) -> String {
        format!("open {}", path.display())
    }
    /// Saving the session.
    pub const SAVE: &str = "save";
    /// Opening added files.
    pub const FILES: &str = "add-files";
    /// Opening a dataset.
    pub fn dataset(name: &str) -> String {
        format!("dataset {name}")
    }
    /// Decoding thumbnails of a dataset.
    pub fn thumbnails(name: &str) -> String {
        format!("thumbnails {name}")
    }
    /// Analysing run `index`.
    pub fn analysis(index: usize) -> String {
        format!("analysis {index}")
    }
    /// Comparison rows.
    pub const ROWS: &str = "rows";
    /// Reading or writing the devices list.
    pub const DEVICES: &str = "devices";
    /// Certifying thresholds (one at a time; a newer request waits for the older one to land).
    pub const CERTIFY: &str = "certify";
    /// Thresholds from a calibration percentile.
    pub const PERCENTILE: &str = "percentile";
    /// Writing a figure.
    pub fn written(path: &Path) -> String {
        format!("write {}", path.display())
    }
}

/// Opens dropped or picked files: a variant if it is a model or manifest, else a dataset.
pub fn open_files(paths: Vec<PathBuf>) -> Loaded {
    let opened = paths
        .into_iter()
        .map(|path| {
            let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
            let is_variant = name.ends_with(".onnx")
                || (name.ends_with(".toml")
                    && std::fs::read_to_string(&path)
                        .is_ok_and(|t| t.contains(crate::model::variant::MANIFEST_FORMAT)));
            let result = if is_variant {
                Variant::open(&path).map(|v| OpenedFile::Variant(Box::new(v))).map_err(|e| e.to_string())
            } else {
                Dataset::open(&path).map(|d| OpenedFile::Dataset(Box::new(d))).map_err(|e| e.to_string())
            };
            (path, result)
        })
        .collect();
    Loaded::Files(opened)
}

/// Decodes thumbnails of `samples` of `dataset`.
pub fn decode_thumbnails(dataset: &Dataset, samples: &[usize]) -> Loaded {
    let images = samples
        .iter()
        .map(|&sample| {
            let image = dataset.thumbnail(sample).ok().map(|(width, height, channels, pixels)| {
                let size = [width as usize, height as usize];
                if channels == 1 {
                    egui::ColorImage::from_gray(size, &pixels)
                } else {
                    egui::ColorImage::from_rgb(size, &pixels)
                }
            });
            (sample, image)
        })
        .collect();
    Loaded::Thumbnails(dataset.name.clone(), images)
}
