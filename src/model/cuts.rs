//! Cut points and splitting: where a graph can be cut in two with a single tensor crossing the cut, and how a
//! multi-exit graph becomes an early-exit chain of segments.
//!
//! A tensor `t` is a cut point for a set of outputs when every node those outputs need is either one `t`
//! depends on (before) or one that reads nothing from before but `t` (after): `t` dominates the outputs in the
//! data-flow graph from the image input, and nothing else crosses. Initializers and nodes that do not depend on
//! the image (constants) cross freely: each segment gets its own copy.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ModelError;
use super::graph::{DataFlow, TensorType, value_info};
use super::onnx::Dim;
use super::proto::{GraphProto, ModelProto, ValueInfoProto};

/// One tensor where the graph can be cut.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CutPoint {
    /// Tensor name.
    pub tensor: String,
    /// The operator producing it.
    pub operator: String,
    /// Shape, when known (declared or inferred).
    pub shape: Option<Vec<Dim>>,
    /// Multiply-accumulates per sample before the cut.
    pub macs_before: u64,
    /// Share of the model's multiply-accumulates before the cut (0 to 1).
    pub mac_share: f64,
    /// Parameters (initializer elements) used before the cut.
    pub parameters_before: u64,
    /// Share of the model's parameters used before the cut (0 to 1).
    pub parameter_share: f64,
    /// Right after a residual Add, a Concat or a pooling (possibly followed by an activation): a block boundary.
    pub block_boundary: bool,
}

/// How deep a suggested exit sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Depth {
    /// About 25 % of the compute before it.
    Early,
    /// About 50 %.
    Middle,
    /// About 75 %.
    Late,
}

impl Depth {
    /// All depths with their target share of the compute.
    pub const TARGETS: [(Depth, f64); 3] = [(Depth::Early, 0.25), (Depth::Middle, 0.5), (Depth::Late, 0.75)];

    /// Name for people and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Depth::Early => "early",
            Depth::Middle => "middle",
            Depth::Late => "late",
        }
    }
}

/// Where a model can be cut.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CutAnalysis {
    /// The output the cuts separate from the image (the last one produced).
    pub output: String,
    /// Multiply-accumulates per sample of everything that output needs.
    pub total_macs: u64,
    /// Parameters of everything that output needs.
    pub total_parameters: u64,
    /// Cut points in depth order.
    pub cuts: Vec<CutPoint>,
    /// Suggested early / middle / late cuts (indices into `cuts`).
    pub suggested: Vec<(Depth, usize)>,
}

const BLOCK_ENDS: &[&str] =
    &["Add", "Sum", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool"];
const ACTIVATIONS: &[&str] =
    &["Relu", "Clip", "HardSwish", "Sigmoid", "LeakyRelu", "PRelu", "Elu", "Selu", "Gelu", "Tanh"];

fn is_block_boundary(flow: &DataFlow<'_>, producer: usize) -> bool {
    let node = &flow.graph.node[producer];
    if BLOCK_ENDS.contains(&node.op_type.as_str()) {
        return true;
    }
    ACTIVATIONS.contains(&node.op_type.as_str())
        && node
            .input
            .first()
            .and_then(|i| flow.producer.get(i))
            .is_some_and(|&p| BLOCK_ENDS.contains(&flow.graph.node[p].op_type.as_str()))
}

fn share(part: u64, total: u64) -> f64 {
    if total == 0 { 0.0 } else { part as f64 / total as f64 }
}

/// Every cut point between the image input and the graph's last output, with what lies before each.
pub fn cut_points(graph: &GraphProto, path: &Path) -> Result<CutAnalysis, ModelError> {
    let flow = DataFlow::new(graph, path)?;
    let invalid = |reason: String| ModelError::Invalid { path: path.to_path_buf(), reason };
    let output = flow.last_output().ok_or_else(|| invalid("no graph output is produced by a node".into()))?;
    let needed = flow.ancestors([output]);
    let (all_initializers, _) = flow.static_closure(&needed);
    let total_macs = flow.macs(&needed);
    let total_parameters = flow.parameter_count(&all_initializers);
    let mut cuts = Vec::new();
    for &n in flow.order.iter().filter(|&&n| needed[n]) {
        for tensor in flow.graph.node[n].output.iter().filter(|t| !t.is_empty() && t.as_str() != output) {
            let before = flow.ancestors([tensor.as_str()]);
            if !flow.separates(tensor, &needed, &before) {
                continue;
            }
            let (initializers, _) = flow.static_closure(&before);
            let macs_before = flow.macs(&before);
            let parameters_before = flow.parameter_count(&initializers);
            cuts.push(CutPoint {
                tensor: tensor.clone(),
                operator: flow.graph.node[n].op_type.clone(),
                shape: flow.tensor_type(tensor).and_then(|t| t.shape.clone()),
                macs_before,
                mac_share: share(macs_before, total_macs),
                parameters_before,
                parameter_share: share(parameters_before, total_parameters),
                block_boundary: is_block_boundary(&flow, n),
            });
        }
    }
    if cuts.is_empty() {
        let starts: Vec<&str> = flow
            .order
            .iter()
            .filter(|&&n| needed[n] && flow.reads[n].contains(&flow.image))
            .map(|&n| flow.graph.node[n].op_type.as_str())
            .collect();
        return Err(invalid(format!(
            "no single tensor separates what comes before from what comes after on the way from {:?} to {output:?}: \
             the image feeds {} node(s) ({}) whose branches only merge in the node that makes the output. \
             Exits need a single-tensor cut: re-export the model with its branches merged (Add / Concat) before \
             the classifier",
            flow.image,
            starts.len(),
            starts.join(", ")
        )));
    }
    let suggested = suggest(&cuts);
    Ok(CutAnalysis { output: output.to_string(), total_macs, total_parameters, cuts, suggested })
}

/// Early / middle / late: the block boundary nearest each target share of the compute (within 10 points),
/// else the nearest cut; each cut suggested once.
fn suggest(cuts: &[CutPoint]) -> Vec<(Depth, usize)> {
    let mut chosen: Vec<(Depth, usize)> = Vec::new();
    for (depth, target) in Depth::TARGETS {
        let free =
            |i: &usize| !chosen.iter().any(|(_, c)| c == i) && cuts[*i].mac_share > 0.0 && cuts[*i].mac_share < 1.0;
        let distance = |i: &usize| (cuts[*i].mac_share - target).abs();
        // Among equals the later cut: the activation after a residual Add is the block's output.
        let nearest =
            |candidates: Vec<usize>| candidates.into_iter().rev().min_by(|a, b| distance(a).total_cmp(&distance(b)));
        let boundaries: Vec<usize> =
            (0..cuts.len()).filter(free).filter(|i| cuts[*i].block_boundary && distance(i) <= 0.1).collect();
        let pick = nearest(boundaries).or_else(|| nearest((0..cuts.len()).filter(free).collect()));
        if let Some(index) = pick {
            chosen.push((depth, index));
        }
    }
    chosen
}

/// One segment of a split chain.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitSegment {
    /// The segment's model.
    pub model: ModelProto,
    /// Its input: the image for the first segment, else the previous segment's carried tensor.
    pub input: String,
    /// Its exit output.
    pub exit: String,
    /// The tensor it carries to the next segment (none for the last).
    pub carry: Option<String>,
    /// Multiply-accumulates per sample.
    pub macs: u64,
}

/// The outputs of a multi-exit model, exits in depth order and the final output last.
///
/// `named` (the user's choice) lists them with the final output last; otherwise exits are the outputs of shape
/// `[N, classes]` with the class count of the final output, the one that depends on the most nodes.
pub fn exit_outputs(flow: &DataFlow<'_>, named: Option<&[String]>) -> Result<Vec<String>, ModelError> {
    let invalid = |reason: String| ModelError::Invalid { path: flow.path.clone(), reason };
    let output_names: Vec<&str> = flow.graph.output.iter().map(|o| o.name.as_str()).collect();
    let mut exits: Vec<String> = match named {
        Some(names) => {
            for name in names {
                if !flow.producer.contains_key(name) {
                    return Err(invalid(format!(
                        "it has no tensor {name:?}; its outputs are {}",
                        output_names.join(", ")
                    )));
                }
            }
            names.to_vec()
        }
        None => {
            let last = flow.last_output().ok_or_else(|| invalid("no graph output is produced by a node".into()))?;
            let classes = flow.tensor_type(last).and_then(|t| t.shape.as_ref()).and_then(|s| match s.as_slice() {
                [_, classes] => classes.fixed(),
                _ => None,
            });
            let Some(classes) = classes else {
                return Err(invalid(format!(
                    "its last output {last:?} is not of shape [N, classes]; name the exits and the final output \
                     with --exits EXIT1,...,FINAL"
                )));
            };
            let mut found: Vec<String> = output_names
                .iter()
                .filter(|name| **name != last)
                .filter(|name| {
                    flow.tensor_type(name)
                        .and_then(|t| t.shape.as_ref())
                        .is_some_and(|s| s.len() == 2 && s[1].fixed() == Some(classes))
                })
                .map(|name| name.to_string())
                .collect();
            found.push(last.to_string());
            found
        }
    };
    let Some(last) = exits.pop() else {
        return Err(invalid("no exits were named; give --exits EXIT1,...,FINAL".into()));
    };
    if exits.is_empty() {
        return Err(invalid(format!(
            "it has a single classifier output ({last:?}; outputs: {}), nothing to split; name the exits with \
             --exits EXIT1,...,FINAL if they have another shape",
            output_names.join(", ")
        )));
    }
    let backbone = flow.ancestors([last.as_str()]);
    let depth = |name: &str| {
        let before = flow.ancestors([name]);
        (0..before.len()).filter(|&n| before[n] && backbone[n]).count()
    };
    exits.sort_by_key(|e| depth(e));
    exits.push(last);
    let unique: BTreeSet<&String> = exits.iter().collect();
    if unique.len() != exits.len() {
        return Err(invalid("an output is named twice in --exits".into()));
    }
    Ok(exits)
}

/// Splits a multi-exit model into segments, one per exit (in the order of [`exit_outputs`]).
///
/// Exit `k`'s segment computes, from the previous carried tensor (or the image), exit `k` and the earliest cut
/// point of the later outputs that lies after the backbone tensors exit `k` reads (its branch point).
pub fn split(model: &ModelProto, path: &Path, named: Option<&[String]>) -> Result<Vec<SplitSegment>, ModelError> {
    let invalid = |reason: String| ModelError::Invalid { path: path.to_path_buf(), reason };
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| ModelError::Corrupt { path: path.to_path_buf(), reason: "the file holds no graph".into() })?;
    let flow = DataFlow::new(graph, path)?;
    let outputs = exit_outputs(&flow, named)?;
    let count = flow.graph.node.len();
    let mut previous_before = vec![false; count];
    let mut previous_carry = flow.image.clone();
    let mut segments = Vec::with_capacity(outputs.len());
    for (index, exit) in outputs.iter().enumerate() {
        let exit_nodes = flow.ancestors([exit.as_str()]);
        let later = &outputs[index + 1..];
        let (nodes, carry, before) = if later.is_empty() {
            let nodes: Vec<bool> = (0..count).map(|n| exit_nodes[n] && !previous_before[n]).collect();
            (nodes, None, previous_before.clone())
        } else {
            let needed = flow.ancestors(later.iter().map(String::as_str));
            let later_producers: Vec<usize> = later.iter().filter_map(|o| flow.producer.get(o).copied()).collect();
            let mut found = None;
            'search: for &n in flow.order.iter().filter(|&&n| needed[n] && !previous_before[n]) {
                for tensor in flow.graph.node[n].output.iter().filter(|t| !t.is_empty()) {
                    let before = flow.ancestors([tensor.as_str()]);
                    let exit_fits = (0..count).all(|m| !(exit_nodes[m] && needed[m]) || before[m]);
                    let later_after = later_producers.iter().all(|&p| !before[p]);
                    if exit_fits && later_after && flow.separates(tensor, &needed, &before) {
                        found = Some((tensor.clone(), before));
                        break 'search;
                    }
                }
            }
            let Some((carry, before)) = found else {
                let branch = flow
                    .order
                    .iter()
                    .rev()
                    .find(|&&m| exit_nodes[m] && needed[m])
                    .and_then(|&m| flow.graph.node[m].output.first().cloned())
                    .unwrap_or_else(|| previous_carry.clone());
                return Err(invalid(format!(
                    "exit {exit:?} branches off the backbone at {branch:?}, but after that point no single tensor \
                     separates it from the later outputs ({}): parallel branches run on to them without merging. \
                     Leave this exit out (--exits with the others), or re-export the model so the exit branches \
                     off where the backbone's branches have merged",
                    later.join(", ")
                )));
            };
            let nodes: Vec<bool> = (0..count).map(|n| (exit_nodes[n] || before[n]) && !previous_before[n]).collect();
            (nodes, Some(carry), before)
        };
        let model = segment_model(model, &flow, &nodes, &previous_carry, exit, carry.as_deref(), index)?;
        segments.push(SplitSegment {
            model,
            input: previous_carry.clone(),
            exit: exit.clone(),
            carry: carry.clone(),
            macs: flow.macs(&nodes),
        });
        if let Some(carry) = carry {
            previous_carry = carry;
            previous_before = before;
        }
    }
    Ok(segments)
}

fn typed_value_info(flow: &DataFlow<'_>, name: &str) -> Result<ValueInfoProto, ModelError> {
    let graph = flow.graph;
    if let Some(declared) =
        graph.input.iter().chain(&graph.output).chain(&graph.value_info).find(|v| v.name == name && v.r#type.is_some())
    {
        return Ok(declared.clone());
    }
    let tensor_type: TensorType = flow.tensor_type(name).cloned().unwrap_or_default();
    if tensor_type.elem_type == 0 {
        return Err(ModelError::Invalid {
            path: flow.path.clone(),
            reason: format!(
                "the element type of {name:?} cannot be told from the graph; run ONNX shape inference on the model \
                 (python -m onnx.shape_inference or onnx.shape_inference.infer_shapes) and split the result"
            ),
        });
    }
    Ok(value_info(name, &tensor_type))
}

/// The model of one segment: the marked dynamic nodes, the static nodes and initializers they need, the
/// carried-in tensor as input, the exit and carried-out tensor as outputs; everything else of the model kept.
fn segment_model(
    model: &ModelProto,
    flow: &DataFlow<'_>,
    nodes: &[bool],
    input: &str,
    exit: &str,
    carry: Option<&str>,
    index: usize,
) -> Result<ModelProto, ModelError> {
    let graph = flow.graph;
    let (initializers, statics) = flow.static_closure(nodes);
    let included: Vec<usize> = flow.order.iter().copied().filter(|&n| nodes[n] || statics[n]).collect();
    let produced: BTreeSet<&str> =
        included.iter().flat_map(|&n| graph.node[n].output.iter().map(String::as_str)).collect();
    let mut inputs = vec![typed_value_info(flow, input)?];
    inputs.extend(graph.input.iter().filter(|i| initializers.contains(&i.name)).cloned());
    let mut outputs = vec![typed_value_info(flow, exit)?];
    if let Some(carry) = carry {
        outputs.push(typed_value_info(flow, carry)?);
    }
    let interface: BTreeSet<&str> = [Some(input), Some(exit), carry].into_iter().flatten().collect();
    let mut referenced: BTreeSet<&str> = produced.clone();
    referenced.insert(input);
    referenced.extend(initializers.iter().map(String::as_str));
    let segment_graph = GraphProto {
        node: included.iter().map(|&n| graph.node[n].clone()).collect(),
        name: if graph.name.is_empty() {
            format!("segment{}", index + 1)
        } else {
            format!("{}_seg{}", graph.name, index + 1)
        },
        initializer: graph.initializer.iter().filter(|t| initializers.contains(&t.name)).cloned().collect(),
        sparse_initializer: graph
            .sparse_initializer
            .iter()
            .filter(|s| s.values.as_ref().is_some_and(|v| initializers.contains(&v.name)))
            .cloned()
            .collect(),
        doc_string: graph.doc_string.clone(),
        input: inputs,
        output: outputs,
        value_info: graph
            .value_info
            .iter()
            .filter(|v| produced.contains(v.name.as_str()) && !interface.contains(v.name.as_str()))
            .cloned()
            .collect(),
        quantization_annotation: graph
            .quantization_annotation
            .iter()
            .filter(|a| referenced.contains(a.tensor_name.as_str()))
            .cloned()
            .collect(),
        metadata_props: graph.metadata_props.clone(),
    };
    Ok(ModelProto { graph: Some(segment_graph), ..model.clone() })
}
