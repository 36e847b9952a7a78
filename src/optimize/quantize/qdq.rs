//! Static quantization in QDQ format: a port of ORT's `QDQQuantizer` (`qdq_quantizer.py`, `base_quantizer.py`,
//! `operators/*.py`) with the same order of decisions, so the graph it writes — node order, initializer order,
//! names — is the one ORT writes.
//!
//! 1. Every node of a quantized op type *marks* tensors: activations (inputs and outputs, Q→DQ pairs), weights
//!    (stored quantized, with one DequantizeLinear; per channel where the op allows), biases (int32 with scale
//!    `s_in * s_w`), and outputs that share their input's parameters (Reshape, Flatten, MaxPool, ...). A Relu or
//!    Clip whose input is quantized is removed and its producer writes its output, whose calibrated range (never
//!    below 0, never above the Clip's max) then clips for it.
//! 2. Scales and zero points come from the calibrated ranges; weights are quantized; Q/DQ nodes are added
//!    tensor by tensor in marking order; biases last; unused initializers are dropped; nodes are sorted.

use std::collections::{HashMap, HashSet};

use indexmap::IndexMap;

use super::arith::{self, QuantType, ScaleZp};
use super::edit;
use super::tensor::{self, Attr, dtype, float_attribute, int_attribute, make_node};
use super::{Config, QuantizeError, Ranges};
use crate::model::proto::{GraphProto, ModelProto, NodeProto, TensorProto};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Activation,
    Weight,
}

#[derive(Clone, Debug)]
struct TensorInfo {
    kind: Kind,
    /// `(input, node)` whose parameters this tensor shares.
    provider: Option<(String, String)>,
    axis: Option<usize>,
}

#[derive(Clone, Debug)]
struct BiasInfo {
    input_name: String,
    weight_name: String,
    beta: f32,
}

/// Scale(s) and zero point(s): one each per tensor (`axis` none), or one per channel along `axis`.
#[derive(Clone, Debug)]
pub(super) struct QParams {
    pub scale: Vec<f32>,
    pub zero_point: Vec<i32>,
    pub qtype: QuantType,
    pub axis: Option<usize>,
}

#[derive(Clone, Debug)]
struct QValue {
    scale_name: String,
    zp_name: String,
}

struct Quantizer<'c> {
    graph: GraphProto,
    cfg: &'c Config,
    opset: i64,
    /// Element types of `value_info`, outputs and inputs (ORT's `value_infos`).
    value_types: HashMap<String, i32>,
    /// Initializer names and ranks when the quantizer started (ORT's `self.initializers`).
    initial_ranks: HashMap<String, usize>,
    tensors_to_quantize: IndexMap<String, TensorInfo>,
    bias_to_quantize: IndexMap<String, BiasInfo>,
    nodes_to_remove: Vec<usize>,
    quantization_params: HashMap<String, QParams>,
    initializer_quant_params: HashMap<String, QParams>,
    quantized_value_map: HashMap<String, QValue>,
    notes: Vec<(String, String)>,
}

fn is_float(t: i32) -> bool {
    t == dtype::FLOAT || t == dtype::FLOAT16
}

impl<'c> Quantizer<'c> {
    fn initializer(&self, name: &str) -> Option<&TensorProto> {
        edit::initializer(&self.graph, name)
    }

    fn should_quantize_node(&self, node: &NodeProto) -> bool {
        self.cfg.should_quantize_node(node)
    }

    fn is_tensor_quantizable(&self, name: &str) -> bool {
        if let Some(t) = self.initializer(name) {
            return is_float(t.data_type);
        }
        self.value_types.get(name).is_some_and(|&t| is_float(t))
    }

    fn mark(&mut self, name: &str, kind: Kind) {
        if self.is_tensor_quantizable(name) && !self.tensors_to_quantize.contains_key(name) {
            self.tensors_to_quantize.insert(name.to_string(), TensorInfo { kind, provider: None, axis: None });
        }
    }

    fn quantize_activation_tensor(&mut self, name: &str) {
        self.mark(name, Kind::Activation);
    }

    fn quantize_weight_tensor(&mut self, name: &str) {
        self.mark(name, Kind::Weight);
    }

    fn quantize_output_same_as_input(&mut self, output: &str, input: &str, node_name: &str) {
        if self.is_tensor_quantizable(output) {
            self.tensors_to_quantize.insert(
                output.to_string(),
                TensorInfo {
                    kind: Kind::Activation,
                    provider: Some((input.to_string(), node_name.to_string())),
                    axis: None,
                },
            );
        }
    }

    fn quantize_weight_tensor_per_channel(&mut self, name: &str, axis: usize) {
        if self.initializer(name).is_some_and(|t| is_float(t.data_type)) {
            self.tensors_to_quantize
                .insert(name.to_string(), TensorInfo { kind: Kind::Weight, provider: None, axis: Some(axis) });
        }
    }

    fn is_tensor_quantized(&self, name: &str) -> bool {
        self.tensors_to_quantize.contains_key(name) || self.bias_to_quantize.contains_key(name)
    }

    fn is_tensor_per_channel(&self, name: &str, default_axis: i64, op_type: Option<&str>) -> Option<usize> {
        let rank = *self.initial_ranks.get(name)?;
        if !self.cfg.per_channel {
            return None;
        }
        let axis = op_type.and_then(|op| self.cfg.per_channel_axis.get(op).copied()).unwrap_or(default_axis);
        let rank = i64::try_from(rank).ok()?;
        let axis = if axis < 0 { axis + rank } else { axis };
        (0..rank).contains(&axis).then_some(axis as usize)
    }

    fn quantize_weight_maybe_per_channel(&mut self, name: &str, default_axis: i64, op_type: Option<&str>) {
        match self.is_tensor_per_channel(name, default_axis, op_type) {
            Some(axis) => self.quantize_weight_tensor_per_channel(name, axis),
            None => self.quantize_weight_tensor(name),
        }
    }

    /// `quantize_bias_tensor`: a bias read by a second node is duplicated so each has its own scale.
    fn quantize_bias_tensor(&mut self, node_name: &str, bias: &str, input: &str, weight: &str, beta: f32) {
        let Some(init) = self.initializer(bias).cloned() else {
            self.notes.push((bias.into(), "the bias is not an initializer; kept float".into()));
            return;
        };
        if !is_float(init.data_type) {
            return;
        }
        let mut actual = bias.to_string();
        if self.bias_to_quantize.contains_key(bias) {
            let suffix = largest_initializer_suffix(&self.graph, bias) + 1;
            let mut copy = init;
            copy.name = format!("{bias}{suffix}");
            actual = copy.name.clone();
            edit::add_initializer(&mut self.graph, copy);
            let names: HashSet<String> = [node_name.to_string()].into();
            edit::replace_input_of_nodes(&mut self.graph, bias, &actual, &names);
        }
        self.bias_to_quantize.insert(actual, BiasInfo { input_name: input.into(), weight_name: weight.into(), beta });
    }

    fn try_replacing_upstream_output(&mut self, upstream: &str, output: &str) -> bool {
        if self.quantization_params.contains_key(output)
            && self.quantization_params.contains_key(upstream)
            && edit::consumer_count(&self.graph, upstream) == 1
            && !edit::is_graph_output(&self.graph, upstream)
            && !edit::is_graph_input(&self.graph, upstream)
        {
            edit::replace_output_of_all_nodes(&mut self.graph, upstream, output);
            self.tensors_to_quantize.shift_remove(upstream);
            return true;
        }
        false
    }

    /// The op quantizers (`operators/*.py`, `CreateQDQQuantizer`).
    fn quantize_node(&mut self, index: usize) {
        let node = self.graph.node[index].clone();
        let op = node.op_type.as_str();
        let disable_output = self.cfg.keep_output_float.contains(op);
        let input = |i: usize| node.input.get(i).cloned().unwrap_or_default();
        let output0 = node.output.first().cloned().unwrap_or_default();
        match op {
            "Conv" | "ConvTranspose" => {
                self.quantize_activation_tensor(&input(0));
                if !disable_output {
                    self.quantize_activation_tensor(&output0);
                }
                self.quantize_weight_maybe_per_channel(&input(1), if op == "Conv" { 0 } else { 1 }, None);
                if node.input.len() == 3 {
                    self.quantize_bias_tensor(&node.name, &input(2), &input(0), &input(1), 1.0);
                }
            }
            "Gemm" => {
                self.quantize_activation_tensor(&input(0));
                if !disable_output {
                    self.quantize_activation_tensor(&output0);
                }
                let trans_b = int_attribute(&node, "transB").unwrap_or(0) > 0;
                self.quantize_weight_maybe_per_channel(&input(1), if trans_b { 0 } else { 1 }, None);
                if node.input.len() == 3 {
                    if self.initializer(&input(2)).is_some() {
                        let beta = float_attribute(&node, "beta").unwrap_or(1.0);
                        self.quantize_bias_tensor(&node.name, &input(2), &input(0), &input(1), beta);
                        // set_default_beta
                        if let Some(a) = self.graph.node[index].attribute.iter_mut().find(|a| a.name == "beta") {
                            a.f = Some(1.0);
                        }
                    } else {
                        self.notes.push((node.name.clone(), "its bias is not constant; kept float".into()));
                    }
                }
            }
            "Clip" | "Relu" => {
                let x = input(0);
                if !self.is_tensor_quantized(&x) {
                    return;
                }
                if !self.cfg.activation_symmetric
                    && !self.cfg.keep_removable_activations
                    && self.try_replacing_upstream_output(&x, &output0)
                {
                    self.nodes_to_remove.push(index);
                } else {
                    self.quantize_activation_tensor(&x);
                }
                if !disable_output {
                    self.quantize_activation_tensor(&output0);
                }
            }
            "Reshape" | "Transpose" | "Squeeze" | "Unsqueeze" | "Flatten" | "AveragePool" | "Slice" | "TopK"
            | "Resize" | "MaxPool" => {
                if (op == "Resize" && self.opset < 11) || (op == "MaxPool" && self.opset < 12) {
                    return;
                }
                let x = input(0);
                if self.is_tensor_quantized(&x) && !disable_output {
                    self.quantize_output_same_as_input(&output0, &x, &node.name);
                }
            }
            "Pad" => {
                for name in node.input.iter().filter(|n| !n.is_empty()) {
                    self.quantize_activation_tensor(name);
                }
                if !disable_output {
                    if self.pad_output_shares_input(&node) {
                        self.quantize_output_same_as_input(&output0, &input(0), &node.name);
                    } else {
                        self.quantize_activation_tensor(&output0);
                    }
                }
            }
            "MatMul" => {
                let mut names: Vec<String> = node.input.clone();
                if !disable_output {
                    names.extend(node.output.iter().cloned());
                }
                for name in names {
                    if self.initializer(&name).is_some() {
                        self.quantize_weight_maybe_per_channel(&name, 1, Some("MatMul"));
                    } else {
                        self.quantize_activation_tensor(&name);
                    }
                }
            }
            "Split" => {
                let x = input(0);
                if !self.is_tensor_quantized(&x) {
                    self.quantize_activation_tensor(&x);
                }
                if !disable_output {
                    for output in &node.output {
                        self.quantize_output_same_as_input(output, &x, &node.name);
                    }
                }
            }
            "Gather" | "GatherElements" => {
                let x = input(0);
                if self.initializer(&x).is_some_and(|t| is_float(t.data_type)) {
                    self.quantize_activation_tensor(&x);
                    self.quantize_output_same_as_input(&output0, &x, &node.name);
                } else if self.is_tensor_quantized(&x) {
                    self.quantize_output_same_as_input(&output0, &x, &node.name);
                }
            }
            "Where" => {
                if self.is_tensor_quantized(&input(1)) && self.is_tensor_quantized(&input(2)) && !disable_output {
                    for output in &node.output {
                        self.quantize_activation_tensor(output);
                    }
                }
            }
            "InstanceNormalization" | "LayerNormalization" | "BatchNormalization" => {
                self.quantize_activation_tensor(&input(0));
                let scale = input(1);
                let is_init = self.initializer(&scale).is_some();
                match self.is_tensor_per_channel(&scale, 1, Some(op)) {
                    Some(axis) => self.quantize_weight_tensor_per_channel(&scale, axis),
                    None if is_init => self.quantize_weight_tensor(&scale),
                    None => self.quantize_activation_tensor(&scale),
                }
                if node.input.len() > 2 && !input(2).is_empty() {
                    self.quantize_bias_tensor(&node.name, &input(2), &input(0), &scale, 1.0);
                }
                if !disable_output {
                    for output in &node.output {
                        self.quantize_activation_tensor(output);
                    }
                }
            }
            _ => {
                let mut names: Vec<String> = node.input.clone();
                if !disable_output {
                    names.extend(node.output.iter().cloned());
                }
                for name in names {
                    self.quantize_activation_tensor(&name);
                }
            }
        }
    }

    /// `QDQPad._should_quantize_output_same_as_input`.
    fn pad_output_shares_input(&self, node: &NodeProto) -> bool {
        let mode = tensor::attribute(node, "mode").and_then(|a| a.s.clone()).unwrap_or_else(|| b"constant".to_vec());
        if matches!(mode.as_slice(), b"reflect" | b"edge" | b"wrap") {
            return true;
        }
        if mode != b"constant" {
            return false;
        }
        // get_tensor_type looks at value_info, inputs and outputs only.
        let Some(&elem) = self.value_types.get(&node.input[0]) else { return false };
        if !is_float(elem) {
            return false;
        }
        if self.opset < 11 {
            return float_attribute(node, "value").unwrap_or(0.0) == 0.0;
        }
        match node.input.get(2).filter(|n| !n.is_empty()) {
            None => true,
            Some(name) => constant_value(&self.graph, name).is_some_and(|v| v.len() == 1 && v[0] == 0.0),
        }
    }

    fn activation_params(&self, name: &str, (rmin, rmax): (f32, f32)) -> Result<QParams, QuantizeError> {
        let qtype = self.cfg.activation_type;
        let symmetric = self.cfg.activation_symmetric;
        let p = arith::compute_scale_zp(rmin, rmax, qtype.qrange(false, symmetric), symmetric, self.cfg.min_real_range)
            .ok_or_else(|| {
                QuantizeError::Calibration(format!("tensor {name:?} has a non-finite range [{rmin}, {rmax}]"))
            })?;
        Ok(QParams { scale: vec![p.scale], zero_point: vec![p.zero_point], qtype, axis: None })
    }

    /// `_calc_initializer_quant_params`.
    fn calc_initializer_quant_params(&mut self) -> Result<(), QuantizeError> {
        let mut out = HashMap::new();
        for (name, info) in &self.tensors_to_quantize {
            let Some(init) = self.initializer(name) else { continue };
            let data = tensor::f32_values(init).ok_or_else(|| unsupported_initializer(init))?;
            let is_weight = info.kind == Kind::Weight;
            let qtype = if is_weight { self.cfg.weight_type } else { self.cfg.activation_type };
            let symmetric = info.axis.is_some()
                || if is_weight { self.cfg.weight_symmetric(qtype) } else { self.cfg.activation_symmetric };
            let reduce = self.cfg.reduce_range;
            let compute = |values: &[f32]| {
                arith::data_quant_params(values, qtype, symmetric, reduce, self.cfg.min_real_range)
                    .ok_or_else(|| QuantizeError::Model(format!("initializer {name:?} holds NaN or infinite values")))
            };
            let params = match info.axis {
                None => {
                    let p = compute(&data)?;
                    QParams { scale: vec![p.scale], zero_point: vec![p.zero_point], qtype, axis: None }
                }
                Some(axis) => {
                    let channels = per_channel_slices(&init.dims, axis, &data);
                    let mut scale = Vec::with_capacity(channels.len());
                    let mut zero_point = Vec::with_capacity(channels.len());
                    for values in &channels {
                        let p = compute(values)?;
                        scale.push(p.scale);
                        zero_point.push(p.zero_point);
                    }
                    QParams { scale, zero_point, qtype, axis: Some(axis) }
                }
            };
            out.insert(name.clone(), params);
        }
        self.initializer_quant_params = out;
        Ok(())
    }

    /// `_adjust_weight_quant_params_for_bias_tensors`.
    fn adjust_weights_for_biases(&mut self) {
        if self.cfg.disable_weight_adjust_for_bias {
            return;
        }
        for (bias_name, info) in &self.bias_to_quantize {
            let (Some(input), true, Some(weight)) = (
                self.quantization_params.get(&info.input_name),
                self.tensors_to_quantize.contains_key(&info.input_name),
                self.initializer_quant_params.get(&info.weight_name),
            ) else {
                continue;
            };
            if weight.qtype != QuantType::I8 || weight.zero_point.iter().any(|&z| z != 0) || weight.scale.is_empty() {
                continue;
            }
            let Some(bias) = self.initializer(bias_name).and_then(tensor::f32_values) else { continue };
            let input_scale = input.scale[0];
            let mut scales = weight.scale.clone();
            let mut changed = false;
            if weight.axis.is_none() {
                let smallest = arith::smallest_bias_scale_per_tensor(&bias);
                if let Some(s) = arith::adjusted_weight_scale(smallest, input_scale, scales[0]) {
                    scales[0] = s;
                    changed = true;
                }
            } else {
                for (i, scale) in scales.iter_mut().enumerate() {
                    let Some(&b) = bias.get(i) else { break };
                    let smallest = arith::smallest_bias_scale_per_channel(b);
                    if let Some(s) = arith::adjusted_weight_scale(smallest, input_scale, *scale) {
                        *scale = s;
                        changed = true;
                    }
                }
            }
            if changed {
                self.notes.push((
                    info.weight_name.clone(),
                    format!("weight scale enlarged so the int32 bias {bias_name:?} does not overflow (as ORT does)"),
                ));
                if let Some(w) = self.initializer_quant_params.get_mut(&info.weight_name) {
                    w.scale = scales;
                }
            }
        }
    }

    /// `_make_scale_zp_initializers`: zero point, then scale, named `{name}_zero_point` / `{name}_scale`.
    fn make_scale_zp_initializers(&mut self, name: &str, params: &QParams) -> QValue {
        let dims = if params.axis.is_some() { vec![params.scale.len() as i64] } else { vec![] };
        let zp_name = format!("{name}_zero_point");
        let scale_name = format!("{name}_scale");
        edit::add_initializer(
            &mut self.graph,
            tensor::make_int32_field_tensor(&zp_name, params.qtype.onnx(), dims.clone(), params.zero_point.clone()),
        );
        edit::add_initializer(&mut self.graph, tensor::make_f32_tensor(&scale_name, dims, params.scale.clone()));
        QValue { scale_name, zp_name }
    }

    fn add_qdq_for_initializer(&mut self, name: &str) -> Result<(), QuantizeError> {
        if self.quantized_value_map.contains_key(name) {
            return Ok(());
        }
        let params = self
            .initializer_quant_params
            .get(name)
            .cloned()
            .ok_or_else(|| QuantizeError::Model(format!("no quantization parameters for initializer {name:?}")))?;
        let init = self.initializer(name).cloned().ok_or_else(|| QuantizeError::Model(format!("{name:?} vanished")))?;
        let qv = self.make_scale_zp_initializers(name, &params);
        let dq_output = format!("{name}_DequantizeLinear_Output");
        edit::replace_input_of_all_nodes(&mut self.graph, name, &dq_output);
        let quantized = quantize_initializer(&init, &params)?;
        let q_name = quantized.name.clone();
        edit::add_initializer(&mut self.graph, quantized);
        let mut attrs = Vec::new();
        if let Some(axis) = params.axis {
            attrs.push(("axis".to_string(), Attr::Int(axis as i64)));
        }
        self.graph.node.push(make_node(
            "DequantizeLinear",
            vec![q_name, qv.scale_name.clone(), qv.zp_name.clone()],
            vec![dq_output],
            &format!("{name}_DequantizeLinear"),
            attrs,
        ));
        self.quantized_value_map.insert(name.to_string(), qv);
        Ok(())
    }

    /// `_add_qdq_pair_for_activation`: producer → Q → DQ → consumers (a graph output keeps its name on the DQ).
    fn add_qdq_pair_for_activation(&mut self, tensor: &str, qv: QValue) {
        let (q_input, dq_output) = if edit::is_graph_output(&self.graph, tensor) {
            let q_input = format!("{tensor}_QuantizeLinear_Input");
            edit::replace_output_of_all_nodes(&mut self.graph, tensor, &q_input);
            (q_input, tensor.to_string())
        } else {
            let dq_output = format!("{tensor}_DequantizeLinear_Output");
            edit::replace_input_of_all_nodes(&mut self.graph, tensor, &dq_output);
            (tensor.to_string(), dq_output)
        };
        let q_output = format!("{tensor}_QuantizeLinear_Output");
        self.graph.node.push(make_node(
            "QuantizeLinear",
            vec![q_input, qv.scale_name.clone(), qv.zp_name.clone()],
            vec![q_output.clone()],
            &format!("{tensor}_QuantizeLinear"),
            vec![],
        ));
        self.graph.node.push(make_node(
            "DequantizeLinear",
            vec![q_output, qv.scale_name.clone(), qv.zp_name.clone()],
            vec![dq_output],
            &format!("{tensor}_DequantizeLinear"),
            vec![],
        ));
        self.quantized_value_map.insert(tensor.to_string(), qv);
    }

    fn quantize_normal_tensors(&mut self) -> Result<(), QuantizeError> {
        let snapshot: Vec<(String, TensorInfo)> =
            self.tensors_to_quantize.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (name, info) in snapshot {
            if self.quantized_value_map.contains_key(&name) || info.provider.is_some() {
                continue;
            }
            if self.initializer(&name).is_some() {
                self.add_qdq_for_initializer(&name)?;
            } else {
                let params = self.quantization_params.get(&name).cloned().ok_or_else(|| {
                    QuantizeError::Calibration(format!(
                        "no calibrated range for tensor {name:?}; calibration must cover every input and output of \
                         the quantized operators"
                    ))
                })?;
                let qv = self.make_scale_zp_initializers(&name, &params);
                self.add_qdq_pair_for_activation(&name, qv);
            }
            self.tensors_to_quantize.shift_remove(&name);
        }
        Ok(())
    }

    fn quantize_sharing_param_tensors(&mut self) -> Result<(), QuantizeError> {
        while !self.tensors_to_quantize.is_empty() {
            let snapshot: Vec<(String, TensorInfo)> =
                self.tensors_to_quantize.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let mut progressed = false;
            for (name, info) in snapshot {
                let Some((provider, _)) = &info.provider else { continue };
                let Some(qv) = self.quantized_value_map.get(provider).cloned() else { continue };
                self.tensors_to_quantize.shift_remove(&name);
                if self.initializer(&name).is_some() {
                    return Err(QuantizeError::Model(format!(
                        "{name:?} is an initializer; sharing quantization parameters is not supported for weights"
                    )));
                }
                self.add_qdq_pair_for_activation(&name, qv);
                progressed = true;
            }
            if !progressed {
                let (name, provider) = self
                    .tensors_to_quantize
                    .first()
                    .map(|(k, v)| (k.clone(), v.provider.clone().map(|p| p.0).unwrap_or_default()))
                    .unwrap_or_default();
                return Err(QuantizeError::Model(format!(
                    "tensor {name:?} should share the quantization parameters of {provider:?}, which is not quantized \
                     (ONNX Runtime's quantizer loops forever on this graph); exclude the node that produces it"
                )));
            }
        }
        Ok(())
    }

    fn quantize_bias_tensors(&mut self) -> Result<(), QuantizeError> {
        let biases: Vec<(String, BiasInfo)> =
            self.bias_to_quantize.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (bias_name, info) in biases {
            if self.quantized_value_map.contains_key(&bias_name) {
                continue;
            }
            let scale_of = |me: &Self, tensor: &str, what: &str| -> Result<Vec<f32>, QuantizeError> {
                me.quantized_value_map
                    .get(tensor)
                    .and_then(|qv| me.initializer(&qv.scale_name))
                    .and_then(tensor::f32_values)
                    .ok_or_else(|| {
                        QuantizeError::Model(format!(
                            "unable to get a quantization scale for {what} {tensor:?} when quantizing bias {bias_name:?} to int32"
                        ))
                    })
            };
            let weight_scale = scale_of(self, &info.weight_name, "weight input")?;
            let input_scale = scale_of(self, &info.input_name, "input")?;
            let init = self
                .initializer(&bias_name)
                .cloned()
                .ok_or_else(|| QuantizeError::Model(format!("bias {bias_name:?} is no longer an initializer")))?;
            let bias = tensor::f32_values(&init).ok_or_else(|| unsupported_initializer(&init))?;
            // bias_scale = input_scale * weight_scale * beta, in f32 with NumPy broadcasting.
            let product: Vec<f32> = broadcast_mul(&input_scale, &weight_scale)
                .ok_or_else(|| QuantizeError::Model(format!("bias {bias_name:?}: scales of different lengths")))?
                .into_iter()
                .map(|s| s * info.beta)
                .collect();
            let scale_for = |i: usize| if product.len() == 1 { product[0] } else { product[i] };
            if product.len() != 1 && product.len() != bias.len() {
                return Err(QuantizeError::Model(format!(
                    "bias {bias_name:?} has {} values but its weight has {} channels",
                    bias.len(),
                    product.len()
                )));
            }
            if bias.iter().any(|b| !b.is_finite()) {
                return Err(QuantizeError::Model(format!("bias {bias_name:?} holds NaN or infinite values")));
            }
            let quantized: Vec<i32> =
                bias.iter().enumerate().map(|(i, &b)| arith::quantize_bias_value(b, scale_for(i))).collect();
            let q_name = format!("{bias_name}_quantized");
            let scale_name = format!("{q_name}_scale");
            let zp_name = format!("{q_name}_zero_point");
            self.graph.initializer.push(tensor::raw_i32_tensor(&q_name, init.dims.clone(), &quantized));
            self.graph.initializer.push(tensor::raw_f32_tensor(&scale_name, vec![product.len() as i64], &product));
            let per_channel = product.len() > 1;
            self.graph.initializer.push(if per_channel {
                tensor::raw_i32_tensor(&zp_name, vec![product.len() as i64], &vec![0; product.len()])
            } else {
                tensor::make_int32_field_tensor(&zp_name, dtype::INT32, vec![], vec![0])
            });
            edit::remove_initializer(&mut self.graph, &bias_name);
            let attrs = if per_channel { vec![("axis".to_string(), Attr::Int(0))] } else { vec![] };
            self.graph.node.push(make_node(
                "DequantizeLinear",
                vec![q_name, scale_name.clone(), zp_name.clone()],
                vec![bias_name.clone()],
                &format!("{bias_name}_DequantizeLinear"),
                attrs,
            ));
            self.quantized_value_map.insert(bias_name.clone(), QValue { scale_name, zp_name });
        }
        Ok(())
    }
}

fn unsupported_initializer(init: &TensorProto) -> QuantizeError {
    QuantizeError::Model(format!(
        "initializer {:?} is not float32 (type {}); edgescope quantizes float32 models",
        init.name, init.data_type
    ))
}

/// NumPy `a * b` for a scalar or 1-D `a` and `b`.
fn broadcast_mul(a: &[f32], b: &[f32]) -> Option<Vec<f32>> {
    match (a.len(), b.len()) {
        (1, _) => Some(b.iter().map(|&y| a[0] * y).collect()),
        (_, 1) => Some(a.iter().map(|&x| x * b[0]).collect()),
        (n, m) if n == m => Some(a.iter().zip(b).map(|(&x, &y)| x * y).collect()),
        _ => None,
    }
}

/// `get_largest_initializer_name_suffix`: the largest integer `k` such that `{prefix}{k}` names an initializer.
fn largest_initializer_suffix(graph: &GraphProto, prefix: &str) -> i64 {
    graph
        .initializer
        .iter()
        .filter_map(|t| t.name.strip_prefix(prefix))
        .filter_map(|rest| rest.trim().parse::<i64>().ok())
        .fold(-1, i64::max)
}

/// The value of a Constant node's output or of an initializer (`get_constant_value`).
fn constant_value(graph: &GraphProto, name: &str) -> Option<Vec<f32>> {
    for node in &graph.node {
        if node.op_type == "Constant" && node.output.first().is_some_and(|o| o == name) {
            return tensor::attribute(node, "value").and_then(|a| a.t.as_ref()).and_then(tensor::f32_values);
        }
    }
    edit::initializer(graph, name).and_then(tensor::f32_values)
}

/// The values of each channel along `axis` (in any order: only their range is used).
pub(super) fn per_channel_slices(dims: &[i64], axis: usize, data: &[f32]) -> Vec<Vec<f32>> {
    let channels = dims.get(axis).copied().unwrap_or(1).max(0) as usize;
    let inner: usize = dims[axis + 1..].iter().map(|&d| d.max(0) as usize).product();
    let mut out = vec![Vec::with_capacity(data.len() / channels.max(1)); channels];
    if channels == 0 || inner == 0 {
        return out;
    }
    for (i, &v) in data.iter().enumerate() {
        out[(i / inner) % channels].push(v);
    }
    out
}

/// `quantize_onnx_initializer`: the weight in its layout, each element with its channel's scale and zero point;
/// stored as raw bytes under `{name}_quantized`.
pub(super) fn quantize_initializer(init: &TensorProto, params: &QParams) -> Result<TensorProto, QuantizeError> {
    let data = tensor::f32_values(init).ok_or_else(|| unsupported_initializer(init))?;
    let mut bytes = Vec::with_capacity(data.len());
    match params.axis {
        None => {
            let p = ScaleZp { scale: params.scale[0], zero_point: params.zero_point[0] };
            arith::quantize_to_bytes(&data, p, params.qtype, &mut bytes);
        }
        Some(axis) => {
            let channels = params.scale.len().max(1);
            let inner: usize = init.dims[axis + 1..].iter().map(|&d| d.max(0) as usize).product::<usize>().max(1);
            for (i, &x) in data.iter().enumerate() {
                let c = (i / inner) % channels;
                let p = ScaleZp { scale: params.scale[c], zero_point: params.zero_point[c] };
                arith::quantize_to_bytes(std::slice::from_ref(&x), p, params.qtype, &mut bytes);
            }
        }
    }
    Ok(tensor::raw_tensor(&format!("{}_quantized", init.name), params.qtype.onnx(), init.dims.clone(), bytes))
}

/// Quantizes `model` (already carrying inferred `value_info`) statically in QDQ format with the calibrated
/// `ranges`. Returns the model and notes on what stayed float and why.
pub(super) fn quantize(
    mut model: ModelProto,
    ranges: &Ranges,
    cfg: &Config,
) -> Result<(ModelProto, Vec<(String, String)>), QuantizeError> {
    let opset = super::default_opset(&model);
    let graph = model.graph.take().ok_or_else(|| QuantizeError::Model("the model holds no graph".into()))?;
    let mut value_types = HashMap::new();
    for v in graph.value_info.iter().chain(&graph.output).chain(&graph.input) {
        if let Some(t) = v.r#type.as_ref().and_then(|t| t.tensor_type.as_ref()) {
            value_types.insert(v.name.clone(), t.elem_type);
        }
    }
    let initial_ranks = graph.initializer.iter().map(|t| (t.name.clone(), t.dims.len())).collect();
    let mut q = Quantizer {
        graph,
        cfg,
        opset,
        value_types,
        initial_ranks,
        tensors_to_quantize: IndexMap::new(),
        bias_to_quantize: IndexMap::new(),
        nodes_to_remove: Vec::new(),
        quantization_params: HashMap::new(),
        initializer_quant_params: HashMap::new(),
        quantized_value_map: HashMap::new(),
        notes: Vec::new(),
    };
    // adjust_tensor_ranges, then calc_graph_quant_params.
    let mut ranges = ranges.clone();
    for node in &q.graph.node {
        if !q.should_quantize_node(node) {
            continue;
        }
        match node.op_type.as_str() {
            "Clip" | "Relu" => {
                let (Some(x), Some(y)) = (node.input.first(), node.output.first()) else { continue };
                if edit::consumer_count(&q.graph, x) != 1 {
                    continue;
                }
                if let (true, Some(&r)) = (ranges.contains_key(x), ranges.get(y)) {
                    ranges.insert(x.clone(), r);
                }
            }
            "Softmax" => {
                if let Some(y) = node.output.first() {
                    ranges.insert(y.clone(), (0.0, 1.0));
                }
            }
            _ => {}
        }
    }
    for (name, &range) in &ranges {
        let params = q.activation_params(name, range)?;
        q.quantization_params.insert(name.clone(), params);
    }
    for index in 0..q.graph.node.len() {
        let node = &q.graph.node[index];
        if q.should_quantize_node(node) {
            q.quantize_node(index);
        }
    }
    q.calc_initializer_quant_params()?;
    q.adjust_weights_for_biases();
    q.quantize_normal_tensors()?;
    q.quantize_sharing_param_tensors()?;
    q.quantize_bias_tensors()?;
    let mut remove = q.nodes_to_remove.clone();
    remove.sort_unstable();
    remove.dedup();
    let removed: Vec<NodeProto> = remove.iter().rev().map(|&i| q.graph.node.remove(i)).collect();
    edit::clean_initializers(&mut q.graph);
    let mut notes = q.notes;
    notes.extend(
        removed
            .iter()
            .rev()
            .map(|n| (n.name.clone(), format!("{} folded into the range of its producer's output", n.op_type))),
    );
    model.graph = Some(q.graph);
    model.producer_name = "onnx.quantize".into();
    model.producer_version = "0.1.0".into();
    let graph = model.graph.as_mut().ok_or_else(|| QuantizeError::Model("no graph".into()))?;
    edit::topological_sort(graph).map_err(QuantizeError::Model)?;
    Ok((model, notes))
}
