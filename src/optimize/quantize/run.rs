//! Quantizing a whole variant — one graph or an early-exit chain — and writing it with a manifest.
//!
//! A chain is quantized segment by segment, as the zoo recipe does (study section 4.3): segment `k` is calibrated
//! on what the *quantized* segments before it carry, each batch run through them with ONNX Runtime's default
//! optimizations. Outputs are staged in a temporary file or folder beside the target, opened as a variant, and
//! only then renamed into place.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::value::TensorRef;

use super::calibrate::Calibrator;
use super::{Batch, Method, QuantizeError, QuantizeOptions, Quantized, check_quantizable, prepare};
use crate::data::Dataset;
use crate::model::proto::{self, ModelProto};
use crate::model::variant::{MANIFEST_FORMAT, MANIFEST_VERSION};
use crate::model::{Dim, Manifest, SegmentManifest, Variant};
use crate::runtime::{CancelToken, ort_environment};

/// What to quantize, how, and where to write it.
#[derive(Clone, Debug)]
pub struct QuantizeRequest {
    /// The float variant: an ONNX file or a manifest.
    pub model: PathBuf,
    /// Settings.
    pub options: QuantizeOptions,
    /// Calibration dataset (PTQ).
    pub calibration: Option<PathBuf>,
    /// Only the first N calibration samples.
    pub calibration_limit: Option<usize>,
    /// A `.onnx` file (single-graph variants; the manifest goes beside it) or a folder (created, or empty).
    pub out: PathBuf,
    /// Variant name (default: derived from the source's).
    pub name: Option<String>,
    /// ONNX Runtime intra-op threads (0 = its default).
    pub threads: usize,
    /// Keep the most sensitive nodes float until the top-1 drop fits (PTQ, single graphs).
    pub budget: Option<Budget>,
}

/// An accuracy budget (see [`super::budget`]).
#[derive(Clone, Debug)]
pub struct Budget {
    /// Largest top-1 drop against the float model, in percentage points.
    pub max_drop_pp: f64,
    /// Validation dataset.
    pub validation: PathBuf,
    /// Only its first N samples.
    pub limit: Option<usize>,
    /// Most nodes kept float before giving up.
    pub max_nodes: usize,
}

/// Progress of a quantization.
#[derive(Clone, Debug, PartialEq)]
pub enum QuantizeEvent {
    /// Starting segment `index` (0-based) of `count`.
    Segment {
        /// Segment index.
        index: usize,
        /// Segments in the chain.
        count: usize,
    },
    /// Calibration batches done (percentile and entropy feed every sample twice: extremes, then histograms).
    Calibrating {
        /// Samples fed, over all passes.
        done: usize,
        /// Samples to feed, over all passes.
        total: usize,
    },
    /// One step of the accuracy budget: nodes kept float, quantized and float top-1 in percent.
    Budget {
        /// Nodes kept float.
        excluded: usize,
        /// Quantized top-1.
        top1_percent: f64,
        /// Float top-1.
        float_top1_percent: f64,
    },
    /// Writing and checking the files.
    Writing,
}

/// What happened to one segment.
#[derive(Clone, Debug)]
pub struct SegmentReport {
    /// The float segment.
    pub source: PathBuf,
    /// The quantized file written.
    pub file: PathBuf,
    /// Nodes computing quantized (or folded away).
    pub quantized_nodes: Vec<String>,
    /// Nodes left in float, with the reason.
    pub float_nodes: Vec<(String, String)>,
    /// Remarks.
    pub notes: Vec<(String, String)>,
}

/// What a quantization wrote.
#[derive(Clone, Debug)]
pub struct QuantizeOutcome {
    /// The manifest written.
    pub manifest: PathBuf,
    /// The variant, opened from what was written.
    pub variant: Variant,
    /// Per segment.
    pub segments: Vec<SegmentReport>,
    /// Calibration samples used (PTQ).
    pub calibration_samples: usize,
    /// The accuracy-budget search, when asked for.
    pub budget: Option<super::budget::BudgetOutcome>,
}

/// The default name: `family/base` becomes `family/ptq`, `family/ee4` becomes `family/ptq-ee4`, `model` becomes
/// `model-ptq`.
pub fn default_name(source: &str, method: Method) -> String {
    match source.rsplit_once('/') {
        Some((family, "base")) => format!("{family}/{}", method.name()),
        Some((family, rest)) => format!("{family}/{}-{rest}", method.name()),
        None => format!("{source}-{}", method.name()),
    }
}

fn file_error(path: &Path, reason: impl Into<String>) -> QuantizeError {
    QuantizeError::File { path: path.to_path_buf(), reason: reason.into() }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> QuantizeError + '_ {
    move |e| file_error(path, e.to_string())
}

/// A session of a quantized segment, as the recipe runs it to carry calibration data on (default optimizations).
fn carry_session(model: &ModelProto, threads: usize) -> Result<Session, QuantizeError> {
    let environment = ort_environment()?;
    let error = |e: String| QuantizeError::Runtime(format!("ONNX Runtime: {e}"));
    let mut builder = Session::builder(environment).map_err(|e| error(e.to_string()))?;
    if threads > 0 {
        builder = builder.with_intra_threads(threads).map_err(|e| error(e.to_string()))?;
    }
    builder.commit_from_memory(&proto::encode_model(model)).map_err(|e| error(e.to_string()))
}

/// Runs `batch` through a segment and returns its output `carry`.
fn carry(session: &mut Session, input: &str, carry: &str, batch: &Batch) -> Result<Batch, QuantizeError> {
    let error = |e: ort::Error| QuantizeError::Runtime(format!("ONNX Runtime: {e}"));
    let tensor = TensorRef::from_array_view((batch.shape.clone(), batch.values.as_slice())).map_err(error)?;
    let outputs = session.run(ort::inputs![input => tensor]).map_err(error)?;
    let value = outputs
        .get(carry)
        .ok_or_else(|| QuantizeError::Runtime(format!("the quantized segment produced no output {carry:?}")))?;
    let (shape, values) = value.try_extract_tensor::<f32>().map_err(error)?;
    Ok(Batch { shape: shape.iter().map(|&d| d.max(0) as usize).collect(), values: values.to_vec() })
}

/// The batches of a dataset, `size` samples each (the last may be shorter).
pub fn dataset_batch(dataset: &Dataset, start: usize, size: usize, count: usize) -> Result<Batch, QuantizeError> {
    let shape = dataset.input_shape();
    let end = (start + size).min(count);
    let mut batch = Batch { shape: vec![end - start, shape[1], shape[2], shape[3]], values: Vec::new() };
    let mut sample = Vec::new();
    for index in start..end {
        dataset.load_input(index, &mut sample)?;
        batch.values.extend_from_slice(&sample);
    }
    Ok(batch)
}

/// Quantizes `request.model` and writes the result (see the module docs).
pub fn quantize_to_disk(
    request: &QuantizeRequest,
    on_event: &mut dyn FnMut(QuantizeEvent),
    cancel: &CancelToken,
) -> Result<QuantizeOutcome, QuantizeError> {
    let source = Variant::open(&request.model)?;
    let options = &request.options;
    let single_file = request.out.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    if single_file && source.segments.len() > 1 {
        return Err(file_error(
            &request.out,
            format!("{} is a chain of {} segments; name a folder for --out", source.name, source.segments.len()),
        ));
    }
    if single_file && request.out.exists() {
        return Err(file_error(&request.out, "exists already; name a new file (quantize never overwrites)"));
    }
    if !single_file && request.out.exists() {
        let mut entries = std::fs::read_dir(&request.out).map_err(io(&request.out))?;
        if entries.next().is_some() {
            return Err(file_error(&request.out, "the output folder is not empty; name a new folder"));
        }
    }
    let dataset = match (options.method, &request.calibration) {
        (Method::Ptq, None) => {
            return Err(QuantizeError::Model(
                "static quantization (ptq) needs calibration data: add --calibration DATASET".into(),
            ));
        }
        (Method::Ptq, Some(path)) => {
            let mut dataset = Dataset::open(path)?;
            if let Some(limit) = request.calibration_limit {
                dataset.truncate(limit);
            }
            if let Some(input) = source.input() {
                let expected: Vec<Option<i64>> = input.shape.iter().map(Dim::fixed).collect();
                dataset
                    .check_input_shape(&expected)
                    .map_err(|e| file_error(path, format!("does not fit {}: {e}", request.model.display())))?;
            }
            Some(dataset)
        }
        (Method::Dq, _) => None,
    };
    let mut models = Vec::with_capacity(source.segments.len());
    for segment in &source.segments {
        let model = proto::read_model(&segment.path)?;
        check_quantizable(&model, &segment.path)?;
        models.push(model);
    }
    let count = source.segments.len();
    let validation = match &request.budget {
        None => None,
        Some(_) if options.method != Method::Ptq || count != 1 => {
            return Err(QuantizeError::Model(
                "--max-drop works with --method ptq on a single graph (not a chain, not dq)".into(),
            ));
        }
        Some(budget) => {
            let mut set = Dataset::open(&budget.validation)?;
            if let Some(limit) = budget.limit {
                set.truncate(limit);
            }
            if let Some(input) = source.input() {
                let expected: Vec<Option<i64>> = input.shape.iter().map(Dim::fixed).collect();
                set.check_input_shape(&expected).map_err(|e| {
                    file_error(&budget.validation, format!("does not fit {}: {e}", request.model.display()))
                })?;
            }
            let size = options.batch_size.max(1);
            let batches = (0..set.len())
                .step_by(size)
                .map(|start| dataset_batch(&set, start, size, set.len()))
                .collect::<Result<Vec<_>, _>>()?;
            Some((batches, set.labels.clone()))
        }
    };
    let mut budget_outcome = None;
    let mut quantized: Vec<Quantized> = Vec::with_capacity(count);
    let mut carriers: Vec<Session> = Vec::new();
    let total = dataset.as_ref().map_or(0, Dataset::len);
    for (index, (segment, model)) in source.segments.iter().zip(&models).enumerate() {
        if cancel.is_cancelled() {
            return Err(QuantizeError::Cancelled);
        }
        on_event(QuantizeEvent::Segment { index, count });
        let q = match (&dataset, options.method) {
            (Some(dataset), Method::Ptq) => {
                let mut prepared = model.clone();
                prepare(&mut prepared);
                let mut calibrator =
                    Calibrator::new(&prepared, &options.op_type_set(), request.threads, options.calibrate)
                        .map_err(|e| file_error(&segment.path, e.to_string()))?;
                let size = options.batch_size.max(1);
                let passes = calibrator.passes();
                for pass in 0..passes {
                    for start in (0..total).step_by(size) {
                        if cancel.is_cancelled() {
                            return Err(QuantizeError::Cancelled);
                        }
                        let mut batch = dataset_batch(dataset, start, size, total)?;
                        for (k, session) in carriers.iter_mut().enumerate() {
                            let (input, name) = (&source.segments[k].input, source.segments[k].carry.as_deref());
                            let name = name.ok_or_else(|| QuantizeError::Model("a segment carries nothing".into()))?;
                            batch = carry(session, input, name, &batch)?;
                        }
                        calibrator.collect(pass, &batch)?;
                        on_event(QuantizeEvent::Calibrating {
                            done: pass * total + (start + size).min(total),
                            total: passes * total,
                        });
                    }
                }
                let ranges = calibrator.ranges()?;
                match (&validation, &request.budget, segment.exit.as_deref()) {
                    (Some((batches, labels)), Some(budget), Some(exit)) => {
                        let (q, outcome) = super::budget::fit(
                            model,
                            &ranges,
                            options,
                            exit,
                            batches,
                            labels,
                            budget.max_drop_pp,
                            budget.max_nodes,
                            request.threads,
                            cancel,
                            &mut |step, float_top1| {
                                on_event(QuantizeEvent::Budget {
                                    excluded: step.excluded.len(),
                                    top1_percent: step.top1_percent,
                                    float_top1_percent: float_top1,
                                })
                            },
                        )?;
                        let kept: HashSet<String> =
                            outcome.steps.last().map(|s| s.excluded.iter().cloned().collect()).unwrap_or_default();
                        let mut q = q;
                        for (node, reason) in &mut q.float_nodes {
                            if kept.contains(node) && !options.exclude.contains(node) {
                                *reason = "kept float to fit the accuracy budget (--max-drop)".into();
                            }
                        }
                        budget_outcome = Some(outcome);
                        q
                    }
                    _ => super::quantize_static(model, &ranges, options)?,
                }
            }
            _ => super::quantize_dynamic(model, options)?,
        };
        if options.method == Method::Ptq && index + 1 < count {
            carriers.push(carry_session(&q.model, request.threads)?);
        }
        quantized.push(q);
    }
    on_event(QuantizeEvent::Writing);
    write(request, &source, quantized, total, budget_outcome)
}

fn write(
    request: &QuantizeRequest,
    source: &Variant,
    quantized: Vec<Quantized>,
    calibration_samples: usize,
    budget: Option<super::budget::BudgetOutcome>,
) -> Result<QuantizeOutcome, QuantizeError> {
    let method = request.options.method;
    let out = &request.out;
    let single_file = out.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let staging = tempfile::Builder::new().prefix(".edgescope-quantize-").tempdir_in(&parent).map_err(io(&parent))?;
    let mut segments = Vec::with_capacity(quantized.len());
    let mut reports = Vec::with_capacity(quantized.len());
    for (segment, q) in source.segments.iter().zip(&quantized) {
        let file = if single_file {
            PathBuf::from(out.file_name().unwrap_or_default())
        } else {
            let stem = segment.path.file_stem().map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
            PathBuf::from(format!("{}-{stem}.onnx", method.name()))
        };
        let staged = staging.path().join(&file);
        std::fs::write(&staged, proto::encode_model(&q.model)).map_err(io(&staged))?;
        segments.push(SegmentManifest {
            file: file.clone(),
            input: Some(segment.input.clone()),
            exit: segment.exit.clone(),
            carry: segment.carry.clone(),
            outputs: (segment.exit_kind_origin == crate::model::KindOrigin::Stated).then_some(segment.exit_kind),
        });
        reports.push(SegmentReport {
            source: segment.path.clone(),
            file: if single_file { out.clone() } else { out.join(&file) },
            quantized_nodes: q.quantized_nodes.clone(),
            float_nodes: q.float_nodes.clone(),
            notes: q.notes.clone(),
        });
    }
    let mut tags = vec![method.name().to_string()];
    tags.extend(source.tags.iter().filter(|t| !matches!(t.as_str(), "base" | "ptq" | "dq")).cloned());
    let float: HashSet<&str> = quantized.iter().flat_map(|q| q.float_nodes.iter().map(|(n, _)| n.as_str())).collect();
    let mut float: Vec<&str> = float.into_iter().collect();
    float.sort_unstable();
    let notes = format!(
        "quantized by edgescope quantize from {} ({}){}{}",
        source.source.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        request.options.describe(),
        match &request.calibration {
            Some(path) if method == Method::Ptq => {
                format!("; calibration: {} ({calibration_samples} samples)", path.display())
            }
            _ => String::new(),
        },
        if float.is_empty() { String::new() } else { format!("; left float: {}", float.join(", ")) },
    ) + &budget.as_ref().and_then(|b| Some((b, b.steps.last()?))).map_or_else(String::new, |(b, last)| {
        format!(
            "; accuracy budget {} pp on {}: float top-1 {:.2} %, quantized {:.2} %{}, kept float for it: {}",
            request.budget.as_ref().map_or(0.0, |x| x.max_drop_pp),
            request.budget.as_ref().map_or_else(String::new, |x| x.validation.display().to_string()),
            b.float_top1_percent,
            last.top1_percent,
            if b.within_budget { "" } else { " (budget not reached)" },
            if last.excluded.is_empty() { "none".to_string() } else { last.excluded.join(", ") }
        )
    });
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        version: MANIFEST_VERSION,
        name: request.name.clone().unwrap_or_else(|| default_name(&source.name, method)),
        tags,
        base: Some(source.name.clone()),
        outputs: None,
        notes: Some(notes),
        segments,
    };
    let text =
        toml::to_string(&manifest).map_err(|e| QuantizeError::Model(format!("cannot write the manifest: {e}")))?;
    let manifest_file = if single_file {
        PathBuf::from(out.with_extension("toml").file_name().unwrap_or_default())
    } else {
        let stem = source.source.file_stem().map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
        PathBuf::from(format!("{}-{stem}.toml", method.name()))
    };
    let staged_manifest = staging.path().join(&manifest_file);
    std::fs::write(&staged_manifest, text).map_err(io(&staged_manifest))?;
    Variant::open(&staged_manifest)?;
    let manifest_path = if single_file {
        let target_manifest = parent.join(&manifest_file);
        if target_manifest.exists() {
            return Err(file_error(&target_manifest, "exists already; name a new output file"));
        }
        let staged_model = staging.path().join(out.file_name().unwrap_or_default());
        std::fs::rename(&staged_model, out).map_err(io(out))?;
        if let Err(e) = std::fs::rename(&staged_manifest, &target_manifest) {
            let _ = std::fs::remove_file(out);
            return Err(file_error(&target_manifest, e.to_string()));
        }
        target_manifest
    } else {
        if out.exists() {
            std::fs::remove_dir(out).map_err(io(out))?;
        }
        let staged = staging.keep();
        if let Err(e) = std::fs::rename(&staged, out) {
            let _ = std::fs::remove_dir_all(&staged);
            return Err(file_error(out, e.to_string()));
        }
        out.join(manifest_file)
    };
    let variant = Variant::open(&manifest_path)?;
    Ok(QuantizeOutcome { manifest: manifest_path, variant, segments: reports, calibration_samples, budget })
}
