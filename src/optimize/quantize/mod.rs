//! Quantization inside edgescope, identical to ONNX Runtime's Python quantizer (`onnxruntime.quantization`,
//! version 1.31): static post-training quantization in QDQ format (`quantize_static`, MinMax calibration) and
//! dynamic quantization (`quantize_dynamic`: DynamicQuantizeLinear + ConvInteger / MatMulInteger).
//!
//! Parity is by construction: the arithmetic ([`arith`]), the order of every decision ([`qdq`], [`dynamic`]),
//! the shape inference ORT runs first ([`infer`]), its graph edits and topological sort ([`edit`]) and the
//! protobuf helpers it calls ([`tensor`]) are ported operation for operation, and calibration runs the same ONNX
//! Runtime on the same batches ([`calibrate`]). Quantizing the zoo's `base.onnx` files with the recipe's settings
//! gives the committed ORT-made `ptq.onnx` / `dq.onnx` byte for byte (`tests/quantize.rs`).
//!
//! [`run`] quantizes a variant (a single graph or an early-exit chain, segment by segment) and writes it with a
//! manifest; [`sensitivity`] measures the quantization noise per tensor; [`budget`] keeps the most sensitive nodes
//! in float until the accuracy drop fits a budget.

pub mod arith;
pub mod budget;
pub mod calibrate;
pub mod dynamic;
pub mod edit;
pub mod histogram;
pub mod infer;
pub mod qdq;
pub mod run;
pub mod sensitivity;
pub mod tensor;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use arith::QuantType;
pub use calibrate::{Batch, Ranges};
pub use run::{Budget, QuantizeEvent, QuantizeOutcome, QuantizeRequest, SegmentReport, quantize_to_disk};

use crate::model::proto::{GraphProto, ModelProto, NodeProto, StringStringEntryProto};

/// Why quantization failed. Messages name the file when there is one and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    /// The model cannot be quantized as it is.
    #[error("{0}")]
    Model(String),
    /// A problem with a named file (model, manifest, dataset, output).
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// Calibration failed.
    #[error("calibration: {0}")]
    Calibration(String),
    /// ONNX Runtime failed.
    #[error("{0}")]
    Runtime(String),
    /// Cancelled by the user.
    #[error("cancelled")]
    Cancelled,
}

impl From<crate::model::ModelError> for QuantizeError {
    fn from(e: crate::model::ModelError) -> Self {
        QuantizeError::Model(e.to_string())
    }
}

impl From<crate::data::DataError> for QuantizeError {
    fn from(e: crate::data::DataError) -> Self {
        QuantizeError::Model(e.to_string())
    }
}

impl From<crate::runtime::RuntimeError> for QuantizeError {
    fn from(e: crate::runtime::RuntimeError) -> Self {
        QuantizeError::Runtime(e.to_string())
    }
}

/// The two techniques of the study.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Static post-training quantization, QDQ format (`quantize_static`).
    Ptq,
    /// Dynamic quantization (`quantize_dynamic`).
    Dq,
}

impl Method {
    /// `ptq` / `dq` (also the manifest tag).
    pub fn name(self) -> &'static str {
        match self {
            Method::Ptq => "ptq",
            Method::Dq => "dq",
        }
    }

    /// Parses [`Self::name`].
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "ptq" | "static" => Some(Method::Ptq),
            "dq" | "dynamic" => Some(Method::Dq),
            _ => None,
        }
    }
}

/// How activation ranges are calibrated (ORT's `CalibrationMethod`, with the settings `create_calibrator` reads).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "method")]
pub enum CalibrationMethod {
    /// Smallest and largest value over all batches (ORT's `CalibrationMethod.MinMax`).
    MinMax,
    /// The range holding `percentile` % of the values (ORT's `CalibrationMethod.Percentile`).
    Percentile {
        /// Share of values inside the range, in percent (ORT: `CalibPercentile`, 99.999).
        percentile: f64,
        /// Histogram bins (ORT: 2048).
        num_bins: usize,
        /// Histogram of `|x|` and a range symmetric about 0 before clipping to the data (ORT:
        /// `CalibTensorRangeSymmetric`, true for percentile unless set).
        symmetric: bool,
    },
    /// The threshold minimizing the KL divergence of the quantized distribution (ORT's `CalibrationMethod.Entropy`).
    Entropy {
        /// Histogram bins (ORT: 128).
        num_bins: usize,
        /// Quantized bins (ORT: 128).
        num_quantized_bins: usize,
    },
}

impl CalibrationMethod {
    /// ORT's percentile calibration as `quantize_static` runs it: 99.999 %, 2048 bins, symmetric.
    pub const PERCENTILE: Self = CalibrationMethod::Percentile { percentile: 99.999, num_bins: 2048, symmetric: true };
    /// ORT's entropy calibration as `quantize_static` runs it: 128 bins, 128 quantized bins.
    pub const ENTROPY: Self = CalibrationMethod::Entropy { num_bins: 128, num_quantized_bins: 128 };

    /// Parses `minmax`, `percentile` or `entropy` (with ORT's default settings).
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "minmax" | "min-max" => Ok(CalibrationMethod::MinMax),
            "percentile" => Ok(Self::PERCENTILE),
            "entropy" => Ok(Self::ENTROPY),
            "distribution" => {
                Err("--calibrate distribution is ORT's float8 calibration; edgescope quantizes to 8-bit integers: use \
                 minmax, percentile or entropy"
                    .into())
            }
            _ => Err(format!("--calibrate must be minmax, percentile or entropy, not {text:?}")),
        }
    }

    /// The histogram bins of percentile and entropy.
    pub fn num_bins(&self) -> Option<usize> {
        match self {
            CalibrationMethod::MinMax => None,
            CalibrationMethod::Percentile { num_bins, .. } | CalibrationMethod::Entropy { num_bins, .. } => {
                Some(*num_bins)
            }
        }
    }

    /// `minmax` / `percentile` / `entropy`.
    pub fn name(&self) -> &'static str {
        match self {
            CalibrationMethod::MinMax => "minmax",
            CalibrationMethod::Percentile { .. } => "percentile",
            CalibrationMethod::Entropy { .. } => "entropy",
        }
    }

    /// For reports: `MinMax`, `Percentile 99.999 % (2048 bins, symmetric)`, `Entropy (128 bins, 128 quantized)`.
    pub fn describe(&self) -> String {
        match self {
            CalibrationMethod::MinMax => "MinMax".into(),
            CalibrationMethod::Percentile { percentile, num_bins, symmetric } => format!(
                "Percentile {percentile} % ({num_bins} bins, {})",
                if *symmetric { "symmetric" } else { "asymmetric" }
            ),
            CalibrationMethod::Entropy { num_bins, num_quantized_bins } => {
                format!("Entropy ({num_bins} bins, {num_quantized_bins} quantized)")
            }
        }
    }
}

/// `quantize_static`'s default op types: every key of ORT's `QLinearOpsRegistry` and `QDQRegistry`.
pub const STATIC_OP_TYPES: &[&str] = &[
    "ArgMax",
    "Conv",
    "Gemm",
    "MatMul",
    "Add",
    "Mul",
    "Relu",
    "Clip",
    "LeakyRelu",
    "Sigmoid",
    "MaxPool",
    "GlobalAveragePool",
    "Split",
    "Pad",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Resize",
    "AveragePool",
    "Concat",
    "Softmax",
    "Where",
    "Gather",
    "Transpose",
    "EmbedLayerNormalization",
    "ConvTranspose",
    "Slice",
    "GatherElements",
    "InstanceNormalization",
    "LayerNormalization",
    "BatchNormalization",
    "TopK",
    "CumSum",
];

/// `quantize_dynamic`'s default op types: the keys of ORT's `IntegerOpsRegistry`.
pub const DYNAMIC_OP_TYPES: &[&str] =
    &["Conv", "MatMul", "Attention", "LSTM", "Gather", "Transpose", "EmbedLayerNormalization"];

/// What to quantize and how: the arguments of `quantize_static` / `quantize_dynamic`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantizeOptions {
    /// PTQ or DQ.
    pub method: Method,
    /// Operator types to quantize; `None` = every type ORT supports for the method.
    pub op_types: Option<Vec<String>>,
    /// Node names to leave in float (`nodes_to_exclude`).
    pub exclude: Vec<String>,
    /// Per-channel weights (`per_channel`).
    pub per_channel: bool,
    /// 7-bit weights (`reduce_range`).
    pub reduce_range: bool,
    /// Activation type (PTQ; DQ activations are always uint8).
    pub activation_type: QuantType,
    /// Weight type.
    pub weight_type: QuantType,
    /// `ActivationSymmetric`.
    pub activation_symmetric: bool,
    /// `WeightSymmetric` (`None`: symmetric for signed weights).
    pub weight_symmetric: Option<bool>,
    /// `OpTypesToExcludeOutputQuantization`: op types whose outputs stay float.
    pub keep_output_float: Vec<String>,
    /// Calibration method.
    pub calibrate: CalibrationMethod,
    /// Calibration batch size (the recipe's 50).
    pub batch_size: usize,
}

impl QuantizeOptions {
    /// ORT's defaults for `quantize_static` in QDQ format, except activations in uint8 (the study's choice and
    /// ORT's CPU advice).
    pub fn ptq() -> Self {
        Self {
            method: Method::Ptq,
            op_types: None,
            exclude: Vec::new(),
            per_channel: false,
            reduce_range: false,
            activation_type: QuantType::U8,
            weight_type: QuantType::I8,
            activation_symmetric: false,
            weight_symmetric: None,
            keep_output_float: Vec::new(),
            calibrate: CalibrationMethod::MinMax,
            batch_size: 50,
        }
    }

    /// `quantize_dynamic` with uint8 weights (ONNX Runtime's CPU ConvInteger takes only uint8 weights).
    pub fn dq() -> Self {
        Self { method: Method::Dq, weight_type: QuantType::U8, ..Self::ptq() }
    }

    /// The zoo recipe's PTQ settings (`models/recipe/quantize.py`, `QUANT_KW`).
    pub fn recipe_ptq() -> Self {
        Self { per_channel: true, keep_output_float: vec!["Gemm".into()], ..Self::ptq() }
    }

    /// The zoo recipe's DQ settings.
    pub fn recipe_dq() -> Self {
        Self::dq()
    }

    /// The op types quantized.
    pub fn op_type_set(&self) -> HashSet<String> {
        match &self.op_types {
            Some(list) => list.iter().cloned().collect(),
            None => {
                let defaults = if self.method == Method::Ptq { STATIC_OP_TYPES } else { DYNAMIC_OP_TYPES };
                defaults.iter().map(|s| s.to_string()).collect()
            }
        }
    }

    /// One line for manifests and reports: `ptq: QDQ, per-channel, activations u8, weights i8, ...`.
    pub fn describe(&self) -> String {
        let ops = self.op_types.as_ref().map_or_else(|| "all supported op types".to_string(), |o| o.join(","));
        match self.method {
            Method::Ptq => format!(
                "ptq: QDQ, {}, activations {}{}, weights {}{}, {} calibration in batches of {}, {ops}{}{}",
                if self.per_channel { "per-channel" } else { "per-tensor" },
                self.activation_type.name(),
                if self.activation_symmetric { " symmetric" } else { "" },
                self.weight_type.name(),
                if self.reduce_range { " (reduced range)" } else { "" },
                self.calibrate.describe(),
                self.batch_size,
                if self.keep_output_float.is_empty() {
                    String::new()
                } else {
                    format!(", outputs of {} kept float", self.keep_output_float.join(","))
                },
                if self.exclude.is_empty() { String::new() } else { format!(", excluded: {}", self.exclude.join(",")) },
            ),
            Method::Dq => format!(
                "dq: DynamicQuantizeLinear + ConvInteger/MatMulInteger, {}, weights {}{}, {ops}{}",
                if self.per_channel { "per-channel MatMul weights" } else { "per-tensor" },
                self.weight_type.name(),
                if self.reduce_range { " (reduced range)" } else { "" },
                if self.exclude.is_empty() { String::new() } else { format!(", excluded: {}", self.exclude.join(",")) },
            ),
        }
    }

    fn config(&self) -> Config {
        Config {
            op_types: self.op_type_set(),
            exclude: self.exclude.iter().cloned().collect(),
            per_channel: self.per_channel,
            reduce_range: self.reduce_range,
            activation_type: if self.method == Method::Dq { QuantType::U8 } else { self.activation_type },
            weight_type: self.weight_type,
            activation_symmetric: self.activation_symmetric,
            weight_symmetric: self.weight_symmetric,
            keep_output_float: self.keep_output_float.iter().cloned().collect(),
            per_channel_axis: HashMap::new(),
            min_real_range: None,
            keep_removable_activations: false,
            disable_weight_adjust_for_bias: false,
            matmul_const_b_only: self.method == Method::Dq,
        }
    }
}

/// The settings the quantizers read (ORT's quantizer attributes and `extra_options`).
#[derive(Clone, Debug)]
pub struct Config {
    /// `op_types_to_quantize`.
    pub op_types: HashSet<String>,
    /// `nodes_to_exclude`.
    pub exclude: HashSet<String>,
    /// `per_channel`.
    pub per_channel: bool,
    /// `reduce_range`.
    pub reduce_range: bool,
    /// `activation_type`.
    pub activation_type: QuantType,
    /// `weight_type`.
    pub weight_type: QuantType,
    /// `ActivationSymmetric`.
    pub activation_symmetric: bool,
    /// `WeightSymmetric`.
    pub weight_symmetric: Option<bool>,
    /// `OpTypesToExcludeOutputQuantization`.
    pub keep_output_float: HashSet<String>,
    /// `QDQOpTypePerChannelSupportToAxis`.
    pub per_channel_axis: HashMap<String, i64>,
    /// `MinimumRealRange`.
    pub min_real_range: Option<f32>,
    /// `QDQKeepRemovableActivations`.
    pub keep_removable_activations: bool,
    /// `QDQDisableWeightAdjustForInt32Bias`.
    pub disable_weight_adjust_for_bias: bool,
    /// `MatMulConstBOnly` (on for dynamic quantization).
    pub matmul_const_b_only: bool,
}

impl Config {
    /// `should_quantize_node`.
    pub fn should_quantize_node(&self, node: &NodeProto) -> bool {
        self.op_types.contains(&node.op_type)
            && node.op_type != "QuantizeLinear"
            && node.op_type != "DequantizeLinear"
            && !self.exclude.contains(&node.name)
    }

    /// `is_weight_symmetric`: explicit, else signed types are symmetric.
    pub fn weight_symmetric(&self, qtype: QuantType) -> bool {
        self.weight_symmetric.unwrap_or(qtype.is_signed())
    }
}

/// The default-domain opset of a model (ORT's `get_opset_version`).
pub fn default_opset(model: &ModelProto) -> i64 {
    model
        .opset_import
        .iter()
        .find(|o| o.domain.as_deref().is_none_or(|d| d.is_empty() || d == "ai.onnx"))
        .map_or(0, |o| o.version)
}

/// Operators that show a model is quantized already.
const QUANTIZED_OPS: &[&str] = &[
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
    "QGemm",
    "QLinearAdd",
    "QLinearMul",
    "QLinearGlobalAveragePool",
    "QLinearAveragePool",
    "QLinearConcat",
    "QLinearSigmoid",
    "QLinearLeakyRelu",
    "QLinearSoftmax",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
    "MatMulNBits",
];

/// Refuses what cannot be quantized, naming the file: an already-quantized model, weights in external files,
/// float16 models, a missing graph.
pub fn check_quantizable(model: &ModelProto, path: &std::path::Path) -> Result<(), QuantizeError> {
    let file = |reason: String| QuantizeError::File { path: path.to_path_buf(), reason };
    let graph = model.graph.as_ref().ok_or_else(|| file("the file holds no graph".into()))?;
    let mut found: Vec<&str> =
        graph.node.iter().filter(|n| QUANTIZED_OPS.contains(&n.op_type.as_str())).map(|n| n.op_type.as_str()).collect();
    found.sort_unstable();
    found.dedup();
    if !found.is_empty() {
        return Err(file(format!(
            "the model is already quantized (it has {} nodes); quantize the float model it was made from",
            found.join(", ")
        )));
    }
    let external: Vec<&str> = graph
        .initializer
        .iter()
        .filter(|t| t.data_location == Some(crate::model::proto::DATA_LOCATION_EXTERNAL))
        .map(|t| t.name.as_str())
        .collect();
    if let Some(first) = external.first() {
        let location = graph
            .initializer
            .iter()
            .find(|t| t.name == *first)
            .and_then(|t| t.external_data.iter().find(|e| e.key == "location"))
            .map(|e| e.value.clone())
            .unwrap_or_default();
        return Err(file(format!(
            "its weights live in external data files ({} initializers, e.g. {first:?} in {location:?}); edgescope \
             quantizes self-contained models: save it with the weights inside (onnx.save_model(model, path, \
             save_as_external_data=False))",
            external.len()
        )));
    }
    if graph.initializer.iter().any(|t| t.data_type == tensor::dtype::FLOAT16)
        || graph.input.iter().any(|i| {
            i.r#type
                .as_ref()
                .and_then(|t| t.tensor_type.as_ref())
                .is_some_and(|t| t.elem_type == tensor::dtype::FLOAT16)
        })
    {
        return Err(file("it is a float16 model; edgescope quantizes float32 models".into()));
    }
    Ok(())
}

/// What ORT's model loading does before quantizing: shape inference into `value_info`
/// (`load_model_with_shape_infer`) and the `onnx.infer` metadata entry first among the metadata.
pub fn prepare(model: &mut ModelProto) {
    if let Some(graph) = model.graph.as_mut() {
        infer::add_value_info(graph);
    }
    let mut props: Vec<StringStringEntryProto> =
        vec![StringStringEntryProto { key: "onnx.infer".into(), value: "onnxruntime.quant".into() }];
    for p in std::mem::take(&mut model.metadata_props) {
        match props.iter_mut().find(|q| q.key == p.key) {
            Some(existing) => existing.value = p.value,
            None => props.push(p),
        }
    }
    model.metadata_props = props;
}

/// A quantized graph with what it says about its nodes.
#[derive(Clone, Debug)]
pub struct Quantized {
    /// The quantized model.
    pub model: ModelProto,
    /// Original nodes now computing in integers (or folded into a neighbour's range).
    pub quantized_nodes: Vec<String>,
    /// Original nodes left in float, each with the reason.
    pub float_nodes: Vec<(String, String)>,
    /// Other remarks (folded activations, enlarged weight scales, ...).
    pub notes: Vec<(String, String)>,
}

/// Static quantization (QDQ) of a float model with calibrated `ranges` (see [`calibrate::MinMax`]).
pub fn quantize_static(
    model: &ModelProto,
    ranges: &Ranges,
    options: &QuantizeOptions,
) -> Result<Quantized, QuantizeError> {
    let cfg = options.config();
    let mut prepared = model.clone();
    prepare(&mut prepared);
    let (quantized, notes) = qdq::quantize(prepared, ranges, &cfg)?;
    Ok(report(model, quantized, notes, &cfg, Method::Ptq))
}

/// Dynamic quantization of a float model.
pub fn quantize_dynamic(model: &ModelProto, options: &QuantizeOptions) -> Result<Quantized, QuantizeError> {
    let cfg = options.config();
    let mut prepared = model.clone();
    prepare(&mut prepared);
    let (quantized, notes) = dynamic::quantize(prepared, &cfg)?;
    Ok(report(model, quantized, notes, &cfg, Method::Dq))
}

fn node_label(node: &NodeProto, index: usize) -> String {
    if node.name.is_empty() { format!("{} #{index}", node.op_type) } else { node.name.clone() }
}

/// Which original nodes compute quantized and which stay float, and why.
fn report(
    original: &ModelProto,
    quantized: ModelProto,
    notes: Vec<(String, String)>,
    cfg: &Config,
    method: Method,
) -> Quantized {
    let empty = GraphProto::default();
    let before = original.graph.as_ref().unwrap_or(&empty);
    let after = quantized.graph.as_ref().unwrap_or(&empty);
    let producers: HashMap<&str, &str> =
        after.node.iter().flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n.op_type.as_str()))).collect();
    let present: HashMap<&str, &NodeProto> =
        after.node.iter().filter(|n| !n.name.is_empty()).map(|n| (n.name.as_str(), n)).collect();
    let initializers: HashSet<&str> = after.initializer.iter().map(|t| t.name.as_str()).collect();
    let types = infer::infer_types(before);
    let mut quantized_nodes = Vec::new();
    let mut float_nodes = Vec::new();
    for (index, node) in before.node.iter().enumerate() {
        let label = node_label(node, index);
        if node.op_type == "Constant" {
            continue;
        }
        let float_inputs = node
            .input
            .iter()
            .any(|i| !i.is_empty() && matches!(types.elem_type(i), tensor::dtype::FLOAT | tensor::dtype::FLOAT16));
        if !float_inputs {
            continue;
        }
        let is_quantized = match (method, present.get(node.name.as_str())) {
            // Replaced (ConvInteger, MatMulInteger) or folded away (Relu, Clip).
            (_, None) if !node.name.is_empty() => true,
            (Method::Ptq, Some(now)) => now.input.iter().filter(|i| !i.is_empty()).all(|i| {
                producers.get(i.as_str()).is_some_and(|op| *op == "DequantizeLinear")
                    || (!initializers.contains(i.as_str())
                        && !producers.contains_key(i.as_str())
                        && !matches!(types.elem_type(i), tensor::dtype::FLOAT | tensor::dtype::FLOAT16))
                    || (initializers.contains(i.as_str())
                        && !matches!(types.elem_type(i), tensor::dtype::FLOAT | tensor::dtype::FLOAT16))
            }),
            (Method::Dq, Some(now)) => now.input.first().is_some_and(|i| i.ends_with("_quantized")),
            _ => false,
        };
        if is_quantized {
            quantized_nodes.push(label);
            continue;
        }
        let reason = if cfg.exclude.contains(&node.name) {
            "excluded (--exclude)".to_string()
        } else if !cfg.op_types.contains(&node.op_type) {
            let defaults = if method == Method::Ptq { STATIC_OP_TYPES } else { DYNAMIC_OP_TYPES };
            if defaults.contains(&node.op_type.as_str()) {
                format!("{} is not among the quantized op types (--op-types)", node.op_type)
            } else {
                format!("ONNX Runtime's {} quantizer has no rule for {}", method.name(), node.op_type)
            }
        } else if let Some((_, note)) = notes.iter().find(|(n, _)| *n == node.name) {
            note.clone()
        } else if method == Method::Dq {
            format!("{} is quantized dynamically only with float input and constant weights", node.op_type)
        } else {
            "its input is not quantized (ORT quantizes this op only after a quantized producer)".to_string()
        };
        float_nodes.push((label, reason));
    }
    Quantized { model: quantized, quantized_nodes, float_nodes, notes }
}
