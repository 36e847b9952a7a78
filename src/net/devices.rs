//! The one list of remote runners that the CLI and the app share: a small TOML file
//! (`$EDGESCOPE_DEVICES`, else `~/.config/edgescope/devices.toml`) with a name, an address and a token file per
//! device. `edgescope devices --add` and the app's Runs tab write it; `--device NAME` on the command line and
//! every device list in the app read it. Tokens never enter the file, only the path of the file that holds one.
//!
//! ```toml
//! format = "edgescope-devices"
//! version = 1
//!
//! [[devices]]
//! name = "orin-nano"
//! address = "tcp://192.168.1.40:7878"
//! token_file = "/home/me/.config/edgescope/orin.token"
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::format::{FileFormat, HeaderProblem};

/// The devices file's format name and newest version.
pub const DEVICES_FORMAT: FileFormat = FileFormat { name: "edgescope-devices", version: 1 };

/// A remote runner as the user configured it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceConfig {
    /// A name for people ("orin-nano").
    pub name: String,
    /// `tcp://HOST:PORT`.
    pub address: String,
    /// File holding the shared token.
    pub token_file: PathBuf,
}

impl DeviceConfig {
    /// What is wrong with this entry, if anything: a name that reads as an address or as this machine, an
    /// address that is not `tcp://HOST:PORT`.
    pub fn check(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("a device needs a name".into());
        }
        if self.name.starts_with("tcp://") || self.name == "local" {
            return Err(format!("{:?} cannot name a device (it reads as an address or as this machine)", self.name));
        }
        let host_port = self.address.strip_prefix("tcp://").unwrap_or(&self.address);
        match host_port.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
            _ => Err(format!("device {}: address {:?} is not tcp://HOST:PORT", self.name, self.address)),
        }
    }
}

/// The devices file's contents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceList {
    /// The devices, in the order they were added.
    pub devices: Vec<DeviceConfig>,
}

/// Why the devices file cannot be read or written; each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum DevicesError {
    /// Reading or writing failed.
    #[error("cannot {action} the devices file {}: {source}", path.display())]
    Io {
        /// Read or write.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a devices file, or is damaged.
    #[error("{} is not a valid edgescope devices file: {reason}; fix or remove it (`edgescope devices --add` writes a new one)", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Written by a newer edgescope.
    #[error("{} is devices file version {found}, newer than this edgescope reads (up to {supported}); update edgescope", path.display())]
    NewerVersion {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// No home folder to find the default file in.
    #[error("HOME is not set, so the devices file has no default place; set EDGESCOPE_DEVICES to its path")]
    NoHome,
}

#[derive(Serialize, Deserialize)]
struct DevicesFileV1 {
    format: String,
    version: u32,
    #[serde(default)]
    devices: Vec<DeviceConfig>,
}

impl DeviceList {
    /// Where the list lives: `$EDGESCOPE_DEVICES`, else `~/.config/edgescope/devices.toml`.
    pub fn default_path() -> Result<PathBuf, DevicesError> {
        if let Some(path) = std::env::var_os("EDGESCOPE_DEVICES") {
            return Ok(PathBuf::from(path));
        }
        let home = std::env::var_os("HOME").ok_or(DevicesError::NoHome)?;
        Ok(PathBuf::from(home).join(".config/edgescope/devices.toml"))
    }

    /// Reads `path`; a missing file is an empty list.
    pub fn load(path: &Path) -> Result<Self, DevicesError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => return Err(DevicesError::Io { action: "read", path: path.to_path_buf(), source }),
        };
        Self::parse(path, &text)
    }

    /// Parses the text of the devices file at `path` (named in messages).
    pub fn parse(path: &Path, text: &str) -> Result<Self, DevicesError> {
        let invalid = |reason: String| DevicesError::Invalid { path: path.to_path_buf(), reason };
        DEVICES_FORMAT.check_toml(text).map_err(|problem| match problem {
            HeaderProblem::Syntax(e) => invalid(format!("not valid TOML ({e})")),
            HeaderProblem::OtherFormat => invalid(format!("it does not say format = \"{}\"", DEVICES_FORMAT.name)),
            HeaderProblem::NoVersion => invalid("it has no valid version (1 or more)".into()),
            HeaderProblem::Newer { found } => {
                DevicesError::NewerVersion { path: path.to_path_buf(), found, supported: DEVICES_FORMAT.version }
            }
        })?;
        let file: DevicesFileV1 = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let list = Self { devices: file.devices };
        for device in &list.devices {
            device.check().map_err(invalid)?;
        }
        Ok(list)
    }

    /// Writes the list to `path` atomically, creating its folder.
    pub fn save(&self, path: &Path) -> Result<(), DevicesError> {
        let io = |source| DevicesError::Io { action: "write", path: path.to_path_buf(), source };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let file = DevicesFileV1 {
            format: DEVICES_FORMAT.name.into(),
            version: DEVICES_FORMAT.version,
            devices: self.devices.clone(),
        };
        // Plain strings and paths always serialize.
        let text = toml::to_string(&file).unwrap_or_default();
        crate::session::write_atomically(path, text.as_bytes()).map_err(io)
    }

    /// Adds `device`, replacing one of the same name.
    pub fn upsert(&mut self, device: DeviceConfig) {
        match self.devices.iter_mut().find(|d| d.name == device.name) {
            Some(existing) => *existing = device,
            None => self.devices.push(device),
        }
    }

    /// Removes the device called `name`; false when there was none.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.devices.len();
        self.devices.retain(|d| d.name != name);
        self.devices.len() != before
    }

    /// The device called `name`.
    pub fn find(&self, name: &str) -> Option<&DeviceConfig> {
        self.devices.iter().find(|d| d.name == name)
    }

    /// The address and token of `device`, a name from this list or a `tcp://HOST:PORT` address; `token_file`
    /// overrides the entry's (and is needed for an address not in the list). Errors say what to pass.
    pub fn resolve(&self, device: &str, token_file: Option<&Path>) -> Result<(String, Vec<u8>), String> {
        let (address, entry_token) = if device.starts_with("tcp://") {
            (device.to_string(), self.devices.iter().find(|d| d.address == device).map(|d| d.token_file.clone()))
        } else {
            let entry = self.find(device).ok_or_else(|| {
                let known: Vec<&str> = self.devices.iter().map(|d| d.name.as_str()).collect();
                format!(
                    "no device called {device:?} in the devices list ({}); add it with `edgescope devices --add \
                     {device} tcp://HOST:PORT --token-file PATH`, or pass its address",
                    if known.is_empty() { "it is empty".to_string() } else { format!("known: {}", known.join(", ")) }
                )
            })?;
            (entry.address.clone(), Some(entry.token_file.clone()))
        };
        let token_file = token_file
            .map(Path::to_path_buf)
            .or(entry_token)
            .ok_or_else(|| format!("--device {device} needs --token-file (the token shared with that runner)"))?;
        let token = super::protocol::read_token(&token_file)?;
        Ok((address, token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, port: u16, token_file: &Path) -> DeviceConfig {
        DeviceConfig { name: name.into(), address: format!("tcp://127.0.0.1:{port}"), token_file: token_file.into() }
    }

    #[test]
    fn the_list_round_trips_and_resolves_names_and_addresses() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nested/devices.toml");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "0123456789abcdef0123\n").expect("token");
        assert_eq!(DeviceList::load(&path).expect("missing is empty"), DeviceList::default());
        let mut list = DeviceList::default();
        list.upsert(entry("orin", 7878, &token_file));
        list.upsert(entry("pi", 7879, &token_file));
        list.upsert(entry("orin", 7880, &token_file));
        list.save(&path).expect("save");
        let read = DeviceList::load(&path).expect("load");
        assert_eq!(read, list);
        assert_eq!(read.devices.len(), 2);
        let (address, token) = read.resolve("orin", None).expect("by name");
        assert_eq!(address, "tcp://127.0.0.1:7880");
        assert_eq!(token, b"0123456789abcdef0123");
        let (address, _) = read.resolve("tcp://127.0.0.1:7879", None).expect("a listed address brings its token");
        assert_eq!(address, "tcp://127.0.0.1:7879");
        let unknown = read.resolve("jetson", None).expect_err("unknown name");
        assert!(unknown.contains("orin, pi") && unknown.contains("devices --add"), "{unknown}");
        let unlisted = read.resolve("tcp://10.0.0.9:7878", None).expect_err("no token");
        assert!(unlisted.contains("--token-file"), "{unlisted}");
        let mut list = read;
        assert!(list.remove("pi"));
        assert!(!list.remove("pi"));
    }

    #[test]
    fn a_bad_or_newer_file_is_refused_with_its_path() {
        let path = Path::new("/somewhere/devices.toml");
        let newer = DeviceList::parse(path, "format = \"edgescope-devices\"\nversion = 2\n").expect_err("newer");
        assert!(newer.to_string().contains("newer") && newer.to_string().contains("/somewhere/devices.toml"));
        let other = DeviceList::parse(path, "format = \"edgescope-session\"\nversion = 1\n").expect_err("other");
        assert!(other.to_string().contains("format = \"edgescope-devices\""), "{other}");
        let bad_address = "format = \"edgescope-devices\"\nversion = 1\n[[devices]]\nname = \"x\"\naddress = \"nowhere\"\ntoken_file = \"t\"\n";
        let error = DeviceList::parse(path, bad_address).expect_err("address");
        assert!(error.to_string().contains("device x"), "{error}");
    }

    #[test]
    fn the_version_1_fixture_reads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/devices/v1.toml");
        let list = DeviceList::load(&path).expect("version 1 fixture");
        let names: Vec<&str> = list.devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["orin-nano", "pi5"]);
        assert_eq!(list.devices[1].address, "tcp://pi5.local:7878");
    }
}
