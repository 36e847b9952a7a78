//! Exit heads as ONNX nodes: which cut tensors a head can read (and how it pools them), the base model with those
//! tensors as extra outputs (to compute training features with ONNX Runtime), and the base model with trained heads
//! attached, ready for [`super::cuts::split`] to cut into an early-exit chain.
//!
//! Pure graph rewriting: the weights come from the caller, nothing runs here.

use std::collections::BTreeSet;
use std::path::Path;

use super::ModelError;
use super::cuts::CutAnalysis;
use super::graph::{DataFlow, value_info};
use super::onnx::{Dim, format_shape};
use super::proto::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};

/// ONNX `DataType` FLOAT.
const FLOAT: i32 = 1;
/// ONNX `AttributeType` INT.
const ATTRIBUTE_INT: i32 = 2;

/// How a head turns a cut tensor into one feature vector per sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// `[N, C, spatial...]`: global average pooling over the spatial dimensions, then flatten to `[N, C]`.
    GlobalAverage,
    /// `[N, F]`: the features as they are.
    Identity,
}

/// A cut tensor a head can read.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadSite {
    /// The tensor.
    pub tensor: String,
    /// Its shape.
    pub shape: Vec<Dim>,
    /// How it is pooled.
    pub pooling: Pooling,
    /// Features per sample after pooling (the channel count).
    pub features: usize,
    /// Share of the model's multiply-accumulates before it.
    pub mac_share: f64,
}

/// The weights of one trained head, standardization already folded in: `logits = W2 · relu(W1 · x + b1) + b2`
/// for a hidden layer, `logits = W1 · x + b1` without (row-major `[out, in]` matrices, as Gemm with `transB = 1`).
#[derive(Clone, Debug, PartialEq)]
pub struct HeadWeights {
    /// First layer `[out1, features]`.
    pub w1: Vec<f32>,
    /// First bias `[out1]`.
    pub b1: Vec<f32>,
    /// Second layer `[classes, hidden]` when the head has a hidden layer.
    pub second: Option<(Vec<f32>, Vec<f32>)>,
}

/// Checks that every tensor in `at` is a cut point of `analysis` a head can pool, in depth order.
pub fn head_sites(
    flow: &DataFlow<'_>,
    analysis: &CutAnalysis,
    at: &[String],
    path: &Path,
) -> Result<Vec<HeadSite>, ModelError> {
    let invalid = |reason: String| ModelError::Invalid { path: path.to_path_buf(), reason };
    if at.is_empty() {
        return Err(invalid("no exit position was given; name cut tensors with --at (see `exits candidates`)".into()));
    }
    let mut sites: Vec<(usize, HeadSite)> = Vec::with_capacity(at.len());
    for tensor in at {
        let Some(index) = analysis.cuts.iter().position(|c| c.tensor == *tensor) else {
            let known = flow.producer.contains_key(tensor);
            let near: Vec<&str> = analysis.cuts.iter().map(|c| c.tensor.as_str()).collect();
            let what = if known {
                format!(
                    "tensor {tensor:?} is not a cut point: other tensors than it cross from before it to after it \
                     (it lies inside a block, e.g. beside a residual or parallel branch), so an exit there could not \
                     carry a single tensor on"
                )
            } else {
                format!("the model has no tensor {tensor:?}")
            };
            return Err(invalid(format!(
                "{what}. Pick one of the {} cut points listed by `edgescope exits candidates`{}",
                near.len(),
                if near.is_empty() { String::new() } else { format!(" (e.g. {})", shorten(&near)) }
            )));
        };
        let cut = &analysis.cuts[index];
        if sites.iter().any(|(i, _)| *i == index) {
            return Err(invalid(format!("tensor {tensor:?} is named twice in --at")));
        }
        let elem_type = flow.tensor_type(tensor).map_or(0, |t| t.elem_type);
        let shape = cut.shape.clone();
        let reason = |why: &str| {
            invalid(format!(
                "cut tensor {tensor:?} ({}, element type {}) cannot feed an exit head: {why}. A head reads float \
                 tensors laid out [N, C, spatial...] (pooled over the spatial dimensions) or [N, features]; pick \
                 another cut point, or run ONNX shape inference on the model if the shape is unknown",
                shape.as_deref().map_or_else(|| "shape unknown".into(), format_shape),
                elem_type_name(elem_type)
            ))
        };
        if elem_type != FLOAT {
            return Err(reason("it is not float32"));
        }
        let Some(dims) = shape.clone() else { return Err(reason("its shape is unknown")) };
        let pooling = match dims.len() {
            2 => Pooling::Identity,
            n if n >= 3 => Pooling::GlobalAverage,
            _ => return Err(reason("it has no channel dimension")),
        };
        let features = match dims[1].fixed().and_then(|v| usize::try_from(v).ok()) {
            Some(f) if f > 0 => f,
            _ => return Err(reason("its channel / feature dimension (axis 1) is not a fixed size")),
        };
        if dims[0].fixed().is_some_and(|v| v != 1) {
            // A fixed size other than 1 on axis 0 means axis 0 is not the batch.
            return Err(reason("its first dimension is a fixed size other than 1, so it is not the batch"));
        }
        if pooling == Pooling::GlobalAverage && dims[2..].iter().any(|d| d.fixed() == Some(0)) {
            return Err(reason("a spatial dimension is empty"));
        }
        sites.push((
            index,
            HeadSite { tensor: tensor.clone(), shape: dims, pooling, features, mac_share: cut.mac_share },
        ));
    }
    sites.sort_by_key(|(i, _)| *i);
    Ok(sites.into_iter().map(|(_, s)| s).collect())
}

fn shorten(names: &[&str]) -> String {
    let shown: Vec<String> = names.iter().take(4).map(|n| format!("{n:?}")).collect();
    if names.len() > 4 { format!("{}, ...", shown.join(", ")) } else { shown.join(", ") }
}

fn elem_type_name(elem_type: i32) -> &'static str {
    match elem_type {
        0 => "unknown",
        1 => "float32",
        2 => "uint8",
        3 => "int8",
        6 => "int32",
        7 => "int64",
        10 => "float16",
        11 => "float64",
        16 => "bfloat16",
        _ => "other",
    }
}

/// The model with `tensors` as its only graph outputs (typed) and only the nodes and initializers they need, for
/// reading features with ONNX Runtime: nothing after the deepest of them runs.
pub fn with_feature_outputs(model: &ModelProto, flow: &DataFlow<'_>, tensors: &[&str]) -> ModelProto {
    let needed = flow.ancestors(tensors.iter().copied());
    let (initializers, statics) = flow.static_closure(&needed);
    let mut model = model.clone();
    if let Some(graph) = model.graph.as_mut() {
        let mut index = 0;
        graph.node.retain(|_| {
            let keep = needed[index] || statics[index];
            index += 1;
            keep
        });
        graph.initializer.retain(|t| initializers.contains(&t.name));
        graph.input.retain(|i| i.name == flow.image || initializers.contains(&i.name));
        graph.output = tensors
            .iter()
            .map(|tensor| value_info(tensor, &flow.tensor_type(tensor).cloned().unwrap_or_default()))
            .collect();
    }
    model
}

/// The default-domain opset a model imports.
pub fn default_opset(model: &ModelProto) -> Option<i64> {
    model
        .opset_import
        .iter()
        .filter(|o| o.domain.as_deref().is_none_or(|d| d.is_empty() || d == "ai.onnx"))
        .map(|o| o.version)
        .max()
}

fn float_tensor(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
    TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: FLOAT,
        name: name.into(),
        raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    }
}

fn int_attribute(name: &str, value: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: ATTRIBUTE_INT, i: Some(value), ..Default::default() }
}

fn node(op: &str, name: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: name.into(),
        op_type: op.into(),
        attribute,
        ..Default::default()
    }
}

/// A name not yet used in `taken`, `wanted` itself when free.
fn fresh(taken: &mut BTreeSet<String>, wanted: &str) -> String {
    let mut name = wanted.to_string();
    let mut k = 1;
    while taken.contains(&name) {
        name = format!("{wanted}_{k}");
        k += 1;
    }
    taken.insert(name.clone());
    name
}

/// Appends one head per site to the model (after every existing node, so the file stays topologically sorted) and
/// makes the graph's outputs the exits in depth order followed by the final output. Returns the model and the exit
/// output names.
pub fn attach_heads(
    model: &ModelProto,
    sites: &[HeadSite],
    heads: &[HeadWeights],
    classes: usize,
    final_output: &str,
) -> Result<(ModelProto, Vec<String>), String> {
    let mut model = model.clone();
    let graph: &mut GraphProto = model.graph.as_mut().ok_or("the model holds no graph")?;
    let mut taken: BTreeSet<String> = graph.node.iter().flat_map(|n| n.output.iter().cloned()).collect();
    taken.extend(graph.node.iter().map(|n| n.name.clone()));
    taken.extend(graph.initializer.iter().map(|t| t.name.clone()));
    taken.extend(graph.input.iter().map(|i| i.name.clone()));
    let mut exits = Vec::with_capacity(sites.len());
    for (k, (site, head)) in sites.iter().zip(heads).enumerate() {
        let prefix = format!("exit{}", k + 1);
        let mut features = site.tensor.clone();
        if site.pooling == Pooling::GlobalAverage {
            let pooled = fresh(&mut taken, &format!("/{prefix}/GlobalAveragePool_output_0"));
            let name = fresh(&mut taken, &format!("/{prefix}/GlobalAveragePool"));
            graph.node.push(node("GlobalAveragePool", &name, &[&features], &pooled, vec![]));
            let flat = fresh(&mut taken, &format!("/{prefix}/Flatten_output_0"));
            let name = fresh(&mut taken, &format!("/{prefix}/Flatten"));
            graph.node.push(node("Flatten", &name, &[&pooled], &flat, vec![int_attribute("axis", 1)]));
            features = flat;
        }
        let out1 = head.b1.len();
        if head.w1.len() != out1 * site.features {
            return Err(format!("head {} has {} weights for {out1} x {} ", k + 1, head.w1.len(), site.features));
        }
        let w1 = fresh(&mut taken, &format!("{prefix}.fc1.weight"));
        let b1 = fresh(&mut taken, &format!("{prefix}.fc1.bias"));
        graph.initializer.push(float_tensor(&w1, &[out1, site.features], &head.w1));
        graph.initializer.push(float_tensor(&b1, &[out1], &head.b1));
        let gemm_attributes = || vec![int_attribute("transB", 1)];
        let logits = fresh(&mut taken, &format!("{prefix}_logits"));
        match &head.second {
            None => {
                let name = fresh(&mut taken, &format!("/{prefix}/fc1/Gemm"));
                graph.node.push(node("Gemm", &name, &[&features, &w1, &b1], &logits, gemm_attributes()));
            }
            Some((w2_values, b2_values)) => {
                let hidden = fresh(&mut taken, &format!("/{prefix}/fc1/Gemm_output_0"));
                let name = fresh(&mut taken, &format!("/{prefix}/fc1/Gemm"));
                graph.node.push(node("Gemm", &name, &[&features, &w1, &b1], &hidden, gemm_attributes()));
                let activated = fresh(&mut taken, &format!("/{prefix}/Relu_output_0"));
                let name = fresh(&mut taken, &format!("/{prefix}/Relu"));
                graph.node.push(node("Relu", &name, &[&hidden], &activated, vec![]));
                let w2 = fresh(&mut taken, &format!("{prefix}.fc2.weight"));
                let b2 = fresh(&mut taken, &format!("{prefix}.fc2.bias"));
                graph.initializer.push(float_tensor(&w2, &[classes, out1], w2_values));
                graph.initializer.push(float_tensor(&b2, &[classes], b2_values));
                let name = fresh(&mut taken, &format!("/{prefix}/fc2/Gemm"));
                graph.node.push(node("Gemm", &name, &[&activated, &w2, &b2], &logits, gemm_attributes()));
            }
        }
        let batch = site.shape.first().cloned().unwrap_or(Dim::Symbolic("N".into()));
        let tensor_type =
            super::graph::TensorType { elem_type: FLOAT, shape: Some(vec![batch, Dim::Fixed(classes as i64)]) };
        graph.output.retain(|o| o.name != logits);
        exits.push((logits.clone(), value_info(&logits, &tensor_type)));
    }
    let final_info = graph
        .output
        .iter()
        .find(|o| o.name == final_output)
        .cloned()
        .ok_or_else(|| format!("the model has no output {final_output:?}"))?;
    let mut outputs: Vec<_> = exits.iter().map(|(_, v)| v.clone()).collect();
    outputs.push(final_info);
    graph.output = outputs;
    Ok((model, exits.into_iter().map(|(name, _)| name).collect()))
}
