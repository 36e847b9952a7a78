//! Dynamic quantization: a port of ORT's `ONNXQuantizer` in `IntegerOps` mode (`quantize_dynamic`,
//! `onnx_quantizer.py`, `operators/conv.py`, `operators/matmul.py`, `onnx_model.py`).
//!
//! Gemm nodes (alpha = beta = 1, no transposed A) first become MatMul + Add, their B transposed in place; the model
//! is then saved and shape-inferred again as ORT does (which also marks large raw initializers with an explicit
//! default data location). Each Conv becomes DynamicQuantizeLinear (activation, uint8, per batch) + ConvInteger +
//! Cast + Mul by the product of the scales + Add of the reshaped float bias; each MatMul with a constant B becomes
//! DynamicQuantizeLinear + MatMulInteger + Cast + Mul. Weights are quantized per tensor (MatMul per column with
//! `--per-channel`), asymmetric for uint8.

use std::collections::{HashMap, HashSet};

use super::arith::{self, QuantType};
use super::edit;
use super::infer;
use super::tensor::{self, Attr, attribute_value, dtype, float_attribute, int_attribute, make_node};
use super::{Config, QuantizeError};
use crate::model::proto::{GraphProto, ModelProto, NodeProto, TensorProto};

#[derive(Clone, Debug)]
struct QValue {
    q_name: String,
    scale_name: String,
    zp_name: String,
}

struct Quantizer<'c> {
    graph: GraphProto,
    cfg: &'c Config,
    value_types: HashMap<String, i32>,
    new_nodes: Vec<NodeProto>,
    quantized_value_map: HashMap<String, QValue>,
    generated_value_names: HashSet<String>,
    notes: Vec<(String, String)>,
}

fn is_float(t: i32) -> bool {
    t == dtype::FLOAT || t == dtype::FLOAT16
}

/// `ONNXModel.replace_gemm_with_matmul` on the top graph.
fn replace_gemm_with_matmul(graph: &mut GraphProto) {
    let nodes = std::mem::take(&mut graph.node);
    let mut new_nodes = Vec::with_capacity(nodes.len());
    for node in nodes {
        if node.op_type != "Gemm" {
            new_nodes.push(node);
            continue;
        }
        let alpha = float_attribute(&node, "alpha").unwrap_or(1.0);
        let beta = float_attribute(&node, "beta").unwrap_or(1.0);
        let trans_a = int_attribute(&node, "transA").unwrap_or(0);
        let trans_b = int_attribute(&node, "transB").unwrap_or(0);
        if !(alpha == 1.0 && beta == 1.0 && trans_a == 0) || node.input.len() < 2 {
            new_nodes.push(node);
            continue;
        }
        let mut input_b = node.input[1].clone();
        if trans_b == 1 {
            let position = graph.initializer.iter().position(|t| t.name == input_b);
            match position.and_then(|p| transpose_2d(&graph.initializer[p]).map(|t| (p, t))) {
                Some((p, transposed)) => {
                    graph.initializer.remove(p);
                    if let Some(i) = graph.input.iter().position(|v| v.name == input_b) {
                        graph.input.remove(i);
                    }
                    graph.initializer.push(transposed);
                }
                None => {
                    let transposed = format!("{input_b}_Transposed");
                    let name = if node.name.is_empty() { String::new() } else { format!("{}_Transpose", node.name) };
                    new_nodes.push(make_node(
                        "Transpose",
                        vec![node.input[1].clone()],
                        vec![transposed.clone()],
                        &name,
                        vec![],
                    ));
                    input_b = transposed;
                }
            }
        }
        let with_bias = node.input.len() > 2;
        let matmul_output = format!("{}{}", node.output[0], if with_bias { "_MatMul" } else { "" });
        let name = |suffix: &str| if node.name.is_empty() { String::new() } else { format!("{}{suffix}", node.name) };
        new_nodes.push(make_node(
            "MatMul",
            vec![node.input[0].clone(), input_b],
            vec![matmul_output.clone()],
            &name("_MatMul"),
            vec![],
        ));
        if with_bias {
            new_nodes.push(make_node(
                "Add",
                vec![matmul_output, node.input[2].clone()],
                node.output.clone(),
                &name("_Add"),
                vec![],
            ));
        }
    }
    graph.node = new_nodes;
}

/// `numpy_helper.from_array(B.T)` for a 2-D float initializer.
fn transpose_2d(t: &TensorProto) -> Option<TensorProto> {
    if t.dims.len() != 2 {
        return None;
    }
    let values = tensor::f32_values(t)?;
    let (rows, cols) = (t.dims[0] as usize, t.dims[1] as usize);
    let mut out = Vec::with_capacity(values.len());
    for c in 0..cols {
        for r in 0..rows {
            out.push(values[r * cols + c]);
        }
    }
    Some(tensor::raw_f32_tensor(&t.name, vec![t.dims[1], t.dims[0]], &out))
}

/// What `onnx.save_model(..., save_as_external_data=True)` followed by `onnx.load` leaves behind: initializers
/// with at least 1024 bytes of `sys.getsizeof(raw_data)` (33 bytes of object header) get an explicit
/// `data_location = DEFAULT`.
fn mark_external_round_trip(graph: &mut GraphProto) {
    for t in &mut graph.initializer {
        if t.raw_data.as_ref().is_some_and(|r| r.len() + 33 >= 1024) {
            t.data_location = Some(0);
        }
    }
}

impl<'c> Quantizer<'c> {
    fn initializer(&self, name: &str) -> Option<&TensorProto> {
        edit::initializer(&self.graph, name)
    }

    fn is_float_tensor(&self, name: &str) -> bool {
        if let Some(t) = self.initializer(name) {
            return is_float(t.data_type);
        }
        self.value_types.get(name).is_some_and(|&t| is_float(t))
    }

    fn tensor_type(&self, name: &str) -> Result<i32, QuantizeError> {
        if let Some(t) = self.initializer(name) {
            return Ok(t.data_type);
        }
        match self.value_types.get(name) {
            Some(&t) if t != 0 => Ok(t),
            _ => Err(QuantizeError::Model(format!(
                "the type of tensor {name:?} is unknown (shape inference could not tell); ORT's quantizer stops here too"
            ))),
        }
    }

    /// `quantize_initializer` (`quantize_initializer_impl`): scale, zero point, then the quantized weight.
    fn quantize_initializer(
        &mut self,
        name: &str,
        qtype: QuantType,
        reduce_range: bool,
    ) -> Result<QValue, QuantizeError> {
        if let Some(qv) = self.quantized_value_map.get(name) {
            return Ok(qv.clone());
        }
        let init = self
            .initializer(name)
            .cloned()
            .ok_or_else(|| QuantizeError::Model(format!("{name:?} is not an initializer")))?;
        let data = tensor::f32_values(&init).ok_or_else(|| {
            QuantizeError::Model(format!("initializer {name:?} is not float32; edgescope quantizes float32 models"))
        })?;
        let symmetric = if qtype == self.cfg.weight_type {
            self.cfg.weight_symmetric(qtype)
        } else {
            self.cfg.activation_symmetric
        };
        let p = arith::data_quant_params(
            &data,
            qtype,
            symmetric,
            self.cfg.reduce_range && reduce_range,
            self.cfg.min_real_range,
        )
        .ok_or_else(|| QuantizeError::Model(format!("initializer {name:?} holds NaN or infinite values")))?;
        let qv = QValue {
            q_name: format!("{name}_quantized"),
            scale_name: format!("{name}_scale"),
            zp_name: format!("{name}_zero_point"),
        };
        self.graph.initializer.push(tensor::make_f32_tensor(&qv.scale_name, vec![], vec![p.scale]));
        self.graph.initializer.push(tensor::make_int32_field_tensor(
            &qv.zp_name,
            qtype.onnx(),
            vec![],
            vec![p.zero_point],
        ));
        let mut bytes = Vec::with_capacity(data.len());
        arith::quantize_to_bytes(&data, p, qtype, &mut bytes);
        self.graph.initializer.push(tensor::raw_tensor(&qv.q_name, qtype.onnx(), init.dims.clone(), bytes));
        self.quantized_value_map.insert(name.to_string(), qv.clone());
        Ok(qv)
    }

    /// `quantize_weight_per_channel` (`quantize_weight_per_channel_impl`), for MatMul weights.
    fn quantize_weight_per_channel(
        &mut self,
        name: &str,
        axis: i64,
        reduce_range: bool,
    ) -> Result<QValue, QuantizeError> {
        if let Some(qv) = self.quantized_value_map.get(name) {
            return Ok(qv.clone());
        }
        let init = self
            .initializer(name)
            .cloned()
            .ok_or_else(|| QuantizeError::Model(format!("{name:?} is not an initializer")))?;
        let data = tensor::f32_values(&init).ok_or_else(|| {
            QuantizeError::Model(format!("initializer {name:?} is not float32; edgescope quantizes float32 models"))
        })?;
        let rank = init.dims.len() as i64;
        let axis = if axis < 0 { axis + rank } else { axis };
        if !(0..rank).contains(&axis) {
            return Err(QuantizeError::Model(format!("weight {name:?} has no axis {axis}")));
        }
        let axis = axis as usize;
        let qtype = self.cfg.weight_type;
        let symmetric = self.cfg.weight_symmetric(qtype);
        let reduce = self.cfg.reduce_range && reduce_range;
        let mut params = Vec::new();
        for values in super::qdq::per_channel_slices(&init.dims, axis, &data) {
            params.push(
                arith::data_quant_params(&values, qtype, symmetric, reduce, self.cfg.min_real_range).ok_or_else(
                    || QuantizeError::Model(format!("initializer {name:?} holds NaN or infinite values")),
                )?,
            );
        }
        let qv = QValue {
            q_name: format!("{name}_quantized"),
            scale_name: format!("{name}_scale"),
            zp_name: format!("{name}_zero_point"),
        };
        let dims = vec![params.len() as i64];
        self.graph.initializer.push(tensor::make_f32_tensor(
            &qv.scale_name,
            dims.clone(),
            params.iter().map(|p| p.scale).collect(),
        ));
        self.graph.initializer.push(tensor::make_int32_field_tensor(
            &qv.zp_name,
            qtype.onnx(),
            dims,
            params.iter().map(|p| p.zero_point).collect(),
        ));
        let qp = super::qdq::QParams {
            scale: params.iter().map(|p| p.scale).collect(),
            zero_point: params.iter().map(|p| p.zero_point).collect(),
            qtype,
            axis: Some(axis),
        };
        let quantized = super::qdq::quantize_initializer(&init, &qp)?;
        self.graph.initializer.push(quantized);
        self.quantized_value_map.insert(name.to_string(), qv.clone());
        Ok(qv)
    }

    /// `__quantize_inputs` for one input: `(quantized name, zero point name, scale name, new nodes)`.
    fn quantize_input(
        &mut self,
        node: &NodeProto,
        index: usize,
        as_weight: bool,
        reduce_range: bool,
        per_channel_axis: Option<i64>,
    ) -> Result<(QValue, Vec<NodeProto>), QuantizeError> {
        let name = node.input[index].clone();
        if let Some(qv) = self.quantized_value_map.get(&name) {
            return Ok((qv.clone(), vec![]));
        }
        if self.initializer(&name).is_some() {
            let qtype = if as_weight { self.cfg.weight_type } else { self.cfg.activation_type };
            let qv = match (self.cfg.per_channel, per_channel_axis) {
                (true, Some(axis)) => self.quantize_weight_per_channel(&name, axis, reduce_range)?,
                _ => self.quantize_initializer(&name, qtype, reduce_range)?,
            };
            return Ok((qv, vec![]));
        }
        let node_name = format!("{name}_QuantizeLinear");
        if let Some(existing) = self.graph.node.iter().chain(&self.new_nodes).find(|n| n.name == node_name) {
            let qv = QValue {
                q_name: existing.output[0].clone(),
                scale_name: existing.output.get(1).cloned().unwrap_or_default(),
                zp_name: existing.output.get(2).cloned().unwrap_or_default(),
            };
            return Ok((qv, vec![]));
        }
        // Dynamic mode, uint8 activations, opset > 10: one fused DynamicQuantizeLinear.
        let qv = QValue {
            q_name: format!("{name}_quantized"),
            scale_name: format!("{name}_scale"),
            zp_name: format!("{name}_zero_point"),
        };
        let dql = make_node(
            "DynamicQuantizeLinear",
            vec![name.clone()],
            vec![qv.q_name.clone(), qv.scale_name.clone(), qv.zp_name.clone()],
            &node_name,
            vec![],
        );
        self.quantized_value_map.insert(name, qv.clone());
        Ok((qv, vec![dql]))
    }

    fn copied_attributes(node: &NodeProto) -> Vec<(String, Attr)> {
        node.attribute.iter().filter_map(|a| attribute_value(a).map(|v| (a.name.clone(), v))).collect()
    }

    /// `ConvInteger.quantize`.
    fn conv_integer(&mut self, node: &NodeProto) -> Result<Vec<NodeProto>, QuantizeError> {
        let (x, mut nodes) = self.quantize_input(node, 0, false, false, None)?;
        let (w, more) = self.quantize_input(node, 1, true, self.cfg.reduce_range, None)?;
        nodes.extend(more);
        let output = node.output[0].clone();
        let conv_output = format!("{output}_output_quantized");
        let conv_name = if node.name.is_empty() { String::new() } else { format!("{}_quant", node.name) };
        nodes.push(make_node(
            "ConvInteger",
            vec![x.q_name.clone(), w.q_name.clone(), x.zp_name.clone(), w.zp_name.clone()],
            vec![conv_output.clone()],
            &conv_name,
            Self::copied_attributes(node),
        ));
        let onnx_type = self.tensor_type(&output)?;
        let cast_output = format!("{conv_output}_cast_output");
        nodes.push(make_node(
            "Cast",
            vec![conv_output.clone()],
            vec![cast_output.clone()],
            &format!("{conv_output}_cast"),
            vec![("to".into(), Attr::Int(i64::from(onnx_type)))],
        ));
        let scales_mul = if conv_name.is_empty() {
            format!("{}_{}_mul", x.scale_name, w.scale_name)
        } else {
            format!("{conv_name}_scales_mul")
        };
        let scales_output = match self.new_nodes.iter().find(|n| n.name == scales_mul) {
            Some(existing) => existing.output[0].clone(),
            None => {
                let out = format!("{scales_mul}:0");
                nodes.push(make_node(
                    "Mul",
                    vec![x.scale_name.clone(), w.scale_name.clone()],
                    vec![out.clone()],
                    &scales_mul,
                    vec![],
                ));
                out
            }
        };
        let has_bias = node.input.len() == 3;
        let scaled = if has_bias { format!("{output}quant_scaled_output") } else { output.clone() };
        let output_mul = if conv_name.is_empty() { String::new() } else { format!("{conv_name}_output_scale_mul") };
        nodes.push(make_node("Mul", vec![cast_output, scales_output], vec![scaled.clone()], &output_mul, vec![]));
        if has_bias {
            let weight = self
                .initializer(&node.input[1])
                .cloned()
                .ok_or_else(|| QuantizeError::Model(format!("expected {:?} to be an initializer", node.input[1])))?;
            let shape_name = format!("{output}_bias_reshape_shape");
            let reshape_output = format!("{output}_bias_reshape_output");
            let mut shape = vec![1i64; weight.dims.len()];
            if shape.len() > 1 {
                shape[1] = -1;
            }
            edit::add_initializer(
                &mut self.graph,
                tensor::make_int64_tensor(&shape_name, vec![shape.len() as i64], shape),
            );
            nodes.push(make_node(
                "Reshape",
                vec![node.input[2].clone(), shape_name],
                vec![reshape_output.clone()],
                "",
                vec![],
            ));
            nodes.push(make_node(
                "Add",
                vec![scaled, reshape_output],
                vec![output.clone()],
                &format!("{output}_bias_add"),
                vec![],
            ));
        }
        Ok(nodes)
    }

    /// `MatMulInteger.quantize`.
    fn matmul_integer(&mut self, node: &NodeProto) -> Result<Vec<NodeProto>, QuantizeError> {
        let (a, mut nodes) = self.quantize_input(node, 0, false, false, None)?;
        let (b, more) = self.quantize_input(node, 1, true, true, Some(-1))?;
        nodes.extend(more);
        let output = node.output[0].clone();
        let mm_output = format!("{output}_output_quantized");
        let mm_name = if node.name.is_empty() { String::new() } else { format!("{}_quant", node.name) };
        nodes.push(make_node(
            "MatMulInteger",
            vec![a.q_name.clone(), b.q_name.clone(), a.zp_name.clone(), b.zp_name.clone()],
            vec![mm_output.clone()],
            &mm_name,
            vec![],
        ));
        let cast_output = format!("{mm_output}_cast_output");
        let otype = self.tensor_type(&output)?;
        nodes.push(make_node(
            "Cast",
            vec![mm_output.clone()],
            vec![cast_output.clone()],
            &format!("{mm_output}_cast"),
            vec![("to".into(), Attr::Int(i64::from(otype)))],
        ));
        let scales_mul = if mm_name.is_empty() {
            format!("{}_{}_mul", a.scale_name, b.scale_name)
        } else {
            format!("{mm_name}_scales_mul")
        };
        let scales_output = match self.new_nodes.iter().find(|n| n.name == scales_mul) {
            Some(existing) => existing.output[0].clone(),
            None => {
                let out = format!("{scales_mul}:0");
                nodes.push(make_node(
                    "Mul",
                    vec![a.scale_name.clone(), b.scale_name.clone()],
                    vec![out.clone()],
                    &scales_mul,
                    vec![],
                ));
                out
            }
        };
        let output_mul = if mm_name.is_empty() { String::new() } else { format!("{mm_name}_output_scale_mul") };
        nodes.push(make_node("Mul", vec![cast_output, scales_output], vec![output], &output_mul, vec![]));
        Ok(nodes)
    }

    /// `Direct8BitOp.quantize` (Transpose): runs on the quantized input when there is one.
    fn direct_8bit(&mut self, node: &NodeProto) -> Vec<NodeProto> {
        let Some(input) = self.quantized_value_map.get(&node.input[0]).cloned() else { return vec![node.clone()] };
        let mut node = node.clone();
        let q_output = format!("{}_quantized", node.output[0]);
        self.quantized_value_map.insert(
            node.output[0].clone(),
            QValue { q_name: q_output.clone(), scale_name: input.scale_name.clone(), zp_name: input.zp_name.clone() },
        );
        node.input[0] = input.q_name;
        node.output[0] = q_output;
        vec![node]
    }

    /// `_dequantize_value`: a DequantizeLinear for a quantized value read in float (not for generated ones).
    fn dequantize_value(&self, name: &str) -> Option<NodeProto> {
        if self.generated_value_names.contains(name) {
            return None;
        }
        let qv = self.quantized_value_map.get(name)?;
        let dq_name = format!("{name}_DequantizeLinear");
        if self.graph.node.iter().chain(&self.new_nodes).any(|n| n.name == dq_name) {
            return None;
        }
        Some(make_node(
            "DequantizeLinear",
            vec![qv.q_name.clone(), qv.scale_name.clone(), qv.zp_name.clone()],
            vec![name.to_string()],
            &dq_name,
            vec![],
        ))
    }

    fn keep_float(&mut self, node: &NodeProto) -> Vec<NodeProto> {
        let mut nodes: Vec<NodeProto> = node.input.iter().filter_map(|i| self.dequantize_value(i)).collect();
        nodes.push(node.clone());
        nodes
    }

    fn quantize_node(&mut self, node: &NodeProto) -> Result<Vec<NodeProto>, QuantizeError> {
        let wanted = self.cfg.should_quantize_node(node);
        let first_float = node.input.first().is_some_and(|i| self.is_float_tensor(i));
        Ok(match node.op_type.as_str() {
            "Conv" if wanted && first_float => self.conv_integer(node)?,
            "MatMul" if wanted && node.input.len() == 2 => {
                let float_input = self.is_float_tensor(&node.input[1]) || self.is_float_tensor(&node.input[0]);
                let const_b = self.initializer(&node.input[1]).is_some();
                if float_input && (const_b || !self.cfg.matmul_const_b_only) {
                    self.matmul_integer(node)?
                } else {
                    self.notes.push((node.name.clone(), "MatMul with a non-constant B stays float (as in ORT)".into()));
                    self.keep_float(node)
                }
            }
            "Transpose" if wanted && first_float => self.direct_8bit(node),
            "Gather" | "Attention" | "LSTM" | "EmbedLayerNormalization" if wanted => {
                self.notes.push((
                    node.name.clone(),
                    format!("{} is not quantized dynamically by edgescope (ORT would); kept float", node.op_type),
                ));
                self.keep_float(node)
            }
            _ => self.keep_float(node),
        })
    }
}

/// `quantize_dynamic` on a model already carrying inferred `value_info`.
pub(super) fn quantize(
    mut model: ModelProto,
    cfg: &Config,
) -> Result<(ModelProto, Vec<(String, String)>), QuantizeError> {
    let mut graph = model.graph.take().ok_or_else(|| QuantizeError::Model("the model holds no graph".into()))?;
    replace_gemm_with_matmul(&mut graph);
    mark_external_round_trip(&mut graph);
    infer::add_value_info(&mut graph);
    let mut value_types = HashMap::new();
    for v in graph.value_info.iter().chain(&graph.output).chain(&graph.input) {
        if let Some(t) = v.r#type.as_ref().and_then(|t| t.tensor_type.as_ref()) {
            value_types.insert(v.name.clone(), t.elem_type);
        }
    }
    let initializer_names: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let generated_value_names: HashSet<String> =
        graph.input.iter().filter(|i| !initializer_names.contains(i.name.as_str())).map(|i| i.name.clone()).collect();
    let mut q = Quantizer {
        graph,
        cfg,
        value_types,
        new_nodes: Vec::new(),
        quantized_value_map: HashMap::new(),
        generated_value_names,
        notes: Vec::new(),
    };
    let nodes = q.graph.node.clone();
    for node in &nodes {
        let added = q.quantize_node(node)?;
        for n in &added {
            q.generated_value_names.extend(n.output.iter().cloned());
        }
        q.new_nodes.extend(added);
    }
    let outputs: Vec<String> = q.graph.output.iter().map(|o| o.name.clone()).collect();
    for output in outputs {
        if let Some(dq) = q.dequantize_value(&output) {
            q.new_nodes.push(dq);
        }
    }
    q.graph.node = std::mem::take(&mut q.new_nodes);
    let unknown = edit::clean_initializers(&mut q.graph);
    if !unknown.is_empty() {
        return Err(QuantizeError::Model(format!("invalid model with unknown initializers/tensors: {unknown:?}")));
    }
    let notes = q.notes;
    model.graph = Some(q.graph);
    model.producer_name = "onnx.quantize".into();
    model.producer_version = "0.1.0".into();
    let graph = model.graph.as_mut().ok_or_else(|| QuantizeError::Model("no graph".into()))?;
    edit::topological_sort(graph).map_err(QuantizeError::Model)?;
    Ok((model, notes))
}
