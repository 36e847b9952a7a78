//! Finds non-finite numbers in anything serializable, before it is written.
//!
//! JSON has no NaN or infinity: serde_json writes them as `null`, which then fails to load as a number (a
//! saved `--threshold inf` made a session unreadable). The writer walks the value with this serializer first
//! and refuses, naming where the number sits (`policies.tiny/ee.thresholds[0]`).

use serde::ser::{self, Serialize};

/// Where the first non-finite number sits, as a dotted path; `None` when every number is finite.
pub fn first_non_finite(value: &impl Serialize) -> Option<String> {
    let mut finder = Finder { path: Vec::new(), found: None };
    // The finder's only error is "found", which it records itself.
    let _ = value.serialize(&mut finder);
    finder.found
}

struct Finder {
    path: Vec<String>,
    found: Option<String>,
}

#[derive(Debug)]
struct Found;

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("non-finite number")
    }
}

impl std::error::Error for Found {}

impl ser::Error for Found {
    fn custom<T: std::fmt::Display>(_message: T) -> Self {
        Found
    }
}

impl Finder {
    fn float(&mut self, value: f64) -> Result<(), Found> {
        if value.is_finite() {
            return Ok(());
        }
        let mut text = String::new();
        for part in &self.path {
            if !part.starts_with('[') && !text.is_empty() {
                text.push('.');
            }
            text.push_str(part);
        }
        self.found = Some(if text.is_empty() { "the top level".into() } else { text });
        Err(Found)
    }

    fn nested<T: ?Sized + Serialize>(&mut self, part: String, value: &T) -> Result<(), Found> {
        self.path.push(part);
        let result = value.serialize(&mut *self);
        self.path.pop();
        result
    }
}

/// Compound values (sequences, maps, structs) as the finder walks them.
struct Compound<'a> {
    finder: &'a mut Finder,
    index: usize,
    key: String,
}

macro_rules! ok_scalars {
    ($($method:ident: $t:ty),*) => {
        $(fn $method(self, _value: $t) -> Result<(), Found> { Ok(()) })*
    };
}

impl<'a> ser::Serializer for &'a mut Finder {
    type Ok = ();
    type Error = Found;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    ok_scalars!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64, serialize_char: char,
        serialize_str: &str, serialize_bytes: &[u8]);

    fn serialize_f32(self, value: f32) -> Result<(), Found> {
        self.float(f64::from(value))
    }
    fn serialize_f64(self, value: f64) -> Result<(), Found> {
        self.float(value)
    }
    fn serialize_none(self) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), Found> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_unit_variant(self, _name: &'static str, _index: u32, _variant: &'static str) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _name: &'static str, value: &T) -> Result<(), Found> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Found> {
        self.nested(variant.to_string(), value)
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'a>, Found> {
        Ok(Compound { finder: self, index: 0, key: String::new() })
    }
    fn serialize_tuple(self, _len: usize) -> Result<Compound<'a>, Found> {
        Ok(Compound { finder: self, index: 0, key: String::new() })
    }
    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<Compound<'a>, Found> {
        Ok(Compound { finder: self, index: 0, key: String::new() })
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, Found> {
        Ok(Compound { finder: self, index: 0, key: String::new() })
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'a>, Found> {
        Ok(Compound { finder: self, index: 0, key: String::new() })
    }
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Compound<'a>, Found> {
        Ok(Compound { finder: self, index: 0, key: String::new() })
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, Found> {
        Ok(Compound { finder: self, index: 0, key: String::new() })
    }
}

impl Compound<'_> {
    fn element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Found> {
        let part = format!("[{}]", self.index);
        self.index += 1;
        self.finder.nested(part, value)
    }

    fn field<T: ?Sized + Serialize>(&mut self, key: &str, value: &T) -> Result<(), Found> {
        self.finder.nested(key.to_string(), value)
    }
}

impl ser::SerializeSeq for Compound<'_> {
    type Ok = ();
    type Error = Found;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Found> {
        self.element(value)
    }
    fn end(self) -> Result<(), Found> {
        Ok(())
    }
}

impl ser::SerializeTuple for Compound<'_> {
    type Ok = ();
    type Error = Found;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Found> {
        self.element(value)
    }
    fn end(self) -> Result<(), Found> {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for Compound<'_> {
    type Ok = ();
    type Error = Found;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Found> {
        self.element(value)
    }
    fn end(self) -> Result<(), Found> {
        Ok(())
    }
}

impl ser::SerializeTupleVariant for Compound<'_> {
    type Ok = ();
    type Error = Found;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Found> {
        self.element(value)
    }
    fn end(self) -> Result<(), Found> {
        Ok(())
    }
}

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = Found;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), Found> {
        // Keys are names (strings) in our files; a non-string key is shown by its position.
        self.key = serde_json::to_value(key)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("[{}]", self.index));
        self.index += 1;
        key.serialize(&mut *self.finder)
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Found> {
        let key = std::mem::take(&mut self.key);
        self.field(&key, value)
    }
    fn end(self) -> Result<(), Found> {
        Ok(())
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = Found;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> Result<(), Found> {
        self.field(key, value)
    }
    fn end(self) -> Result<(), Found> {
        Ok(())
    }
}

impl ser::SerializeStructVariant for Compound<'_> {
    type Ok = ();
    type Error = Found;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> Result<(), Found> {
        self.field(key, value)
    }
    fn end(self) -> Result<(), Found> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Policy {
        thresholds: Vec<f64>,
    }

    #[test]
    fn non_finite_numbers_are_found_with_their_path() {
        let mut policies = std::collections::BTreeMap::new();
        policies.insert("tiny/ee", Policy { thresholds: vec![0.5, f64::INFINITY] });
        assert_eq!(first_non_finite(&policies).as_deref(), Some("tiny/ee.thresholds[1]"));
        policies.insert("tiny/ee", Policy { thresholds: vec![0.5, 1.0] });
        assert_eq!(first_non_finite(&policies), None);
        assert_eq!(first_non_finite(&Some(f32::NAN)).as_deref(), Some("the top level"));
    }
}
