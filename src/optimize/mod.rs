//! Optimizers: actions that make new variants from existing ones and write them, atomically, as ONNX files plus a
//! manifest. Today: splitting a multi-exit ONNX graph into an early-exit chain, and inserting trained exits into a
//! plain classifier ([`exits_add`]).

pub mod exits_add;
pub mod heads;
pub mod study;

pub mod quantize;

use std::path::{Path, PathBuf};

use prost::Message;

use crate::model::cuts::{self, SplitSegment};
use crate::model::proto::{self, ModelProto};
use crate::model::variant::{MANIFEST_FORMAT, MANIFEST_VERSION};
use crate::model::{Manifest, ModelError, SegmentManifest, Variant};

/// What to split and how to name the result.
#[derive(Clone, Debug, Default)]
pub struct SplitRequest {
    /// The multi-exit ONNX file.
    pub model: PathBuf,
    /// Exit outputs and the final output last; `None` detects them (outputs of shape `[N, classes]`).
    pub exits: Option<Vec<String>>,
    /// Folder to create (or an empty one) for the segments and the manifest.
    pub out: PathBuf,
    /// Variant name; default `STEM/ee`.
    pub name: Option<String>,
    /// The base variant the chain is compared with.
    pub base: Option<String>,
}

/// What a split wrote.
#[derive(Clone, Debug)]
pub struct SplitOutcome {
    /// The manifest written.
    pub manifest: PathBuf,
    /// The chain, opened from what was written.
    pub variant: Variant,
    /// Multi-accumulates per sample of each segment.
    pub segment_macs: Vec<u64>,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io { path: path.to_path_buf(), source }
}

/// Splits `request.model` into an early-exit chain written into `request.out`.
///
/// The folder must not exist or be empty. Everything is written into a temporary folder beside it, checked by
/// opening the chain, and only then renamed into place: a failure leaves nothing half-written.
pub fn split_to_folder(request: &SplitRequest) -> Result<SplitOutcome, ModelError> {
    check_output_folder(&request.out)?;
    let mut model: ModelProto = proto::read_model(&request.model)?;
    proto::internalize_external_data(&mut model, &request.model)?;
    let segments: Vec<SplitSegment> = cuts::split(&model, &request.model, request.exits.as_deref())?;
    let stem = model_stem(&request.model);
    let notes = format!(
        "split by edgescope exits split from {}",
        request.model.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    );
    write_chain(
        &segments,
        &request.model,
        &request.out,
        &stem,
        ChainNames {
            name: request.name.clone().unwrap_or_else(|| format!("{stem}/ee")),
            base: request.base.clone(),
            notes,
            manifest_file: format!("{stem}-ee.toml"),
        },
    )
}

/// The file stem of a model path (`model` when it has none).
pub(crate) fn model_stem(path: &Path) -> String {
    path.file_stem().map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned())
}

/// Refuses an output folder that exists and is not empty (an optimizer never mixes its files with others).
pub(crate) fn check_output_folder(out: &Path) -> Result<(), ModelError> {
    if out.exists() {
        let mut entries = std::fs::read_dir(out).map_err(io_error(out))?;
        if entries.next().is_some() {
            return Err(ModelError::Invalid {
                path: out.to_path_buf(),
                reason: "the output folder is not empty; name a new folder (edgescope never mixes its files with \
                         others)"
                    .into(),
            });
        }
    }
    Ok(())
}

/// What the manifest of a written chain says about it.
pub(crate) struct ChainNames {
    /// Variant name.
    pub name: String,
    /// Base variant.
    pub base: Option<String>,
    /// How it was made.
    pub notes: String,
    /// The manifest's file name.
    pub manifest_file: String,
}

/// Writes `segments` (files `STEM-sK.onnx`) and their manifest into `out`: everything goes into a temporary
/// folder beside it, is checked by opening the chain, and only then is renamed into place, so a failure leaves
/// nothing half-written.
pub(crate) fn write_chain(
    segments: &[SplitSegment],
    model_path: &Path,
    out: &Path,
    stem: &str,
    names: ChainNames,
) -> Result<SplitOutcome, ModelError> {
    check_output_folder(out)?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io_error(&parent))?;
    let staging =
        tempfile::Builder::new().prefix(".edgescope-split-").tempdir_in(&parent).map_err(io_error(&parent))?;
    let mut manifest_segments = Vec::with_capacity(segments.len());
    for (index, segment) in segments.iter().enumerate() {
        let file = PathBuf::from(format!("{stem}-s{}.onnx", index + 1));
        let path = staging.path().join(&file);
        std::fs::write(&path, segment.model.encode_to_vec()).map_err(io_error(&path))?;
        manifest_segments.push(SegmentManifest {
            file,
            input: Some(segment.input.clone()),
            exit: Some(segment.exit.clone()),
            carry: segment.carry.clone(),
            outputs: None,
        });
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        version: MANIFEST_VERSION,
        name: names.name,
        tags: vec!["ee".into()],
        base: names.base,
        outputs: None,
        notes: Some(names.notes),
        segments: manifest_segments,
    };
    let manifest_file = names.manifest_file;
    let text = toml::to_string(&manifest).map_err(|e| ModelError::Invalid {
        path: model_path.to_path_buf(),
        reason: format!("cannot write the manifest: {e}"),
    })?;
    let staged_manifest = staging.path().join(&manifest_file);
    std::fs::write(&staged_manifest, text).map_err(io_error(&staged_manifest))?;
    // The chain must open before it is put in place.
    Variant::open(&staged_manifest)?;
    if out.exists() {
        std::fs::remove_dir(out).map_err(io_error(out))?;
    }
    let staged = staging.keep();
    if let Err(source) = std::fs::rename(&staged, out) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(ModelError::Io { path: out.to_path_buf(), source });
    }
    let manifest_path = out.join(manifest_file);
    let variant = Variant::open(&manifest_path)?;
    Ok(SplitOutcome { manifest: manifest_path, variant, segment_macs: segments.iter().map(|s| s.macs).collect() })
}

/// Where the model in `path` can be cut (see [`cuts::cut_points`]).
pub fn cut_candidates(path: &Path) -> Result<cuts::CutAnalysis, ModelError> {
    let model = proto::read_model(path)?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| ModelError::Corrupt { path: path.to_path_buf(), reason: "the file holds no graph".into() })?;
    cuts::cut_points(graph, path)
}
