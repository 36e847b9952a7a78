//! Building protobuf pieces the way the Python `onnx` helpers ORT's quantizer calls do, field for field:
//! `onnx.helper.make_tensor` stores values in the typed fields (`float_data`, `int32_data`, `int64_data`),
//! `onnx.numpy_helper.from_array` in `raw_data`; `onnx.helper.make_node` sets the name only when it is not
//! empty and writes attributes sorted by name. The written file therefore matches ORT's byte for byte.

use crate::model::proto::{AttributeProto, NodeProto, TensorProto};

/// ONNX data types used here.
pub mod dtype {
    /// FLOAT.
    pub const FLOAT: i32 = 1;
    /// UINT8.
    pub const UINT8: i32 = 2;
    /// INT8.
    pub const INT8: i32 = 3;
    /// INT32.
    pub const INT32: i32 = 6;
    /// INT64.
    pub const INT64: i32 = 7;
    /// BOOL.
    pub const BOOL: i32 = 9;
    /// FLOAT16.
    pub const FLOAT16: i32 = 10;
}

/// The float values of an f32 initializer (raw or typed storage); `None` for other types or a size mismatch.
pub fn f32_values(tensor: &TensorProto) -> Option<Vec<f32>> {
    if tensor.data_type != dtype::FLOAT {
        return None;
    }
    let count = element_count(&tensor.dims)?;
    let values: Vec<f32> = match &tensor.raw_data {
        Some(raw) => raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        None => tensor.float_data.clone(),
    };
    (values.len() == count).then_some(values)
}

/// The integer values of an int64 / int32 / 8-bit initializer.
pub fn int_values(tensor: &TensorProto) -> Option<Vec<i64>> {
    let raw = tensor.raw_data.as_deref();
    Some(match (tensor.data_type, raw) {
        (dtype::INT64, Some(raw)) => {
            raw.chunks_exact(8).map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect()
        }
        (dtype::INT64, None) => tensor.int64_data.clone(),
        (dtype::INT32, Some(raw)) => {
            raw.chunks_exact(4).map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect()
        }
        (dtype::UINT8, Some(raw)) => raw.iter().map(|&b| i64::from(b)).collect(),
        (dtype::INT8, Some(raw)) => raw.iter().map(|&b| i64::from(b as i8)).collect(),
        (dtype::INT32 | dtype::UINT8 | dtype::INT8, None) => tensor.int32_data.iter().map(|&v| i64::from(v)).collect(),
        _ => return None,
    })
}

/// Elements of a shape (`None` for negative dimensions or overflow).
pub fn element_count(dims: &[i64]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| usize::try_from(d).ok().and_then(|d| acc.checked_mul(d)))
}

/// `onnx.helper.make_tensor(name, FLOAT, dims, values)`: `float_data`.
pub fn make_f32_tensor(name: &str, dims: Vec<i64>, values: Vec<f32>) -> TensorProto {
    TensorProto { name: name.into(), dims, data_type: dtype::FLOAT, float_data: values, ..Default::default() }
}

/// `onnx.helper.make_tensor(name, INT8 / UINT8 / INT32, dims, values)`: `int32_data`.
pub fn make_int32_field_tensor(name: &str, data_type: i32, dims: Vec<i64>, values: Vec<i32>) -> TensorProto {
    TensorProto { name: name.into(), dims, data_type, int32_data: values, ..Default::default() }
}

/// `onnx.helper.make_tensor(name, INT64, dims, values)`: `int64_data`.
pub fn make_int64_tensor(name: &str, dims: Vec<i64>, values: Vec<i64>) -> TensorProto {
    TensorProto { name: name.into(), dims, data_type: dtype::INT64, int64_data: values, ..Default::default() }
}

/// `onnx.numpy_helper.from_array(array, name)`: `raw_data` holding the little-endian bytes.
pub fn raw_tensor(name: &str, data_type: i32, dims: Vec<i64>, raw: Vec<u8>) -> TensorProto {
    TensorProto { name: name.into(), dims, data_type, raw_data: Some(raw), ..Default::default() }
}

/// [`raw_tensor`] of f32 values.
pub fn raw_f32_tensor(name: &str, dims: Vec<i64>, values: &[f32]) -> TensorProto {
    raw_tensor(name, dtype::FLOAT, dims, values.iter().flat_map(|v| v.to_le_bytes()).collect())
}

/// [`raw_tensor`] of i32 values.
pub fn raw_i32_tensor(name: &str, dims: Vec<i64>, values: &[i32]) -> TensorProto {
    raw_tensor(name, dtype::INT32, dims, values.iter().flat_map(|v| v.to_le_bytes()).collect())
}

/// An attribute value for [`make_node`].
#[derive(Clone, Debug)]
pub enum Attr {
    /// INT.
    Int(i64),
    /// FLOAT.
    Float(f32),
    /// INTS.
    Ints(Vec<i64>),
    /// FLOATS.
    Floats(Vec<f32>),
    /// STRING.
    Bytes(Vec<u8>),
    /// STRINGS.
    Strings(Vec<Vec<u8>>),
    /// TENSOR.
    Tensor(Box<TensorProto>),
}

/// `onnx.helper.make_attribute(name, value)`.
pub fn make_attribute(name: &str, value: Attr) -> AttributeProto {
    let mut a = AttributeProto { name: name.into(), ..Default::default() };
    match value {
        Attr::Float(v) => {
            a.f = Some(v);
            a.r#type = 1;
        }
        Attr::Int(v) => {
            a.i = Some(v);
            a.r#type = 2;
        }
        Attr::Bytes(v) => {
            a.s = Some(v);
            a.r#type = 3;
        }
        Attr::Tensor(t) => {
            a.t = Some(*t);
            a.r#type = 4;
        }
        Attr::Floats(v) => {
            a.floats = v;
            a.r#type = 6;
        }
        Attr::Ints(v) => {
            a.ints = v;
            a.r#type = 7;
        }
        Attr::Strings(v) => {
            a.strings = v;
            a.r#type = 8;
        }
    }
    a
}

/// `attribute_to_kwarg`: an attribute's value, for copying it onto a new node (`None` for graph-valued ones).
pub fn attribute_value(a: &AttributeProto) -> Option<Attr> {
    Some(match a.r#type {
        1 => Attr::Float(a.f.unwrap_or(0.0)),
        2 => Attr::Int(a.i.unwrap_or(0)),
        3 => Attr::Bytes(a.s.clone().unwrap_or_default()),
        4 => Attr::Tensor(Box::new(a.t.clone()?)),
        6 => Attr::Floats(a.floats.clone()),
        7 => Attr::Ints(a.ints.clone()),
        8 => Attr::Strings(a.strings.clone()),
        _ => return None,
    })
}

/// `onnx.helper.make_node(op, inputs, outputs, name, **attrs)`: attributes sorted by name.
pub fn make_node(
    op_type: &str,
    inputs: Vec<String>,
    outputs: Vec<String>,
    name: &str,
    attrs: Vec<(String, Attr)>,
) -> NodeProto {
    let mut attrs = attrs;
    attrs.sort_by(|a, b| a.0.cmp(&b.0));
    NodeProto {
        op_type: op_type.into(),
        input: inputs,
        output: outputs,
        name: name.into(),
        attribute: attrs.into_iter().map(|(n, v)| make_attribute(&n, v)).collect(),
        ..Default::default()
    }
}

/// An attribute of a node.
pub fn attribute<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// An INT attribute.
pub fn int_attribute(node: &NodeProto, name: &str) -> Option<i64> {
    attribute(node, name).and_then(|a| a.i)
}

/// A FLOAT attribute.
pub fn float_attribute(node: &NodeProto, name: &str) -> Option<f32> {
    attribute(node, name).and_then(|a| a.f)
}
