//! The session file: what a user saves — datasets, variants, runs per device with their traces, the chosen
//! policies and view settings. Versioned JSON with large arrays stored as compact columns; written atomically.
//!
//! Decoding trusts nothing in the file: columns are capped and checksummed (see `columns.rs`), non-finite
//! numbers are refused before they are written, and paths resolve against the session's real folder (symlinks
//! and `..` resolved by the file system), whatever the working directory.
//!
//! Version history: 1 — first version (columns gained an optional `crc32` later; files without it still load).
//! 2 — traces may carry, per exit, the Jensen-Shannon divergence of every sample against the base's full
//! distribution (`reference_jsd_bits`, plus the trace's `reference`), which makes probability loyalty exact beyond
//! the top-k classes; version 1 files load unchanged (their loyalty is the top-k estimate with its bound).

mod finite;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::analysis::policy::Policy;
use crate::data::Dataset;
use crate::model::Variant;
use crate::record::columns::{Column, ColumnarDynamic, ColumnarTrace};
use crate::record::{DynamicRun, RunInfo, TraceRun};

/// Format name at the top of every session file.
pub const SESSION_FORMAT: &str = "edgescope-session";
/// Newest session version this build reads and writes.
pub const SESSION_VERSION: u32 = 2;

/// Why a session could not be read or written. Each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The file could not be read or written.
    #[error("cannot access session {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a valid session.
    #[error("{} is not a valid edgescope session: {reason}; it may be damaged — open an older copy or re-run `edgescope eval`", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A number JSON cannot hold (NaN, infinity) would be written.
    #[error("cannot save {}: {location} is not a finite number (NaN or infinity), which a session cannot hold; use a finite value (a threshold of 1e9 instead of inf)", path.display())]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// Where the number sits.
        location: String,
    },
    /// Written by a newer edgescope.
    #[error("{} is session version {found}, newer than this edgescope reads (up to {supported}); update edgescope to open it", path.display())]
    NewerVersion {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
        /// Newest readable version.
        supported: u32,
    },
}

/// A dataset as the session remembers it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatasetEntry {
    /// Name.
    pub name: String,
    /// Spec, file or folder it opens from (absolute in memory, relative to the session on disk).
    pub path: PathBuf,
    /// Sample count.
    pub samples: usize,
    /// Class names.
    pub classes: Vec<String>,
}

impl DatasetEntry {
    /// Describes an opened dataset.
    pub fn of(dataset: &Dataset) -> Self {
        Self {
            name: dataset.name.clone(),
            path: dataset.source.clone(),
            samples: dataset.len(),
            classes: dataset.classes.clone(),
        }
    }
}

/// A variant as the session remembers it: enough for reports without re-reading the ONNX files.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VariantEntry {
    /// Name.
    pub name: String,
    /// Manifest or ONNX file (absolute in memory, relative to the session on disk).
    pub path: PathBuf,
    /// Technique tags.
    pub tags: Vec<String>,
    /// Base variant name.
    pub base: Option<String>,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// Weight values.
    pub parameter_count: u64,
    /// Segments.
    pub segments: usize,
    /// Early exits.
    pub early_exits: usize,
    /// Classes.
    pub num_classes: usize,
    /// Operator counts.
    pub op_histogram: BTreeMap<String, usize>,
    /// What the exits hold, for people: `probabilities (graph ends in Softmax)`.
    pub outputs: String,
    /// The kind stated on the command line for a bare ONNX file (manifests carry their own), re-applied
    /// whenever the variant is opened again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stated_outputs: Option<crate::model::OutputKind>,
}

impl VariantEntry {
    /// Describes an opened variant.
    pub fn of(variant: &Variant) -> Self {
        Self {
            name: variant.name.clone(),
            path: variant.source.clone(),
            tags: variant.tags.clone(),
            base: variant.base.clone(),
            size_bytes: variant.size_bytes(),
            parameter_count: variant.parameter_count(),
            segments: variant.segments.len(),
            early_exits: variant.early_exit_count(),
            num_classes: variant.num_classes,
            op_histogram: variant.op_histogram(),
            outputs: variant.describe_outputs(),
            stated_outputs: variant
                .segments
                .iter()
                .find(|s| s.exit.is_some() && s.exit_kind_origin == crate::model::KindOrigin::Stated)
                .filter(|_| variant.source.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx")))
                .map(|s| s.exit_kind),
        }
    }

    /// Opens the variant again from its file, with the output kind stated when it was added.
    pub fn open(&self) -> Result<Variant, crate::model::ModelError> {
        let mut variant = Variant::open(&self.path)?;
        if let Some(kind) = self.stated_outputs {
            variant.state_output_kind(kind);
        }
        Ok(variant)
    }

    /// True when the variant carries the tag.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// Everything a user saves.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Session {
    /// Datasets.
    pub datasets: Vec<DatasetEntry>,
    /// Variants.
    pub variants: Vec<VariantEntry>,
    /// Trace runs (one per variant, dataset and device).
    pub runs: Vec<TraceRun>,
    /// Dynamic runs made to verify predictions.
    pub verifications: Vec<DynamicRun>,
    /// The policy chosen per variant name.
    pub policies: BTreeMap<String, Policy>,
    /// Name of the variant loyalty and speed-up are measured against when a variant names none.
    pub base: Option<String>,
    /// Name of the dataset whose runs calibrate percentile thresholds (seed 003); kept out of the tables.
    pub calibration_dataset: Option<String>,
    /// View settings of the app, kept opaque here.
    pub view: serde_json::Value,
}

impl Session {
    /// The variant called `name`.
    pub fn variant(&self, name: &str) -> Option<&VariantEntry> {
        self.variants.iter().find(|v| v.name == name)
    }

    /// Adds or replaces a variant entry (by name).
    pub fn upsert_variant(&mut self, entry: VariantEntry) {
        match self.variants.iter_mut().find(|v| v.name == entry.name) {
            Some(existing) => *existing = entry,
            None => self.variants.push(entry),
        }
    }

    /// Adds or replaces a dataset entry (by name).
    pub fn upsert_dataset(&mut self, entry: DatasetEntry) {
        match self.datasets.iter_mut().find(|d| d.name == entry.name) {
            Some(existing) => *existing = entry,
            None => self.datasets.push(entry),
        }
    }

    /// Adds a run, replacing an earlier run of the same variant, dataset, device, provider and sample limit,
    /// unless that would replace a complete trace with an incomplete one. A run limited to the first N samples
    /// is kept beside the full trace, never in its place. Returns whether the run was kept.
    pub fn upsert_run(&mut self, run: TraceRun) -> bool {
        let same = |r: &TraceRun| {
            r.info.variant == run.info.variant
                && r.info.dataset == run.info.dataset
                && r.info.same_device(&run.info)
                && r.info.sample_limit() == run.info.sample_limit()
        };
        match self.runs.iter_mut().find(|r| same(r)) {
            Some(existing) if existing.info.complete && !run.info.complete => false,
            Some(existing) => {
                *existing = run;
                true
            }
            None => {
                self.runs.push(run);
                true
            }
        }
    }

    /// Keeps an incomplete run (cancelled, cut short, failed part-way) unless a complete one of the same
    /// variant, dataset, device and limit is already there: a partial trace never replaces a whole one.
    pub fn keep_partial(&mut self, run: TraceRun) -> bool {
        self.upsert_run(run)
    }

    /// The base variant name for `variant`: the one its manifest names; a variant tagged `base` is its own
    /// reference; otherwise the session's `--base`. Sessions mixing several model families stay correct because
    /// no variant is silently compared with another family's base.
    pub fn base_of(&self, variant: &str) -> Option<String> {
        let entry = self.variant(variant)?;
        entry.base.clone().or_else(|| entry.has_tag("base").then(|| entry.name.clone())).or_else(|| self.base.clone())
    }

    /// The variant a trace run of `variant` is compared with during the run (see
    /// `runtime::reference`): its base, opened, when the trace cannot hold every class. `Ok(None)` when
    /// no comparison is needed; an error when the base cannot be opened (the run can go on without it).
    pub fn reference_for(&self, variant: &Variant) -> Result<Option<std::sync::Arc<Variant>>, String> {
        if variant.num_classes <= crate::analysis::trace::MAX_TOP_K {
            return Ok(None);
        }
        let Some(base) = self.base_of(&variant.name).filter(|b| *b != variant.name) else { return Ok(None) };
        let Some(entry) = self.variant(&base) else { return Ok(None) };
        let reference = entry.open().map_err(|e| {
            format!("base {base} cannot be opened ({e}); probability loyalty of {} will be an estimate", variant.name)
        })?;
        Ok(variant.needs_reference_pass(&reference).then(|| std::sync::Arc::new(reference)))
    }

    /// The run of `variant` made on the same dataset, device, provider and sample limit as `like`.
    pub fn matching_run(&self, variant: &str, like: &RunInfo) -> Option<&TraceRun> {
        self.runs.iter().find(|r| {
            r.info.variant == variant
                && r.info.dataset == like.dataset
                && r.info.same_device(like)
                && r.info.sample_limit() == like.sample_limit()
        })
    }

    /// The run of `variant` that stands for it (not a calibration run): a full run before one limited to the
    /// first N samples, a complete one before an incomplete one, then the first stored.
    pub fn primary_run(&self, variant: &str) -> Option<&TraceRun> {
        self.runs
            .iter()
            .filter(|r| r.info.variant == variant && !self.is_calibration_run(r))
            .min_by_key(|r| (r.info.sample_limit().is_some(), !r.info.complete))
    }

    /// True when `run` was made on the calibration dataset.
    pub fn is_calibration_run(&self, run: &TraceRun) -> bool {
        self.calibration_dataset.as_deref() == Some(run.info.dataset.as_str())
    }

    /// The calibration run of `variant` on the same device and provider as `like`.
    pub fn calibration_run(&self, variant: &str, like: &RunInfo) -> Option<&TraceRun> {
        let dataset = self.calibration_dataset.as_deref()?;
        self.runs
            .iter()
            .filter(|r| r.info.variant == variant && r.info.dataset == dataset && r.info.same_device(like))
            .min_by_key(|r| r.info.sample_limit().is_some())
    }

    /// Reads a session file; paths inside become absolute.
    pub fn load(path: &Path) -> Result<Self, SessionError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| SessionError::Io { path: path.to_path_buf(), source })?;
        Self::from_json(&text, path)
    }

    /// Parses session JSON read from `path` (used to resolve relative paths and in messages).
    pub fn from_json(text: &str, path: &Path) -> Result<Self, SessionError> {
        use crate::format::{FileFormat, HeaderProblem};
        let corrupt = |reason: String| SessionError::Corrupt { path: path.to_path_buf(), reason };
        let format = FileFormat { name: SESSION_FORMAT, version: SESSION_VERSION };
        // Version 2 only added optional fields, so one reader takes both; older versions would be migrated here.
        format.check_json(text).map_err(|problem| match problem {
            HeaderProblem::Syntax(e) => corrupt(format!("not valid JSON ({e})")),
            HeaderProblem::OtherFormat => corrupt(format!("it does not start with format \"{SESSION_FORMAT}\"")),
            HeaderProblem::NoVersion => corrupt("it has no valid version (1 or more)".into()),
            HeaderProblem::Newer { found } => {
                SessionError::NewerVersion { path: path.to_path_buf(), found, supported: SESSION_VERSION }
            }
        })?;
        let file: SessionFileV1 = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
        file.into_session(&real_directory(path)).map_err(corrupt)
    }

    /// Serializes to JSON with paths relative to `directory`.
    pub fn to_json(&self, directory: &Path) -> String {
        let file = SessionFileV1::from_session(self, directory);
        // Serializing plain data structures to a String cannot fail.
        serde_json::to_string_pretty(&file).unwrap_or_default()
    }

    /// Where the first number JSON cannot hold sits (NaN, infinity), if any.
    pub fn first_non_finite(&self) -> Option<String> {
        for (index, run) in self.runs.iter().enumerate() {
            let trace = &run.trace;
            let mut columns: Vec<(String, &[f32])> = vec![("preprocess_us".into(), trace.preprocess_us.as_slice())];
            for (segment, latency) in trace.segment_latency_us.iter().enumerate() {
                columns.push((format!("segment_latency_us[{segment}]"), latency.as_slice()));
            }
            for (exit, e) in trace.exits.iter().enumerate() {
                columns.push((format!("exits[{exit}].top_probs"), e.top_probs.as_slice()));
                columns.push((format!("exits[{exit}].entropy_nats"), e.entropy_nats.as_slice()));
                columns.push((format!("exits[{exit}].reference_jsd_bits"), e.reference_jsd_bits.as_slice()));
            }
            for (name, values) in columns {
                if let Some(at) = Column::first_non_finite(values) {
                    return Some(format!("runs[{index}] ({}).trace.{name}[{at}]", run.info.variant));
                }
            }
        }
        for (index, run) in self.verifications.iter().enumerate() {
            for (name, values) in [("latency_us", &run.latency_us), ("preprocess_us", &run.preprocess_us)] {
                if let Some(at) = Column::first_non_finite(values) {
                    return Some(format!("verifications[{index}] ({}).{name}[{at}]", run.info.variant));
                }
            }
        }
        // Everything else that holds numbers, walked as it would be written (columns are checked above).
        #[derive(Serialize)]
        struct Numbers<'a> {
            policies: &'a BTreeMap<String, Policy>,
            view: &'a serde_json::Value,
            runs: Vec<&'a RunInfo>,
            verifications: Vec<(&'a RunInfo, Option<&'a Policy>)>,
            datasets: &'a [DatasetEntry],
            variants: &'a [VariantEntry],
        }
        finite::first_non_finite(&Numbers {
            policies: &self.policies,
            view: &self.view,
            runs: self.runs.iter().map(|r| &r.info).collect(),
            verifications: self.verifications.iter().map(|v| (&v.info, v.policy.as_ref())).collect(),
            datasets: &self.datasets,
            variants: &self.variants,
        })
    }

    /// Writes the session atomically: a temporary file beside the target, flushed, then renamed over it. A
    /// session holding a number JSON cannot represent is refused, so every saved session opens again. When
    /// `path` is a symlink, the file it points to is replaced and the link kept.
    pub fn save(&self, path: &Path) -> Result<(), SessionError> {
        let io = |source| SessionError::Io { path: path.to_path_buf(), source };
        if let Some(location) = self.first_non_finite() {
            return Err(SessionError::NonFinite { path: path.to_path_buf(), location });
        }
        let directory = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&directory).map_err(io)?;
        let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        write_atomically(&target, self.to_json(&real_directory(path)).as_bytes()).map_err(io)
    }
}

/// The real folder of a session file: symlinks and `..` resolved by the file system (`a/link/../x` is where
/// the kernel finds it, not where the text suggests), absolute whatever the working directory.
fn real_directory(path: &Path) -> PathBuf {
    if let Some(parent) = std::fs::canonicalize(path).ok().and_then(|real| real.parent().map(Path::to_path_buf)) {
        return parent;
    }
    let parent = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::canonicalize(parent).or_else(|_| std::path::absolute(parent)).unwrap_or_else(|_| parent.to_path_buf())
}

/// Writes a file atomically: a temporary file in the same folder, flushed to disk, then renamed over the
/// target, so a crash never leaves a half-written file. The result is an ordinary 0644 document.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let directory = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut temporary = tempfile::NamedTempFile::new_in(&directory)?;
    temporary.write_all(bytes)?;
    #[cfg(unix)]
    {
        // NamedTempFile is created private (0600).
        use std::os::unix::fs::PermissionsExt;
        temporary.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    temporary.as_file().sync_all()?;
    temporary.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Version 1 of the file layout.
#[derive(Serialize, Deserialize)]
struct SessionFileV1 {
    format: String,
    version: u32,
    #[serde(default)]
    base: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    calibration_dataset: Option<String>,
    #[serde(default)]
    datasets: Vec<DatasetEntry>,
    #[serde(default)]
    variants: Vec<VariantEntry>,
    #[serde(default)]
    runs: Vec<StoredTraceRun>,
    #[serde(default)]
    verifications: Vec<StoredDynamicRun>,
    #[serde(default)]
    policies: BTreeMap<String, Policy>,
    #[serde(default)]
    view: serde_json::Value,
}

/// A trace run in its compact form (columns), as sessions store it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredTraceRun {
    info: RunInfo,
    trace: ColumnarTrace,
}

impl StoredTraceRun {
    /// Compacts a run.
    pub fn of(run: &TraceRun) -> Self {
        Self { info: run.info.clone(), trace: ColumnarTrace::of(&run.trace) }
    }

    /// Expands and validates; the error says what is wrong.
    pub fn decode(self) -> Result<TraceRun, String> {
        self.trace.into_run(self.info)
    }
}

/// A dynamic run in its compact form (columns), as sessions store it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredDynamicRun {
    info: RunInfo,
    policy: Option<Policy>,
    #[serde(flatten)]
    columns: ColumnarDynamic,
}

impl StoredDynamicRun {
    /// Compacts a run.
    pub fn of(run: &DynamicRun) -> Self {
        Self { info: run.info.clone(), policy: run.policy.clone(), columns: ColumnarDynamic::of(run) }
    }

    /// Expands and validates; the error says what is wrong.
    pub fn decode(self) -> Result<DynamicRun, String> {
        let name = self.info.variant.clone();
        self.columns.decode(self.info, self.policy).map_err(|e| format!("verification of {name}: {e}"))
    }
}

/// `path` relative to the session's real folder; both resolved by the file system where they exist.
fn relative(path: &Path, directory: &Path) -> PathBuf {
    let absolute =
        std::fs::canonicalize(path).or_else(|_| std::path::absolute(path)).unwrap_or_else(|_| path.to_path_buf());
    pathdiff::diff_paths(&absolute, directory).unwrap_or(absolute)
}

/// Joins a stored path to the session's real folder. An existing file is resolved by the file system (so `..`
/// after a symlink goes where the kernel goes); a missing one is normalized lexically, to be reported as it
/// was written.
fn resolve(path: &Path, directory: &Path) -> PathBuf {
    use std::path::Component;
    let joined = if path.is_absolute() { path.to_path_buf() } else { directory.join(path) };
    if let Ok(real) = std::fs::canonicalize(&joined) {
        return real;
    }
    let mut normal = PathBuf::new();
    for component in joined.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !normal.pop() {
                    normal.push("..");
                }
            }
            other => normal.push(other.as_os_str()),
        }
    }
    normal
}

impl SessionFileV1 {
    fn from_session(session: &Session, directory: &Path) -> Self {
        Self {
            format: SESSION_FORMAT.into(),
            version: SESSION_VERSION,
            base: session.base.clone(),
            calibration_dataset: session.calibration_dataset.clone(),
            datasets: session
                .datasets
                .iter()
                .map(|d| DatasetEntry { path: relative(&d.path, directory), ..d.clone() })
                .collect(),
            variants: session
                .variants
                .iter()
                .map(|v| VariantEntry { path: relative(&v.path, directory), ..v.clone() })
                .collect(),
            runs: session.runs.iter().map(StoredTraceRun::of).collect(),
            verifications: session.verifications.iter().map(StoredDynamicRun::of).collect(),
            policies: session.policies.clone(),
            view: session.view.clone(),
        }
    }

    fn into_session(self, directory: &Path) -> Result<Session, String> {
        let runs = self.runs.into_iter().map(StoredTraceRun::decode).collect::<Result<Vec<_>, _>>()?;
        let verifications =
            self.verifications.into_iter().map(StoredDynamicRun::decode).collect::<Result<Vec<_>, _>>()?;
        Ok(Session {
            datasets: self
                .datasets
                .into_iter()
                .map(|d| DatasetEntry { path: resolve(&d.path, directory), ..d })
                .collect(),
            variants: self
                .variants
                .into_iter()
                .map(|v| VariantEntry { path: resolve(&v.path, directory), ..v })
                .collect(),
            runs,
            verifications,
            policies: self.policies,
            base: self.base,
            calibration_dataset: self.calibration_dataset,
            view: self.view,
        })
    }
}
