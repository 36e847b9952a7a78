//! Graph edits as ORT's `onnx_model.ONNXModel` makes them (same order of initializers and nodes, same
//! topological sort), so the quantized graph is laid out exactly as ORT lays it out.

use std::collections::{HashMap, HashSet};

use crate::model::proto::{GraphProto, NodeProto, TensorProto};

/// `find_by_name` over the initializers: the first with that name.
pub fn initializer<'g>(graph: &'g GraphProto, name: &str) -> Option<&'g TensorProto> {
    graph.initializer.iter().find(|t| t.name == name)
}

/// `add_initializer`: appended unless one of that name exists.
pub fn add_initializer(graph: &mut GraphProto, tensor: TensorProto) {
    if initializer(graph, &tensor.name).is_none() {
        graph.initializer.push(tensor);
    }
}

/// `remove_initializer`: drops the first initializer of that name and a graph input of that name.
pub fn remove_initializer(graph: &mut GraphProto, name: &str) {
    if let Some(i) = graph.initializer.iter().position(|t| t.name == name) {
        graph.initializer.remove(i);
        if let Some(j) = graph.input.iter().position(|v| v.name == name) {
            graph.input.remove(j);
        }
    }
}

/// `replace_input_of_all_nodes`.
pub fn replace_input_of_all_nodes(graph: &mut GraphProto, old: &str, new: &str) {
    for node in &mut graph.node {
        replace_node_input(node, old, new);
    }
}

/// `replace_input_of_nodes`: only in the nodes of these names.
pub fn replace_input_of_nodes(graph: &mut GraphProto, old: &str, new: &str, names: &HashSet<String>) {
    for node in graph.node.iter_mut().filter(|n| names.contains(&n.name)) {
        replace_node_input(node, old, new);
    }
}

/// `replace_node_input`.
pub fn replace_node_input(node: &mut NodeProto, old: &str, new: &str) {
    for input in node.input.iter_mut().filter(|i| *i == old) {
        *input = new.to_string();
    }
}

/// `replace_output_of_all_nodes`.
pub fn replace_output_of_all_nodes(graph: &mut GraphProto, old: &str, new: &str) {
    for node in &mut graph.node {
        for output in node.output.iter_mut().filter(|o| *o == old) {
            *output = new.to_string();
        }
    }
}

/// `len(input_name_to_nodes()[name])`: how many node inputs read `name` (a node reading it twice counts twice).
pub fn consumer_count(graph: &GraphProto, name: &str) -> usize {
    graph.node.iter().flat_map(|n| n.input.iter()).filter(|i| !i.is_empty() && *i == name).count()
}

/// `is_graph_output`.
pub fn is_graph_output(graph: &GraphProto, name: &str) -> bool {
    graph.output.iter().any(|o| o.name == name)
}

/// `is_graph_input`.
pub fn is_graph_input(graph: &GraphProto, name: &str) -> bool {
    graph.input.iter().any(|i| i.name == name)
}

/// `ONNXModel.topological_sort`: nodes without inputs first, then the nodes each initializer or graph input
/// (sorted by name) completes, then breadth-first through outputs. `Err` names a node that never becomes ready.
pub fn topological_sort(graph: &mut GraphProto) -> Result<(), String> {
    let count = graph.node.len();
    let mut deps_count = vec![0usize; count];
    let mut deps_to_nodes: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut sorted: Vec<usize> = Vec::with_capacity(count);
    for (index, node) in graph.node.iter().enumerate() {
        deps_count[index] = node.input.iter().filter(|i| !i.is_empty()).count();
        if deps_count[index] == 0 {
            sorted.push(index);
            continue;
        }
        for input in node.input.iter().filter(|i| !i.is_empty()) {
            deps_to_nodes.entry(input.as_str()).or_default().push(index);
        }
    }
    let mut names: Vec<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).chain(graph.input.iter().map(|i| i.name.as_str())).collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        if let Some(nodes) = deps_to_nodes.get(name) {
            for &n in nodes {
                deps_count[n] -= 1;
                if deps_count[n] == 0 {
                    sorted.push(n);
                }
            }
        }
    }
    let mut start = 0;
    while start < sorted.len() {
        let node = &graph.node[sorted[start]];
        for output in &node.output {
            if let Some(nodes) = deps_to_nodes.get(output.as_str()) {
                for &n in nodes {
                    deps_count[n] -= 1;
                    if deps_count[n] == 0 {
                        sorted.push(n);
                    }
                }
            }
        }
        start += 1;
    }
    if sorted.len() != count {
        let stuck = (0..count).find(|n| !sorted.contains(n)).map(|n| graph.node[n].name.clone()).unwrap_or_default();
        return Err(format!("the quantized graph is not a DAG (node {stuck:?} never gets its inputs)"));
    }
    let mut nodes: Vec<Option<NodeProto>> = std::mem::take(&mut graph.node).into_iter().map(Some).collect();
    graph.node = sorted.into_iter().filter_map(|n| nodes[n].take()).collect();
    Ok(())
}

/// `_clean_initializers_helper`: drops initializers no node or graph output reads (and their graph inputs).
/// Returns the names read that nothing provides (ORT's "unknown initializers/tensors").
pub fn clean_initializers(graph: &mut GraphProto) -> Vec<String> {
    let mut requesting: HashSet<String> = graph
        .node
        .iter()
        .flat_map(crate::model::graph::node_reads)
        .chain(graph.output.iter().map(|o| o.name.clone()))
        .filter(|n| !n.is_empty())
        .collect();
    for node in &graph.node {
        for output in &node.output {
            requesting.remove(output);
        }
    }
    let mut unused: Vec<usize> = Vec::new();
    for (index, tensor) in graph.initializer.iter().enumerate() {
        if !requesting.remove(&tensor.name) {
            unused.push(index);
        }
    }
    for &index in unused.iter().rev() {
        let name = graph.initializer.remove(index).name;
        if let Some(j) = graph.input.iter().position(|v| v.name == name) {
            graph.input.remove(j);
        }
    }
    for input in &graph.input {
        requesting.remove(&input.name);
    }
    let mut left: Vec<String> = requesting.into_iter().collect();
    left.sort();
    left
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::proto::ValueInfoProto;

    fn node(name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            name: name.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn sort_takes_constants_then_initializer_order_then_breadth() {
        let mut graph = GraphProto {
            node: vec![
                node("c", &["b_out", "w2"], &["c_out"]),
                node("b", &["a_out"], &["b_out"]),
                node("a", &["x", "w1"], &["a_out"]),
                node("k", &[], &["k_out"]),
            ],
            input: vec![ValueInfoProto { name: "x".into(), ..Default::default() }],
            initializer: vec![
                TensorProto { name: "w2".into(), ..Default::default() },
                TensorProto { name: "w1".into(), ..Default::default() },
            ],
            ..Default::default()
        };
        topological_sort(&mut graph).expect("a DAG");
        let names: Vec<&str> = graph.node.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["k", "a", "b", "c"]);
    }

    #[test]
    fn cleaning_keeps_read_initializers_in_order() {
        let mut graph = GraphProto {
            node: vec![node("a", &["x", "w1", "w3"], &["y"])],
            initializer: ["w1", "w2", "w3"]
                .iter()
                .map(|n| TensorProto { name: n.to_string(), ..Default::default() })
                .collect(),
            ..Default::default()
        };
        let unknown = clean_initializers(&mut graph);
        assert_eq!(unknown, ["x"]);
        let names: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["w1", "w3"]);
    }
}
