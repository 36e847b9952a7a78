//! The format name and version every edgescope file starts with, checked in one place: a reader takes its own
//! version and older ones, and refuses another format, a missing or zero version and a newer version, each
//! with its own message (which the caller words for its file: what it is and what to do).
//!
//! Sessions and study states are JSON, manifests and dataset specs TOML; the header is read on its own first, so
//! a newer file is refused as newer even when the rest of it would not parse.

use serde::Deserialize;

/// A versioned file format: its name and the newest version this build reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileFormat {
    /// The `format` field's value, e.g. `edgescope-session`.
    pub name: &'static str,
    /// The newest `version` this build reads (and the one it writes).
    pub version: u32,
}

/// Why a file's header was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderProblem {
    /// The text is not valid JSON / TOML (the parser's message).
    Syntax(String),
    /// The `format` field is missing or names another format.
    OtherFormat,
    /// The `version` field is missing or 0.
    NoVersion,
    /// Written by a newer edgescope.
    Newer {
        /// The file's version.
        found: u32,
    },
}

#[derive(Deserialize)]
struct Header {
    format: Option<String>,
    version: Option<u32>,
}

impl FileFormat {
    /// Checks the header of JSON `text`; returns the file's version.
    pub fn check_json(&self, text: &str) -> Result<u32, HeaderProblem> {
        let header: Header = serde_json::from_str(text).map_err(|e| HeaderProblem::Syntax(e.to_string()))?;
        self.check(header)
    }

    /// Checks the header of TOML `text`; returns the file's version.
    pub fn check_toml(&self, text: &str) -> Result<u32, HeaderProblem> {
        let header: Header = toml::from_str(text).map_err(|e| HeaderProblem::Syntax(e.to_string()))?;
        self.check(header)
    }

    fn check(&self, header: Header) -> Result<u32, HeaderProblem> {
        if header.format.as_deref() != Some(self.name) {
            return Err(HeaderProblem::OtherFormat);
        }
        match header.version {
            None | Some(0) => Err(HeaderProblem::NoVersion),
            Some(found) if found > self.version => Err(HeaderProblem::Newer { found }),
            Some(found) => Ok(found),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THING: FileFormat = FileFormat { name: "edgescope-thing", version: 2 };

    #[test]
    fn own_and_older_versions_read_and_the_rest_is_told_apart() {
        assert_eq!(THING.check_json(r#"{"format":"edgescope-thing","version":2,"x":1}"#), Ok(2));
        assert_eq!(THING.check_toml("format = \"edgescope-thing\"\nversion = 1\n[x]\ny = 2\n"), Ok(1));
        assert_eq!(
            THING.check_json(r#"{"format":"edgescope-thing","version":3}"#),
            Err(HeaderProblem::Newer { found: 3 })
        );
        assert_eq!(THING.check_json(r#"{"format":"edgescope-thing","version":0}"#), Err(HeaderProblem::NoVersion));
        assert_eq!(THING.check_toml("format = \"edgescope-thing\"\n"), Err(HeaderProblem::NoVersion));
        assert_eq!(THING.check_json(r#"{"format":"other","version":1}"#), Err(HeaderProblem::OtherFormat));
        assert_eq!(THING.check_json(r#"{"version":1}"#), Err(HeaderProblem::OtherFormat));
        assert!(matches!(THING.check_json("{"), Err(HeaderProblem::Syntax(_))));
        assert!(matches!(THING.check_toml("= ="), Err(HeaderProblem::Syntax(_))));
    }

    #[test]
    fn a_newer_file_is_newer_even_when_its_body_would_not_parse() {
        let text = r#"{"format":"edgescope-thing","version":9,"runs":"a shape this build does not know"}"#;
        assert_eq!(THING.check_json(text), Err(HeaderProblem::Newer { found: 9 }));
    }
}
