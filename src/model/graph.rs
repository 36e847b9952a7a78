//! The data-flow graph of an ONNX model and what it tells about where the model can be cut: tensor types and
//! shapes for common CNN operators, multiply-accumulates and parameters per node, and dependency sets.
//!
//! Pure: works on a decoded [`GraphProto`], never runs anything. Nodes that do not depend on the image input
//! (`Constant`, weight `DequantizeLinear`, ...) are *static*: they behave like initializers and are copied into
//! whichever segment needs them.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::ModelError;
use super::onnx::Dim;
use super::proto::{AttributeProto, GraphProto, NodeProto, TensorProto, TypeProto, ValueInfoProto};

/// Element type and shape of a tensor, as far as they are known.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorType {
    /// ONNX `DataType` (0 when unknown).
    pub elem_type: i32,
    /// Shape; `None` when unknown.
    pub shape: Option<Vec<Dim>>,
}

/// A model's graph, indexed for dependency questions.
pub struct DataFlow<'g> {
    /// The graph.
    pub graph: &'g GraphProto,
    /// The file it came from (for messages).
    pub path: PathBuf,
    /// The image input (the one graph input that is not an initializer).
    pub image: String,
    /// Node indices in topological order.
    pub order: Vec<usize>,
    /// Position of each node in [`Self::order`].
    pub position: Vec<usize>,
    /// The node producing each tensor.
    pub producer: HashMap<String, usize>,
    /// Every tensor each node reads, subgraph captures included, omitted optional inputs left out.
    pub reads: Vec<Vec<String>>,
    /// Whether each node depends on the image input.
    pub dynamic: Vec<bool>,
    /// Initializer names.
    pub initializers: HashMap<String, usize>,
    /// Known types and shapes.
    pub types: HashMap<String, TensorType>,
}

fn attribute<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn int_attribute(node: &NodeProto, name: &str) -> Option<i64> {
    attribute(node, name).and_then(|a| a.i)
}

fn ints_attribute(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attribute(node, name).map(|a| a.ints.clone()).filter(|v| !v.is_empty())
}

/// Names a subgraph reads from outside itself (If / Loop / Scan bodies capture outer tensors by name).
fn captured_names(graph: &GraphProto, into: &mut BTreeSet<String>) {
    let mut local: BTreeSet<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
    local.extend(graph.initializer.iter().map(|t| t.name.as_str()));
    for node in &graph.node {
        local.extend(node.output.iter().map(String::as_str));
    }
    for node in &graph.node {
        for input in node.input.iter().filter(|i| !i.is_empty()) {
            if !local.contains(input.as_str()) {
                into.insert(input.clone());
            }
        }
        for attr in &node.attribute {
            let mut inner = BTreeSet::new();
            for g in attr.g.iter().map(|g| g.as_ref()).chain(attr.graphs.iter()) {
                captured_names(g, &mut inner);
            }
            into.extend(inner.into_iter().filter(|n| !local.contains(n.as_str())));
        }
    }
}

fn is_sparse_initializer(graph: &GraphProto, name: &str) -> bool {
    graph.sparse_initializer.iter().any(|s| s.values.as_ref().is_some_and(|v| v.name == name))
}

/// Every tensor a node reads, including what its subgraphs capture.
pub fn node_reads(node: &NodeProto) -> Vec<String> {
    let mut reads: Vec<String> = node.input.iter().filter(|i| !i.is_empty()).cloned().collect();
    let mut captured = BTreeSet::new();
    for attr in &node.attribute {
        for g in attr.g.iter().map(|g| g.as_ref()).chain(attr.graphs.iter()) {
            captured_names(g, &mut captured);
        }
    }
    for name in captured {
        if !reads.contains(&name) {
            reads.push(name);
        }
    }
    reads
}

/// The element type and shape a value info declares.
pub fn declared_type(value: &ValueInfoProto) -> Option<TensorType> {
    let tensor = value.r#type.as_ref()?.tensor_type.as_ref()?;
    let shape = tensor.shape.as_ref().map(|s| {
        s.dim
            .iter()
            .map(|d| match (&d.dim_value, &d.dim_param) {
                (Some(v), _) => Dim::Fixed(*v),
                (None, Some(p)) => Dim::Symbolic(p.clone()),
                (None, None) => Dim::Symbolic(String::new()),
            })
            .collect()
    });
    Some(TensorType { elem_type: tensor.elem_type, shape })
}

/// A value info for `name` of type `tensor_type`.
pub fn value_info(name: &str, tensor_type: &TensorType) -> ValueInfoProto {
    use super::proto::{Dimension, TensorShapeProto, TypeTensor};
    let shape = tensor_type.shape.as_ref().map(|dims| TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| match d {
                Dim::Fixed(v) => Dimension { dim_value: Some(*v), ..Default::default() },
                Dim::Symbolic(p) if p.is_empty() => Dimension::default(),
                Dim::Symbolic(p) => Dimension { dim_param: Some(p.clone()), ..Default::default() },
            })
            .collect(),
    });
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeTensor { elem_type: tensor_type.elem_type, shape }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Integer values of a constant tensor (int64 or int32), for Reshape targets.
fn tensor_ints(tensor: &TensorProto) -> Option<Vec<i64>> {
    match tensor.data_type {
        7 => {
            if let Some(raw) = &tensor.raw_data {
                Some(
                    raw.chunks_exact(8)
                        .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                        .collect(),
                )
            } else {
                Some(tensor.int64_data.clone())
            }
        }
        6 => {
            if let Some(raw) = &tensor.raw_data {
                Some(raw.chunks_exact(4).map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect())
            } else {
                Some(tensor.int32_data.iter().map(|&v| i64::from(v)).collect())
            }
        }
        _ => None,
    }
}

/// Product of dimensions: fixed when all are; the one symbolic dimension when it is the only one.
fn product(dims: &[Dim]) -> Dim {
    let mut fixed = 1i64;
    let mut symbolic: Vec<&Dim> = Vec::new();
    for d in dims {
        match d {
            Dim::Fixed(v) => fixed = fixed.saturating_mul(*v),
            s => symbolic.push(s),
        }
    }
    match symbolic.as_slice() {
        [] => Dim::Fixed(fixed),
        [one] if fixed == 1 => (*one).clone(),
        _ => Dim::Symbolic(String::new()),
    }
}

/// Elements per sample: fixed dimensions multiplied, symbolic ones (the batch) counted as 1.
pub fn elements_per_sample(shape: &[Dim]) -> u64 {
    shape.iter().map(|d| d.fixed().and_then(|v| u64::try_from(v).ok()).unwrap_or(1)).fold(1u64, u64::saturating_mul)
}

fn broadcast(a: &[Dim], b: &[Dim]) -> Vec<Dim> {
    let rank = a.len().max(b.len());
    (0..rank)
        .map(|i| {
            let x = if i + a.len() >= rank { a.get(i + a.len() - rank) } else { None };
            let y = if i + b.len() >= rank { b.get(i + b.len() - rank) } else { None };
            match (x, y) {
                (Some(Dim::Fixed(1)), Some(other)) | (Some(other), Some(Dim::Fixed(1))) => other.clone(),
                (Some(x), _) => x.clone(),
                (None, Some(y)) => y.clone(),
                (None, None) => Dim::Symbolic(String::new()),
            }
        })
        .collect()
}

/// Spatial output size of a convolution or pooling window.
fn window_output(node: &NodeProto, input: &[Dim], kernel: &[i64], ceil_mode: bool) -> Vec<Dim> {
    let spatial = kernel.len();
    let strides = ints_attribute(node, "strides").unwrap_or_else(|| vec![1; spatial]);
    let dilations = ints_attribute(node, "dilations").unwrap_or_else(|| vec![1; spatial]);
    let pads = ints_attribute(node, "pads").unwrap_or_else(|| vec![0; 2 * spatial]);
    let auto_pad = attribute(node, "auto_pad").and_then(|a| a.s.clone()).unwrap_or_default();
    let start = input.len().saturating_sub(spatial);
    (0..spatial)
        .map(|i| {
            let Some(size) = input.get(start + i).and_then(Dim::fixed) else { return Dim::Symbolic(String::new()) };
            let stride = strides.get(i).copied().unwrap_or(1).max(1);
            let dilation = dilations.get(i).copied().unwrap_or(1);
            let extent = dilation * (kernel[i] - 1) + 1;
            match auto_pad.as_slice() {
                b"SAME_UPPER" | b"SAME_LOWER" => Dim::Fixed((size + stride - 1) / stride),
                b"VALID" => Dim::Fixed((size - extent) / stride + 1),
                _ => {
                    let padded = size + pads.get(i).copied().unwrap_or(0) + pads.get(i + spatial).copied().unwrap_or(0);
                    let span = padded - extent;
                    let out = if ceil_mode { (span + stride - 1) / stride + 1 } else { span / stride + 1 };
                    Dim::Fixed(out)
                }
            }
        })
        .collect()
}

impl<'g> DataFlow<'g> {
    /// Indexes `graph` (read from `path`). Refuses graphs without exactly one image input or with a cycle.
    pub fn new(graph: &'g GraphProto, path: &Path) -> Result<Self, ModelError> {
        let invalid = |reason: String| ModelError::Invalid { path: path.to_path_buf(), reason };
        let initializers: HashMap<String, usize> =
            graph.initializer.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        let images: Vec<&ValueInfoProto> = graph
            .input
            .iter()
            .filter(|i| !initializers.contains_key(&i.name) && !is_sparse_initializer(graph, &i.name))
            .collect();
        let image = match images.as_slice() {
            [one] => one.name.clone(),
            other => {
                return Err(invalid(format!(
                    "it has {} inputs ({}); edgescope cuts models with exactly one image input",
                    other.len(),
                    other.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
                )));
            }
        };
        let mut producer = HashMap::new();
        for (index, node) in graph.node.iter().enumerate() {
            for output in node.output.iter().filter(|o| !o.is_empty()) {
                if producer.insert(output.clone(), index).is_some() {
                    return Err(invalid(format!(
                        "tensor {output:?} is produced by two nodes; the graph is not valid ONNX"
                    )));
                }
            }
        }
        let reads: Vec<Vec<String>> = graph.node.iter().map(node_reads).collect();
        // Kahn's algorithm, taking nodes in file order when several are ready, so the order is the file's when
        // the file is sorted.
        let count = graph.node.len();
        let mut pending = vec![0usize; count];
        let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); count];
        for (index, inputs) in reads.iter().enumerate() {
            for input in inputs {
                if let Some(&p) = producer.get(input) {
                    pending[index] += 1;
                    consumers[p].push(index);
                }
            }
        }
        let mut ready: BTreeSet<usize> = (0..count).filter(|&i| pending[i] == 0).collect();
        let mut order = Vec::with_capacity(count);
        while let Some(next) = ready.pop_first() {
            order.push(next);
            for &c in &consumers[next] {
                pending[c] -= 1;
                if pending[c] == 0 {
                    ready.insert(c);
                }
            }
        }
        if order.len() != count {
            return Err(invalid("its graph has a cycle; it is not valid ONNX".into()));
        }
        let mut position = vec![0; count];
        for (p, &n) in order.iter().enumerate() {
            position[n] = p;
        }
        let mut dynamic = vec![false; count];
        for &n in &order {
            dynamic[n] =
                reads[n].iter().any(|input| *input == image || producer.get(input).is_some_and(|&p| dynamic[p]));
        }
        let mut flow = Self {
            graph,
            path: path.to_path_buf(),
            image,
            order,
            position,
            producer,
            reads,
            dynamic,
            initializers,
            types: HashMap::new(),
        };
        flow.infer_types();
        Ok(flow)
    }

    /// Type of a tensor, if known.
    pub fn tensor_type(&self, name: &str) -> Option<&TensorType> {
        self.types.get(name)
    }

    fn shape_of(&self, name: &str) -> Option<Vec<Dim>> {
        self.types.get(name).and_then(|t| t.shape.clone())
    }

    fn constant_ints(&self, name: &str) -> Option<Vec<i64>> {
        if let Some(&i) = self.initializers.get(name) {
            return tensor_ints(&self.graph.initializer[i]);
        }
        let node = &self.graph.node[*self.producer.get(name)?];
        if node.op_type == "Constant" {
            return attribute(node, "value").and_then(|a| a.t.as_ref()).and_then(tensor_ints);
        }
        None
    }

    /// Declared types first (inputs, outputs, value_info, initializers), then inference in topological order.
    fn infer_types(&mut self) {
        let graph = self.graph;
        for value in graph.input.iter().chain(&graph.output).chain(&graph.value_info) {
            if let Some(t) = declared_type(value) {
                self.types.insert(value.name.clone(), t);
            }
        }
        for tensor in &graph.initializer {
            let shape = tensor.dims.iter().map(|&d| Dim::Fixed(d)).collect();
            self.types.insert(tensor.name.clone(), TensorType { elem_type: tensor.data_type, shape: Some(shape) });
        }
        let order = self.order.clone();
        for n in order {
            let node = &graph.node[n];
            let inferred = self.infer_node(node);
            for (output, t) in node.output.iter().zip(inferred) {
                let entry = self.types.entry(output.clone()).or_default();
                if entry.elem_type == 0 {
                    entry.elem_type = t.elem_type;
                }
                if entry.shape.is_none() {
                    entry.shape = t.shape;
                }
            }
        }
    }

    fn infer_node(&self, node: &NodeProto) -> Vec<TensorType> {
        let input = |i: usize| node.input.get(i).filter(|n| !n.is_empty());
        let input_type = |i: usize| input(i).and_then(|n| self.types.get(n)).cloned().unwrap_or_default();
        let shape = |i: usize| input(i).and_then(|n| self.shape_of(n));
        let first = input_type(0);
        let same = |shape: Option<Vec<Dim>>| TensorType { elem_type: first.elem_type, shape };
        let default_domain = node.domain.is_empty() || node.domain == "ai.onnx";
        let op = if default_domain { node.op_type.as_str() } else { "" };
        let result = match op {
            "Constant" => match attribute(node, "value").and_then(|a| a.t.as_ref()) {
                Some(t) => {
                    TensorType { elem_type: t.data_type, shape: Some(t.dims.iter().map(|&d| Dim::Fixed(d)).collect()) }
                }
                None => TensorType::default(),
            },
            "Conv" | "ConvInteger" | "QLinearConv" => {
                let (x, w) = if op == "QLinearConv" { (0, 3) } else { (0, 1) };
                match (shape(x), shape(w)) {
                    (Some(xs), Some(ws)) if xs.len() >= 3 && ws.len() == xs.len() => {
                        let kernel: Vec<i64> = ints_attribute(node, "kernel_shape")
                            .unwrap_or_else(|| ws[2..].iter().map(|d| d.fixed().unwrap_or(1)).collect());
                        let mut out = vec![xs[0].clone(), ws[0].clone()];
                        out.extend(window_output(node, &xs, &kernel, false));
                        let elem_type = match op {
                            "ConvInteger" => 6,
                            "QLinearConv" => input_type(7).elem_type,
                            _ => first.elem_type,
                        };
                        TensorType { elem_type, shape: Some(out) }
                    }
                    _ => same(None),
                }
            }
            "MaxPool" | "AveragePool" | "LpPool" => match (shape(0), ints_attribute(node, "kernel_shape")) {
                (Some(xs), Some(kernel)) if xs.len() == kernel.len() + 2 => {
                    let ceil = int_attribute(node, "ceil_mode").unwrap_or(0) != 0;
                    let mut out = xs[..2].to_vec();
                    out.extend(window_output(node, &xs, &kernel, ceil));
                    same(Some(out))
                }
                _ => same(None),
            },
            "GlobalAveragePool" | "GlobalMaxPool" | "GlobalLpPool" => {
                same(shape(0).map(|xs| {
                    xs.iter().enumerate().map(|(i, d)| if i < 2 { d.clone() } else { Dim::Fixed(1) }).collect()
                }))
            }
            "Relu"
            | "LeakyRelu"
            | "PRelu"
            | "Sigmoid"
            | "HardSigmoid"
            | "HardSwish"
            | "Tanh"
            | "Clip"
            | "Elu"
            | "Selu"
            | "Softplus"
            | "Mish"
            | "Gelu"
            | "Erf"
            | "Exp"
            | "Log"
            | "Sqrt"
            | "Neg"
            | "Abs"
            | "Softmax"
            | "LogSoftmax"
            | "Identity"
            | "Dropout"
            | "BatchNormalization"
            | "InstanceNormalization"
            | "LayerNormalization"
            | "LRN" => same(shape(0)),
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Sum" | "Mean" => {
                let mut out = shape(0);
                for i in 1..node.input.len() {
                    out = match (out, shape(i)) {
                        (Some(a), Some(b)) => Some(broadcast(&a, &b)),
                        _ => None,
                    };
                }
                same(out)
            }
            "Concat" => {
                let shapes: Option<Vec<Vec<Dim>>> = (0..node.input.len()).map(shape).collect();
                let out = shapes.and_then(|shapes| {
                    let first = shapes.first()?.clone();
                    let rank = i64::try_from(first.len()).ok()?;
                    let axis = int_attribute(node, "axis").unwrap_or(0);
                    let axis = usize::try_from(if axis < 0 { axis + rank } else { axis }).ok()?;
                    let mut out = first;
                    let along: Vec<Dim> = shapes.iter().map(|s| s.get(axis).cloned()).collect::<Option<_>>()?;
                    let total = along.iter().map(Dim::fixed).sum::<Option<i64>>();
                    *out.get_mut(axis)? = total.map_or(Dim::Symbolic(String::new()), Dim::Fixed);
                    Some(out)
                });
                same(out)
            }
            "Flatten" => same(shape(0).and_then(|xs| {
                let rank = i64::try_from(xs.len()).ok()?;
                let axis = int_attribute(node, "axis").unwrap_or(1);
                let axis = usize::try_from(if axis < 0 { axis + rank } else { axis }).ok()?.min(xs.len());
                Some(vec![product(&xs[..axis]), product(&xs[axis..])])
            })),
            "Reshape" => same(shape(0).zip(input(1).and_then(|n| self.constant_ints(n))).map(|(xs, target)| {
                let mut out: Vec<Dim> = target
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| if v == 0 { xs.get(i).cloned().unwrap_or(Dim::Fixed(0)) } else { Dim::Fixed(v) })
                    .collect();
                if let Some(hole) = out.iter().position(|d| *d == Dim::Fixed(-1)) {
                    let known: Vec<Dim> = out.iter().filter(|d| **d != Dim::Fixed(-1)).cloned().collect();
                    out[hole] = match (product(&xs), product(&known)) {
                        (Dim::Fixed(total), Dim::Fixed(part)) if part > 0 => Dim::Fixed(total / part),
                        (_, Dim::Fixed(part)) => {
                            // A symbolic batch: the hole is it when the fixed dimensions account for the rest.
                            let fixed_in: i64 = xs.iter().filter_map(Dim::fixed).product();
                            let symbolic: Vec<&Dim> = xs.iter().filter(|d| d.fixed().is_none()).collect();
                            match symbolic.as_slice() {
                                [one] if fixed_in == part => (*one).clone(),
                                _ => Dim::Symbolic(String::new()),
                            }
                        }
                        _ => Dim::Symbolic(String::new()),
                    };
                }
                out
            })),
            "Gemm" => match (shape(0), shape(1)) {
                (Some(a), Some(b)) if a.len() == 2 && b.len() == 2 => {
                    let m = if int_attribute(node, "transA").unwrap_or(0) != 0 { &a[1] } else { &a[0] };
                    let n = if int_attribute(node, "transB").unwrap_or(0) != 0 { &b[0] } else { &b[1] };
                    same(Some(vec![m.clone(), n.clone()]))
                }
                _ => same(None),
            },
            "MatMul" | "MatMulInteger" | "QLinearMatMul" => {
                let (a, b) = if op == "QLinearMatMul" { (0, 3) } else { (0, 1) };
                let out = match (shape(a), shape(b)) {
                    (Some(a), Some(b)) if a.len() >= 2 && b.len() >= 2 => {
                        let mut batch = broadcast(&a[..a.len() - 2], &b[..b.len() - 2]);
                        batch.push(a[a.len() - 2].clone());
                        batch.push(b[b.len() - 1].clone());
                        Some(batch)
                    }
                    (Some(a), Some(b)) if a.len() >= 2 && b.len() == 1 => Some(a[..a.len() - 1].to_vec()),
                    _ => None,
                };
                let elem_type = match op {
                    "MatMulInteger" => 6,
                    "QLinearMatMul" => input_type(7).elem_type,
                    _ => first.elem_type,
                };
                TensorType { elem_type, shape: out }
            }
            "QuantizeLinear" => TensorType {
                elem_type: input(2).and_then(|n| self.types.get(n)).map_or(2, |t| t.elem_type),
                shape: shape(0),
            },
            "DequantizeLinear" => TensorType {
                elem_type: input(1).and_then(|n| self.types.get(n)).map_or(1, |t| t.elem_type),
                shape: shape(0),
            },
            "Cast" => TensorType {
                elem_type: int_attribute(node, "to").and_then(|t| i32::try_from(t).ok()).unwrap_or(0),
                shape: shape(0),
            },
            "Shape" => TensorType { elem_type: 7, shape: shape(0).map(|s| vec![Dim::Fixed(s.len() as i64)]) },
            _ => same(None),
        };
        let mut outputs = vec![result];
        outputs.resize(node.output.len(), TensorType::default());
        outputs
    }

    /// Multiply-accumulates per sample of one node (Conv: N·Cout·Hout·Wout·Cin/group·kh·kw; Gemm / MatMul:
    /// M·N·K), 0 for operators without weights-by-activations products.
    pub fn node_macs(&self, node: &NodeProto) -> u64 {
        let default_domain = node.domain.is_empty() || node.domain == "ai.onnx";
        if !default_domain && node.domain != "com.microsoft" {
            return 0;
        }
        let shape = |name: Option<&String>| name.and_then(|n| self.shape_of(n));
        let out = shape(node.output.first());
        match node.op_type.as_str() {
            "Conv" | "ConvInteger" | "QLinearConv" => {
                let weight = if node.op_type == "QLinearConv" { 3 } else { 1 };
                match (out, shape(node.input.get(weight))) {
                    (Some(out), Some(w)) if w.len() >= 2 => {
                        elements_per_sample(&out).saturating_mul(elements_per_sample(&w[1..]))
                    }
                    _ => 0,
                }
            }
            "Gemm" => match (out, shape(node.input.first())) {
                (Some(out), Some(a)) if a.len() == 2 => {
                    let k = if int_attribute(node, "transA").unwrap_or(0) != 0 { &a[0] } else { &a[1] };
                    elements_per_sample(&out).saturating_mul(elements_per_sample(std::slice::from_ref(k)))
                }
                _ => 0,
            },
            "MatMul" | "MatMulInteger" | "QLinearMatMul" | "DynamicQuantizeMatMul" => {
                match (out, shape(node.input.first())) {
                    (Some(out), Some(a)) if !a.is_empty() => {
                        elements_per_sample(&out).saturating_mul(elements_per_sample(&a[a.len() - 1..]))
                    }
                    _ => 0,
                }
            }
            _ => 0,
        }
    }

    /// The dynamic nodes that `tensors` depend on, their producers included.
    pub fn ancestors<'a>(&self, tensors: impl IntoIterator<Item = &'a str>) -> Vec<bool> {
        let mut seen = vec![false; self.graph.node.len()];
        let mut stack: Vec<usize> = tensors.into_iter().filter_map(|t| self.producer.get(t).copied()).collect();
        while let Some(n) = stack.pop() {
            if seen[n] || !self.dynamic[n] {
                continue;
            }
            seen[n] = true;
            stack.extend(self.reads[n].iter().filter_map(|t| self.producer.get(t).copied()));
        }
        seen
    }

    /// Whether `tensor` alone separates `needed` (the dynamic nodes later outputs need) into the nodes it depends
    /// on (`before`, its ancestors) and the rest, which read nothing from before but `tensor` itself.
    pub fn separates(&self, tensor: &str, needed: &[bool], before: &[bool]) -> bool {
        if !self.producer.get(tensor).is_some_and(|&p| needed[p]) {
            return false;
        }
        (0..needed.len()).filter(|&n| needed[n] && !before[n]).all(|n| {
            self.reads[n].iter().all(|input| {
                if input == tensor {
                    return true;
                }
                if *input == self.image {
                    return false;
                }
                match self.producer.get(input) {
                    Some(&p) => !self.dynamic[p] || !before[p],
                    None => true,
                }
            })
        })
    }

    /// Initializer names reachable from a node through static nodes, and those static nodes.
    pub fn static_closure(&self, nodes: &[bool]) -> (BTreeSet<String>, Vec<bool>) {
        let mut initializers = BTreeSet::new();
        let mut statics = vec![false; self.graph.node.len()];
        let mut stack: Vec<&str> =
            (0..nodes.len()).filter(|&n| nodes[n]).flat_map(|n| self.reads[n].iter().map(String::as_str)).collect();
        while let Some(name) = stack.pop() {
            if self.initializers.contains_key(name) || is_sparse_initializer(self.graph, name) {
                initializers.insert(name.to_string());
                continue;
            }
            if let Some(&p) = self.producer.get(name)
                && !self.dynamic[p]
                && !statics[p]
            {
                statics[p] = true;
                stack.extend(self.reads[p].iter().map(String::as_str));
            }
        }
        (initializers, statics)
    }

    /// Elements of the named initializers.
    pub fn parameter_count(&self, names: &BTreeSet<String>) -> u64 {
        names
            .iter()
            .filter_map(|n| self.initializers.get(n))
            .map(|&i| {
                self.graph.initializer[i]
                    .dims
                    .iter()
                    .map(|&d| u64::try_from(d).unwrap_or(0))
                    .fold(1u64, u64::saturating_mul)
            })
            .fold(0u64, u64::saturating_add)
    }

    /// Multiply-accumulates per sample over the marked nodes.
    pub fn macs(&self, nodes: &[bool]) -> u64 {
        (0..nodes.len()).filter(|&n| nodes[n]).map(|n| self.node_macs(&self.graph.node[n])).fold(0, u64::saturating_add)
    }

    /// The final classifier output: the graph output that depends on the most nodes (ties: the one produced
    /// last). Position in the node list alone misleads: exporters often write exit heads after the backbone.
    pub fn last_output(&self) -> Option<&'g str> {
        self.graph
            .output
            .iter()
            .filter_map(|o| {
                let producer = *self.producer.get(&o.name)?;
                let depth = self.ancestors([o.name.as_str()]).iter().filter(|&&a| a).count();
                Some(((depth, self.position[producer]), o.name.as_str()))
            })
            .max()
            .map(|(_, name)| name)
    }
}
