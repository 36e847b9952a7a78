//! Per-tensor quantization noise, as ORT's `qdq_loss_debug` measures it: for every activation a QDQ model
//! quantizes, the signal-to-quantization-noise ratio `20 log10(||x|| / ||x - y||)` (norms over all samples,
//! floored at f64 epsilon) between the float model's tensor `x` and the quantized model's dequantized tensor `y`
//! (`xmodel_err`), and between the quantized model's tensor before and after its Q/DQ pair (`qdq_err`). Both
//! models run in ONNX Runtime with graph optimizations off, every observed tensor added as an output.

use std::collections::{HashMap, HashSet};

use super::calibrate::{calibration_session, run_batch, with_outputs};
use super::{Batch, QuantizeError};
use crate::model::proto::ModelProto;
use crate::runtime::CancelToken;

/// The noise of one quantized activation.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TensorNoise {
    /// The activation (its name in the float model).
    pub tensor: String,
    /// The node producing it in the float model.
    pub producer: String,
    /// SQNR of the quantized model's dequantized tensor against the float model's, in dB (low = sensitive).
    pub sqnr_db: f64,
    /// SQNR of the tensor's own Q/DQ pair in the quantized model, in dB.
    pub qdq_sqnr_db: f64,
}

#[derive(Default)]
struct Sums {
    signal: f64,
    noise: f64,
}

fn sqnr_db(s: &Sums) -> f64 {
    let eps = f64::EPSILON;
    20.0 * (s.signal.sqrt().max(eps) / s.noise.sqrt().max(eps)).log10()
}

fn accumulate(sums: &mut Sums, x: &[f32], y: &[f32]) -> bool {
    if x.len() != y.len() {
        return false;
    }
    for (&a, &b) in x.iter().zip(y) {
        let (a, b) = (f64::from(a), f64::from(b));
        sums.signal += a * a;
        sums.noise += (a - b) * (a - b);
    }
    true
}

/// `(tensor, pre-QDQ name, post-QDQ name)` for every QuantizeLinear of a QDQ model.
fn quantized_tensors(quantized: &ModelProto) -> Vec<(String, String, String)> {
    let Some(graph) = quantized.graph.as_ref() else { return Vec::new() };
    graph
        .node
        .iter()
        .filter(|n| n.op_type == "QuantizeLinear")
        .filter_map(|n| {
            let input = n.input.first()?;
            Some(match input.strip_suffix("_QuantizeLinear_Input") {
                Some(name) => (name.to_string(), input.clone(), name.to_string()),
                None => (input.clone(), input.clone(), format!("{input}_DequantizeLinear_Output")),
            })
        })
        .collect()
}

/// Measures the noise of every quantized activation on `batches`, worst (lowest SQNR) first.
pub fn sensitivity(
    float_model: &ModelProto,
    quantized: &ModelProto,
    batches: &mut dyn Iterator<Item = Result<Batch, QuantizeError>>,
    threads: usize,
    cancel: &CancelToken,
    on_batch: &mut dyn FnMut(usize),
) -> Result<Vec<TensorNoise>, QuantizeError> {
    let float_graph = float_model.graph.as_ref().ok_or_else(|| QuantizeError::Model("no graph".into()))?;
    let mut producers: HashMap<&str, String> = HashMap::new();
    for node in &float_graph.node {
        for output in &node.output {
            producers.insert(output, if node.name.is_empty() { node.op_type.clone() } else { node.name.clone() });
        }
    }
    let inputs: HashSet<&str> = float_graph.input.iter().map(|i| i.name.as_str()).collect();
    let tensors: Vec<(String, String, String)> = quantized_tensors(quantized)
        .into_iter()
        .filter(|(name, _, _)| producers.contains_key(name.as_str()) || inputs.contains(name.as_str()))
        .collect();
    if tensors.is_empty() {
        return Err(QuantizeError::Model(
            "the quantized model has no QuantizeLinear activations shared with the float model (sensitivity needs a \
             QDQ model made from that float model)"
                .into(),
        ));
    }
    let input_name = |m: &ModelProto| -> Result<String, QuantizeError> {
        let g = m.graph.as_ref().ok_or_else(|| QuantizeError::Model("no graph".into()))?;
        let inits: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
        g.input
            .iter()
            .find(|i| !inits.contains(i.name.as_str()))
            .map(|i| i.name.clone())
            .ok_or_else(|| QuantizeError::Model("the model has no input".into()))
    };
    let float_names: Vec<String> = tensors.iter().map(|t| t.0.clone()).collect();
    let quant_names: Vec<String> = tensors.iter().flat_map(|t| [t.1.clone(), t.2.clone()]).collect();
    let mut float_session = calibration_session(&with_outputs(float_model, &float_names), threads)?;
    let mut quant_session = calibration_session(&with_outputs(quantized, &quant_names), threads)?;
    let (float_input, quant_input) = (input_name(float_model)?, input_name(quantized)?);
    let mut cross: HashMap<String, Sums> = HashMap::new();
    let mut local: HashMap<String, Sums> = HashMap::new();
    let mut done = 0;
    for batch in batches {
        if cancel.is_cancelled() {
            return Err(QuantizeError::Cancelled);
        }
        let batch = batch?;
        let wanted_float: HashSet<&str> = float_names.iter().map(String::as_str).collect();
        let mut float_values: HashMap<String, Vec<f32>> = HashMap::new();
        if wanted_float.contains(float_input.as_str()) {
            float_values.insert(float_input.clone(), batch.values.clone());
        }
        run_batch(&mut float_session, &float_input, &batch, |name, values| {
            if wanted_float.contains(name) {
                float_values.insert(name.to_string(), values.to_vec());
            }
            Ok(())
        })?;
        let wanted_quant: HashSet<&str> = quant_names.iter().map(String::as_str).collect();
        let mut quant_values: HashMap<String, Vec<f32>> = HashMap::new();
        quant_values.insert(quant_input.clone(), batch.values.clone());
        run_batch(&mut quant_session, &quant_input, &batch, |name, values| {
            if wanted_quant.contains(name) {
                quant_values.insert(name.to_string(), values.to_vec());
            }
            Ok(())
        })?;
        for (name, pre, post) in &tensors {
            let (Some(x), Some(q_pre), Some(q_post)) =
                (float_values.get(name), quant_values.get(pre), quant_values.get(post))
            else {
                continue;
            };
            accumulate(cross.entry(name.clone()).or_default(), x, q_post);
            accumulate(local.entry(name.clone()).or_default(), q_pre, q_post);
        }
        done += batch.shape.first().copied().unwrap_or(0);
        on_batch(done);
    }
    let mut out: Vec<TensorNoise> = tensors
        .iter()
        .filter_map(|(name, _, _)| {
            let c = cross.get(name)?;
            let l = local.get(name)?;
            Some(TensorNoise {
                tensor: name.clone(),
                producer: producers.get(name.as_str()).cloned().unwrap_or_else(|| "(graph input)".into()),
                sqnr_db: sqnr_db(c),
                qdq_sqnr_db: sqnr_db(l),
            })
        })
        .collect();
    out.sort_by(|a, b| a.sqnr_db.total_cmp(&b.sqnr_db));
    Ok(out)
}
