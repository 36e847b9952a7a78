//! An accuracy budget for static quantization, in the spirit of OpenVINO's AccuracyAware quantization and NNCF's
//! `quantize_with_accuracy_control`: quantize, measure the top-1 drop against the float model on a validation
//! set; while it exceeds the budget, rank the quantized activations by their noise ([`super::sensitivity`]) and
//! keep the producer of the worst one in float (`nodes_to_exclude`), one node at a time. The calibrated ranges
//! do not depend on which nodes are excluded, so calibration runs once.

use ort::session::Session;
use ort::value::TensorRef;

use super::{Batch, Method, QuantizeError, QuantizeOptions, Quantized, Ranges, quantize_static};
use crate::model::proto::{self, ModelProto};
use crate::runtime::{CancelToken, ort_environment};

/// One step of the search.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetStep {
    /// Nodes kept float at this step.
    pub excluded: Vec<String>,
    /// Top-1 of the quantized model, in percent.
    pub top1_percent: f64,
}

/// What the search found.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetOutcome {
    /// Top-1 of the float model on the validation set, in percent.
    pub float_top1_percent: f64,
    /// Every step, the last one kept.
    pub steps: Vec<BudgetStep>,
    /// Whether the last step fits the budget.
    pub within_budget: bool,
}

/// Top-1 (percent) of `model` on `batches` with `labels`, reading output `exit`.
pub fn top1_percent(
    model: &ModelProto,
    exit: &str,
    batches: &[Batch],
    labels: &[u32],
    threads: usize,
) -> Result<f64, QuantizeError> {
    let environment = ort_environment()?;
    let error = |e: String| QuantizeError::Runtime(format!("ONNX Runtime: {e}"));
    let mut builder = Session::builder(environment).map_err(|e| error(e.to_string()))?;
    if threads > 0 {
        builder = builder.with_intra_threads(threads).map_err(|e| error(e.to_string()))?;
    }
    let mut session = builder.commit_from_memory(&proto::encode_model(model)).map_err(|e| error(e.to_string()))?;
    let input = session.inputs().first().map(|i| i.name().to_string()).ok_or_else(|| error("no input".into()))?;
    let mut correct = 0usize;
    let mut seen = 0usize;
    for batch in batches {
        let tensor = TensorRef::from_array_view((batch.shape.clone(), batch.values.as_slice()))
            .map_err(|e| error(e.to_string()))?;
        let outputs = session.run(ort::inputs![input.as_str() => tensor]).map_err(|e| error(e.to_string()))?;
        let value = outputs.get(exit).ok_or_else(|| error(format!("no output {exit:?}")))?;
        let (_, values) = value.try_extract_tensor::<f32>().map_err(|e| error(e.to_string()))?;
        let rows = batch.shape.first().copied().unwrap_or(0).max(1);
        let classes = values.len() / rows;
        for row in values.chunks(classes.max(1)).take(rows) {
            let best = (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b });
            if labels.get(seen).is_some_and(|&l| l as usize == best) {
                correct += 1;
            }
            seen += 1;
        }
    }
    Ok(100.0 * correct as f64 / seen.max(1) as f64)
}

/// Quantizes `model` statically, then keeps the most sensitive nodes float until the top-1 drop on the
/// validation set is at most `max_drop_pp` percentage points (or `max_steps` nodes are float).
#[allow(clippy::too_many_arguments)]
pub fn fit(
    model: &ModelProto,
    ranges: &Ranges,
    options: &QuantizeOptions,
    exit: &str,
    validation: &[Batch],
    labels: &[u32],
    max_drop_pp: f64,
    max_steps: usize,
    threads: usize,
    cancel: &CancelToken,
    on_step: &mut dyn FnMut(&BudgetStep, f64),
) -> Result<(Quantized, BudgetOutcome), QuantizeError> {
    if options.method != Method::Ptq {
        return Err(QuantizeError::Model("--max-drop works with --method ptq".into()));
    }
    let float_top1 = top1_percent(model, exit, validation, labels, threads)?;
    let mut options = options.clone();
    let mut steps = Vec::new();
    loop {
        if cancel.is_cancelled() {
            return Err(QuantizeError::Cancelled);
        }
        let quantized = quantize_static(model, ranges, &options)?;
        let top1 = top1_percent(&quantized.model, exit, validation, labels, threads)?;
        let step = BudgetStep { excluded: options.exclude.clone(), top1_percent: top1 };
        on_step(&step, float_top1);
        steps.push(step);
        let within = float_top1 - top1 <= max_drop_pp;
        if within || options.exclude.len() >= max_steps {
            let outcome = BudgetOutcome { float_top1_percent: float_top1, steps, within_budget: within };
            return Ok((quantized, outcome));
        }
        let sample: Vec<Batch> = validation.iter().take(4).cloned().collect();
        let mut batches = sample.into_iter().map(Ok);
        let noise =
            super::sensitivity::sensitivity(model, &quantized.model, &mut batches, threads, cancel, &mut |_| {})?;
        let graph = model.graph.as_ref().ok_or_else(|| QuantizeError::Model("no graph".into()))?;
        let next = noise.iter().find_map(|n| {
            graph
                .node
                .iter()
                .find(|node| node.output.contains(&n.tensor) && !node.name.is_empty())
                .map(|node| node.name.clone())
                .filter(|name| !options.exclude.contains(name))
        });
        match next {
            Some(name) => options.exclude.push(name),
            None => {
                let outcome = BudgetOutcome { float_top1_percent: float_top1, steps, within_budget: false };
                return Ok((quantized, outcome));
            }
        }
    }
}
