//! The whole ONNX protobuf (`onnx.proto`, IR version 14), declared field for field, so a model decodes and
//! re-encodes without losing anything: prost silently drops fields a message does not declare, which is fine for
//! inspection ([`super::onnx`] reads only what it shows) but not for writing models.
//!
//! Field numbers follow onnx.proto exactly. Repeated scalars that onnx.proto (proto2) leaves unpacked are declared
//! `packed = "false"`, and proto2 `optional` fields that writers are seen to set to their default (the opset domain
//! `""`, an empty model doc string) or whose presence readers test are `Option`, so the files of the zoo and the
//! fixtures (PyTorch's exporter, the onnx helpers, ONNX Runtime's quantizer) re-encode byte for byte. Any other
//! field a writer sets explicitly to its default value re-encodes without it: the same model, two bytes shorter.

use std::path::{Component, Path};

use prost::Message;

use super::ModelError;

/// `ModelProto`: a model file.
#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    /// IR version.
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    /// Operator sets the graph uses.
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    /// Tool that wrote the file.
    #[prost(string, tag = "2")]
    pub producer_name: String,
    /// Version of that tool.
    #[prost(string, tag = "3")]
    pub producer_version: String,
    /// Model namespace.
    #[prost(string, tag = "4")]
    pub domain: String,
    /// Model version.
    #[prost(int64, tag = "5")]
    pub model_version: i64,
    /// Documentation (optional: the onnx helpers write an empty one, kept as written).
    #[prost(string, optional, tag = "6")]
    pub doc_string: Option<String>,
    /// The graph.
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    /// Free metadata.
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
    /// Training information.
    #[prost(message, repeated, tag = "20")]
    pub training_info: Vec<TrainingInfoProto>,
    /// Model-local functions.
    #[prost(message, repeated, tag = "25")]
    pub functions: Vec<FunctionProto>,
    /// Multi-device configurations.
    #[prost(message, repeated, tag = "26")]
    pub configuration: Vec<DeviceConfigurationProto>,
}

/// `DeviceConfigurationProto`.
#[derive(Clone, PartialEq, Message)]
pub struct DeviceConfigurationProto {
    /// Configuration name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Number of devices.
    #[prost(int32, tag = "2")]
    pub num_devices: i32,
    /// Device names.
    #[prost(string, repeated, tag = "3")]
    pub device: Vec<String>,
}

/// `OperatorSetIdProto`.
#[derive(Clone, PartialEq, Message)]
pub struct OperatorSetIdProto {
    /// Domain (absent, `""` or `ai.onnx` is the default domain; kept as written).
    #[prost(string, optional, tag = "1")]
    pub domain: Option<String>,
    /// Opset version.
    #[prost(int64, tag = "2")]
    pub version: i64,
}

/// `StringStringEntryProto`.
#[derive(Clone, PartialEq, Message)]
pub struct StringStringEntryProto {
    /// Key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `TrainingInfoProto`.
#[derive(Clone, PartialEq, Message)]
pub struct TrainingInfoProto {
    /// Initialization graph.
    #[prost(message, optional, tag = "1")]
    pub initialization: Option<GraphProto>,
    /// Training algorithm graph.
    #[prost(message, optional, tag = "2")]
    pub algorithm: Option<GraphProto>,
    /// Initialization bindings.
    #[prost(message, repeated, tag = "3")]
    pub initialization_binding: Vec<StringStringEntryProto>,
    /// Update bindings.
    #[prost(message, repeated, tag = "4")]
    pub update_binding: Vec<StringStringEntryProto>,
}

/// `GraphProto`.
#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    /// Nodes, in topological order.
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    /// Graph name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Constant tensors (weights).
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    /// Sparse constant tensors.
    #[prost(message, repeated, tag = "15")]
    pub sparse_initializer: Vec<SparseTensorProto>,
    /// Documentation.
    #[prost(string, tag = "10")]
    pub doc_string: String,
    /// Inputs.
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    /// Outputs.
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
    /// Types and shapes of intermediate tensors.
    #[prost(message, repeated, tag = "13")]
    pub value_info: Vec<ValueInfoProto>,
    /// Quantization parameters per tensor.
    #[prost(message, repeated, tag = "14")]
    pub quantization_annotation: Vec<TensorAnnotation>,
    /// Free metadata.
    #[prost(message, repeated, tag = "16")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// `TensorAnnotation`.
#[derive(Clone, PartialEq, Message)]
pub struct TensorAnnotation {
    /// Annotated tensor.
    #[prost(string, tag = "1")]
    pub tensor_name: String,
    /// Its quantization parameter tensors.
    #[prost(message, repeated, tag = "2")]
    pub quant_parameter_tensor_names: Vec<StringStringEntryProto>,
}

/// `NodeProto`.
#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    /// Input tensor names (`""` for an omitted optional input).
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    /// Output tensor names.
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    /// Node name.
    #[prost(string, tag = "3")]
    pub name: String,
    /// Operator.
    #[prost(string, tag = "4")]
    pub op_type: String,
    /// Operator domain.
    #[prost(string, tag = "7")]
    pub domain: String,
    /// Function overload.
    #[prost(string, tag = "8")]
    pub overload: String,
    /// Attributes.
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    /// Documentation.
    #[prost(string, tag = "6")]
    pub doc_string: String,
    /// Free metadata.
    #[prost(message, repeated, tag = "9")]
    pub metadata_props: Vec<StringStringEntryProto>,
    /// Multi-device placement.
    #[prost(message, repeated, tag = "10")]
    pub device_configurations: Vec<NodeDeviceConfigurationProto>,
}

/// `IntIntListEntryProto`.
#[derive(Clone, PartialEq, Message)]
pub struct IntIntListEntryProto {
    /// Key.
    #[prost(int64, tag = "1")]
    pub key: i64,
    /// Values.
    #[prost(int64, repeated, packed = "false", tag = "2")]
    pub value: Vec<i64>,
}

/// `NodeDeviceConfigurationProto`.
#[derive(Clone, PartialEq, Message)]
pub struct NodeDeviceConfigurationProto {
    /// Configuration id.
    #[prost(string, tag = "1")]
    pub configuration_id: String,
    /// Sharding specs.
    #[prost(message, repeated, tag = "2")]
    pub sharding_spec: Vec<ShardingSpecProto>,
    /// Pipeline stage.
    #[prost(int32, tag = "3")]
    pub pipeline_stage: i32,
}

/// `ShardingSpecProto`.
#[derive(Clone, PartialEq, Message)]
pub struct ShardingSpecProto {
    /// Tensor.
    #[prost(string, tag = "1")]
    pub tensor_name: String,
    /// Devices.
    #[prost(int64, repeated, packed = "false", tag = "2")]
    pub device: Vec<i64>,
    /// Device groups.
    #[prost(message, repeated, tag = "3")]
    pub index_to_device_group_map: Vec<IntIntListEntryProto>,
    /// Sharded dimensions.
    #[prost(message, repeated, tag = "4")]
    pub sharded_dim: Vec<ShardedDimProto>,
}

/// `ShardedDimProto`.
#[derive(Clone, PartialEq, Message)]
pub struct ShardedDimProto {
    /// Axis.
    #[prost(int64, tag = "1")]
    pub axis: i64,
    /// Simple shardings.
    #[prost(message, repeated, tag = "2")]
    pub simple_sharding: Vec<SimpleShardedDimProto>,
}

/// `SimpleShardedDimProto`.
#[derive(Clone, PartialEq, Message)]
pub struct SimpleShardedDimProto {
    /// `oneof dim`: a fixed size.
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    /// `oneof dim`: a named size.
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
    /// Shards.
    #[prost(int64, tag = "3")]
    pub num_shards: i64,
}

/// `AttributeProto`.
#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    /// Attribute name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Name of the function attribute this one refers to.
    #[prost(string, tag = "21")]
    pub ref_attr_name: String,
    /// Documentation.
    #[prost(string, tag = "13")]
    pub doc_string: String,
    /// `AttributeType`.
    #[prost(int32, tag = "20")]
    pub r#type: i32,
    /// FLOAT.
    #[prost(float, optional, tag = "2")]
    pub f: Option<f32>,
    /// INT.
    #[prost(int64, optional, tag = "3")]
    pub i: Option<i64>,
    /// STRING.
    #[prost(bytes = "vec", optional, tag = "4")]
    pub s: Option<Vec<u8>>,
    /// TENSOR.
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    /// GRAPH (a subgraph of If, Loop, Scan).
    #[prost(message, optional, boxed, tag = "6")]
    pub g: Option<Box<GraphProto>>,
    /// SPARSE_TENSOR.
    #[prost(message, optional, tag = "22")]
    pub sparse_tensor: Option<SparseTensorProto>,
    /// TYPE_PROTO.
    #[prost(message, optional, tag = "14")]
    pub tp: Option<TypeProto>,
    /// FLOATS.
    #[prost(float, repeated, packed = "false", tag = "7")]
    pub floats: Vec<f32>,
    /// INTS.
    #[prost(int64, repeated, packed = "false", tag = "8")]
    pub ints: Vec<i64>,
    /// STRINGS.
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub strings: Vec<Vec<u8>>,
    /// TENSORS.
    #[prost(message, repeated, tag = "10")]
    pub tensors: Vec<TensorProto>,
    /// GRAPHS.
    #[prost(message, repeated, tag = "11")]
    pub graphs: Vec<GraphProto>,
    /// SPARSE_TENSORS.
    #[prost(message, repeated, tag = "23")]
    pub sparse_tensors: Vec<SparseTensorProto>,
    /// TYPE_PROTOS.
    #[prost(message, repeated, tag = "15")]
    pub type_protos: Vec<TypeProto>,
}

/// `ValueInfoProto`: a named, typed tensor.
#[derive(Clone, PartialEq, Message)]
pub struct ValueInfoProto {
    /// Tensor name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its type.
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
    /// Documentation.
    #[prost(string, tag = "3")]
    pub doc_string: String,
    /// Free metadata.
    #[prost(message, repeated, tag = "4")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// `TensorProto.Segment`.
#[derive(Clone, PartialEq, Message)]
pub struct TensorSegment {
    /// First element.
    #[prost(int64, tag = "1")]
    pub begin: i64,
    /// Past the last element.
    #[prost(int64, tag = "2")]
    pub end: i64,
}

/// `TensorProto.DataLocation.EXTERNAL`: the data lives in another file ([`TensorProto::external_data`]).
pub const DATA_LOCATION_EXTERNAL: i32 = 1;

/// `TensorProto`: a constant tensor.
#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    /// Dimensions.
    #[prost(int64, repeated, packed = "false", tag = "1")]
    pub dims: Vec<i64>,
    /// `DataType`.
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    /// Chunk of a larger tensor.
    #[prost(message, optional, tag = "3")]
    pub segment: Option<TensorSegment>,
    /// float / complex64 / float16 (as bits) data.
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    /// int32 and smaller integer data.
    #[prost(int32, repeated, tag = "5")]
    pub int32_data: Vec<i32>,
    /// string data.
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub string_data: Vec<Vec<u8>>,
    /// int64 data.
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    /// Tensor name.
    #[prost(string, tag = "8")]
    pub name: String,
    /// Documentation.
    #[prost(string, tag = "12")]
    pub doc_string: String,
    /// Little-endian bytes.
    #[prost(bytes = "vec", optional, tag = "9")]
    pub raw_data: Option<Vec<u8>>,
    /// Where external data lives (`location`, `offset`, `length`, `checksum`).
    #[prost(message, repeated, tag = "13")]
    pub external_data: Vec<StringStringEntryProto>,
    /// `DataLocation`: 0 default, 1 external.
    #[prost(int32, optional, tag = "14")]
    pub data_location: Option<i32>,
    /// double / complex128 data.
    #[prost(double, repeated, tag = "10")]
    pub double_data: Vec<f64>,
    /// uint32 / uint64 data.
    #[prost(uint64, repeated, tag = "11")]
    pub uint64_data: Vec<u64>,
    /// Free metadata.
    #[prost(message, repeated, tag = "16")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// `SparseTensorProto`.
#[derive(Clone, PartialEq, Message)]
pub struct SparseTensorProto {
    /// Non-default values.
    #[prost(message, optional, tag = "1")]
    pub values: Option<TensorProto>,
    /// Their indices.
    #[prost(message, optional, tag = "2")]
    pub indices: Option<TensorProto>,
    /// Dense shape.
    #[prost(int64, repeated, packed = "false", tag = "3")]
    pub dims: Vec<i64>,
}

/// `TensorShapeProto`.
#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    /// Dimensions.
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

/// `TensorShapeProto.Dimension`.
#[derive(Clone, PartialEq, Message)]
pub struct Dimension {
    /// `oneof value`: a fixed size.
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    /// `oneof value`: a named size.
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
    /// Denotation.
    #[prost(string, tag = "3")]
    pub denotation: String,
}

/// `TypeProto`. The `oneof value` is declared as its optional members (the same bytes on the wire).
#[derive(Clone, PartialEq, Message)]
pub struct TypeProto {
    /// A tensor.
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TypeTensor>,
    /// A sequence.
    #[prost(message, optional, boxed, tag = "4")]
    pub sequence_type: Option<Box<TypeSequence>>,
    /// A map.
    #[prost(message, optional, boxed, tag = "5")]
    pub map_type: Option<Box<TypeMap>>,
    /// An optional value.
    #[prost(message, optional, boxed, tag = "9")]
    pub optional_type: Option<Box<TypeOptional>>,
    /// A sparse tensor.
    #[prost(message, optional, tag = "8")]
    pub sparse_tensor_type: Option<TypeTensor>,
    /// An opaque type (onnx-ml).
    #[prost(message, optional, tag = "7")]
    pub opaque_type: Option<TypeOpaque>,
    /// Denotation.
    #[prost(string, tag = "6")]
    pub denotation: String,
}

/// `TypeProto.Tensor` (also `TypeProto.SparseTensor`, which has the same fields).
#[derive(Clone, PartialEq, Message)]
pub struct TypeTensor {
    /// Element `DataType`.
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    /// Shape, if known.
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

/// `TypeProto.Sequence`.
#[derive(Clone, PartialEq, Message)]
pub struct TypeSequence {
    /// Element type.
    #[prost(message, optional, tag = "1")]
    pub elem_type: Option<TypeProto>,
}

/// `TypeProto.Map`.
#[derive(Clone, PartialEq, Message)]
pub struct TypeMap {
    /// Key `DataType`.
    #[prost(int32, tag = "1")]
    pub key_type: i32,
    /// Value type.
    #[prost(message, optional, tag = "2")]
    pub value_type: Option<TypeProto>,
}

/// `TypeProto.Optional`.
#[derive(Clone, PartialEq, Message)]
pub struct TypeOptional {
    /// Element type.
    #[prost(message, optional, tag = "1")]
    pub elem_type: Option<TypeProto>,
}

/// `TypeProto.Opaque`.
#[derive(Clone, PartialEq, Message)]
pub struct TypeOpaque {
    /// Domain.
    #[prost(string, tag = "1")]
    pub domain: String,
    /// Name.
    #[prost(string, tag = "2")]
    pub name: String,
}

/// `FunctionProto`: a model-local function.
#[derive(Clone, PartialEq, Message)]
pub struct FunctionProto {
    /// Function name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Inputs.
    #[prost(string, repeated, tag = "4")]
    pub input: Vec<String>,
    /// Outputs.
    #[prost(string, repeated, tag = "5")]
    pub output: Vec<String>,
    /// Attribute names.
    #[prost(string, repeated, tag = "6")]
    pub attribute: Vec<String>,
    /// Attributes with defaults.
    #[prost(message, repeated, tag = "11")]
    pub attribute_proto: Vec<AttributeProto>,
    /// Body.
    #[prost(message, repeated, tag = "7")]
    pub node: Vec<NodeProto>,
    /// Documentation.
    #[prost(string, tag = "8")]
    pub doc_string: String,
    /// Opsets of the body.
    #[prost(message, repeated, tag = "9")]
    pub opset_import: Vec<OperatorSetIdProto>,
    /// Domain.
    #[prost(string, tag = "10")]
    pub domain: String,
    /// Overload.
    #[prost(string, tag = "13")]
    pub overload: String,
    /// Types of body tensors.
    #[prost(message, repeated, tag = "12")]
    pub value_info: Vec<ValueInfoProto>,
    /// Free metadata.
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// Reads a whole model, every field kept. Errors name the file and say what to do.
pub fn read_model(path: &Path) -> Result<ModelProto, ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), source })?;
    ModelProto::decode(bytes.as_slice()).map_err(|e| ModelError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("not a valid ONNX protobuf ({e})"),
    })
}

/// Encodes a model to bytes.
pub fn encode_model(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// Moves the data of initializers stored in external files (beside `model_path`) into the model itself, so the
/// model can be written elsewhere. A location climbing out of the model's folder is refused.
pub fn internalize_external_data(model: &mut ModelProto, model_path: &Path) -> Result<(), ModelError> {
    let corrupt = |reason: String| ModelError::Corrupt { path: model_path.to_path_buf(), reason };
    let directory = model_path.parent().unwrap_or(Path::new("."));
    let Some(graph) = model.graph.as_mut() else { return Ok(()) };
    for tensor in &mut graph.initializer {
        if tensor.data_location != Some(DATA_LOCATION_EXTERNAL) {
            continue;
        }
        let entry = |key: &str| tensor.external_data.iter().find(|e| e.key == key).map(|e| e.value.clone());
        let location = entry("location")
            .ok_or_else(|| corrupt(format!("initializer {:?} is external but names no location", tensor.name)))?;
        let relative = Path::new(&location);
        if relative.is_absolute()
            || relative.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(corrupt(format!(
                "its weights point outside the model's folder ({location:?}); refusing to read them"
            )));
        }
        let number = |key: &str| -> Result<Option<u64>, ModelError> {
            entry(key)
                .map(|v| v.parse::<u64>().map_err(|_| corrupt(format!("external data {key} {v:?} is not a number"))))
                .transpose()
        };
        let offset = number("offset")?.unwrap_or(0);
        let file = directory.join(relative);
        let bytes = std::fs::read(&file).map_err(|_| {
            corrupt(format!("its weights live in {}, which is missing; keep it beside the model", file.display()))
        })?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
        let end = match number("length")? {
            Some(length) => usize::try_from(offset.saturating_add(length)).unwrap_or(usize::MAX),
            None => bytes.len(),
        };
        let data = bytes.get(start..end).ok_or_else(|| {
            corrupt(format!("initializer {:?} reaches past the end of {}", tensor.name, file.display()))
        })?;
        tensor.raw_data = Some(data.to_vec());
        tensor.external_data.clear();
        tensor.data_location = None;
    }
    Ok(())
}
