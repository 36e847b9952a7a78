//! The column codec shared by session files and the runner protocol: large numeric arrays inside JSON as
//! little-endian bytes, deflated, base64; and a trace's or a dynamic run's columns. Sessions and the protocol
//! each wrap these in types of their own, so neither format changes when the other does.
//!
//! A 50 000-sample ImageNet trace with 4 exits keeps 16 classes per exit: about 19 MB of numbers before
//! compression instead of gigabytes of JSON text, and it still loads with any JSON reader.
//!
//! Columns come from files and from remote runners, so decoding trusts nothing: the element count is capped
//! and checked against what the compressed bytes could possibly hold before anything is allocated, memory
//! grows only as data really decompresses, a CRC-32 of the uncompressed bytes (written since this version;
//! optional so older files still load) turns any damage into an error instead of a changed figure, and
//! floating-point columns must hold finite numbers.

use std::io::{Read, Write};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::analysis::policy::Policy;
use crate::analysis::trace::{ExitTrace, Trace};
use crate::record::{DynamicRun, RunInfo, TraceRun};

/// One encoded array.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Column {
    /// Element type: `f32`, `u16`, `u32` or `u8`.
    pub dtype: String,
    /// Number of elements.
    pub len: usize,
    /// Base64 of the deflated little-endian bytes.
    pub data: String,
    /// CRC-32 (as gzip and PNG use it) of the uncompressed little-endian bytes; absent in files written before
    /// checksums existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32: Option<u32>,
}

/// Most elements one column may hold (2^28: a 1 GiB f32 column, e.g. 16.7 million samples x 16 classes).
pub const MAX_COLUMN_ELEMENTS: usize = 1 << 28;
/// Deflate cannot expand data by more than this factor (1032:1 in theory), so a column's compressed size
/// bounds what it can honestly claim.
const MAX_DEFLATE_RATIO: usize = 1040;

/// Element types a column can hold.
pub trait ColumnValue: Copy {
    /// The `dtype` name.
    const DTYPE: &'static str;
    /// Bytes per element.
    const SIZE: usize;
    /// Appends the little-endian bytes.
    fn put(self, out: &mut Vec<u8>);
    /// Reads from exactly `SIZE` little-endian bytes.
    fn get(bytes: &[u8]) -> Self;
    /// False for NaN and infinities (integers are always finite).
    fn is_finite(self) -> bool {
        true
    }
}

macro_rules! column_value {
    ($t:ty, $name:literal $(, $finite:ident)?) => {
        impl ColumnValue for $t {
            const DTYPE: &'static str = $name;
            const SIZE: usize = std::mem::size_of::<$t>();
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(bytes: &[u8]) -> Self {
                let mut buffer = [0u8; std::mem::size_of::<$t>()];
                buffer.copy_from_slice(bytes);
                <$t>::from_le_bytes(buffer)
            }
            $(
                fn $finite(self) -> bool {
                    <$t>::is_finite(self)
                }
            )?
        }
    };
}

column_value!(f32, "f32", is_finite);
column_value!(u16, "u16");
column_value!(u32, "u32");
column_value!(u8, "u8");

impl Column {
    /// Encodes `values`.
    pub fn encode<T: ColumnValue>(values: &[T]) -> Self {
        let mut bytes = Vec::with_capacity(values.len() * T::SIZE);
        for &v in values {
            v.put(&mut bytes);
        }
        let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        // Writing into a Vec cannot fail.
        let compressed = encoder.write_all(&bytes).and_then(|()| encoder.finish()).unwrap_or_default();
        Self {
            dtype: T::DTYPE.into(),
            len: values.len(),
            data: base64::engine::general_purpose::STANDARD.encode(compressed),
            crc32: Some(crc32(&bytes)),
        }
    }

    /// The index of the first non-finite value, if any (for writers that must refuse them).
    pub fn first_non_finite<T: ColumnValue>(values: &[T]) -> Option<usize> {
        values.iter().position(|v| !v.is_finite())
    }

    /// Decodes into values of type `T`; the error says what is wrong.
    pub fn decode<T: ColumnValue>(&self) -> Result<Vec<T>, String> {
        if self.dtype != T::DTYPE {
            return Err(format!("column holds {} where {} was expected", self.dtype, T::DTYPE));
        }
        if self.len > MAX_COLUMN_ELEMENTS {
            return Err(format!("a column claims {} values, more than the {MAX_COLUMN_ELEMENTS} allowed", self.len));
        }
        // Base64 holds 3 bytes per 4 characters, and deflate expands at most ~1032:1: a claim beyond what the
        // text could hold is refused before decoding anything.
        let expected = self.len.checked_mul(T::SIZE).ok_or("column length overflows")?;
        let most = (self.data.len() / 4 + 1).saturating_mul(3).saturating_mul(MAX_DEFLATE_RATIO).saturating_add(64);
        if expected > most {
            return Err(format!("a column claims {} values but its data could hold at most {} bytes", self.len, most));
        }
        let compressed = base64::engine::general_purpose::STANDARD
            .decode(&self.data)
            .map_err(|e| format!("bad base64 in a column: {e}"))?;
        let mut bytes = Vec::with_capacity(expected.min(1 << 20));
        flate2::read::DeflateDecoder::new(compressed.as_slice())
            .take(expected as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("corrupt compressed column: {e}"))?;
        if bytes.len() != expected {
            return Err(format!("column promises {} values but holds {} bytes", self.len, bytes.len()));
        }
        if let Some(stored) = self.crc32 {
            let actual = crc32(&bytes);
            if actual != stored {
                return Err(format!(
                    "a column is damaged (checksum {actual:08x}, stored {stored:08x}); its numbers cannot be trusted"
                ));
            }
        }
        let values: Vec<T> = bytes.chunks_exact(T::SIZE).map(T::get).collect();
        if let Some(index) = Self::first_non_finite(&values) {
            return Err(format!("a column holds a non-finite number (NaN or infinity) at element {index}"));
        }
        Ok(values)
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(bytes);
    crc.sum()
}

/// The columns of one exit of a [`ColumnarTrace`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColumnarExit {
    segment: usize,
    top_k: usize,
    top_classes: Column,
    top_probs: Column,
    entropy_nats: Column,
    /// Since version 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reference_jsd_bits: Option<Column>,
}

/// A [`Trace`] as columns: what sessions store and runners send, each inside a type of its own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColumnarTrace {
    num_classes: usize,
    labels: Column,
    preprocess_us: Column,
    segment_latency_us: Vec<Column>,
    exits: Vec<ColumnarExit>,
    /// Since version 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
}

impl ColumnarTrace {
    /// Expands into the run with `info`, validated; the error names the run's variant.
    pub fn into_run(&self, info: RunInfo) -> Result<TraceRun, String> {
        let trace = self.decode().map_err(|e| format!("run of {}: {e}", info.variant))?;
        Ok(TraceRun { info, trace })
    }

    pub fn of(trace: &Trace) -> Self {
        Self {
            num_classes: trace.num_classes,
            labels: Column::encode(&trace.labels),
            preprocess_us: Column::encode(&trace.preprocess_us),
            segment_latency_us: trace.segment_latency_us.iter().map(|s| Column::encode(s)).collect(),
            exits: trace
                .exits
                .iter()
                .map(|e| ColumnarExit {
                    segment: e.segment,
                    top_k: e.top_k,
                    top_classes: Column::encode(&e.top_classes),
                    top_probs: Column::encode(&e.top_probs),
                    entropy_nats: Column::encode(&e.entropy_nats),
                    reference_jsd_bits: e.has_reference_jsd().then(|| Column::encode(&e.reference_jsd_bits)),
                })
                .collect(),
            reference: trace.reference.clone(),
        }
    }

    pub fn decode(&self) -> Result<Trace, String> {
        let trace = Trace {
            num_classes: self.num_classes,
            labels: self.labels.decode()?,
            preprocess_us: self.preprocess_us.decode()?,
            segment_latency_us: self.segment_latency_us.iter().map(Column::decode).collect::<Result<_, _>>()?,
            exits: self
                .exits
                .iter()
                .map(|e| {
                    Ok(ExitTrace {
                        segment: e.segment,
                        top_k: e.top_k,
                        top_classes: e.top_classes.decode()?,
                        top_probs: e.top_probs.decode()?,
                        entropy_nats: e.entropy_nats.decode()?,
                        reference_jsd_bits: e.reference_jsd_bits.as_ref().map_or(Ok(Vec::new()), Column::decode)?,
                    })
                })
                .collect::<Result<_, String>>()?,
            reference: self.reference.clone(),
        };
        trace.validate()?;
        Ok(trace)
    }
}

/// The columns of a [`DynamicRun`] (its facts and policy travel beside them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColumnarDynamic {
    exit_taken: Column,
    latency_us: Column,
    preprocess_us: Column,
    predicted: Column,
    labels: Column,
}

impl ColumnarDynamic {
    /// The columns of `run`.
    pub fn of(run: &DynamicRun) -> Self {
        Self {
            exit_taken: Column::encode(&run.exit_taken),
            latency_us: Column::encode(&run.latency_us),
            preprocess_us: Column::encode(&run.preprocess_us),
            predicted: Column::encode(&run.predicted),
            labels: Column::encode(&run.labels),
        }
    }

    /// Expands into the run with `info` and `policy`, checking that every column holds one value per sample.
    pub fn decode(&self, info: RunInfo, policy: Option<Policy>) -> Result<DynamicRun, String> {
        let dynamic = DynamicRun {
            policy,
            exit_taken: self.exit_taken.decode()?,
            latency_us: self.latency_us.decode()?,
            preprocess_us: self.preprocess_us.decode()?,
            predicted: self.predicted.decode()?,
            labels: self.labels.decode()?,
            info,
        };
        let n = dynamic.labels.len();
        if [dynamic.exit_taken.len(), dynamic.latency_us.len(), dynamic.preprocess_us.len(), dynamic.predicted.len()]
            .iter()
            .any(|&len| len != n)
        {
            return Err("its columns differ in length".into());
        }
        Ok(dynamic)
    }
}

#[cfg(test)]
mod checks {
    use super::*;

    #[test]
    fn no_single_bit_flip_in_the_data_changes_a_figure() {
        let values: Vec<f32> = (0..200).map(|i| i as f32 * 0.37).collect();
        let column = Column::encode(&values);
        let raw = base64::engine::general_purpose::STANDARD.decode(&column.data).expect("base64");
        let (mut refused, mut unchanged) = (0, 0);
        for bit in 0..raw.len() * 8 {
            let mut flipped = raw.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let damaged = Column { data: base64::engine::general_purpose::STANDARD.encode(&flipped), ..column.clone() };
            // Either an error, or (a flip in the padding bits after the deflate stream) the very same values.
            match damaged.decode::<f32>() {
                Ok(decoded) => {
                    assert_eq!(decoded, values, "bit {bit} changed the figures silently");
                    unchanged += 1;
                }
                Err(_) => refused += 1,
            }
        }
        assert!(refused > 8 * raw.len() - 8 && unchanged < 8, "{refused} refused, {unchanged} unchanged");
    }

    #[test]
    fn huge_claims_and_non_finite_values_are_refused_without_allocating() {
        let mut column = Column::encode(&[1u32, 2, 3]);
        column.len = 1 << 40;
        assert!(column.decode::<u32>().expect_err("2^40").contains("more than"));
        column.len = 1 << 61;
        assert!(column.decode::<u32>().is_err());
        column.len = 100_000;
        assert!(column.decode::<u32>().expect_err("claim").contains("could hold at most"));
        let nan = Column::encode(&[1.0f32, f32::NAN]);
        assert!(nan.decode::<f32>().expect_err("nan").contains("non-finite"));
        assert_eq!(Column::first_non_finite(&[1.0f32, f32::INFINITY]), Some(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_round_trip() {
        let values = vec![1.5f32, -2.0, f32::MAX, 0.0];
        assert_eq!(Column::encode(&values).decode::<f32>(), Ok(values));
        let labels = vec![3u16, 65535, 0];
        assert_eq!(Column::encode(&labels).decode::<u16>(), Ok(labels));
    }

    #[test]
    fn corrupt_columns_are_errors() {
        let mut column = Column::encode(&[1u32, 2, 3]);
        assert!(column.decode::<f32>().is_err());
        column.len = 4;
        assert!(column.decode::<u32>().is_err());
        column.data = "!!!".into();
        assert!(column.decode::<u32>().is_err());
    }
}
