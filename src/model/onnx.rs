//! Reads what edgescope shows about an ONNX file — inputs, outputs, opsets, parameters, operator histogram —
//! straight from its protobuf, without ONNX Runtime.
//!
//! Only the fields we use are declared; prost skips the rest (weights included) without copying them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost::Message;
use serde::{Deserialize, Serialize};

use super::ModelError;

#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(int64, tag = "1")]
    ir_version: i64,
    #[prost(string, tag = "2")]
    producer_name: String,
    #[prost(string, tag = "3")]
    producer_version: String,
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    opset_import: Vec<OperatorSetIdProto>,
}

#[derive(Clone, PartialEq, Message)]
struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    domain: String,
    #[prost(int64, tag = "2")]
    version: i64,
}

#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(string, tag = "7")]
    domain: String,
}

#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    data_type: i32,
    #[prost(string, tag = "8")]
    name: String,
    #[prost(message, repeated, tag = "13")]
    external_data: Vec<StringStringEntryProto>,
}

#[derive(Clone, PartialEq, Message)]
struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

#[derive(Clone, PartialEq, Message)]
struct ValueInfoProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    r#type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeProto {
    #[prost(message, optional, tag = "1")]
    tensor_type: Option<TensorTypeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorTypeProto {
    #[prost(int32, tag = "1")]
    elem_type: i32,
    #[prost(message, optional, tag = "2")]
    shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    dim: Vec<DimensionProto>,
}

#[derive(Clone, PartialEq, Message)]
struct DimensionProto {
    #[prost(int64, optional, tag = "1")]
    dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    dim_param: Option<String>,
}

/// One dimension of a tensor shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// A named, free dimension (such as a batch dimension "N").
    Symbolic(String),
}

impl Dim {
    /// The fixed size, if any.
    pub fn fixed(&self) -> Option<i64> {
        match self {
            Dim::Fixed(v) => Some(*v),
            Dim::Symbolic(_) => None,
        }
    }
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(v) => write!(f, "{v}"),
            Dim::Symbolic(s) if s.is_empty() => f.write_str("?"),
            Dim::Symbolic(s) => f.write_str(s),
        }
    }
}

/// Formats a shape as `[N, 1, 28, 28]`.
pub fn format_shape(shape: &[Dim]) -> String {
    let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// A graph input or output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorInfo {
    /// Tensor name.
    pub name: String,
    /// Element type (`float32`, `uint8`, ...).
    pub dtype: String,
    /// Shape; empty when the file does not say.
    pub shape: Vec<Dim>,
}

/// What an ONNX file contains.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The file inspected.
    pub path: PathBuf,
    /// Bytes on disk, external data files included.
    pub size_bytes: u64,
    /// ONNX IR version.
    pub ir_version: i64,
    /// Tool that wrote the file.
    pub producer: String,
    /// Opset per domain (`""` is the default ONNX domain).
    pub opsets: BTreeMap<String, i64>,
    /// Graph inputs that are not initializers.
    pub inputs: Vec<TensorInfo>,
    /// Graph outputs.
    pub outputs: Vec<TensorInfo>,
    /// Number of weight values (elements of all initializers).
    pub parameter_count: u64,
    /// Node count per operator type (`domain::Op` outside the default domain).
    pub op_histogram: BTreeMap<String, usize>,
    /// What each graph output holds, as the graph reveals it: the operator that makes it a distribution
    /// (`Softmax`, `LogSoftmax`, `com.microsoft::QLinearSoftmax`), found by walking back through operators that
    /// do not change values (reshapes, casts, quantize / dequantize). Outputs not listed are logits.
    #[serde(default)]
    pub output_kinds: BTreeMap<String, DetectedKind>,
}

/// What an exit output holds: the scores edgescope turns into a distribution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputKind {
    /// Unnormalized scores; edgescope applies softmax.
    #[default]
    Logits,
    /// Already a probability distribution (the graph ends in Softmax); used as it is, divided by its sum
    /// (a quantized softmax sums to 1 only within its quantization step). Never softmaxed again.
    Probabilities,
    /// Natural-log probabilities (the graph ends in LogSoftmax); edgescope exponentiates them.
    LogProbabilities,
}

impl OutputKind {
    /// Name used in manifests and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            OutputKind::Logits => "logits",
            OutputKind::Probabilities => "probabilities",
            OutputKind::LogProbabilities => "log-probabilities",
        }
    }

    /// Parses [`Self::name`].
    pub fn parse(text: &str) -> Option<Self> {
        [OutputKind::Logits, OutputKind::Probabilities, OutputKind::LogProbabilities]
            .into_iter()
            .find(|k| k.name() == text)
    }
}

/// An output kind read off the graph, with the operator that revealed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectedKind {
    /// The kind.
    pub kind: OutputKind,
    /// The operator that makes the output a distribution, e.g. `Softmax`.
    pub operator: String,
}

/// Operators that pass values through unchanged (or only re-encode them), so the kind of their input is the kind
/// of their output.
const VALUE_PRESERVING_OPS: &[&str] = &[
    "Identity",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Cast",
    "Dropout",
    "QuantizeLinear",
    "DequantizeLinear",
];

/// Walks back from each graph output to the operator that decides what it holds.
fn detect_output_kinds(graph: &GraphProto) -> BTreeMap<String, DetectedKind> {
    let producer: std::collections::HashMap<&str, &NodeProto> =
        graph.node.iter().flat_map(|node| node.output.iter().map(move |o| (o.as_str(), node))).collect();
    let mut kinds = BTreeMap::new();
    for output in &graph.output {
        let mut tensor = output.name.as_str();
        // Bounded by the node count, so a malformed cyclic graph cannot loop forever.
        for _ in 0..=graph.node.len() {
            let Some(node) = producer.get(tensor) else { break };
            let default_domain = node.domain.is_empty() || node.domain == "ai.onnx";
            let found = match (default_domain, node.op_type.as_str()) {
                (true, "Softmax") => Some(OutputKind::Probabilities),
                (true, "LogSoftmax") => Some(OutputKind::LogProbabilities),
                (false, "QLinearSoftmax") if node.domain == "com.microsoft" => Some(OutputKind::Probabilities),
                _ => None,
            };
            if let Some(kind) = found {
                let operator =
                    if default_domain { node.op_type.clone() } else { format!("{}::{}", node.domain, node.op_type) };
                kinds.insert(output.name.clone(), DetectedKind { kind, operator });
                break;
            }
            if !(default_domain && VALUE_PRESERVING_OPS.contains(&node.op_type.as_str())) {
                break;
            }
            match node.input.first() {
                Some(input) => tensor = input.as_str(),
                None => break,
            }
        }
    }
    kinds
}

impl ModelInfo {
    /// The output called `name`.
    pub fn output(&self, name: &str) -> Option<&TensorInfo> {
        self.outputs.iter().find(|o| o.name == name)
    }

    /// The input called `name`.
    pub fn input(&self, name: &str) -> Option<&TensorInfo> {
        self.inputs.iter().find(|o| o.name == name)
    }

    /// Technique tags the operators reveal: `ptq` for static (QDQ or QOperator) quantization, `dq` for dynamic.
    pub fn quantization_tags(&self) -> Vec<&'static str> {
        let has = |op: &str| self.op_histogram.contains_key(op);
        let mut tags = Vec::new();
        if has("DynamicQuantizeLinear")
            || has("MatMulInteger")
            || has("ConvInteger")
            || has("com.microsoft::DynamicQuantizeMatMul")
        {
            tags.push("dq");
        } else if has("QuantizeLinear") || has("QLinearConv") || has("QLinearMatMul") {
            tags.push("ptq");
        }
        tags
    }
}

/// ONNX `TensorProto.DataType` names.
pub fn dtype_name(code: i32) -> &'static str {
    match code {
        1 => "float32",
        2 => "uint8",
        3 => "int8",
        4 => "uint16",
        5 => "int16",
        6 => "int32",
        7 => "int64",
        8 => "string",
        9 => "bool",
        10 => "float16",
        11 => "float64",
        12 => "uint32",
        13 => "uint64",
        16 => "bfloat16",
        _ => "unknown",
    }
}

/// Reads and summarizes an ONNX file. Errors name the file and say what to do.
pub fn inspect(path: &Path) -> Result<ModelInfo, ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), source })?;
    inspect_bytes(path, &bytes)
}

/// Summarizes ONNX bytes read from `path` (used for messages and external data).
pub fn inspect_bytes(path: &Path, bytes: &[u8]) -> Result<ModelInfo, ModelError> {
    let corrupt = |reason: String| ModelError::Corrupt { path: path.to_path_buf(), reason };
    let model = ModelProto::decode(bytes).map_err(|e| corrupt(format!("not a valid ONNX protobuf ({e})")))?;
    let graph = model.graph.ok_or_else(|| corrupt("the file holds no graph".into()))?;
    if graph.node.is_empty() || graph.output.is_empty() {
        return Err(corrupt("the graph has no nodes or no outputs".into()));
    }

    let initializer_names: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut external_files = std::collections::BTreeSet::new();
    let mut parameter_count = 0u64;
    for tensor in &graph.initializer {
        // Dimensions are the file's claim: multiply with checks, so a forged header is an error, not a panic.
        let elements = tensor
            .dims
            .iter()
            .try_fold(1u64, |product, &d| u64::try_from(d).ok().and_then(|d| product.checked_mul(d)))
            .ok_or_else(|| {
                corrupt(format!(
                    "initializer {:?} has dimensions {:?} that are negative or multiply past 2^64; the file is corrupt",
                    tensor.name, tensor.dims
                ))
            })?;
        parameter_count = parameter_count.checked_add(elements).ok_or_else(|| {
            corrupt("its initializers hold more than 2^64 values together; the file is corrupt".into())
        })?;
        if let Some(location) = tensor.external_data.iter().find(|e| e.key == "location") {
            external_files.insert(location.value.clone());
        }
    }
    let directory = path.parent().unwrap_or(Path::new("."));
    let mut size_bytes = bytes.len() as u64;
    for file in &external_files {
        // External data must sit beside the model: a location climbing out of its folder is refused.
        let relative = Path::new(file);
        if relative.is_absolute()
            || relative
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir))
        {
            return Err(corrupt(format!(
                "its weights point outside the model's folder ({file:?}); refusing to read them"
            )));
        }
        let external = directory.join(file);
        let metadata = std::fs::metadata(&external).map_err(|_| {
            corrupt(format!("its weights live in {}, which is missing; keep it beside the model", external.display()))
        })?;
        size_bytes = size_bytes.saturating_add(metadata.len());
    }

    let mut op_histogram = BTreeMap::new();
    for node in &graph.node {
        let key = if node.domain.is_empty() || node.domain == "ai.onnx" {
            node.op_type.clone()
        } else {
            format!("{}::{}", node.domain, node.op_type)
        };
        *op_histogram.entry(key).or_insert(0) += 1;
    }

    let tensor_info = |v: &ValueInfoProto| {
        let tensor = v.r#type.as_ref().and_then(|t| t.tensor_type.as_ref());
        TensorInfo {
            name: v.name.clone(),
            dtype: tensor.map_or("unknown", |t| dtype_name(t.elem_type)).to_string(),
            shape: tensor
                .and_then(|t| t.shape.as_ref())
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match (&d.dim_value, &d.dim_param) {
                            (Some(v), _) => Dim::Fixed(*v),
                            (None, Some(p)) => Dim::Symbolic(p.clone()),
                            (None, None) => Dim::Symbolic(String::new()),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    };

    Ok(ModelInfo {
        path: path.to_path_buf(),
        size_bytes,
        ir_version: model.ir_version,
        producer: format!("{} {}", model.producer_name, model.producer_version).trim().to_string(),
        opsets: model
            .opset_import
            .iter()
            .map(|o| (if o.domain == "ai.onnx" { String::new() } else { o.domain.clone() }, o.version))
            .collect(),
        inputs: graph.input.iter().filter(|i| !initializer_names.contains(i.name.as_str())).map(tensor_info).collect(),
        outputs: graph.output.iter().map(tensor_info).collect(),
        parameter_count,
        op_histogram,
        output_kinds: detect_output_kinds(&graph),
    })
}
