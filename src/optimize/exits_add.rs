//! `exits add`: inserts early exits into a plain classifier. The backbone stays frozen (the study's
//! classifier-wise training, section 3.1.3): one batched ONNX Runtime pass of the base model, with the cut tensors
//! as extra outputs, gives each exit's pooled features; a head per exit is trained on them ([`super::heads`]); the
//! heads are written as ONNX nodes after their cut tensors and the model is split there ([`cuts::split`]), so the
//! chain is the base model's own nodes plus the heads, and its final logits are the base model's.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ort::session::Session;
use ort::value::TensorRef;

use super::heads::{Cancelled, EpochReport, Features, TrainConfig, stratified_split, train_head};
use super::{ChainNames, SplitOutcome, check_output_folder, model_stem, write_chain};
use crate::data::{DataError, Dataset};
use crate::model::ModelError;
use crate::model::cuts::{self, CutAnalysis, Depth};
use crate::model::graph::DataFlow;
use crate::model::heads::{HeadSite, Pooling, attach_heads, default_opset, head_sites, with_feature_outputs};
use crate::model::proto::{self, ModelProto};
use crate::runtime::{CancelToken, RuntimeError, ort_environment};

/// What to insert, where, and how to train it.
#[derive(Clone, Debug)]
pub struct AddExitsRequest {
    /// The plain classifier (one ONNX file).
    pub model: PathBuf,
    /// Cut tensors (see `exits candidates`), or `early` / `middle` / `late` for the suggested ones.
    pub at: Vec<String>,
    /// Training dataset.
    pub train: PathBuf,
    /// Validation dataset for early stopping; `None` holds out a seeded, stratified 10 % of the training set.
    pub val: Option<PathBuf>,
    /// Head kind, epochs, seed and optimizer settings.
    pub config: TrainConfig,
    /// Folder to create (or an empty one) for the segments and the manifest.
    pub out: PathBuf,
    /// Variant name; default `STEM/ee+N` (N exits).
    pub name: Option<String>,
    /// The base variant the chain is compared with; default the model's file stem.
    pub base: Option<String>,
    /// ONNX Runtime threads for the feature pass (0: its default).
    pub intra_threads: usize,
    /// Samples per feature batch (models with a fixed batch of 1 run one at a time).
    pub batch_size: usize,
    /// Only the first N training samples (`None`: all).
    pub train_limit: Option<usize>,
}

impl AddExitsRequest {
    /// A request with the default training settings.
    pub fn new(model: PathBuf, at: Vec<String>, train: PathBuf, out: PathBuf) -> Self {
        Self {
            model,
            at,
            train,
            val: None,
            config: TrainConfig::default(),
            out,
            name: None,
            base: None,
            intra_threads: 0,
            batch_size: 100,
            train_limit: None,
        }
    }
}

/// The share of the training set held out for validation when no validation set is given.
pub const HOLD_OUT_SHARE: f64 = 0.1;

/// Where the work is.
#[derive(Clone, Debug, PartialEq)]
pub enum AddExitsEvent {
    /// The model was analysed and the exits placed.
    Placed {
        /// The exits' cut tensors in depth order.
        tensors: Vec<String>,
    },
    /// Backbone features are being computed for a dataset (`train` or `val`).
    Features {
        /// Which dataset.
        set: &'static str,
        /// Samples done.
        done: usize,
        /// Samples in all.
        total: usize,
    },
    /// One epoch of one head's training finished.
    Epoch {
        /// 0-based exit index in depth order.
        exit: usize,
        /// Its figures.
        report: EpochReport,
    },
    /// One head is trained.
    HeadTrained {
        /// 0-based exit index.
        exit: usize,
        /// Validation accuracy (0 to 1).
        val_accuracy: f64,
    },
    /// The chain is being written.
    Writing,
}

/// One trained exit.
#[derive(Clone, Debug, PartialEq)]
pub struct ExitSummary {
    /// Its cut tensor.
    pub tensor: String,
    /// Its exit output.
    pub output: String,
    /// Features per sample the head reads.
    pub features: usize,
    /// Whether the head pools a spatial tensor.
    pub pooled: bool,
    /// Share of the model's multiply-accumulates before it.
    pub mac_share: f64,
    /// Validation accuracy (0 to 1).
    pub val_accuracy: f64,
    /// The epoch the kept weights come from.
    pub best_epoch: usize,
    /// Epochs that ran.
    pub epochs_run: usize,
    /// Seconds its training took (feature extraction not included).
    pub training_s: f64,
}

/// What `exits add` wrote.
#[derive(Clone, Debug)]
pub struct AddExitsOutcome {
    /// The chain as written.
    pub chain: SplitOutcome,
    /// The exits in depth order.
    pub exits: Vec<ExitSummary>,
    /// Training samples and validation samples used.
    pub samples: (usize, usize),
    /// Seconds the feature pass took (training and validation sets).
    pub features_s: f64,
    /// Seconds in all.
    pub total_s: f64,
}

/// Why `exits add` could not run.
#[derive(Debug, thiserror::Error)]
pub enum AddExitsError {
    /// The model cannot take exits.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A dataset problem.
    #[error(transparent)]
    Data(#[from] DataError),
    /// ONNX Runtime failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The dataset does not fit the model.
    #[error("{0}")]
    Mismatch(String),
    /// Cancelled; nothing was written.
    #[error("cancelled; nothing was written")]
    Cancelled,
}

impl From<Cancelled> for AddExitsError {
    fn from(_: Cancelled) -> Self {
        AddExitsError::Cancelled
    }
}

/// The model, read and analysed, with the exits placed (no dataset needed: the app and the CLI check this first).
pub struct Placement {
    /// The model, external data inside.
    pub model: ModelProto,
    /// Its cut points.
    pub analysis: CutAnalysis,
    /// The exits' sites in depth order.
    pub sites: Vec<HeadSite>,
    /// The image input's name.
    pub input: String,
    /// Its shape (`None` for a free dimension).
    pub input_shape: Vec<Option<i64>>,
    /// Classes of the final output.
    pub classes: usize,
}

/// Reads `model`, finds its cut points and checks that heads can go at `at` (tensor names or `early` / `middle` /
/// `late`).
pub fn place_exits(model_path: &Path, at: &[String]) -> Result<Placement, ModelError> {
    let invalid = |reason: String| ModelError::Invalid { path: model_path.to_path_buf(), reason };
    let mut model = proto::read_model(model_path)?;
    proto::internalize_external_data(&mut model, model_path)?;
    let graph = model.graph.as_ref().ok_or_else(|| ModelError::Corrupt {
        path: model_path.to_path_buf(),
        reason: "the file holds no graph".into(),
    })?;
    let analysis = cuts::cut_points(graph, model_path)?;
    let flow = DataFlow::new(graph, model_path)?;
    let tensors: Vec<String> = at
        .iter()
        .map(|name| match Depth::TARGETS.iter().find(|(d, _)| d.name() == name.as_str()) {
            Some((depth, _)) => analysis
                .suggested
                .iter()
                .find(|(d, _)| d == depth)
                .map(|(_, index)| analysis.cuts[*index].tensor.clone())
                .ok_or_else(|| invalid(format!("no {name} cut point could be suggested; name a tensor instead"))),
            None => Ok(name.clone()),
        })
        .collect::<Result<_, _>>()?;
    let sites = head_sites(&flow, &analysis, &tensors, model_path)?;
    let classes = flow
        .tensor_type(&analysis.output)
        .and_then(|t| t.shape.as_ref())
        .and_then(|s| match s.as_slice() {
            [_, c] => c.fixed().and_then(|v| usize::try_from(v).ok()),
            _ => None,
        })
        .filter(|&c| c >= 2)
        .ok_or_else(|| {
            invalid(format!(
                "its output {:?} is not of shape [N, classes]; exits add needs a classifier with one logits output",
                analysis.output
            ))
        })?;
    if default_opset(&model).is_some_and(|v| v < 7) {
        return Err(invalid("it uses opset < 7; convert it to a newer opset (onnx.version_converter)".into()));
    }
    let input = flow.image.clone();
    let input_shape = flow
        .tensor_type(&input)
        .and_then(|t| t.shape.as_ref())
        .map(|s| s.iter().map(|d| d.fixed()).collect())
        .unwrap_or_default();
    Ok(Placement { model, analysis, sites, input, input_shape, classes })
}

/// Inserts exits at `request.at`, trains their heads and writes the chain into `request.out`.
///
/// `on_event` sees the progress; `cancel` stops between batches and epochs. Nothing is written unless everything
/// succeeds.
pub fn add_exits(
    request: &AddExitsRequest,
    on_event: &mut dyn FnMut(AddExitsEvent),
    cancel: &CancelToken,
) -> Result<AddExitsOutcome, AddExitsError> {
    let started = Instant::now();
    check_output_folder(&request.out)?;
    let trained = train_exits(request, on_event, cancel)?;
    on_event(AddExitsEvent::Writing);
    let all: Vec<usize> = (0..trained.heads.len()).collect();
    let mut outcome = write_exits(request, &trained, &all, &request.out, request.name.clone())?;
    outcome.total_s = started.elapsed().as_secs_f64();
    Ok(outcome)
}

/// Exits placed and their heads trained, not yet written: [`write_exits`] writes chains with all of them or a
/// subset (heads are trained one by one on frozen features, so a head does not depend on the others).
pub struct TrainedExits {
    /// The model and where the exits go.
    pub placement: Placement,
    /// One head per exit, depth order.
    pub heads: Vec<crate::model::heads::HeadWeights>,
    /// Their figures (`output` still empty).
    pub exits: Vec<ExitSummary>,
    /// The training set's name.
    pub train_name: String,
    /// Training samples and validation samples used.
    pub samples: (usize, usize),
    /// Seconds the feature pass took.
    pub features_s: f64,
    /// Whether the validation set was held out of the training set.
    pub held_out: bool,
}

/// Places the exits at `request.at` and trains their heads (the first part of [`add_exits`]; writes nothing).
pub fn train_exits(
    request: &AddExitsRequest,
    on_event: &mut dyn FnMut(AddExitsEvent),
    cancel: &CancelToken,
) -> Result<TrainedExits, AddExitsError> {
    let placement = place_exits(&request.model, &request.at)?;
    on_event(AddExitsEvent::Placed { tensors: placement.sites.iter().map(|s| s.tensor.clone()).collect() });
    let mut train = Dataset::open(&request.train)?;
    if let Some(limit) = request.train_limit {
        train.truncate(limit);
    }
    check_dataset(&train, &placement)?;
    let val = request.val.as_deref().map(Dataset::open).transpose()?;
    if let Some(val) = &val {
        check_dataset(val, &placement)?;
    }

    let features_started = Instant::now();
    let mut extractor = FeatureExtractor::new(&placement, &request.model, request.intra_threads)?;
    let batch = if placement.input_shape.first().copied().flatten().is_some() { 1 } else { request.batch_size.max(1) };
    let mut train_features = extractor.run(&train, "train", batch, on_event, cancel)?;
    let mut train_labels = train.labels.clone();
    let (val_features, val_labels) = match &val {
        Some(val) => (extractor.run(val, "val", batch, on_event, cancel)?, val.labels.clone()),
        None => {
            let (keep, held) = stratified_split(&train.labels, HOLD_OUT_SHARE, request.config.seed);
            if held.is_empty() {
                return Err(AddExitsError::Mismatch(format!(
                    "{} holds too few samples per class to hold out a validation set; give --val",
                    train.source.display()
                )));
            }
            let val_features: Vec<Features> = train_features.iter().map(|f| f.select(&held)).collect();
            let val_labels = held.iter().map(|&i| train.labels[i]).collect();
            train_features = train_features.iter().map(|f| f.select(&keep)).collect();
            train_labels = keep.iter().map(|&i| train.labels[i]).collect();
            (val_features, val_labels)
        }
    };
    drop(extractor);
    let features_s = features_started.elapsed().as_secs_f64();

    let mut heads = Vec::with_capacity(placement.sites.len());
    let mut summaries = Vec::with_capacity(placement.sites.len());
    for (exit, site) in placement.sites.iter().enumerate() {
        let training_started = Instant::now();
        let trained = train_head(
            &train_features[exit],
            &train_labels,
            &val_features[exit],
            &val_labels,
            placement.classes,
            &request.config,
            &mut |report| {
                on_event(AddExitsEvent::Epoch { exit, report });
                !cancel.is_cancelled()
            },
        )?;
        on_event(AddExitsEvent::HeadTrained { exit, val_accuracy: trained.val_accuracy });
        summaries.push(ExitSummary {
            tensor: site.tensor.clone(),
            output: String::new(),
            features: site.features,
            pooled: site.pooling == Pooling::GlobalAverage,
            mac_share: site.mac_share,
            val_accuracy: trained.val_accuracy,
            best_epoch: trained.best_epoch,
            epochs_run: trained.epochs_run,
            training_s: training_started.elapsed().as_secs_f64(),
        });
        heads.push(trained.weights);
    }
    if cancel.is_cancelled() {
        return Err(AddExitsError::Cancelled);
    }
    Ok(TrainedExits {
        placement,
        heads,
        exits: summaries,
        train_name: train.name.clone(),
        samples: (train_labels.len(), val_labels.len()),
        features_s,
        held_out: val.is_none(),
    })
}

/// Writes a chain of `request.model` with the trained exits `chosen` (indices into `trained.exits`, depth order)
/// into `out` (see `write_chain`: staged, checked, renamed into place). `name` defaults to `STEM/ee+N`.
pub fn write_exits(
    request: &AddExitsRequest,
    trained: &TrainedExits,
    chosen: &[usize],
    out: &Path,
    name: Option<String>,
) -> Result<AddExitsOutcome, AddExitsError> {
    let started = Instant::now();
    let invalid = |reason: String| ModelError::Invalid { path: request.model.clone(), reason };
    if chosen.is_empty() || chosen.iter().any(|&i| i >= trained.heads.len()) || !chosen.is_sorted() {
        return Err(invalid(format!("exits {chosen:?} are not among the {} trained ones", trained.heads.len())).into());
    }
    let full = &trained.placement;
    let sites: Vec<HeadSite> = chosen.iter().map(|&i| full.sites[i].clone()).collect();
    let heads: Vec<_> = chosen.iter().map(|&i| trained.heads[i].clone()).collect();
    let mut summaries: Vec<ExitSummary> = chosen.iter().map(|&i| trained.exits[i].clone()).collect();
    let (train_samples, val_samples) = trained.samples;
    let (with_heads, exit_outputs) =
        attach_heads(&full.model, &sites, &heads, full.classes, &full.analysis.output).map_err(invalid)?;
    for (summary, output) in summaries.iter_mut().zip(&exit_outputs) {
        summary.output = output.clone();
    }
    let mut outputs = exit_outputs;
    outputs.push(full.analysis.output.clone());
    let segments = cuts::split(&with_heads, &request.model, Some(&outputs))?;
    if let Some((segment, site)) =
        segments.iter().zip(&sites).find(|(s, site)| s.carry.as_deref() != Some(&site.tensor))
    {
        return Err(invalid(format!(
            "the chain would carry {:?} after exit {:?} instead of {:?}; please report this model",
            segment.carry, segment.exit, site.tensor
        ))
        .into());
    }
    let stem = model_stem(&request.model);
    let kind = request.config.kind.name();
    let notes = format!(
        "exits added by edgescope exits add to {} at {}; {kind} heads trained on {} ({} samples, {} for validation{}), \
         seed {}; validation accuracy {}",
        request.model.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        sites.iter().map(|s| s.tensor.as_str()).collect::<Vec<_>>().join(", "),
        trained.train_name,
        train_samples,
        val_samples,
        if trained.held_out { ", held out of the training set" } else { "" },
        request.config.seed,
        summaries.iter().map(|s| format!("{:.2} %", 100.0 * s.val_accuracy)).collect::<Vec<_>>().join(" / ")
    );
    let chain = write_chain(
        &segments,
        &request.model,
        out,
        &stem,
        ChainNames {
            name: name.unwrap_or_else(|| format!("{stem}/ee+{}", sites.len())),
            base: Some(request.base.clone().unwrap_or_else(|| stem.clone())),
            notes,
            manifest_file: format!("{stem}-ee.toml"),
        },
    )?;
    Ok(AddExitsOutcome {
        chain,
        exits: summaries,
        samples: trained.samples,
        features_s: trained.features_s,
        total_s: started.elapsed().as_secs_f64(),
    })
}

/// The dataset must produce the model's input and name no more classes than the model has (a clear message
/// otherwise).
pub fn check_dataset(dataset: &Dataset, placement: &Placement) -> Result<(), AddExitsError> {
    if placement.input_shape.len() != 4 {
        return Err(AddExitsError::Mismatch(format!(
            "the model's input {:?} has {} dimensions; datasets produce [N, C, H, W] or [N, H, W, C] images",
            placement.input,
            placement.input_shape.len()
        )));
    }
    dataset.check_input_shape(&placement.input_shape).map_err(|e| {
        AddExitsError::Mismatch(format!(
            "{e}; the training and validation sets must produce the model's input {:?} (fix the dataset's \
             [preprocess], or pick the dataset the model was trained for)",
            placement.input
        ))
    })?;
    if dataset.classes.len() > placement.classes {
        return Err(AddExitsError::Mismatch(format!(
            "{} has {} classes but the model's output {:?} has {}; train exits on a dataset of the model's classes",
            dataset.source.display(),
            dataset.classes.len(),
            placement.analysis.output,
            placement.classes
        )));
    }
    Ok(())
}

/// One ONNX Runtime session of the base model with the cut tensors as extra outputs; pools each on the fly so only
/// `[samples, features]` is kept.
struct FeatureExtractor {
    session: Session,
    input: String,
    sites: Vec<HeadSite>,
    path: PathBuf,
}

impl FeatureExtractor {
    fn new(placement: &Placement, path: &Path, intra_threads: usize) -> Result<Self, AddExitsError> {
        let graph = placement.model.graph.as_ref().ok_or_else(|| ModelError::Corrupt {
            path: path.to_path_buf(),
            reason: "the file holds no graph".into(),
        })?;
        let flow = DataFlow::new(graph, path)?;
        let tensors: Vec<&str> = placement.sites.iter().map(|s| s.tensor.as_str()).collect();
        let bytes = proto::encode_model(&with_feature_outputs(&placement.model, &flow, &tensors));
        let ort_error = |e: String| RuntimeError::Session { path: path.to_path_buf(), reason: e };
        let mut builder = Session::builder(ort_environment()?).map_err(|e| ort_error(e.to_string()))?;
        if intra_threads > 0 {
            builder = builder.with_intra_threads(intra_threads).map_err(|e| ort_error(e.to_string()))?;
        }
        let session = builder.commit_from_memory(&bytes).map_err(|e| ort_error(e.to_string()))?;
        Ok(Self { session, input: placement.input.clone(), sites: placement.sites.clone(), path: path.to_path_buf() })
    }

    fn run(
        &mut self,
        dataset: &Dataset,
        set: &'static str,
        batch: usize,
        on_event: &mut dyn FnMut(AddExitsEvent),
        cancel: &CancelToken,
    ) -> Result<Vec<Features>, AddExitsError> {
        let total = dataset.len();
        let shape = dataset.input_shape();
        let per_sample: usize = shape[1..].iter().product();
        let mut features: Vec<Features> = self.sites.iter().map(|s| Features::with_cols(s.features)).collect();
        for f in &mut features {
            f.values.reserve(total * f.cols);
        }
        let mut input = Vec::with_capacity(batch * per_sample);
        let mut one = Vec::with_capacity(per_sample);
        let mut start = 0;
        on_event(AddExitsEvent::Features { set, done: 0, total });
        while start < total {
            if cancel.is_cancelled() {
                return Err(AddExitsError::Cancelled);
            }
            let count = batch.min(total - start);
            input.clear();
            for index in start..start + count {
                dataset.load_input(index, &mut one)?;
                input.extend_from_slice(&one);
            }
            let run_error = |e: ort::Error| RuntimeError::Inference { path: self.path.clone(), reason: e.to_string() };
            let tensor = TensorRef::from_array_view(([count, shape[1], shape[2], shape[3]], input.as_slice()))
                .map_err(run_error)?;
            let outputs = self.session.run(ort::inputs![self.input.as_str() => tensor]).map_err(run_error)?;
            for (site, target) in self.sites.iter().zip(&mut features) {
                let value = outputs.get(site.tensor.as_str()).ok_or_else(|| RuntimeError::Inference {
                    path: self.path.clone(),
                    reason: format!("produced no output {:?}", site.tensor),
                })?;
                let (dims, values) = value.try_extract_tensor::<f32>().map_err(run_error)?;
                let dims: Vec<usize> = dims.iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect();
                if dims.len() < 2 || dims[0] != count || dims[1] != site.features {
                    return Err(RuntimeError::Inference {
                        path: self.path.clone(),
                        reason: format!(
                            "{:?} came out of shape {dims:?} for a batch of {count}; expected [{count}, {}, ...]",
                            site.tensor, site.features
                        ),
                    }
                    .into());
                }
                pool(values, count, site.features, target);
            }
            start += count;
            on_event(AddExitsEvent::Features { set, done: start, total });
        }
        Ok(features)
    }
}

/// Global average pooling of `[count, channels, spatial...]` (identity when there is no spatial part), appended
/// to `target`.
fn pool(values: &[f32], count: usize, channels: usize, target: &mut Features) {
    let spatial = values.len() / (count * channels).max(1);
    if spatial <= 1 {
        target.values.extend_from_slice(values);
    } else {
        let scale = 1.0 / spatial as f32;
        for plane in values.chunks_exact(spatial) {
            target.values.push(plane.iter().sum::<f32>() * scale);
        }
    }
    target.rows += count;
}
