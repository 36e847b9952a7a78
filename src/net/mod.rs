//! Remote runners: the wire protocol, the runner server that lives on a device, and the client that
//! implements the same [`crate::runtime::Runner`] contract as the local runner. Protocol: see `protocol.rs`.

pub mod client;
pub mod devices;
pub mod frame;
pub mod protocol;
pub mod secure;
pub mod server;

pub use client::RemoteRunner;
pub use devices::{DeviceConfig, DeviceList};
pub use server::{Limits, RunnerServer, ServerConfig, ServerHandle};
