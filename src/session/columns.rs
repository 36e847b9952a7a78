//! Compact columns for large numeric arrays inside a JSON session: little-endian bytes, deflated, base64.
//!
//! A 50 000-sample ImageNet trace with 4 exits keeps 16 classes per exit: about 19 MB of numbers before
//! compression instead of gigabytes of JSON text, and it still loads with any JSON reader.

use std::io::{Read, Write};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// One encoded array.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Column {
    /// Element type: `f32`, `u16`, `u32` or `u8`.
    pub dtype: String,
    /// Number of elements.
    pub len: usize,
    /// Base64 of the deflated little-endian bytes.
    pub data: String,
}

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
}

macro_rules! column_value {
    ($t:ty, $name:literal) => {
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
        }
    };
}

column_value!(f32, "f32");
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
        }
    }

    /// Decodes into values of type `T`; the error says what is wrong.
    pub fn decode<T: ColumnValue>(&self) -> Result<Vec<T>, String> {
        if self.dtype != T::DTYPE {
            return Err(format!("column holds {} where {} was expected", self.dtype, T::DTYPE));
        }
        let compressed = base64::engine::general_purpose::STANDARD
            .decode(&self.data)
            .map_err(|e| format!("bad base64 in a column: {e}"))?;
        let expected = self.len.checked_mul(T::SIZE).ok_or("column length overflows")?;
        let mut bytes = Vec::with_capacity(expected);
        flate2::read::DeflateDecoder::new(compressed.as_slice())
            .take(expected as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("corrupt compressed column: {e}"))?;
        if bytes.len() != expected {
            return Err(format!("column promises {} values but holds {} bytes", self.len, bytes.len()));
        }
        Ok(bytes.chunks_exact(T::SIZE).map(T::get).collect())
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
