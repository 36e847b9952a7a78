//! `study`: the study on your model in one command (issue 10 part 6). From one float classifier it makes PTQ and
//! DQ (the native quantizer), exits at the early / middle / late cut points (one chain per position plus one with
//! all of them, heads trained on frozen features), PTQ-EE and DQ-EE (the all-exits chain quantized segment by
//! segment), and PRUNE-EE for each pruned model given; then it evaluates every variant on the chosen devices and
//! writes a session that `edgescope report` and the app open on Tables 2-7 and Explore.
//!
//! The work is a list of named steps. Each step writes its output atomically (staged, checked, renamed into place)
//! and is recorded in a small versioned state file (`study.json`) with a fingerprint of its inputs (file contents,
//! datasets, settings, the steps before it). Running the same command again skips every step whose fingerprint did
//! not change and says so; a changed input redoes that step and the steps after it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::exits_add::{AddExitsError, AddExitsEvent, AddExitsRequest, TrainedExits, train_exits, write_exits};
use super::heads::{HeadKind, TrainConfig};
use super::quantize::{Method, QuantizeError, QuantizeEvent, QuantizeOptions, QuantizeRequest, quantize_to_disk};
use crate::data::Dataset;
use crate::model::cuts::Depth;
use crate::model::variant::{MANIFEST_FORMAT, MANIFEST_VERSION};
use crate::model::{Manifest, SegmentManifest, Variant, proto};
use crate::record::{RunEvent, RunMode, RunOutput, RunSettings};
use crate::runtime::{CancelToken, Job, Runner};
use crate::session::{DatasetEntry, Session, VariantEntry, write_atomically};

/// The state file's format name.
pub const STATE_FORMAT: &str = "edgescope-study";
/// The state file's version (readers accept older ones and refuse newer ones).
pub const STATE_VERSION: u32 = 1;
/// The state file in the output folder.
pub const STATE_FILE: &str = "study.json";
/// The session file in the output folder.
pub const SESSION_FILE: &str = "session.json";
/// Test samples measured per variant unless told otherwise (a quick first pass; `None` measures them all).
pub const DEFAULT_TEST_LIMIT: usize = 2000;
/// Most epochs per exit head unless told otherwise (training stops earlier when validation stops improving).
pub const DEFAULT_EPOCHS: usize = 10;

/// How the study runs; every field is printed in the summary and is part of the steps' fingerprints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StudyOptions {
    /// Prefix of the variant names (`FAMILY/base`, `FAMILY/ptq`, ...); default: the model's file stem, or its
    /// folder's name when the stem is a generic `base` / `model`.
    pub family: Option<String>,
    /// Only the first N test samples per variant (`None`: all).
    pub test_limit: Option<usize>,
    /// Only the first N training samples for the exit heads (`None`: all).
    pub train_limit: Option<usize>,
    /// Only the first N calibration samples (`None`: all).
    pub calibration_limit: Option<usize>,
    /// Head kind: `linear` or `mlp`.
    pub head: String,
    /// Most epochs per head.
    pub epochs: usize,
    /// Seed of the heads' initialization, batch order and validation hold-out.
    pub seed: u64,
    /// ONNX Runtime intra-op threads for training, calibration and measuring (0: its default).
    pub threads: usize,
    /// Untimed warm-up runs before each measured run.
    pub warmup_runs: usize,
}

impl Default for StudyOptions {
    fn default() -> Self {
        Self {
            family: None,
            test_limit: Some(DEFAULT_TEST_LIMIT),
            train_limit: None,
            calibration_limit: None,
            head: "linear".into(),
            epochs: DEFAULT_EPOCHS,
            seed: 0,
            threads: 0,
            warmup_runs: crate::record::DEFAULT_WARMUP_RUNS,
        }
    }
}

impl StudyOptions {
    /// One line per setting, for the summary.
    pub fn describe(&self) -> Vec<String> {
        let samples = |limit: Option<usize>| limit.map_or_else(|| "all".to_string(), |n| format!("first {n}"));
        vec![
            format!("test samples per variant: {}", samples(self.test_limit)),
            format!("training samples: {}", samples(self.train_limit)),
            format!("calibration samples: {}", samples(self.calibration_limit)),
            format!(
                "exit heads: {}, at most {} epochs, seed {}, 10 % of the training set held out for early stopping",
                self.head, self.epochs, self.seed
            ),
            format!("ptq: {}", ptq_options().describe()),
            format!("dq: {}", dq_options().describe()),
            format!(
                "measuring: batch 1, {} warm-up runs, {} threads",
                self.warmup_runs,
                if self.threads == 0 { "ONNX Runtime's default".to_string() } else { self.threads.to_string() }
            ),
        ]
    }
}

/// The study's static quantization: the zoo recipe's settings (per-channel weights, Gemm outputs kept float).
pub fn ptq_options() -> QuantizeOptions {
    QuantizeOptions::recipe_ptq()
}

/// The study's dynamic quantization: the zoo recipe's settings.
pub fn dq_options() -> QuantizeOptions {
    QuantizeOptions::recipe_dq()
}

/// What to study.
#[derive(Clone, Debug)]
pub struct StudyRequest {
    /// The float classifier (one ONNX file).
    pub model: PathBuf,
    /// Test dataset: every variant is measured on it.
    pub test: PathBuf,
    /// Training dataset for the exit heads.
    pub train: PathBuf,
    /// Calibration dataset for static quantization.
    pub calibration: PathBuf,
    /// Pruned versions of the model (float ONNX files): each gets exits too (PRUNE-EE).
    pub pruned: Vec<PathBuf>,
    /// Output folder: variants, `session.json` and `study.json` (created; an existing one must be a study's).
    pub out: PathBuf,
    /// Settings.
    pub options: StudyOptions,
}

/// A device to measure on: a name for people and the state file, and its runner.
pub struct StudyDevice {
    /// `this machine`, or the remote runner's address.
    pub name: String,
    /// Runs the jobs.
    pub runner: Box<dyn Runner + Send>,
}

/// Progress of the study.
#[derive(Clone, Debug, PartialEq)]
pub enum StudyEvent {
    /// The inputs are being checked (before step 1).
    Checking(String),
    /// A step starts.
    Started {
        /// 1-based step.
        step: usize,
        /// Steps in all.
        steps: usize,
        /// What it does.
        title: String,
    },
    /// A step was done by an earlier run and its inputs did not change.
    Skipped {
        /// 1-based step.
        step: usize,
        /// Steps in all.
        steps: usize,
        /// What it does.
        title: String,
    },
    /// Within a step.
    Progress {
        /// 1-based step.
        step: usize,
        /// Steps in all.
        steps: usize,
        /// What it does.
        title: String,
        /// Where it is (`epoch 4/10`).
        detail: String,
        /// Share of the step done (0 to 1), when known.
        fraction: Option<f32>,
    },
    /// A step finished.
    Finished {
        /// 1-based step.
        step: usize,
        /// Steps in all.
        steps: usize,
        /// What it does.
        title: String,
        /// Seconds it took.
        seconds: f64,
        /// What it made.
        summary: String,
    },
}

impl StudyEvent {
    /// One line for people: `step 3/9: training exit heads (epoch 4/10)`.
    pub fn line(&self) -> String {
        match self {
            StudyEvent::Checking(what) => format!("checking: {what}"),
            StudyEvent::Started { step, steps, title } => format!("step {step}/{steps}: {title}"),
            StudyEvent::Skipped { step, steps, title } => {
                format!("step {step}/{steps}: {title}: skipped (done before, inputs unchanged)")
            }
            StudyEvent::Progress { step, steps, title, detail, .. } => {
                format!("step {step}/{steps}: {title} ({detail})")
            }
            StudyEvent::Finished { step, steps, title, seconds, summary } => {
                format!("step {step}/{steps}: {title}: done in {seconds:.1} s; {summary}")
            }
        }
    }
}

/// Why the study stopped. Messages name the file and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    /// The inputs cannot be studied as they are.
    #[error("{0}")]
    Input(String),
    /// A step failed.
    #[error("step {step} ({title}): {reason}")]
    Step {
        /// 1-based step.
        step: usize,
        /// Its title.
        title: String,
        /// What went wrong.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Cancelled: the finished steps are kept and recorded; run the same command again to go on.
    #[error("cancelled; the finished steps are kept in {}: run the same command again to go on", .0.display())]
    Cancelled(PathBuf),
}

/// One finished step as the state file records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Step key (`base`, `ptq`, `exits`, `eval@this machine`, ...).
    pub key: String,
    /// Fingerprint of its inputs and settings.
    pub fingerprint: String,
    /// Manifests it wrote, relative to the output folder.
    #[serde(default)]
    pub outputs: Vec<PathBuf>,
    /// Seconds it took.
    pub seconds: f64,
    /// What it made, for people.
    pub summary: String,
}

/// The state file: which steps are done, with what inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudyState {
    /// [`STATE_FORMAT`].
    pub format: String,
    /// [`STATE_VERSION`].
    pub version: u32,
    /// The model studied.
    pub model: PathBuf,
    /// The options of the run that wrote it.
    pub options: StudyOptions,
    /// Finished steps.
    pub steps: Vec<StepRecord>,
    /// Finished measurements: `device / variant` -> fingerprint.
    #[serde(default)]
    pub runs: BTreeMap<String, String>,
}

impl StudyState {
    fn new(request: &StudyRequest) -> Self {
        Self {
            format: STATE_FORMAT.into(),
            version: STATE_VERSION,
            model: request.model.clone(),
            options: request.options.clone(),
            steps: Vec::new(),
            runs: BTreeMap::new(),
        }
    }

    /// Reads `path`; refuses other formats and newer versions with advice.
    pub fn load(path: &Path) -> Result<Self, StudyError> {
        let file_error = |reason: String| StudyError::File { path: path.to_path_buf(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        use crate::format::{FileFormat, HeaderProblem};
        let format = FileFormat { name: STATE_FORMAT, version: STATE_VERSION };
        format.check_json(&text).map_err(|problem| match problem {
            HeaderProblem::Syntax(e) => file_error(format!("not valid JSON ({e})")),
            HeaderProblem::OtherFormat => {
                file_error(format!("not a study state file (format \"{STATE_FORMAT}\"); name another --out folder"))
            }
            HeaderProblem::NoVersion => file_error("it has no valid version".into()),
            HeaderProblem::Newer { found } => file_error(format!(
                "study state version {found} is newer than this edgescope reads ({STATE_VERSION}); update edgescope \
                 or name a new --out folder"
            )),
        })?;
        serde_json::from_str(&text).map_err(|e| file_error(e.to_string()))
    }

    fn save(&self, path: &Path) -> Result<(), StudyError> {
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        write_atomically(path, text.as_bytes())
            .map_err(|e| StudyError::File { path: path.to_path_buf(), reason: e.to_string() })
    }

    fn done(&self, key: &str, fingerprint: &str, out: &Path) -> Option<&StepRecord> {
        self.steps.iter().find(|s| {
            s.key == key
                && s.fingerprint == fingerprint
                && s.outputs.iter().all(|o| Variant::open(&out.join(o)).is_ok())
        })
    }

    fn record(&mut self, record: StepRecord) {
        self.steps.retain(|s| s.key != record.key);
        self.steps.push(record);
    }
}

/// One variant the study made.
#[derive(Clone, Debug, PartialEq)]
pub struct StudyVariant {
    /// Its name.
    pub name: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its manifest.
    pub manifest: PathBuf,
}

/// What the study did.
#[derive(Clone, Debug)]
pub struct StudyOutcome {
    /// The session written.
    pub session: PathBuf,
    /// The variants, in the order they were made.
    pub variants: Vec<StudyVariant>,
    /// Every step: its title, whether it was skipped, and its record.
    pub steps: Vec<(String, bool, StepRecord)>,
    /// Measurements skipped because an earlier run made them with the same inputs.
    pub runs_skipped: usize,
    /// Seconds in all.
    pub total_s: f64,
}

/// What a step does.
#[derive(Clone, Debug)]
enum StepKind {
    Base,
    Quantize { method: Method, source: &'static str, key: &'static str },
    Exits { source: String, prefix: String, base: String },
    CopyPruned { index: usize, path: PathBuf },
    Evaluate { device: usize },
}

struct Step {
    key: String,
    title: String,
    kind: StepKind,
}

/// The family name: the option, else the model's stem, else its folder's name when the stem is generic.
fn family_name(request: &StudyRequest) -> String {
    if let Some(family) = request.options.family.as_ref().filter(|f| !f.trim().is_empty()) {
        return family.trim().to_string();
    }
    let stem = super::model_stem(&request.model);
    if matches!(stem.as_str(), "base" | "model" | "float" | "fp32")
        && let Some(folder) = request.model.parent().and_then(|p| p.file_name())
    {
        return folder.to_string_lossy().into_owned();
    }
    stem
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn file_hash(path: &Path) -> Result<String, StudyError> {
    let bytes =
        std::fs::read(path).map_err(|e| StudyError::File { path: path.to_path_buf(), reason: e.to_string() })?;
    Ok(sha256_hex(&bytes))
}

/// A dataset's fingerprint: where it is, its name, its labels and the pixels of its first samples.
fn dataset_hash(dataset: &Dataset, limit: Option<usize>) -> Result<String, StudyError> {
    let mut hasher = Sha256::new();
    hasher.update(dataset.source.to_string_lossy().as_bytes());
    hasher.update(dataset.name.as_bytes());
    hasher.update(format!("{limit:?}").as_bytes());
    for label in &dataset.labels {
        hasher.update(label.to_le_bytes());
    }
    let mut sample = Vec::new();
    for index in 0..dataset.len().min(16) {
        dataset.load_input(index, &mut sample).map_err(|e| StudyError::Input(e.to_string()))?;
        for value in &sample {
            hasher.update(value.to_le_bytes());
        }
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn fingerprint(parts: &[&str]) -> String {
    sha256_hex(parts.join("\u{1f}").as_bytes())
}

/// Checks that `path` is a float classifier with one output; returns why not.
fn check_float_classifier(path: &Path, what: &str) -> Result<Variant, StudyError> {
    let input = |reason: String| StudyError::Input(format!("{what} {}: {reason}", path.display()));
    if !path.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx")) {
        return Err(input("give the ONNX file of a float classifier (study makes the manifests itself)".into()));
    }
    let info = crate::model::onnx::inspect(path).map_err(|e| StudyError::Input(e.to_string()))?;
    let quantized = info.quantization_tags();
    if !quantized.is_empty() {
        return Err(input(format!(
            "it is already quantized ({} operators found); study quantizes the float model itself: give the float \
             ONNX file it was made from",
            quantized.join(", ")
        )));
    }
    if info.outputs.len() > 1 {
        return Err(input(format!(
            "it has {} outputs ({}), so it looks like a multi-exit model; study takes a plain classifier with one \
             logits output and adds the exits itself (to measure a multi-exit model as it is, split it with \
             `edgescope exits split` and use `edgescope eval`)",
            info.outputs.len(),
            info.outputs.iter().map(|o| o.name.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let variant = Variant::open(path).map_err(|e| StudyError::Input(e.to_string()))?;
    if variant.early_exit_count() > 0 {
        return Err(input("it already has early exits; give the plain classifier".into()));
    }
    Ok(variant)
}

fn open_dataset(path: &Path, what: &str, limit: Option<usize>) -> Result<Dataset, StudyError> {
    let mut dataset =
        Dataset::open(path).map_err(|e| StudyError::Input(format!("the {what} dataset {}: {e}", path.display())))?;
    if let Some(limit) = limit {
        dataset.truncate(limit);
    }
    if dataset.is_empty() {
        return Err(StudyError::Input(format!("the {what} dataset {} holds no samples", path.display())));
    }
    Ok(dataset)
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StudyError + '_ {
    move |e| StudyError::File { path: path.to_path_buf(), reason: e.to_string() }
}

/// Removes an earlier output of a step about to be redone (only folders inside the study's own `variants`).
fn clear_output(folder: &Path) -> Result<(), StudyError> {
    if folder.exists() {
        std::fs::remove_dir_all(folder).map_err(io_error(folder))?;
    }
    Ok(())
}

/// What the manifest of a copied model says.
struct Naming {
    name: String,
    tags: Vec<String>,
    base: Option<String>,
    notes: String,
}

/// Copies a float ONNX model (external data inside) into `folder` as `FILE.onnx` with a manifest `FILE.toml`
/// naming it `name` with `tags` and `base`: staged beside the folder, checked, renamed into place.
fn write_single(
    model: &Path,
    exit: Option<String>,
    folder: &Path,
    file: &str,
    names: Naming,
) -> Result<PathBuf, StudyError> {
    let Naming { name, tags, base, notes } = names;
    let parent = folder.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    let staging = tempfile::Builder::new().prefix(".edgescope-study-").tempdir_in(parent).map_err(io_error(parent))?;
    let mut proto_model = proto::read_model(model).map_err(|e| StudyError::Input(e.to_string()))?;
    proto::internalize_external_data(&mut proto_model, model).map_err(|e| StudyError::Input(e.to_string()))?;
    let onnx_file = PathBuf::from(format!("{file}.onnx"));
    let staged = staging.path().join(&onnx_file);
    std::fs::write(&staged, proto::encode_model(&proto_model)).map_err(io_error(&staged))?;
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        version: MANIFEST_VERSION,
        name,
        tags,
        base,
        outputs: None,
        notes: Some(notes),
        segments: vec![SegmentManifest { file: onnx_file, input: None, exit, carry: None, outputs: None }],
    };
    let text = toml::to_string(&manifest).map_err(|e| StudyError::File {
        path: folder.to_path_buf(),
        reason: format!("cannot write a manifest: {e}"),
    })?;
    let manifest_file = format!("{file}.toml");
    let staged_manifest = staging.path().join(&manifest_file);
    std::fs::write(&staged_manifest, text).map_err(io_error(&staged_manifest))?;
    Variant::open(&staged_manifest).map_err(|e| StudyError::Input(e.to_string()))?;
    clear_output(folder)?;
    let kept = staging.keep();
    if let Err(e) = std::fs::rename(&kept, folder) {
        let _ = std::fs::remove_dir_all(&kept);
        return Err(StudyError::File { path: folder.to_path_buf(), reason: e.to_string() });
    }
    Ok(folder.join(manifest_file))
}

/// Adds tags to a written manifest (atomically).
fn add_tags(manifest: &Path, extra: &[&str]) -> Result<(), StudyError> {
    let text = std::fs::read_to_string(manifest).map_err(io_error(manifest))?;
    let mut parsed =
        crate::model::variant::parse_manifest(manifest, &text).map_err(|e| StudyError::Input(e.to_string()))?;
    for tag in extra {
        if !parsed.tags.iter().any(|t| t == tag) {
            parsed.tags.insert(0, (*tag).to_string());
        }
    }
    let text = toml::to_string(&parsed)
        .map_err(|e| StudyError::File { path: manifest.to_path_buf(), reason: format!("cannot write: {e}") })?;
    write_atomically(manifest, text.as_bytes()).map_err(io_error(manifest))
}

/// Runs the study (see the module docs). `devices` are measured on in order; `on_event` sees every step's
/// progress; `cancel` stops at the next batch, epoch or sample, keeping the finished steps.
pub fn run_study(
    request: &StudyRequest,
    devices: &mut [StudyDevice],
    on_event: &mut dyn FnMut(StudyEvent),
    cancel: &CancelToken,
) -> Result<StudyOutcome, StudyError> {
    let started = Instant::now();
    let options = &request.options;
    let head = HeadKind::parse(&options.head)
        .ok_or_else(|| StudyError::Input(format!("the head must be linear or mlp, not {:?}", options.head)))?;
    if options.epochs == 0 {
        return Err(StudyError::Input("epochs must be at least 1".into()));
    }
    if devices.is_empty() {
        return Err(StudyError::Input("name at least one device to measure on".into()));
    }
    if [options.test_limit, options.train_limit, options.calibration_limit].contains(&Some(0)) {
        return Err(StudyError::Input("a sample limit of 0 leaves nothing to work with; give at least 1".into()));
    }

    // The output folder: new, empty, or a study's own.
    let out = &request.out;
    let state_path = out.join(STATE_FILE);
    let mut state = if state_path.exists() {
        StudyState::load(&state_path)?
    } else {
        if out.exists() && std::fs::read_dir(out).map_err(io_error(out))?.next().is_some() {
            return Err(StudyError::Input(format!(
                "{} is not empty and holds no {STATE_FILE}; name a new folder for --out (study never mixes its \
                 files with others)",
                out.display()
            )));
        }
        StudyState::new(request)
    };

    // Bad input is found before anything is made.
    on_event(StudyEvent::Checking(format!("model {}", request.model.display())));
    let base_variant = check_float_classifier(&request.model, "the model")?;
    let analysis = super::cut_candidates(&request.model).map_err(|e| {
        StudyError::Input(format!("{e}; study needs a graph that can be cut in two with one tensor crossing"))
    })?;
    let mut depths: Vec<(Depth, String)> = Vec::new();
    for (depth, index) in &analysis.suggested {
        let tensor = analysis.cuts[*index].tensor.clone();
        if !depths.iter().any(|(_, t)| *t == tensor) {
            depths.push((*depth, tensor));
        }
    }
    if depths.is_empty() {
        return Err(StudyError::Input(format!(
            "{}: no cut point where an exit can go ({} single-tensor cut(s) found, none at a usable depth); study \
             needs a chain of blocks with one tensor between them. Add exits by hand with `edgescope exits add \
             --at TENSOR` if `edgescope exits candidates` lists one",
            request.model.display(),
            analysis.cuts.len()
        )));
    }
    on_event(StudyEvent::Checking("datasets".into()));
    let test = Arc::new(open_dataset(&request.test, "test", None)?);
    let train = open_dataset(&request.train, "training", options.train_limit)?;
    let calibration = open_dataset(&request.calibration, "calibration", options.calibration_limit)?;
    for (dataset, what) in [(&*test, "test"), (&train, "training"), (&calibration, "calibration")] {
        crate::runtime::check_compatible(&base_variant, dataset).map_err(|e| {
            StudyError::Input(format!(
                "the {what} dataset {} does not fit {}: {e}",
                dataset.source.display(),
                request.model.display()
            ))
        })?;
    }
    let mut pruned_variants = Vec::new();
    for path in &request.pruned {
        let variant = check_float_classifier(path, "the pruned model")?;
        crate::runtime::check_compatible(&variant, &test).map_err(|e| {
            StudyError::Input(format!("the test dataset does not fit the pruned model {}: {e}", path.display()))
        })?;
        pruned_variants.push(variant);
    }
    std::fs::create_dir_all(out).map_err(io_error(out))?;
    state.model = request.model.clone();
    state.options = options.clone();

    let family = family_name(request);
    let model_hash = file_hash(&request.model)?;
    let test_hash = dataset_hash(&test, options.test_limit)?;
    let train_hash = dataset_hash(&train, options.train_limit)?;
    let calibration_hash = dataset_hash(&calibration, options.calibration_limit)?;
    let train_settings = format!("{} {} {} {:?}", options.head, options.epochs, options.seed, options.train_limit);

    let mut steps = vec![
        Step { key: "base".into(), title: "checking and copying the base model".into(), kind: StepKind::Base },
        Step {
            key: "ptq".into(),
            title: "static quantization (PTQ)".into(),
            kind: StepKind::Quantize { method: Method::Ptq, source: "base", key: "ptq" },
        },
        Step {
            key: "dq".into(),
            title: "dynamic quantization (DQ)".into(),
            kind: StepKind::Quantize { method: Method::Dq, source: "base", key: "dq" },
        },
        Step {
            key: "exits".into(),
            title: "training exit heads".into(),
            kind: StepKind::Exits { source: "base".into(), prefix: "ee".into(), base: format!("{family}/base") },
        },
        Step {
            key: "ptq-ee".into(),
            title: "PTQ of the all-exits chain (PTQ-EE)".into(),
            kind: StepKind::Quantize { method: Method::Ptq, source: "ee-all", key: "ptq-ee" },
        },
        Step {
            key: "dq-ee".into(),
            title: "DQ of the all-exits chain (DQ-EE)".into(),
            kind: StepKind::Quantize { method: Method::Dq, source: "ee-all", key: "dq-ee" },
        },
    ];
    for (index, path) in request.pruned.iter().enumerate() {
        let slug = if index == 0 { "prune".to_string() } else { format!("prune{}", index + 1) };
        steps.push(Step {
            key: slug.clone(),
            title: format!("copying the pruned model {}", path.display()),
            kind: StepKind::CopyPruned { index, path: path.clone() },
        });
        steps.push(Step {
            key: format!("{slug}-exits"),
            title: format!("training exit heads on the pruned model ({}-EE)", slug.to_uppercase()),
            kind: StepKind::Exits {
                source: slug.clone(),
                prefix: format!("{slug}-ee"),
                base: format!("{family}/{slug}"),
            },
        });
    }
    for (index, device) in devices.iter().enumerate() {
        steps.push(Step {
            key: format!("eval@{}", device.name),
            title: format!("evaluating every variant on {}", device.name),
            kind: StepKind::Evaluate { device: index },
        });
    }
    let total = steps.len();

    // Fingerprints of the variants made so far, by folder slug, and their manifests.
    let mut made: BTreeMap<String, (String, PathBuf)> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut report_steps = Vec::new();
    let mut runs_skipped = 0;
    let variants_dir = out.join("variants");
    let session_path = out.join(SESSION_FILE);

    for (number, step) in steps.iter().enumerate() {
        let number = number + 1;
        if cancel.is_cancelled() {
            return Err(StudyError::Cancelled(out.clone()));
        }
        let step_error = |reason: String| StudyError::Step { step: number, title: step.title.clone(), reason };
        let upstream = |slug: &str| made.get(slug).map(|(f, _)| f.clone()).unwrap_or_default();
        let print = match &step.kind {
            StepKind::Base => fingerprint(&["base", &model_hash, &family]),
            StepKind::Quantize { method, source, .. } => {
                let settings = if *method == Method::Ptq { ptq_options() } else { dq_options() }.describe();
                let calib = if *method == Method::Ptq { calibration_hash.as_str() } else { "" };
                fingerprint(&["quantize", &upstream(source), &settings, calib])
            }
            StepKind::Exits { source, .. } => {
                let tensors: Vec<&str> = depths.iter().map(|(_, t)| t.as_str()).collect();
                fingerprint(&["exits", &upstream(source), &train_hash, &train_settings, &tensors.join(",")])
            }
            StepKind::CopyPruned { path, .. } => fingerprint(&["prune", &file_hash(path)?, &upstream("base")]),
            StepKind::Evaluate { .. } => fingerprint(&["eval", &test_hash]),
        };
        let evaluating = matches!(step.kind, StepKind::Evaluate { .. });
        if !evaluating && let Some(record) = state.done(&step.key, &print, out) {
            on_event(StudyEvent::Skipped { step: number, steps: total, title: step.title.clone() });
            remember(&mut made, &mut order, &record.outputs, out, &print);
            report_steps.push((step.title.clone(), true, record.clone()));
            continue;
        }
        on_event(StudyEvent::Started { step: number, steps: total, title: step.title.clone() });
        let step_started = Instant::now();
        let mut progress = |detail: String, fraction: Option<f32>| {
            on_event(StudyEvent::Progress { step: number, steps: total, title: step.title.clone(), detail, fraction });
        };
        let (outputs, summary): (Vec<PathBuf>, String) = match &step.kind {
            StepKind::Base => {
                let folder = variants_dir.join("base");
                let notes = format!("copied by edgescope study from {}", request.model.display());
                let manifest = write_single(
                    &request.model,
                    base_variant.segments[0].exit.clone(),
                    &folder,
                    "base",
                    Naming { name: format!("{family}/base"), tags: vec!["base".into()], base: None, notes },
                )?;
                (vec![relative(out, &manifest)], format!("{family}/base, {} classes", base_variant.num_classes))
            }
            StepKind::CopyPruned { index, path } => {
                let folder = variants_dir.join(&step.key);
                let name = format!("{family}/{}", step.key);
                let notes = format!("copied by edgescope study from {}", path.display());
                let manifest = write_single(
                    path,
                    pruned_variants[*index].segments[0].exit.clone(),
                    &folder,
                    &step.key,
                    Naming {
                        name: name.clone(),
                        tags: vec!["prune".into()],
                        base: Some(format!("{family}/base")),
                        notes,
                    },
                )?;
                let variant = &pruned_variants[*index];
                (
                    vec![relative(out, &manifest)],
                    format!(
                        "{name}: {} parameters ({:.1} % of the base's)",
                        variant.parameter_count(),
                        100.0 * variant.parameter_count() as f64 / base_variant.parameter_count().max(1) as f64
                    ),
                )
            }
            StepKind::Quantize { method, source, key } => {
                let source_manifest = made.get(*source).map(|(_, m)| m.clone()).ok_or_else(|| {
                    step_error(format!("the {source} variant it quantizes was not made; run the study again"))
                })?;
                let folder = variants_dir.join(key);
                clear_output(&folder)?;
                let quantize_request = QuantizeRequest {
                    model: source_manifest,
                    options: if *method == Method::Ptq { ptq_options() } else { dq_options() },
                    calibration: (*method == Method::Ptq).then(|| request.calibration.clone()),
                    calibration_limit: options.calibration_limit,
                    out: folder,
                    name: None,
                    threads: options.threads,
                    budget: None,
                };
                let mut segment = String::new();
                let outcome = quantize_to_disk(
                    &quantize_request,
                    &mut |event| match event {
                        QuantizeEvent::Segment { index, count } => {
                            segment =
                                if count > 1 { format!("segment {}/{count}, ", index + 1) } else { String::new() };
                            progress(format!("{segment}quantizing"), None);
                        }
                        QuantizeEvent::Calibrating { done, total } => progress(
                            format!("{segment}calibrating {done}/{total}"),
                            Some(done as f32 / total.max(1) as f32),
                        ),
                        QuantizeEvent::Budget { .. } => {}
                        QuantizeEvent::Writing => progress("writing".into(), None),
                    },
                    cancel,
                )
                .map_err(|e| match e {
                    QuantizeError::Cancelled => StudyError::Cancelled(out.clone()),
                    other => step_error(other.to_string()),
                })?;
                let quantized: usize = outcome.segments.iter().map(|s| s.quantized_nodes.len()).sum();
                let float: usize = outcome.segments.iter().map(|s| s.float_nodes.len()).sum();
                let summary = format!(
                    "{} [{}]: {quantized} nodes quantized, {float} left float",
                    outcome.variant.name,
                    outcome.variant.tags.join(", ")
                );
                (vec![relative(out, &outcome.manifest)], summary)
            }
            StepKind::Exits { source, prefix, base, .. } => {
                let source_manifest = made.get(source).map(|(_, m)| m.clone()).ok_or_else(|| {
                    step_error(format!("the {source} variant it adds exits to was not made; run the study again"))
                })?;
                let source_variant = Variant::open(&source_manifest).map_err(|e| step_error(e.to_string()))?;
                let model = source_variant.segments[0].path.clone();
                let folder_of = |suffix: &str| variants_dir.join(format!("{prefix}-{suffix}"));
                let positions: Vec<(Depth, String)> = if source == "base" {
                    depths.clone()
                } else {
                    // A pruned model has its own cut points.
                    suggested_tensors(&model).map_err(step_error)?
                };
                let tensors: Vec<String> = positions.iter().map(|(_, t)| t.clone()).collect();
                let labels: Vec<&'static str> = positions.iter().map(|(d, _)| depth_slug(*d)).collect();
                let mut exits_request = AddExitsRequest::new(model, tensors, request.train.clone(), folder_of("all"));
                exits_request.config =
                    TrainConfig { kind: head, epochs: options.epochs, seed: options.seed, ..TrainConfig::default() };
                exits_request.base = Some(base.clone());
                exits_request.intra_threads = options.threads;
                exits_request.train_limit = options.train_limit;
                let count = labels.len();
                let trained: TrainedExits = train_exits(
                    &exits_request,
                    &mut |event| match event {
                        AddExitsEvent::Placed { tensors } => {
                            progress(format!("exits at {}", tensors.join(", ")), Some(0.0))
                        }
                        AddExitsEvent::Features { set, done, total } => progress(
                            format!("{set} features {done}/{total}"),
                            Some(0.5 * done as f32 / total.max(1) as f32),
                        ),
                        AddExitsEvent::Epoch { exit, report } => progress(
                            format!(
                                "exit {}/{count}: epoch {}/{}, validation {:.2} %",
                                exit + 1,
                                report.epoch,
                                report.epochs,
                                100.0 * report.val_accuracy
                            ),
                            Some(
                                0.5 + 0.5 * (exit as f32 + report.epoch as f32 / report.epochs.max(1) as f32)
                                    / count.max(1) as f32,
                            ),
                        ),
                        AddExitsEvent::HeadTrained { .. } | AddExitsEvent::Writing => {}
                    },
                    cancel,
                )
                .map_err(|e| match e {
                    AddExitsError::Cancelled => StudyError::Cancelled(out.clone()),
                    other => step_error(other.to_string()),
                })?;
                progress("writing the chains".into(), Some(1.0));
                let mut outputs = Vec::new();
                let mut chains: Vec<(String, Vec<usize>)> =
                    labels.iter().enumerate().map(|(i, label)| (label.to_string(), vec![i])).collect();
                if count > 1 {
                    chains.push(("all".into(), (0..count).collect()));
                } else {
                    // One position only: its chain is the all-exits chain.
                    chains = vec![("all".into(), vec![0])];
                }
                for (suffix, chosen) in &chains {
                    let folder = folder_of(suffix);
                    clear_output(&folder)?;
                    let name = format!("{family}/{prefix}-{suffix}");
                    let written = write_exits(&exits_request, &trained, chosen, &folder, Some(name))
                        .map_err(|e| step_error(e.to_string()))?;
                    if source != "base" {
                        add_tags(&written.chain.manifest, &["prune"])?;
                    }
                    outputs.push(relative(out, &written.chain.manifest));
                }
                let accuracies: Vec<String> = trained
                    .exits
                    .iter()
                    .zip(&labels)
                    .map(|(e, label)| format!("{label} {} {:.2} %", e.tensor, 100.0 * e.val_accuracy))
                    .collect();
                (
                    outputs,
                    format!(
                        "{} chain(s); head validation accuracy: {} ({} training samples, features {:.1} s)",
                        chains.len(),
                        accuracies.join(", "),
                        trained.samples.0,
                        trained.features_s
                    ),
                )
            }
            StepKind::Evaluate { device } => {
                let device = &mut devices[*device];
                let context = EvalContext {
                    request,
                    order: &order,
                    made: &made,
                    family: &family,
                    test: &test,
                    others: &[&train, &calibration],
                    session_path: &session_path,
                    state_path: &state_path,
                    test_print: &print,
                };
                let (measured, skipped) = evaluate(&context, device, &mut state, &mut progress, cancel)?;
                runs_skipped += skipped;
                if measured == 0 && skipped > 0 {
                    on_event(StudyEvent::Skipped { step: number, steps: total, title: step.title.clone() });
                    report_steps.push((
                        step.title.clone(),
                        true,
                        StepRecord {
                            key: step.key.clone(),
                            fingerprint: print,
                            outputs: Vec::new(),
                            seconds: 0.0,
                            summary: format!("{skipped} run(s) already in the session"),
                        },
                    ));
                    continue;
                }
                (Vec::new(), format!("{measured} variant(s) measured, {skipped} already measured"))
            }
        };
        let record = StepRecord {
            key: step.key.clone(),
            fingerprint: print.clone(),
            outputs: outputs.clone(),
            seconds: step_started.elapsed().as_secs_f64(),
            summary: summary.clone(),
        };
        if !evaluating {
            remember(&mut made, &mut order, &outputs, out, &print);
            // Runs of a remade variant are stale: forget that they were made.
            state.runs.retain(|key, _| !outputs.iter().any(|o| key.ends_with(&format!(" / {}", o.display()))));
        }
        state.record(record.clone());
        state.save(&state_path)?;
        on_event(StudyEvent::Finished {
            step: number,
            steps: total,
            title: step.title.clone(),
            seconds: record.seconds,
            summary,
        });
        report_steps.push((step.title.clone(), false, record));
    }

    let variants = order
        .iter()
        .filter_map(|slug| made.get(slug))
        .filter_map(|(_, manifest)| Variant::open(manifest).ok().map(|v| (v, manifest.clone())))
        .map(|(v, manifest)| StudyVariant { name: v.name, tags: v.tags, manifest })
        .collect();
    Ok(StudyOutcome {
        session: session_path,
        variants,
        steps: report_steps,
        runs_skipped,
        total_s: started.elapsed().as_secs_f64(),
    })
}

fn depth_slug(depth: Depth) -> &'static str {
    match depth {
        Depth::Early => "early",
        Depth::Middle => "mid",
        Depth::Late => "late",
    }
}

/// The suggested cut tensors of a model, deduplicated, in depth order.
fn suggested_tensors(model: &Path) -> Result<Vec<(Depth, String)>, String> {
    let analysis = super::cut_candidates(model).map_err(|e| e.to_string())?;
    let mut found: Vec<(Depth, String)> = Vec::new();
    for (depth, index) in &analysis.suggested {
        let tensor = analysis.cuts[*index].tensor.clone();
        if !found.iter().any(|(_, t)| *t == tensor) {
            found.push((*depth, tensor));
        }
    }
    if found.is_empty() {
        return Err(format!("{}: no cut point where an exit can go", model.display()));
    }
    Ok(found)
}

fn relative(out: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(out).map_or_else(|_| path.to_path_buf(), Path::to_path_buf)
}

/// Remembers the variants a step made (by their folder under `variants/`), with the step's fingerprint.
fn remember(
    made: &mut BTreeMap<String, (String, PathBuf)>,
    order: &mut Vec<String>,
    outputs: &[PathBuf],
    out: &Path,
    print: &str,
) {
    for output in outputs {
        let slug = output
            .parent()
            .and_then(|p| p.file_name())
            .map_or_else(|| output.display().to_string(), |n| n.to_string_lossy().into_owned());
        if !order.contains(&slug) {
            order.push(slug.clone());
        }
        made.insert(slug, (print.to_string(), out.join(output)));
    }
}

/// What the evaluation step reads.
struct EvalContext<'a> {
    request: &'a StudyRequest,
    /// Variant folders in the order they were made.
    order: &'a [String],
    /// Folder -> (fingerprint, manifest).
    made: &'a BTreeMap<String, (String, PathBuf)>,
    family: &'a str,
    test: &'a Arc<Dataset>,
    /// The training and calibration sets (listed in the session).
    others: &'a [&'a Dataset],
    session_path: &'a Path,
    state_path: &'a Path,
    test_print: &'a str,
}

/// Measures every variant made on one device, saving the session after each; returns (measured, skipped).
fn evaluate(
    context: &EvalContext<'_>,
    device: &mut StudyDevice,
    state: &mut StudyState,
    progress: &mut dyn FnMut(String, Option<f32>),
    cancel: &CancelToken,
) -> Result<(usize, usize), StudyError> {
    let EvalContext { request, order, made, family, test, others, session_path, state_path, test_print } = *context;
    let options = &request.options;
    let loaded = if session_path.exists() {
        Some(
            Session::load(session_path)
                .map_err(|e| StudyError::File { path: session_path.to_path_buf(), reason: e.to_string() })?,
        )
    } else {
        None
    };
    let mut session = loaded.clone().unwrap_or_default();
    session.base = Some(format!("{family}/base"));
    session.upsert_dataset(DatasetEntry::of(test));
    for dataset in others {
        session.upsert_dataset(DatasetEntry::of(dataset));
    }
    let mut variants = Vec::new();
    for slug in order {
        let Some((print, manifest)) = made.get(slug) else { continue };
        let variant = Variant::open(manifest).map_err(|e| StudyError::Input(e.to_string()))?;
        session.upsert_variant(VariantEntry::of(&variant));
        variants.push((print.clone(), relative(&request.out, manifest), Arc::new(variant)));
    }
    // The session is the study's own: variants an earlier run made and this one did not (a pruned model no
    // longer given) leave it with their runs.
    let current: Vec<String> = variants.iter().map(|(_, _, v)| v.name.clone()).collect();
    session.variants.retain(|v| current.contains(&v.name));
    session.runs.retain(|r| current.contains(&r.info.variant));
    session.policies.retain(|name, _| current.contains(name));
    session.verifications.retain(|v| current.contains(&v.info.variant));
    let save = |session: &Session| {
        session
            .save(session_path)
            .map_err(|e| StudyError::File { path: session_path.to_path_buf(), reason: e.to_string() })
    };
    if loaded.as_ref() != Some(&session) {
        save(&session)?;
    }
    let record = device.runner.device().map_err(|e| StudyError::Input(format!("{}: {e}", device.name)))?;
    let settings = RunSettings {
        intra_threads: options.threads,
        warmup_runs: options.warmup_runs,
        limit: options.test_limit,
        ..RunSettings::default()
    };
    let settings_print = serde_json::to_string(&settings).unwrap_or_default();
    let (mut measured, mut skipped) = (0, 0);
    let count = variants.len();
    for (index, (variant_print, manifest, variant)) in variants.iter().enumerate() {
        if cancel.is_cancelled() {
            return Err(StudyError::Cancelled(request.out.clone()));
        }
        let key = format!("{} / {}", device.name, manifest.display());
        let print = fingerprint(&[variant_print, test_print, &settings_print, &device.name]);
        let have = session.runs.iter().any(|r| {
            r.info.variant == variant.name
                && r.info.dataset == test.name
                && r.info.device.host == record.host
                && r.info.settings.limit == settings.limit
                && r.info.complete
        });
        if have && state.runs.get(&key) == Some(&print) {
            skipped += 1;
            progress(format!("variant {}/{count} {}: measured before, skipped", index + 1, variant.name), None);
            continue;
        }
        let reference = session.reference_for(variant).unwrap_or(None);
        let job = Job {
            variant: Arc::clone(variant),
            dataset: Arc::clone(test),
            settings: settings.clone(),
            mode: RunMode::Trace,
            reference,
        };
        let label = format!("variant {}/{count} {}", index + 1, variant.name);
        let output = device
            .runner
            .run(
                &job,
                &mut |event| match event {
                    RunEvent::Progress { done, total } => progress(
                        format!("{label}: {done}/{total} samples"),
                        Some((index as f32 + done as f32 / total.max(1) as f32) / count as f32),
                    ),
                    RunEvent::Loading => progress(format!("{label}: loading"), Some(index as f32 / count as f32)),
                    RunEvent::WarmingUp => progress(format!("{label}: warming up"), Some(index as f32 / count as f32)),
                    RunEvent::Queued => progress(format!("{label}: queued behind another run"), None),
                    _ => {}
                },
                cancel,
            )
            .map_err(|e| match e {
                crate::runtime::RuntimeError::Cancelled => StudyError::Cancelled(request.out.clone()),
                other => StudyError::Input(format!("measuring {} on {}: {other}", variant.name, device.name)),
            })?;
        let RunOutput::Trace(run) = output else {
            return Err(StudyError::Input(format!("{} returned a dynamic run for a trace job", device.name)));
        };
        let complete = run.info.complete;
        let failure = run.info.failure.clone();
        session.upsert_run(run);
        save(&session)?;
        if let Some(failure) = failure {
            return Err(StudyError::Input(format!(
                "measuring {} on {}: {failure}; the samples before it are saved in {}",
                variant.name,
                device.name,
                session_path.display()
            )));
        }
        if !complete {
            // Cancelled mid-run: what was measured is kept, marked incomplete.
            return Err(StudyError::Cancelled(request.out.clone()));
        }
        state.runs.insert(key, print);
        state.save(state_path)?;
        measured += 1;
    }
    Ok((measured, skipped))
}
