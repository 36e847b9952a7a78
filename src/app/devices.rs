//! The app's side of the devices list it shares with the CLI (`net::devices`): read on start, written after
//! each change, both on the loader's threads; devices saved by older versions in the app's own state move into
//! the list once.

use std::path::PathBuf;

use super::EdgescopeApp;
use super::loader::{Loaded, key};
use crate::net::{DeviceConfig, DeviceList};

impl EdgescopeApp {
    /// The devices file: the saved choice, else the default place.
    fn devices_path(&self) -> Result<PathBuf, String> {
        match &self.saved.devices_file {
            Some(path) => Ok(path.clone()),
            None => DeviceList::default_path().map_err(|e| e.to_string()),
        }
    }

    /// Reads the devices list in the background.
    pub(super) fn load_devices(&mut self) {
        let path = match self.devices_path() {
            Ok(path) => path,
            Err(e) => return self.world.error(e),
        };
        let spawned = self.world.loader.spawn(key::DEVICES.into(), move || {
            let list = DeviceList::load(&path).map_err(|e| e.to_string());
            Loaded::Devices(path, list)
        });
        if let Err(e) = spawned {
            self.world.error(e);
        }
    }

    /// Writes the devices list in the background (again after the running write, if one runs).
    fn save_devices(&mut self) {
        let path = match self.devices_path() {
            Ok(path) => path,
            Err(e) => return self.world.error(e),
        };
        if self.world.loader.is_running(key::DEVICES) {
            self.world.devices_dirty = true;
            return;
        }
        self.world.devices_dirty = false;
        let list = DeviceList { devices: self.world.devices.clone() };
        let spawned = self.world.loader.spawn(key::DEVICES.into(), move || {
            let saved = list.save(&path).map_err(|e| e.to_string());
            Loaded::DevicesSaved(path, saved)
        });
        if let Err(e) = spawned {
            self.world.error(e);
        }
    }

    /// Adds or replaces a device and saves the list.
    pub(super) fn add_device(&mut self, device: DeviceConfig) {
        if let Err(e) = device.check() {
            return self.world.error(e);
        }
        self.world.device_states.remove(&device.name);
        self.world.run_devices.insert(device.name.clone());
        let mut list = DeviceList { devices: std::mem::take(&mut self.world.devices) };
        list.upsert(device);
        self.world.devices = list.devices;
        self.save_devices();
    }

    /// Removes a device and saves the list.
    pub(super) fn remove_device(&mut self, name: &str) {
        self.world.devices.retain(|d| d.name != name);
        self.world.device_states.remove(name);
        self.world.run_devices.remove(name);
        self.save_devices();
    }

    /// The list arrived: devices from an older version's saved state join it, and so do devices the user added
    /// while it was being read (those win over the file's entry of the same name); the list is saved if either
    /// brought something.
    pub(super) fn devices_loaded(&mut self, path: PathBuf, list: Result<DeviceList, String>) {
        self.world.loader.finished(key::DEVICES);
        let mut list = match list {
            Ok(list) => list,
            Err(e) => {
                // Keep what the app holds; a damaged file is not overwritten until the user changes the list.
                return self.world.error(e);
            }
        };
        let mut moved = 0;
        for device in std::mem::take(&mut self.saved.legacy_devices) {
            if list.find(&device.name).is_none() {
                list.upsert(device);
                moved += 1;
            }
        }
        let added_meanwhile = std::mem::take(&mut self.world.devices);
        let changed = moved > 0 || !added_meanwhile.is_empty();
        for device in added_meanwhile {
            list.upsert(device);
        }
        self.world.devices = list.devices;
        if moved > 0 {
            self.world.notice =
                Some(format!("moved {moved} device(s) into the shared devices list {}", path.display()));
        }
        if changed {
            self.save_devices();
        }
    }

    /// The list was written.
    pub(super) fn devices_saved(&mut self, path: PathBuf, saved: Result<(), String>) {
        self.world.loader.finished(key::DEVICES);
        if let Err(e) = saved {
            self.world.error(format!("the devices list {} was not saved: {e}", path.display()));
        }
        if self.world.devices_dirty {
            self.save_devices();
        }
    }
}
