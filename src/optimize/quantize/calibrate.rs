//! Activation calibration as ORT's `MinMaxCalibrater` does it (`calibrate.py`): the float model runs in ONNX
//! Runtime on the CPU with every graph optimization disabled, on the calibration batches in order; the range of a
//! tensor is the smallest and largest value it takes over all batches. As ORT does, a ReduceMin / ReduceMax pair per
//! tensor is appended to the graph and their outputs folded over the batches (the graph input's range is folded
//! here from the batch itself). [`with_outputs`] instead exposes whole tensors, for the sensitivity analysis.
//!
//! Calibrated tensors: the float inputs and outputs (not initializers) of every node whose op type is quantized.

use std::collections::{HashMap, HashSet};

use indexmap::IndexMap;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;

use super::QuantizeError;
use super::tensor::dtype;
use crate::model::graph::value_info;
use crate::model::proto::{GraphProto, ModelProto};
use crate::runtime::ort_environment;

/// Calibrated range of each tensor, in ORT's order-independent sense: `(min, max)`.
pub type Ranges = IndexMap<String, (f32, f32)>;

/// A batch of inputs: its shape (batch first) and values.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// Shape, batch first.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub values: Vec<f32>,
}

/// Element types ORT's calibrator reads from `value_info`, outputs and inputs.
fn value_types(graph: &GraphProto) -> HashMap<String, i32> {
    let mut types = HashMap::new();
    for v in graph.value_info.iter().chain(&graph.output).chain(&graph.input) {
        if let Some(t) = v.r#type.as_ref().and_then(|t| t.tensor_type.as_ref()) {
            types.insert(v.name.clone(), t.elem_type);
        }
    }
    types
}

/// `select_tensors_to_calibrate`: float inputs and outputs of the nodes of `op_types` (all nodes when empty),
/// initializers excluded, in first-seen order.
pub fn tensors_to_calibrate(graph: &GraphProto, op_types: &HashSet<String>) -> Vec<String> {
    let types = value_types(graph);
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for node in &graph.node {
        if !op_types.is_empty() && !op_types.contains(&node.op_type) {
            continue;
        }
        for name in node.input.iter().chain(&node.output) {
            let float = types.get(name).is_some_and(|&t| t == dtype::FLOAT || t == dtype::FLOAT16);
            if float && !initializers.contains(name.as_str()) && seen.insert(name.clone()) {
                out.push(name.clone());
            }
        }
    }
    out
}

/// The float model with every tensor to observe added as a graph output.
pub fn with_outputs(model: &ModelProto, tensors: &[String]) -> ModelProto {
    let mut model = model.clone();
    if let Some(graph) = model.graph.as_mut() {
        let types = super::infer::infer_types(graph);
        let present: HashSet<String> = graph.output.iter().chain(&graph.input).map(|v| v.name.clone()).collect();
        for name in tensors {
            if present.contains(name) {
                continue;
            }
            let mut t = types.types.get(name).cloned().unwrap_or_default();
            t.shape = None;
            if t.elem_type == 0 {
                t.elem_type = dtype::FLOAT;
            }
            graph.output.push(value_info(name, &t));
        }
    }
    model
}

/// The float model with a ReduceMin and a ReduceMax (all axes, `keepdims = 0`) per tensor, their scalar outputs
/// `{tensor}_ReduceMin` / `{tensor}_ReduceMax` added as graph outputs: ORT's augmented calibration model, so the
/// reductions run inside ONNX Runtime.
pub fn with_min_max_outputs(model: &ModelProto, tensors: &[String]) -> ModelProto {
    use super::tensor::{Attr, make_node};
    use crate::model::graph::TensorType;
    let mut model = model.clone();
    if let Some(graph) = model.graph.as_mut() {
        let types = super::infer::infer_types(graph);
        for name in tensors {
            let elem_type = types.types.get(name).map_or(dtype::FLOAT, |t| t.elem_type);
            for op in ["ReduceMin", "ReduceMax"] {
                let output = format!("{name}_{op}");
                graph.node.push(make_node(
                    op,
                    vec![name.clone()],
                    vec![output.clone()],
                    &output,
                    vec![("keepdims".into(), Attr::Int(0))],
                ));
                graph.output.push(value_info(&output, &TensorType { elem_type, shape: None }));
            }
        }
    }
    model
}

/// [`with_min_max_outputs`] plus, per tensor, `Abs` then `ReduceMin` as output `{tensor}_AbsReduceMin`: the
/// smallest magnitude, which the symmetric percentile histogram starts at.
pub fn with_extreme_outputs(model: &ModelProto, tensors: &[String]) -> ModelProto {
    use super::tensor::{Attr, make_node};
    use crate::model::graph::TensorType;
    let mut model = with_min_max_outputs(model, tensors);
    if let Some(graph) = model.graph.as_mut() {
        for name in tensors {
            let (abs, output) = (format!("{name}_Abs"), format!("{name}_AbsReduceMin"));
            graph.node.push(make_node("Abs", vec![name.clone()], vec![abs.clone()], &abs, Vec::new()));
            graph.node.push(make_node(
                "ReduceMin",
                vec![abs],
                vec![output.clone()],
                &output,
                vec![("keepdims".into(), Attr::Int(0))],
            ));
            graph.output.push(value_info(&output, &TensorType { elem_type: dtype::FLOAT, shape: None }));
        }
    }
    model
}

/// A CPU session of `model` with graph optimizations off (as ORT's calibrator creates it).
pub fn calibration_session(model: &ModelProto, threads: usize) -> Result<Session, QuantizeError> {
    let environment = ort_environment().map_err(|e| QuantizeError::Runtime(e.to_string()))?;
    let ort_error = |e: String| QuantizeError::Runtime(format!("ONNX Runtime: {e}"));
    let mut builder = Session::builder(environment).map_err(|e| ort_error(e.to_string()))?;
    builder = builder.with_optimization_level(GraphOptimizationLevel::Disable).map_err(|e| ort_error(e.to_string()))?;
    if threads > 0 {
        builder = builder.with_intra_threads(threads).map_err(|e| ort_error(e.to_string()))?;
    }
    builder.commit_from_memory(&crate::model::proto::encode_model(model)).map_err(|e| ort_error(e.to_string()))
}

/// Runs a session on one batch and hands every float output to `visit(name, values)`.
pub fn run_batch(
    session: &mut Session,
    input: &str,
    batch: &Batch,
    mut visit: impl FnMut(&str, &[f32]) -> Result<(), QuantizeError>,
) -> Result<(), QuantizeError> {
    let ort_error = |e: ort::Error| QuantizeError::Runtime(format!("ONNX Runtime: {e}"));
    let tensor = TensorRef::from_array_view((batch.shape.clone(), batch.values.as_slice())).map_err(ort_error)?;
    let outputs = session.run(ort::inputs![input => tensor]).map_err(ort_error)?;
    for (name, value) in outputs.iter() {
        if let Ok((_, values)) = value.try_extract_tensor::<f32>() {
            visit(name, values)?;
        }
    }
    Ok(())
}

/// MinMax calibration of one graph: feed batches with [`Self::collect`], then take [`Self::ranges`].
pub struct MinMax {
    session: Session,
    input: String,
    tensors: Vec<String>,
    ranges: HashMap<String, (f32, f32)>,
    batches: usize,
}

fn fold(range: &mut (f32, f32), values: &[f32]) -> bool {
    for &v in values {
        if v.is_nan() {
            return false;
        }
        if v < range.0 {
            range.0 = v;
        }
        if v > range.1 {
            range.1 = v;
        }
    }
    true
}

impl MinMax {
    /// Prepares the observing session for `model` (with inferred `value_info`), calibrating the tensors of
    /// the nodes of `op_types`.
    pub fn new(model: &ModelProto, op_types: &HashSet<String>, threads: usize) -> Result<Self, QuantizeError> {
        let graph = model.graph.as_ref().ok_or_else(|| QuantizeError::Model("the model holds no graph".into()))?;
        let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs: Vec<&str> =
            graph.input.iter().map(|i| i.name.as_str()).filter(|n| !initializers.contains(n)).collect();
        let [input] = inputs.as_slice() else {
            return Err(QuantizeError::Model(format!(
                "it has {} inputs; calibration feeds models with exactly one input",
                inputs.len()
            )));
        };
        let tensors = tensors_to_calibrate(graph, op_types);
        let session = calibration_session(&with_min_max_outputs(model, &tensors), threads)?;
        Ok(Self { session, input: input.to_string(), tensors, ranges: HashMap::new(), batches: 0 })
    }

    /// Observes one batch.
    pub fn collect(&mut self, batch: &Batch) -> Result<(), QuantizeError> {
        let wanted: HashSet<&str> = self.tensors.iter().map(String::as_str).collect();
        let ranges = &mut self.ranges;
        let mut observe = |output: &str, values: &[f32]| -> Result<(), QuantizeError> {
            let name =
                output.strip_suffix("_ReduceMin").or_else(|| output.strip_suffix("_ReduceMax")).unwrap_or(output);
            if !wanted.contains(name) || values.is_empty() {
                return Ok(());
            }
            let range = ranges.entry(name.to_string()).or_insert((f32::INFINITY, f32::NEG_INFINITY));
            if fold(range, values) {
                Ok(())
            } else {
                Err(QuantizeError::Calibration(format!(
                    "tensor {name:?} holds NaN on the calibration data; the float model is broken or the data does \
                     not suit it"
                )))
            }
        };
        observe(&self.input.clone(), &batch.values)?;
        run_batch(&mut self.session, &self.input, batch, observe)?;
        self.batches += 1;
        Ok(())
    }

    /// The ranges, in the order the tensors were selected.
    pub fn ranges(&self) -> Result<Ranges, QuantizeError> {
        if self.batches == 0 {
            return Err(QuantizeError::Calibration("no calibration data was collected".into()));
        }
        Ok(self.tensors.iter().filter_map(|t| self.ranges.get(t).map(|&r| (t.clone(), r))).collect())
    }
}

/// The data's extremes for one tensor: signed and absolute.
#[derive(Clone, Copy, Debug)]
struct Extremes {
    min: f32,
    max: f32,
    abs_min: f32,
    abs_max: f32,
}

impl Default for Extremes {
    fn default() -> Self {
        Self { min: f32::INFINITY, max: f32::NEG_INFINITY, abs_min: f32::INFINITY, abs_max: f32::NEG_INFINITY }
    }
}

/// Percentile or entropy calibration of one graph, as ORT's `HistogramCalibrater` does it (see
/// [`super::histogram`]): the observed tensors are added as graph outputs; a first pass over the batches finds each
/// tensor's extremes, a second fills its histogram over the range numpy would choose for all values stacked.
/// Feed every batch to pass 0, then every batch (the same, in any order) to pass 1.
pub struct Histograms {
    /// Pass 0: the model with ReduceMin / ReduceMax / Abs+ReduceMin outputs (the reductions run in ONNX Runtime).
    extremes_session: Session,
    /// Pass 1: the model with every observed tensor as an output.
    session: Session,
    input: String,
    tensors: Vec<String>,
    method: super::CalibrationMethod,
    extremes: HashMap<String, Extremes>,
    histograms: HashMap<String, super::histogram::Histogram>,
    batches: [usize; 2],
}

impl Histograms {
    /// Prepares the observing session for `model` (with inferred `value_info`).
    pub fn new(
        model: &ModelProto,
        op_types: &HashSet<String>,
        threads: usize,
        method: super::CalibrationMethod,
    ) -> Result<Self, QuantizeError> {
        let graph = model.graph.as_ref().ok_or_else(|| QuantizeError::Model("the model holds no graph".into()))?;
        let input = single_input(graph)?;
        let tensors = tensors_to_calibrate(graph, op_types);
        let extremes_session = calibration_session(&with_extreme_outputs(model, &tensors), threads)?;
        let session = calibration_session(&with_outputs(model, &tensors), threads)?;
        Ok(Self {
            extremes_session,
            session,
            input,
            tensors,
            method,
            extremes: HashMap::new(),
            histograms: HashMap::new(),
            batches: [0, 0],
        })
    }

    fn symmetric_values(&self) -> bool {
        matches!(self.method, super::CalibrationMethod::Percentile { symmetric: true, .. })
    }

    /// The empty histograms, once the extremes are known (numpy's range choice per collector).
    fn start_histograms(&mut self) -> Result<(), QuantizeError> {
        let bins = match self.method {
            super::CalibrationMethod::Percentile { num_bins, .. }
            | super::CalibrationMethod::Entropy { num_bins, .. } => num_bins,
            super::CalibrationMethod::MinMax => {
                return Err(QuantizeError::Calibration("not a histogram method".into()));
            }
        };
        let symmetric = self.symmetric_values();
        for name in &self.tensors {
            let Some(e) = self.extremes.get(name) else { continue };
            let (first, last) = if symmetric {
                (e.abs_min, e.abs_max)
            } else {
                let t = e.min.abs().max(e.max.abs());
                (-t, t)
            };
            let histogram = super::histogram::Histogram::new(first, last, bins)
                .map_err(|reason| QuantizeError::Calibration(format!("tensor {name:?}: {reason}")))?;
            self.histograms.insert(name.clone(), histogram);
        }
        Ok(())
    }

    /// Observes one batch in `pass` (0: extremes, 1: histograms).
    pub fn collect(&mut self, pass: usize, batch: &Batch) -> Result<(), QuantizeError> {
        if pass == 1 && self.batches[1] == 0 {
            if self.batches[0] == 0 {
                return Err(QuantizeError::Calibration("no calibration data was collected".into()));
            }
            self.start_histograms()?;
        }
        let wanted: HashSet<&str> = self.tensors.iter().map(String::as_str).collect();
        let symmetric = self.symmetric_values();
        let nan = |name: &str| {
            QuantizeError::Calibration(format!(
                "tensor {name:?} holds NaN on the calibration data; the float model is broken or the data does not \
                 suit it"
            ))
        };
        if pass == 0 {
            let extremes = &mut self.extremes;
            let mut fold = |name: &str, values: &[f32], kind: u8| -> Result<(), QuantizeError> {
                if !wanted.contains(name) || values.is_empty() {
                    return Ok(());
                }
                let e = extremes.entry(name.to_string()).or_default();
                for &v in values {
                    if v.is_nan() {
                        return Err(nan(name));
                    }
                    if kind & 1 != 0 && v < e.min {
                        e.min = v;
                    }
                    if kind & 2 != 0 && v > e.max {
                        e.max = v;
                    }
                    if kind & 4 != 0 && v.abs() < e.abs_min {
                        e.abs_min = v.abs();
                    }
                }
                Ok(())
            };
            let input = self.input.clone();
            fold(&input, &batch.values, 7)?;
            run_batch(&mut self.extremes_session, &input, batch, |output, values| {
                if let Some(name) = output.strip_suffix("_AbsReduceMin") {
                    fold(name, values, 4)
                } else if let Some(name) = output.strip_suffix("_ReduceMin") {
                    fold(name, values, 1)
                } else if let Some(name) = output.strip_suffix("_ReduceMax") {
                    fold(name, values, 2)
                } else {
                    Ok(())
                }
            })?;
            for e in self.extremes.values_mut() {
                e.abs_max = e.min.abs().max(e.max.abs());
            }
        } else {
            let histograms = &mut self.histograms;
            let mut fill = |name: &str, values: &[f32]| -> Result<(), QuantizeError> {
                if let Some(h) = histograms.get_mut(name).filter(|_| wanted.contains(name)) {
                    if symmetric {
                        h.add_magnitudes(values);
                    } else {
                        h.add(values);
                    }
                }
                Ok(())
            };
            fill(&self.input.clone(), &batch.values)?;
            run_batch(&mut self.session, &self.input, batch, fill)?;
        }
        self.batches[pass.min(1)] += 1;
        Ok(())
    }

    /// The ranges, in the order the tensors were selected.
    pub fn ranges(&self) -> Result<Ranges, QuantizeError> {
        if self.batches[1] == 0 {
            return Err(QuantizeError::Calibration("no calibration data was collected".into()));
        }
        let mut out = Ranges::new();
        for name in &self.tensors {
            let (Some(e), Some(h)) = (self.extremes.get(name), self.histograms.get(name)) else { continue };
            let range = match self.method {
                super::CalibrationMethod::Percentile { percentile, symmetric, .. } => {
                    if !(0.0..=100.0).contains(&percentile) {
                        return Err(QuantizeError::Calibration(format!(
                            "the percentile must be between 0 and 100, not {percentile}"
                        )));
                    }
                    super::histogram::percentile_range(h, e.min, e.max, percentile, symmetric)
                }
                super::CalibrationMethod::Entropy { num_quantized_bins, .. } => {
                    super::histogram::entropy_range(h, e.min, e.max, num_quantized_bins)
                        .map_err(|reason| QuantizeError::Calibration(format!("tensor {name:?}: {reason}")))?
                }
                super::CalibrationMethod::MinMax => (e.min, e.max),
            };
            out.insert(name.clone(), range);
        }
        Ok(out)
    }
}

fn single_input(graph: &GraphProto) -> Result<String, QuantizeError> {
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&str> = graph.input.iter().map(|i| i.name.as_str()).filter(|n| !initializers.contains(n)).collect();
    match inputs.as_slice() {
        [input] => Ok(input.to_string()),
        _ => Err(QuantizeError::Model(format!(
            "it has {} inputs; calibration feeds models with exactly one input",
            inputs.len()
        ))),
    }
}

/// Any of the calibration methods, fed pass by pass: every batch to each of [`Self::passes`] passes in turn.
pub enum Calibrator {
    /// MinMax: one pass.
    MinMax(MinMax),
    /// Percentile or entropy: two passes.
    Histograms(Histograms),
}

impl Calibrator {
    /// The calibrator `method` asks for, on `model` (prepared: inferred `value_info`).
    pub fn new(
        model: &ModelProto,
        op_types: &HashSet<String>,
        threads: usize,
        method: super::CalibrationMethod,
    ) -> Result<Self, QuantizeError> {
        Ok(match method {
            super::CalibrationMethod::MinMax => Calibrator::MinMax(MinMax::new(model, op_types, threads)?),
            _ => Calibrator::Histograms(Histograms::new(model, op_types, threads, method)?),
        })
    }

    /// How many times every batch must be fed.
    pub fn passes(&self) -> usize {
        match self {
            Calibrator::MinMax(_) => 1,
            Calibrator::Histograms(_) => 2,
        }
    }

    /// Observes one batch in `pass`.
    pub fn collect(&mut self, pass: usize, batch: &Batch) -> Result<(), QuantizeError> {
        match self {
            Calibrator::MinMax(c) => c.collect(batch),
            Calibrator::Histograms(c) => c.collect(pass, batch),
        }
    }

    /// The calibrated ranges.
    pub fn ranges(&self) -> Result<Ranges, QuantizeError> {
        match self {
            Calibrator::MinMax(c) => c.ranges(),
            Calibrator::Histograms(c) => c.ranges(),
        }
    }
}
