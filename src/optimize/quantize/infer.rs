//! Types and shapes of every tensor, written as `value_info` the way `onnx.shape_inference.infer_shapes` (which
//! ORT's quantizer runs first) writes them: one entry per node output that is not a graph output, in node order,
//! after the entries the model already has. ORT decides from these types which tensors are float and can be
//! quantized, and keeps them in the file it writes.
//!
//! Covered: the operators of CNN classifiers (convolutions, pooling, activations, elementwise arithmetic with
//! broadcasting, Gemm / MatMul, reshaping, concatenation, slicing, padding, resizing, reductions, casts).
//! Operators of other domains get no entry, as ONNX gives them none; other default-domain operators get the
//! element type of their first input and no shape.

use std::collections::HashMap;

use super::tensor::{attribute, dtype, int_attribute, int_values};
use crate::model::Dim;
use crate::model::graph::{TensorType, declared_type, value_info};
use crate::model::proto::{GraphProto, NodeProto, TensorProto};

/// Known types of the graph's tensors: declared ones (inputs, outputs, value_info, initializers) and inferred.
pub struct Types {
    /// Tensor name to type.
    pub types: HashMap<String, TensorType>,
}

impl Types {
    /// Element type of a tensor (0 when unknown).
    pub fn elem_type(&self, name: &str) -> i32 {
        self.types.get(name).map_or(0, |t| t.elem_type)
    }
}

fn ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attribute(node, name).map(|a| a.ints.clone())
}

fn normalize(axis: i64, rank: usize) -> Option<usize> {
    let rank = i64::try_from(rank).ok()?;
    let a = if axis < 0 { axis + rank } else { axis };
    (0..rank).contains(&a).then_some(a as usize)
}

fn unknown() -> Dim {
    Dim::Symbolic(String::new())
}

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
        _ => unknown(),
    }
}

fn broadcast(a: &[Dim], b: &[Dim]) -> Vec<Dim> {
    let rank = a.len().max(b.len());
    (0..rank)
        .map(|i| {
            let x = (i + a.len() >= rank).then(|| &a[i + a.len() - rank]);
            let y = (i + b.len() >= rank).then(|| &b[i + b.len() - rank]);
            match (x, y) {
                (Some(Dim::Fixed(1)), Some(other)) | (Some(other), Some(Dim::Fixed(1))) => other.clone(),
                (Some(Dim::Fixed(p)), _) => Dim::Fixed(*p),
                (_, Some(Dim::Fixed(q))) => Dim::Fixed(*q),
                (Some(x), Some(y)) if x == y => x.clone(),
                (Some(x), None) => x.clone(),
                (None, Some(y)) => y.clone(),
                _ => unknown(),
            }
        })
        .collect()
}

fn window(node: &NodeProto, input: &[Dim], kernel: &[i64], ceil_mode: bool, transpose: bool) -> Vec<Dim> {
    let spatial = kernel.len();
    let strides = ints(node, "strides").filter(|v| !v.is_empty()).unwrap_or_else(|| vec![1; spatial]);
    let dilations = ints(node, "dilations").filter(|v| !v.is_empty()).unwrap_or_else(|| vec![1; spatial]);
    let pads = ints(node, "pads").filter(|v| !v.is_empty()).unwrap_or_else(|| vec![0; 2 * spatial]);
    let auto_pad = attribute(node, "auto_pad").and_then(|a| a.s.clone()).unwrap_or_default();
    let start = input.len().saturating_sub(spatial);
    (0..spatial)
        .map(|i| {
            let Some(size) = input.get(start + i).and_then(Dim::fixed) else { return unknown() };
            let stride = strides.get(i).copied().unwrap_or(1).max(1);
            let dilation = dilations.get(i).copied().unwrap_or(1);
            let extent = dilation * (kernel[i] - 1) + 1;
            let pad = pads.get(i).copied().unwrap_or(0) + pads.get(i + spatial).copied().unwrap_or(0);
            if transpose {
                let output_padding = ints(node, "output_padding").and_then(|p| p.get(i).copied()).unwrap_or(0);
                return match auto_pad.as_slice() {
                    b"SAME_UPPER" | b"SAME_LOWER" => Dim::Fixed(size * stride),
                    _ => Dim::Fixed(stride * (size - 1) + output_padding + extent - pad),
                };
            }
            match auto_pad.as_slice() {
                b"SAME_UPPER" | b"SAME_LOWER" => Dim::Fixed((size + stride - 1) / stride),
                b"VALID" => Dim::Fixed((size - extent) / stride + 1),
                _ => {
                    let span = size + pad - extent;
                    Dim::Fixed(if ceil_mode { (span + stride - 1) / stride + 1 } else { span / stride + 1 })
                }
            }
        })
        .collect()
}

struct Context<'g> {
    types: HashMap<String, TensorType>,
    initializers: HashMap<&'g str, &'g TensorProto>,
    constants: HashMap<String, TensorProto>,
}

impl Context<'_> {
    fn get(&self, node: &NodeProto, i: usize) -> TensorType {
        node.input.get(i).filter(|n| !n.is_empty()).and_then(|n| self.types.get(n)).cloned().unwrap_or_default()
    }

    fn shape(&self, node: &NodeProto, i: usize) -> Option<Vec<Dim>> {
        self.get(node, i).shape
    }

    fn constant_ints(&self, node: &NodeProto, i: usize) -> Option<Vec<i64>> {
        let name = node.input.get(i).filter(|n| !n.is_empty())?;
        if let Some(t) = self.initializers.get(name.as_str()) {
            return int_values(t);
        }
        self.constants.get(name).and_then(int_values)
    }

    fn constant_floats(&self, node: &NodeProto, i: usize) -> Option<Vec<f32>> {
        let name = node.input.get(i).filter(|n| !n.is_empty())?;
        let t = self.initializers.get(name.as_str()).copied().or_else(|| self.constants.get(name))?;
        super::tensor::f32_values(t)
    }

    fn infer(&self, node: &NodeProto) -> Vec<TensorType> {
        let first = self.get(node, 0);
        let same = |shape: Option<Vec<Dim>>| TensorType { elem_type: first.elem_type, shape };
        let typed = |elem_type: i32, shape: Option<Vec<Dim>>| TensorType { elem_type, shape };
        let x = self.shape(node, 0);
        let default_domain = node.domain.is_empty() || node.domain == "ai.onnx";
        if !default_domain {
            return vec![TensorType::default(); node.output.len()];
        }
        let op = node.op_type.as_str();
        let one = match op {
            "Constant" => match attribute(node, "value").and_then(|a| a.t.as_ref()) {
                Some(t) => typed(t.data_type, Some(t.dims.iter().map(|&d| Dim::Fixed(d)).collect())),
                None => match attribute(node, "value_float").or_else(|| attribute(node, "value_int")) {
                    Some(a) if a.f.is_some() => typed(dtype::FLOAT, Some(vec![])),
                    Some(_) => typed(dtype::INT64, Some(vec![])),
                    None => TensorType::default(),
                },
            },
            "Conv" | "ConvTranspose" => match (x.clone(), self.shape(node, 1)) {
                (Some(xs), Some(ws)) if xs.len() >= 3 && ws.len() == xs.len() => {
                    let kernel: Vec<i64> = ints(node, "kernel_shape")
                        .filter(|k| !k.is_empty())
                        .unwrap_or_else(|| ws[2..].iter().map(|d| d.fixed().unwrap_or(1)).collect());
                    let channels = if op == "Conv" {
                        ws[0].clone()
                    } else {
                        let group = int_attribute(node, "group").unwrap_or(1);
                        ws[1].fixed().map_or_else(unknown, |c| Dim::Fixed(c * group))
                    };
                    let mut out = vec![xs[0].clone(), channels];
                    out.extend(window(node, &xs, &kernel, false, op == "ConvTranspose"));
                    same(Some(out))
                }
                _ => same(None),
            },
            "MaxPool" | "AveragePool" | "LpPool" => match (x.clone(), ints(node, "kernel_shape")) {
                (Some(xs), Some(kernel)) if xs.len() == kernel.len() + 2 => {
                    let ceil = int_attribute(node, "ceil_mode").unwrap_or(0) != 0;
                    let mut out = xs[..2].to_vec();
                    out.extend(window(node, &xs, &kernel, ceil, false));
                    same(Some(out))
                }
                _ => same(None),
            },
            "GlobalAveragePool" | "GlobalMaxPool" | "GlobalLpPool" => {
                same(x.map(|xs| {
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
            | "Celu"
            | "Softplus"
            | "Softsign"
            | "Mish"
            | "Gelu"
            | "Erf"
            | "Exp"
            | "Log"
            | "Sqrt"
            | "Reciprocal"
            | "Neg"
            | "Abs"
            | "Floor"
            | "Ceil"
            | "Round"
            | "Sin"
            | "Cos"
            | "Softmax"
            | "LogSoftmax"
            | "Hardmax"
            | "Identity"
            | "BatchNormalization"
            | "InstanceNormalization"
            | "LayerNormalization"
            | "LRN"
            | "Shrink"
            | "ThresholdedRelu"
            | "Sign"
            | "CumSum" => same(x),
            "Dropout" => {
                let mut outs = vec![same(x.clone())];
                if node.output.len() > 1 {
                    outs.push(typed(dtype::BOOL, x));
                }
                return outs;
            }
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Sum" | "Mean" | "Mod" => {
                let mut out = x;
                for i in 1..node.input.len() {
                    out = match (out, self.shape(node, i)) {
                        (Some(a), Some(b)) => Some(broadcast(&a, &b)),
                        _ => None,
                    };
                }
                same(out)
            }
            "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "And" | "Or" | "Xor" => {
                let out = match (x, self.shape(node, 1)) {
                    (Some(a), Some(b)) => Some(broadcast(&a, &b)),
                    _ => None,
                };
                typed(dtype::BOOL, out)
            }
            "Not" | "IsNaN" | "IsInf" => typed(dtype::BOOL, x),
            "Where" => {
                let a = self.get(node, 1);
                let out = match (x, a.shape.clone(), self.shape(node, 2)) {
                    (Some(c), Some(p), Some(q)) => Some(broadcast(&broadcast(&c, &p), &q)),
                    _ => None,
                };
                typed(a.elem_type, out)
            }
            "Concat" => {
                let shapes: Option<Vec<Vec<Dim>>> = (0..node.input.len()).map(|i| self.shape(node, i)).collect();
                let out = shapes.and_then(|shapes| {
                    let first = shapes.first()?.clone();
                    let axis = normalize(int_attribute(node, "axis").unwrap_or(0), first.len())?;
                    let mut out = first;
                    let along: Vec<Dim> = shapes.iter().map(|s| s.get(axis).cloned()).collect::<Option<_>>()?;
                    out[axis] = along.iter().map(Dim::fixed).sum::<Option<i64>>().map_or_else(unknown, Dim::Fixed);
                    Some(out)
                });
                same(out)
            }
            "Flatten" => same(x.and_then(|xs| {
                let axis = int_attribute(node, "axis").unwrap_or(1);
                let rank = i64::try_from(xs.len()).ok()?;
                let axis = usize::try_from(if axis < 0 { axis + rank } else { axis }).ok()?.min(xs.len());
                Some(vec![product(&xs[..axis]), product(&xs[axis..])])
            })),
            "Reshape" => same(x.zip(self.constant_ints(node, 1)).map(|(xs, target)| reshape(&xs, &target))),
            "Transpose" => same(x.map(|xs| {
                let perm = ints(node, "perm")
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| (0..xs.len() as i64).rev().collect());
                perm.iter()
                    .map(|&p| usize::try_from(p).ok().and_then(|p| xs.get(p).cloned()).unwrap_or_else(unknown))
                    .collect()
            })),
            "Squeeze" => {
                let axes = ints(node, "axes").or_else(|| self.constant_ints(node, 1));
                same(x.map(|xs| match axes {
                    Some(axes) => {
                        let axes: Vec<usize> = axes.iter().filter_map(|&a| normalize(a, xs.len())).collect();
                        xs.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, d)| d.clone()).collect()
                    }
                    None => xs.into_iter().filter(|d| *d != Dim::Fixed(1)).collect(),
                }))
            }
            "Unsqueeze" => {
                let axes = ints(node, "axes").or_else(|| self.constant_ints(node, 1));
                same(x.zip(axes).and_then(|(xs, axes)| {
                    let rank = xs.len() + axes.len();
                    let mut axes: Vec<usize> = axes.iter().map(|&a| normalize(a, rank)).collect::<Option<_>>()?;
                    axes.sort_unstable();
                    let mut out = xs;
                    for a in axes {
                        if a > out.len() {
                            return None;
                        }
                        out.insert(a, Dim::Fixed(1));
                    }
                    Some(out)
                }))
            }
            "Shape" => typed(dtype::INT64, x.map(|s| vec![Dim::Fixed(s.len() as i64)])),
            "Size" => typed(dtype::INT64, Some(vec![])),
            "Cast" => typed(int_attribute(node, "to").and_then(|t| i32::try_from(t).ok()).unwrap_or(0), x),
            "CastLike" => typed(self.get(node, 1).elem_type, x),
            "ArgMax" | "ArgMin" => typed(
                dtype::INT64,
                x.and_then(|xs| {
                    let axis = normalize(int_attribute(node, "axis").unwrap_or(0), xs.len())?;
                    Some(reduce_shape(&xs, &[axis], int_attribute(node, "keepdims").unwrap_or(1) != 0))
                }),
            ),
            "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceSum" | "ReduceProd" | "ReduceL1" | "ReduceL2"
            | "ReduceLogSumExp" | "ReduceSumSquare" => same(x.and_then(|xs| {
                let keep = int_attribute(node, "keepdims").unwrap_or(1) != 0;
                let axes = ints(node, "axes").or_else(|| self.constant_ints(node, 1));
                let axes: Vec<usize> = match axes {
                    Some(a) if !a.is_empty() => a.iter().map(|&a| normalize(a, xs.len())).collect::<Option<_>>()?,
                    _ if int_attribute(node, "noop_with_empty_axes").unwrap_or(0) != 0 => return Some(xs),
                    _ => (0..xs.len()).collect(),
                };
                Some(reduce_shape(&xs, &axes, keep))
            })),
            "Gemm" => match (x, self.shape(node, 1)) {
                (Some(a), Some(b)) if a.len() == 2 && b.len() == 2 => {
                    let m = if int_attribute(node, "transA").unwrap_or(0) != 0 { &a[1] } else { &a[0] };
                    let n = if int_attribute(node, "transB").unwrap_or(0) != 0 { &b[0] } else { &b[1] };
                    same(Some(vec![m.clone(), n.clone()]))
                }
                _ => same(None),
            },
            "MatMul" => same(match (x, self.shape(node, 1)) {
                (Some(a), Some(b)) if a.len() >= 2 && b.len() >= 2 => {
                    let mut batch = broadcast(&a[..a.len() - 2], &b[..b.len() - 2]);
                    batch.push(a[a.len() - 2].clone());
                    batch.push(b[b.len() - 1].clone());
                    Some(batch)
                }
                (Some(a), Some(b)) if a.len() >= 2 && b.len() == 1 => Some(a[..a.len() - 1].to_vec()),
                (Some(a), Some(b)) if a.len() == 1 && b.len() >= 2 => {
                    let mut out = b[..b.len() - 2].to_vec();
                    out.push(b[b.len() - 1].clone());
                    Some(out)
                }
                _ => None,
            }),
            "Pad" => {
                let pads = self.constant_ints(node, 1).or_else(|| ints(node, "pads"));
                same(x.zip(pads).and_then(|(xs, pads)| {
                    if self.constant_ints(node, 3).is_some() || pads.len() != 2 * xs.len() {
                        return None;
                    }
                    Some(
                        xs.iter()
                            .enumerate()
                            .map(|(i, d)| {
                                d.fixed().map_or_else(unknown, |v| Dim::Fixed(v + pads[i] + pads[i + xs.len()]))
                            })
                            .collect(),
                    )
                }))
            }
            "Slice" => same(x.and_then(|xs| {
                let starts = self.constant_ints(node, 1)?;
                let ends = self.constant_ints(node, 2)?;
                let axes = if node.input.len() > 3 && !node.input[3].is_empty() {
                    self.constant_ints(node, 3)?
                } else {
                    (0..starts.len() as i64).collect()
                };
                let steps = if node.input.len() > 4 && !node.input[4].is_empty() {
                    self.constant_ints(node, 4)?
                } else {
                    vec![1; starts.len()]
                };
                let mut out = xs.clone();
                for (k, &axis) in axes.iter().enumerate() {
                    let axis = normalize(axis, xs.len())?;
                    let Some(size) = xs[axis].fixed() else {
                        out[axis] = unknown();
                        continue;
                    };
                    let step = *steps.get(k)?;
                    if step == 0 {
                        return None;
                    }
                    let clampi = |v: i64, lo: i64, hi: i64| v.clamp(lo, hi);
                    let fix = |v: i64| if v < 0 { v.saturating_add(size) } else { v };
                    let (s, e) = (fix(*starts.get(k)?), fix(*ends.get(k)?));
                    let len = if step > 0 {
                        let (s, e) = (clampi(s, 0, size), clampi(e, 0, size));
                        if e > s { (e - s + step - 1) / step } else { 0 }
                    } else {
                        let (s, e) = (clampi(s, -1, size - 1), clampi(e, -1, size - 1));
                        if s > e { (s - e - step - 1) / -step } else { 0 }
                    };
                    out[axis] = Dim::Fixed(len);
                }
                Some(out)
            })),
            "Resize" | "Upsample" => {
                let scales_input = if op == "Upsample" { 1 } else { 2 };
                let shape = x.and_then(|xs| {
                    if op == "Resize"
                        && let Some(sizes) = self.constant_ints(node, 3).filter(|s| s.len() == xs.len())
                    {
                        return Some(sizes.into_iter().map(Dim::Fixed).collect());
                    }
                    let scales = self.constant_floats(node, scales_input).filter(|s| s.len() == xs.len())?;
                    Some(
                        xs.iter()
                            .zip(scales)
                            .map(|(d, s)| d.fixed().map_or_else(unknown, |v| Dim::Fixed((v as f32 * s).floor() as i64)))
                            .collect(),
                    )
                });
                same(shape)
            }
            "Split" => {
                let count = node.output.len();
                let shapes = x.and_then(|xs| {
                    let axis = normalize(int_attribute(node, "axis").unwrap_or(0), xs.len())?;
                    let size = xs[axis].fixed()?;
                    let parts = ints(node, "split").filter(|s| !s.is_empty()).or_else(|| self.constant_ints(node, 1));
                    let parts = match parts {
                        Some(p) if p.len() == count => p,
                        _ => {
                            let chunk = (size + count as i64 - 1) / count as i64;
                            (0..count as i64).map(|i| chunk.min(size - i * chunk).max(0)).collect()
                        }
                    };
                    Some(
                        parts
                            .into_iter()
                            .map(|p| {
                                let mut s = xs.clone();
                                s[axis] = Dim::Fixed(p);
                                s
                            })
                            .collect::<Vec<_>>(),
                    )
                });
                return match shapes {
                    Some(shapes) => shapes.into_iter().map(|s| same(Some(s))).collect(),
                    None => vec![same(None); count],
                };
            }
            "TopK" => {
                let mut outs = vec![same(None), typed(dtype::INT64, None)];
                outs.truncate(node.output.len());
                return outs;
            }
            "MaxUnpool" | "Expand" | "Tile" | "Gather" | "GatherElements" | "GatherND" | "ScatterElements"
            | "ScatterND" | "DepthToSpace" | "SpaceToDepth" => same(None),
            "NonZero" => typed(dtype::INT64, None),
            "QuantizeLinear" => typed(self.get(node, 2).elem_type.max(dtype::UINT8), x),
            "DequantizeLinear" => {
                typed(if self.get(node, 1).elem_type == 0 { dtype::FLOAT } else { self.get(node, 1).elem_type }, x)
            }
            "DynamicQuantizeLinear" => {
                return vec![
                    typed(dtype::UINT8, x),
                    typed(dtype::FLOAT, Some(vec![])),
                    typed(dtype::UINT8, Some(vec![])),
                ];
            }
            _ => same(None),
        };
        let mut outputs = vec![one];
        outputs.resize(node.output.len(), TensorType::default());
        outputs
    }
}

fn reduce_shape(xs: &[Dim], axes: &[usize], keep: bool) -> Vec<Dim> {
    xs.iter()
        .enumerate()
        .filter_map(|(i, d)| match (axes.contains(&i), keep) {
            (true, true) => Some(Dim::Fixed(1)),
            (true, false) => None,
            (false, _) => Some(d.clone()),
        })
        .collect()
}

fn reshape(xs: &[Dim], target: &[i64]) -> Vec<Dim> {
    let mut out: Vec<Dim> = target
        .iter()
        .enumerate()
        .map(|(i, &v)| if v == 0 { xs.get(i).cloned().unwrap_or(Dim::Fixed(0)) } else { Dim::Fixed(v) })
        .collect();
    if let Some(hole) = out.iter().position(|d| *d == Dim::Fixed(-1)) {
        let known: Vec<Dim> = out.iter().filter(|d| **d != Dim::Fixed(-1)).cloned().collect();
        out[hole] = match (product(xs), product(&known)) {
            (Dim::Fixed(total), Dim::Fixed(part)) if part > 0 => Dim::Fixed(total / part),
            (_, Dim::Fixed(part)) => {
                let fixed_in: i64 = xs.iter().filter_map(Dim::fixed).product();
                let symbolic: Vec<&Dim> = xs.iter().filter(|d| d.fixed().is_none()).collect();
                match symbolic.as_slice() {
                    [one] if fixed_in == part => (*one).clone(),
                    _ => unknown(),
                }
            }
            _ => unknown(),
        };
    }
    out
}

/// Infers the types of `graph`'s tensors (declared types win) in node order.
pub fn infer_types(graph: &GraphProto) -> Types {
    let mut cx = Context {
        types: HashMap::new(),
        initializers: graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect(),
        constants: HashMap::new(),
    };
    for tensor in &graph.initializer {
        let shape = tensor.dims.iter().map(|&d| Dim::Fixed(d)).collect();
        cx.types.insert(tensor.name.clone(), TensorType { elem_type: tensor.data_type, shape: Some(shape) });
    }
    for value in graph.value_info.iter().chain(&graph.output).chain(&graph.input) {
        if let Some(t) = declared_type(value) {
            cx.types.insert(value.name.clone(), t);
        }
    }
    for node in &graph.node {
        if node.op_type == "Constant"
            && (node.domain.is_empty() || node.domain == "ai.onnx")
            && let (Some(output), Some(t)) = (node.output.first(), attribute(node, "value").and_then(|a| a.t.as_ref()))
        {
            cx.constants.insert(output.clone(), t.clone());
        }
        let inferred = cx.infer(node);
        for (output, t) in node.output.iter().zip(inferred) {
            if output.is_empty() {
                continue;
            }
            let entry = cx.types.entry(output.clone()).or_default();
            if entry.elem_type == 0 {
                entry.elem_type = t.elem_type;
            }
            if entry.shape.is_none() {
                entry.shape = t.shape;
            }
        }
    }
    Types { types: cx.types }
}

/// Adds the inferred `value_info` entries (as `onnx.shape_inference` does) and returns the types.
pub fn add_value_info(graph: &mut GraphProto) -> Types {
    let types = infer_types(graph);
    let mut known: std::collections::HashSet<String> = graph
        .value_info
        .iter()
        .chain(&graph.output)
        .chain(&graph.input)
        .map(|v| v.name.clone())
        .chain(graph.initializer.iter().map(|t| t.name.clone()))
        .collect();
    let mut added = Vec::new();
    for node in &graph.node {
        for output in node.output.iter().filter(|o| !o.is_empty()) {
            if !known.insert(output.clone()) {
                continue;
            }
            if let Some(t) = types.types.get(output).filter(|t| t.elem_type != 0) {
                added.push(value_info(output, t));
            }
        }
    }
    graph.value_info.extend(added);
    types
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_and_reshape_keep_the_batch_name() {
        let n = Dim::Symbolic("N".into());
        assert_eq!(
            broadcast(&[n.clone(), Dim::Fixed(3)], &[Dim::Fixed(1), Dim::Fixed(3)]),
            vec![n.clone(), Dim::Fixed(3)]
        );
        assert_eq!(reshape(&[n.clone(), Dim::Fixed(8), Dim::Fixed(2)], &[-1, 16]), vec![n, Dim::Fixed(16)]);
    }
}
