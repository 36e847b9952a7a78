//! Variants: one deployable model, either a single ONNX graph or an early-exit chain of ONNX segments
//! described by a versioned manifest.
//!
//! Manifest, TOML (paths relative to the manifest):
//! ```toml
//! format = "edgescope-variant"
//! version = 1
//! name = "resnet/ee3"
//! tags = ["ee"]
//! base = "resnet/base"          # the variant it is compared with (loyalty, speed-up, compression)
//! outputs = "logits"            # optional: what every exit holds (logits, probabilities, log-probabilities);
//!                               # by default read off the graph (a final Softmax / LogSoftmax) and
//!                               # confirmed on the first samples
//! [[segments]]
//! file = "ee3_seg1.onnx"
//! exit = "exit_logits"          # output holding this segment's exit (optional for segments without one)
//! outputs = "logits"            # optional, per exit: overrides the variant-wide `outputs`
//! carry = "features"            # output fed to the next segment
//! [[segments]]
//! file = "ee3_seg2.onnx"
//! input = "features"            # optional when the segment has a single input
//! exit = "logits"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ModelError;
use super::onnx::{self, Dim, ModelInfo, format_shape};

/// Format name written in every manifest.
pub const MANIFEST_FORMAT: &str = "edgescope-variant";
/// Newest manifest version this build reads and writes.
pub const MANIFEST_VERSION: u32 = 1;

pub use super::onnx::OutputKind;

/// How a segment's exit kind was decided.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KindOrigin {
    /// Nothing in the graph makes the output a distribution: logits (confirmed on the first samples at run time).
    #[default]
    Default,
    /// The graph ends in this operator (e.g. `Softmax`).
    Graph(String),
    /// The manifest or the command line says so.
    Stated,
}

impl KindOrigin {
    /// Why the kind is what it is, for people: `graph ends in Softmax`.
    pub fn describe(&self) -> String {
        match self {
            KindOrigin::Default => "no softmax in the graph".into(),
            KindOrigin::Graph(op) => format!("graph ends in {op}"),
            KindOrigin::Stated => "stated".into(),
        }
    }
}

/// The manifest as written on disk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// Manifest version.
    pub version: u32,
    /// Variant name, e.g. `resnet/ptq-ee3`.
    pub name: String,
    /// Technique tags: base, prune, ptq, dq, ee, ...
    #[serde(default)]
    pub tags: Vec<String>,
    /// Name of the base variant this one is compared with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// What every exit output holds; when absent, read off each graph.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<OutputKind>,
    /// Free-form notes (how it was made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// The ONNX segments in execution order.
    pub segments: Vec<SegmentManifest>,
}

/// One segment as written in a manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentManifest {
    /// ONNX file, relative to the manifest.
    pub file: PathBuf,
    /// Input name (needed only when the segment has several inputs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Output holding this segment's exit logits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<String>,
    /// Output carried to the next segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carry: Option<String>,
    /// What this segment's exit holds (overrides the manifest's `outputs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<OutputKind>,
}

/// A segment, resolved and inspected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// The ONNX file.
    pub path: PathBuf,
    /// The input it reads (the image for the first segment, the carried tensor after).
    pub input: String,
    /// The output holding its exit, if it has one.
    pub exit: Option<String>,
    /// The output carried to the next segment (none for the last).
    pub carry: Option<String>,
    /// What the exit output holds (logits when the segment has no exit).
    #[serde(default)]
    pub exit_kind: OutputKind,
    /// How [`Self::exit_kind`] was decided.
    #[serde(default)]
    pub exit_kind_origin: KindOrigin,
    /// What the file contains.
    pub info: ModelInfo,
}

/// A deployable model: a single graph or an early-exit chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    /// Unique name, e.g. `resnet/ee3`.
    pub name: String,
    /// Technique tags.
    pub tags: Vec<String>,
    /// The variant it is compared with.
    pub base: Option<String>,
    /// The manifest or ONNX file it was loaded from.
    pub source: PathBuf,
    /// Segments in execution order.
    pub segments: Vec<Segment>,
    /// Classes of the classifier (from the exit outputs' last dimension).
    pub num_classes: usize,
}

impl Variant {
    /// True when a trace run of this variant compared with `reference` needs the reference pass
    /// (`runtime::reference`): more classes than the trace keeps, and a reference that is another variant with the
    /// same classes.
    pub fn needs_reference_pass(&self, reference: &Variant) -> bool {
        self.num_classes > crate::analysis::trace::MAX_TOP_K
            && reference.num_classes == self.num_classes
            && reference.name != self.name
    }

    /// Opens an ONNX file (a single-graph variant) or a manifest (`.toml`), inspecting every segment.
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let is_manifest = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("toml"));
        if is_manifest { Self::from_manifest_file(path) } else { Self::from_onnx_file(path) }
    }

    fn from_onnx_file(path: &Path) -> Result<Self, ModelError> {
        let info = onnx::inspect(path)?;
        let exit = match info.outputs.as_slice() {
            [only] => only.name.clone(),
            outputs => outputs.iter().find(|o| o.name == "logits").map(|o| o.name.clone()).ok_or_else(|| {
                ModelError::Invalid {
                    path: path.to_path_buf(),
                    reason: format!(
                        "it has several outputs ({}); write a manifest that names the exit output",
                        info.outputs.iter().map(|o| o.name.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                }
            })?,
        };
        let mut tags: Vec<String> = info.quantization_tags().into_iter().map(String::from).collect();
        if tags.is_empty() {
            tags.push("base".into());
        }
        let name = path.file_stem().map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
        let manifest = Manifest {
            format: MANIFEST_FORMAT.into(),
            version: MANIFEST_VERSION,
            name,
            tags,
            base: None,
            outputs: None,
            notes: None,
            segments: vec![SegmentManifest {
                file: path.to_path_buf(),
                input: None,
                exit: Some(exit),
                carry: None,
                outputs: None,
            }],
        };
        Self::resolve(manifest, path, Path::new(""), vec![info])
    }

    fn from_manifest_file(path: &Path) -> Result<Self, ModelError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), source })?;
        let manifest = parse_manifest(path, &text)?;
        Self::from_manifest(manifest, path, path.parent().unwrap_or(Path::new("")))
    }

    /// Builds a variant from a parsed manifest whose segment files are relative to `directory` (or absolute);
    /// `source` names the variant in messages.
    pub fn from_manifest(manifest: Manifest, source: &Path, directory: &Path) -> Result<Self, ModelError> {
        let mut infos = Vec::with_capacity(manifest.segments.len());
        for segment in &manifest.segments {
            let file = directory.join(&segment.file);
            if !file.is_file() {
                return Err(ModelError::Invalid {
                    path: source.to_path_buf(),
                    reason: format!("segment file {} does not exist", file.display()),
                });
            }
            infos.push(onnx::inspect(&file)?);
        }
        Self::resolve(manifest, source, directory, infos)
    }

    /// The manifest describing this variant, with the segment files as they are on this machine.
    pub fn manifest(&self) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT.into(),
            version: MANIFEST_VERSION,
            name: self.name.clone(),
            tags: self.tags.clone(),
            base: self.base.clone(),
            outputs: None,
            notes: None,
            segments: self
                .segments
                .iter()
                .map(|s| SegmentManifest {
                    file: s.path.clone(),
                    input: Some(s.input.clone()),
                    exit: s.exit.clone(),
                    carry: s.carry.clone(),
                    // Stated kinds travel; detected ones are detected again wherever the manifest is read.
                    outputs: (s.exit_kind_origin == KindOrigin::Stated).then_some(s.exit_kind),
                })
                .collect(),
        }
    }

    /// Checks the chain: inputs and outputs named in the manifest exist and connect, exits agree on the class count.
    fn resolve(manifest: Manifest, source: &Path, directory: &Path, infos: Vec<ModelInfo>) -> Result<Self, ModelError> {
        let invalid = |reason: String| ModelError::Invalid { path: source.to_path_buf(), reason };
        if manifest.segments.is_empty() {
            return Err(invalid("the manifest lists no segments".into()));
        }
        let count = manifest.segments.len();
        let mut segments = Vec::with_capacity(count);
        let mut num_classes: Option<usize> = None;
        let mut carried: Option<(String, onnx::TensorInfo)> = None;
        for (index, (spec, info)) in manifest.segments.into_iter().zip(infos).enumerate() {
            let file = directory.join(&spec.file);
            let name_of = |what: &str| format!("segment {} ({})", index + 1, file.display()) + what;
            let input = match (&spec.input, info.inputs.as_slice()) {
                (Some(name), _) => {
                    info.input(name).ok_or_else(|| invalid(name_of(&format!(" has no input named {name:?}"))))?;
                    name.clone()
                }
                (None, [only]) => only.name.clone(),
                (None, inputs) => {
                    return Err(invalid(name_of(&format!(
                        " has {} inputs; name the one to feed with `input = ...`",
                        inputs.len()
                    ))));
                }
            };
            if let Some((carry_name, carry_info)) = carried.take() {
                let input_info = info.input(&input).cloned().unwrap_or_else(|| carry_info.clone());
                if input_info.dtype != carry_info.dtype || !shapes_compatible(&input_info.shape, &carry_info.shape) {
                    return Err(invalid(name_of(&format!(
                        " expects {} {} on input {input:?} but the previous segment carries {carry_name:?} as {} {}",
                        input_info.dtype,
                        format_shape(&input_info.shape),
                        carry_info.dtype,
                        format_shape(&carry_info.shape)
                    ))));
                }
            }
            if let Some(exit) = &spec.exit {
                let output = info.output(exit).ok_or_else(|| {
                    invalid(name_of(&format!(" has no output named {exit:?} (outputs: {})", output_names(&info))))
                })?;
                if let Some(classes) = output.shape.last().and_then(Dim::fixed) {
                    let classes = classes as usize;
                    if num_classes.is_some_and(|n| n != classes) {
                        return Err(invalid(name_of(&format!(
                            " exit {exit:?} has {classes} classes, earlier exits have {}",
                            num_classes.unwrap_or(0)
                        ))));
                    }
                    num_classes = Some(classes);
                }
            }
            let last = index + 1 == count;
            match (&spec.carry, last) {
                (Some(carry), false) => {
                    let output = info.output(carry).ok_or_else(|| {
                        invalid(name_of(&format!(" has no output named {carry:?} (outputs: {})", output_names(&info))))
                    })?;
                    carried = Some((carry.clone(), output.clone()));
                }
                (None, false) => {
                    return Err(invalid(name_of(" carries nothing to the next segment; add `carry = ...`")));
                }
                (Some(_), true) => return Err(invalid(name_of(" is the last segment but names a carried output"))),
                (None, true) if spec.exit.is_none() => {
                    return Err(invalid(name_of(" is the last segment and must name its exit (the final logits)")));
                }
                (None, true) => {}
            }
            let (exit_kind, exit_kind_origin) = match (spec.outputs.or(manifest.outputs), &spec.exit) {
                (_, None) => (OutputKind::Logits, KindOrigin::Default),
                (Some(stated), Some(_)) => (stated, KindOrigin::Stated),
                (None, Some(exit)) => match info.output_kinds.get(exit) {
                    Some(detected) => (detected.kind, KindOrigin::Graph(detected.operator.clone())),
                    None => (OutputKind::Logits, KindOrigin::Default),
                },
            };
            segments.push(Segment {
                path: file,
                input,
                exit: spec.exit,
                carry: spec.carry,
                exit_kind,
                exit_kind_origin,
                info,
            });
        }
        let num_classes = num_classes.ok_or_else(|| {
            invalid("no exit output has a fixed class dimension; export the model with a static class count".into())
        })?;
        if num_classes < 2 || num_classes > usize::from(u16::MAX) {
            return Err(invalid(format!("an exit has {num_classes} classes; a classifier needs 2 to 65535")));
        }
        Ok(Self {
            name: manifest.name,
            tags: manifest.tags,
            base: manifest.base,
            source: source.to_path_buf(),
            segments,
            num_classes,
        })
    }

    /// Indices of the segments that produce an exit, in depth order (the last is the final exit).
    pub fn exit_segments(&self) -> Vec<usize> {
        (0..self.segments.len()).filter(|&i| self.segments[i].exit.is_some()).collect()
    }

    /// What each exit holds, in depth order.
    pub fn exit_kinds(&self) -> Vec<OutputKind> {
        self.segments.iter().filter(|s| s.exit.is_some()).map(|s| s.exit_kind).collect()
    }

    /// States what every exit holds (the command line's `--outputs` for a bare ONNX file).
    pub fn state_output_kind(&mut self, kind: OutputKind) {
        for segment in self.segments.iter_mut().filter(|s| s.exit.is_some()) {
            segment.exit_kind = kind;
            segment.exit_kind_origin = KindOrigin::Stated;
        }
    }

    /// One line for people: `probabilities (graph ends in Softmax)`, or per exit when they differ.
    pub fn describe_outputs(&self) -> String {
        let exits: Vec<&Segment> = self.segments.iter().filter(|s| s.exit.is_some()).collect();
        let describe = |s: &Segment| format!("{} ({})", s.exit_kind.name(), s.exit_kind_origin.describe());
        match exits.as_slice() {
            [first, rest @ ..] if rest.iter().all(|s| s.exit_kind == first.exit_kind) => {
                let origins: std::collections::BTreeSet<String> =
                    exits.iter().map(|s| s.exit_kind_origin.describe()).collect();
                let origins: Vec<String> = origins.into_iter().collect();
                format!("{} ({})", first.exit_kind.name(), origins.join("; "))
            }
            _ => exits
                .iter()
                .enumerate()
                .map(|(i, s)| format!("exit {}: {}", i + 1, describe(s)))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// Number of early exits.
    pub fn early_exit_count(&self) -> usize {
        self.exit_segments().len().saturating_sub(1)
    }

    /// The image input of the first segment.
    pub fn input(&self) -> Option<&onnx::TensorInfo> {
        let first = self.segments.first()?;
        first.info.input(&first.input)
    }

    /// Bytes on disk over all segments (shared files counted once).
    pub fn size_bytes(&self) -> u64 {
        let mut seen = std::collections::BTreeSet::new();
        self.segments.iter().filter(|s| seen.insert(&s.path)).map(|s| s.info.size_bytes).sum()
    }

    /// Weight values over all segments.
    pub fn parameter_count(&self) -> u64 {
        self.segments.iter().map(|s| s.info.parameter_count).sum()
    }

    /// Operator counts over all segments.
    pub fn op_histogram(&self) -> BTreeMap<String, usize> {
        let mut histogram = BTreeMap::new();
        for segment in &self.segments {
            for (op, count) in &segment.info.op_histogram {
                *histogram.entry(op.clone()).or_insert(0) += count;
            }
        }
        histogram
    }

    /// True when the variant carries the tag.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

fn output_names(info: &ModelInfo) -> String {
    info.outputs.iter().map(|o| o.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// Shapes agree where both are known (symbolic dimensions match anything).
fn shapes_compatible(a: &[Dim], b: &[Dim]) -> bool {
    if a.is_empty() || b.is_empty() {
        return true;
    }
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x.fixed(), y.fixed()) {
            (Some(p), Some(q)) => p == q,
            _ => true,
        })
}

/// Parses manifest text, checking its format name and version first so a newer file gets a useful message.
pub fn parse_manifest(path: &Path, text: &str) -> Result<Manifest, ModelError> {
    use crate::format::{FileFormat, HeaderProblem};
    let invalid = |reason: String| ModelError::Invalid { path: path.to_path_buf(), reason };
    let format = FileFormat { name: MANIFEST_FORMAT, version: MANIFEST_VERSION };
    format.check_toml(text).map_err(|problem| match problem {
        HeaderProblem::Syntax(e) => invalid(format!("not a valid TOML manifest: {e}")),
        HeaderProblem::OtherFormat => {
            invalid(format!("it is not an edgescope variant manifest (expected format = \"{MANIFEST_FORMAT}\")"))
        }
        HeaderProblem::NoVersion => invalid("it has no valid `version`".into()),
        HeaderProblem::Newer { found } => {
            ModelError::NewerVersion { path: path.to_path_buf(), found, supported: MANIFEST_VERSION }
        }
    })?;
    toml::from_str(text).map_err(|e| invalid(format!("manifest error: {e}")))
}
