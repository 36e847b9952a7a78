//! Datasets: labelled samples plus the preprocessing that turns them into input tensors.
//!
//! Sources: IDX files (raw or gzip, as Fashion-MNIST ships), NPY arrays (uint8 or float32 images with
//! integer labels), and image folders (one sub-folder per class, PNG or JPEG, gray or RGB). A dataset spec
//! (TOML, `format = "edgescope-dataset"`) names the files, the class names and the preprocessing; a bare
//! IDX/NPY file or a folder opens with defaults.

pub mod decode;
mod formats;
pub mod pil;
pub mod preprocess;

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use preprocess::{Interpolation, Layout, Pixels, Preprocess, Size, Transform};

/// Format name of dataset specs.
pub const DATASET_FORMAT: &str = "edgescope-dataset";
/// Newest dataset spec version this build reads: 2 added `[preprocess] transforms`, the ordered torchvision
/// pipeline (version 1's fixed fields still read, with the meaning `preprocess.rs` documents); 3 added, for image
/// folders, `class_folders` (a file naming the sub-folder of every label, e.g. ImageNet's
/// LOC_synset_mapping.txt) and `[folder_labels]` (sub-folder name = label).
pub const DATASET_VERSION: u32 = 3;

/// Why a dataset could not be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file's content is not what its format promises.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A dataset spec from a newer edgescope.
    #[error("{} is dataset spec version {found}, newer than this edgescope reads (up to {supported}); update edgescope", path.display())]
    NewerVersion {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
        /// Newest readable version.
        supported: u32,
    },
    /// The images do not fit the model.
    #[error("dataset {} gives input {found:?} but the model expects {expected}; fix the dataset's [preprocess] (resize, channels, layout)", path.display())]
    ShapeMismatch {
        /// The dataset source.
        path: PathBuf,
        /// Batch-1 shape the dataset produces.
        found: [usize; 4],
        /// What the model declares.
        expected: String,
    },
}

fn invalid(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Invalid { path: path.to_path_buf(), reason: reason.into() }
}

/// Which kind of source a spec describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// IDX image and label files.
    Idx,
    /// NPY image and label arrays.
    Npy,
    /// One sub-folder per class.
    Folder,
}

/// A dataset spec as written on disk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// Always [`DATASET_FORMAT`].
    pub format: String,
    /// Spec version.
    pub version: u32,
    /// Dataset name.
    pub name: String,
    /// Source kind.
    pub kind: DatasetKind,
    /// Image file (IDX/NPY), relative to the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<PathBuf>,
    /// Label file (IDX/NPY), relative to the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<PathBuf>,
    /// Folder holding one sub-folder per class (folder datasets), relative to the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// Class names in label order. For folders, unless `class_folders` or `folder_labels` says otherwise, the
    /// sub-folder of label i is the i-th in sorted order (torchvision's ImageFolder), so their counts must agree.
    #[serde(default)]
    pub classes: Vec<String>,
    /// Folders (version 3): a text file, relative to the spec, whose line i names the sub-folder of label i,
    /// optionally followed by whitespace and the class name (ImageNet's LOC_synset_mapping.txt as is). Class
    /// folders may then be missing (a validation subset) without shifting any label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_folders: Option<PathBuf>,
    /// Folders (version 3): sub-folder name = label, for every sub-folder.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub folder_labels: std::collections::BTreeMap<String, u32>,
    /// Preprocessing.
    #[serde(default)]
    pub preprocess: Preprocess,
}

/// Where the pixels live.
#[derive(Clone, Debug)]
enum Images {
    /// Decoded images in memory, `count x height x width x channels`.
    U8 { height: u32, width: u32, channels: usize, pixels: Vec<u8> },
    /// Float images in memory, same layout.
    F32 { height: u32, width: u32, channels: usize, pixels: Vec<f32> },
    /// Image files decoded on demand (decoding counts as preprocessing); size of the first image.
    Files { paths: Vec<PathBuf>, height: u32, width: u32 },
}

/// A labelled dataset ready to produce input tensors.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Name (from the spec, else the file or folder name).
    pub name: String,
    /// The spec, file or folder it was opened from.
    pub source: PathBuf,
    /// Class names in label order.
    pub classes: Vec<String>,
    /// Label of every sample.
    pub labels: Vec<u32>,
    /// Preprocessing applied by [`Dataset::load_input`].
    pub preprocess: Preprocess,
    /// Source kind.
    pub kind: DatasetKind,
    /// The image and label files of an IDX or NPY dataset (what a remote runner needs to receive).
    pub files: Option<(PathBuf, PathBuf)>,
    images: Images,
}

impl Dataset {
    /// Opens a dataset spec (`.toml`), a folder holding `dataset.toml`, an image folder, an IDX images file or an
    /// NPY images file (labels found beside it by replacing `images` with `labels` in the name).
    pub fn open(path: &Path) -> Result<Self, DataError> {
        if path.is_dir() {
            let spec = path.join("dataset.toml");
            if spec.is_file() {
                return Self::from_spec_file(&spec);
            }
            let name = file_name(path);
            let scan = formats::scan_folder(path, &formats::FolderLabels::Sorted { classes: Vec::new() })?;
            return Self::from_files(name, path, scan, Preprocess::default());
        }
        if !path.exists() {
            return Err(DataError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
            });
        }
        let lower = path.to_string_lossy().to_lowercase();
        if lower.ends_with(".toml") {
            return Self::from_spec_file(path);
        }
        let labels_path = sibling_labels(path)
            .ok_or_else(|| invalid(path, "cannot tell where its labels are; name it *images* with a *labels* file beside it, or write a dataset.toml"))?;
        let kind = if lower.ends_with(".npy") { DatasetKind::Npy } else { DatasetKind::Idx };
        let spec = DatasetSpec {
            format: DATASET_FORMAT.into(),
            version: DATASET_VERSION,
            name: file_name(path),
            kind,
            images: Some(path.to_path_buf()),
            labels: Some(labels_path),
            root: None,
            classes: Vec::new(),
            class_folders: None,
            folder_labels: Default::default(),
            preprocess: Preprocess::default(),
        };
        Self::from_spec(spec, path, Path::new(""))
    }

    fn from_spec_file(path: &Path) -> Result<Self, DataError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
        let spec = parse_spec(path, &text)?;
        Self::from_spec(spec, path, path.parent().unwrap_or(Path::new("")))
    }

    /// Builds a dataset from a parsed spec whose relative paths start at `directory`.
    pub fn from_spec(spec: DatasetSpec, source: &Path, directory: &Path) -> Result<Self, DataError> {
        if spec.version < 2 && !spec.preprocess.transforms.is_empty() {
            return Err(invalid(source, "[preprocess] transforms needs `version = 2`; set it"));
        }
        if spec.version < 3 && (spec.class_folders.is_some() || !spec.folder_labels.is_empty()) {
            return Err(invalid(source, "class_folders and [folder_labels] need `version = 3`; set it"));
        }
        spec.preprocess.validate().map_err(|reason| invalid(source, format!("[preprocess]: {reason}")))?;
        let need = |p: &Option<PathBuf>, what: &str| {
            p.as_ref()
                .map(|p| directory.join(p))
                .ok_or_else(|| invalid(source, format!("the spec needs `{what} = ...`")))
        };
        let mut dataset = match spec.kind {
            DatasetKind::Folder => {
                let root = spec.root.as_ref().map_or_else(|| directory.to_path_buf(), |r| directory.join(r));
                let labels = folder_labels(&spec, source, directory)?;
                let scan = formats::scan_folder(&root, &labels)?;
                Self::from_files(spec.name.clone(), source, scan, spec.preprocess.clone())?
            }
            DatasetKind::Idx | DatasetKind::Npy => {
                let images_path = need(&spec.images, "images")?;
                let labels_path = need(&spec.labels, "labels")?;
                let (images, count) = if spec.kind == DatasetKind::Idx {
                    formats::read_idx_images(&images_path)?
                } else {
                    formats::read_npy_images(&images_path)?
                };
                let labels = if spec.kind == DatasetKind::Idx {
                    formats::read_idx_labels(&labels_path)?
                } else {
                    formats::read_npy_labels(&labels_path)?
                };
                if labels.len() != count {
                    return Err(invalid(
                        &labels_path,
                        format!("holds {} labels but {} holds {count} images", labels.len(), images_path.display()),
                    ));
                }
                Self {
                    name: spec.name.clone(),
                    source: source.to_path_buf(),
                    classes: spec.classes.clone(),
                    labels,
                    preprocess: spec.preprocess.clone(),
                    kind: spec.kind,
                    files: Some((images_path, labels_path)),
                    images,
                }
            }
        };
        if dataset.classes.is_empty() {
            let count = dataset.labels.iter().max().map_or(0, |&m| m as usize + 1);
            dataset.classes = (0..count).map(|i| format!("class {i}")).collect();
        }
        if let Some((index, label)) =
            dataset.labels.iter().enumerate().find(|(_, l)| **l as usize >= dataset.classes.len())
        {
            return Err(invalid(
                source,
                format!("sample {index} has label {label} but only {} classes are named", dataset.classes.len()),
            ));
        }
        if dataset.labels.is_empty() {
            return Err(invalid(source, "the dataset holds no samples"));
        }
        if let (0, _) | (_, 0) = dataset.image_size() {
            return Err(invalid(source, "the images have zero height or width"));
        }
        dataset
            .preprocess
            .validate_for(dataset.source_channels())
            .map_err(|reason| invalid(source, format!("[preprocess]: {reason}")))?;
        Ok(dataset)
    }

    fn from_files(
        name: String,
        source: &Path,
        scan: formats::FolderScan,
        preprocess: Preprocess,
    ) -> Result<Self, DataError> {
        let formats::FolderScan { paths, labels, classes } = scan;
        let first = paths.first().ok_or_else(|| invalid(source, "the folder holds no PNG or JPEG images"))?;
        // The first readable image sets the expected size; unreadable ones are skipped when a run reaches them.
        let (width, height) = match paths.iter().find_map(|p| decode::image_dimensions(p).ok()) {
            Some(size) => size,
            None => {
                return Err(match decode::image_dimensions(first) {
                    Err(DataError::Invalid { path, reason }) => {
                        invalid(&path, format!("{reason} (and so is every other image in the folder)"))
                    }
                    Err(other) => other,
                    Ok(_) => invalid(first, "unreadable image"),
                });
            }
        };
        Ok(Self {
            name,
            source: source.to_path_buf(),
            classes,
            labels,
            preprocess,
            kind: DatasetKind::Folder,
            files: None,
            images: Images::Files { paths, height, width },
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the dataset holds no sample.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Keeps only the first `count` samples (a quick subset).
    pub fn truncate(&mut self, count: usize) {
        if count >= self.len() {
            return;
        }
        self.labels.truncate(count);
        match &mut self.images {
            Images::U8 { height, width, channels, pixels } => {
                pixels.truncate(count * *height as usize * *width as usize * *channels)
            }
            Images::F32 { height, width, channels, pixels } => {
                pixels.truncate(count * *height as usize * *width as usize * *channels)
            }
            Images::Files { paths, .. } => paths.truncate(count),
        }
    }

    /// Height and width of the stored images (of the first, for folders).
    pub fn image_size(&self) -> (u32, u32) {
        match &self.images {
            Images::U8 { height, width, .. }
            | Images::F32 { height, width, .. }
            | Images::Files { height, width, .. } => (*height, *width),
        }
    }

    /// The batch-1 input shape this dataset produces.
    pub fn input_shape(&self) -> [usize; 4] {
        let (h, w) = self.image_size();
        self.preprocess.input_shape(h, w, self.source_channels())
    }

    /// Channels of the source images as the preprocessing sees them: image files load as RGB (torchvision's
    /// `ImageFolder` loader), arrays as stored.
    fn source_channels(&self) -> usize {
        match &self.images {
            Images::U8 { channels, .. } | Images::F32 { channels, .. } => *channels,
            Images::Files { .. } => 3,
        }
    }

    /// Checks the produced shape against a model input (`None` = a free dimension) before anything runs.
    pub fn check_input_shape(&self, expected: &[Option<i64>]) -> Result<(), DataError> {
        let found = self.input_shape();
        let matches = expected.len() == 4
            && expected.iter().zip(found).enumerate().all(|(axis, (e, f))| match e {
                Some(v) => *v as usize == f || (axis == 0 && *v == -1),
                None => true,
            });
        if matches {
            Ok(())
        } else {
            let dims: Vec<String> = expected.iter().map(|d| d.map_or("?".into(), |v| v.to_string())).collect();
            Err(DataError::ShapeMismatch {
                path: self.source.clone(),
                found,
                expected: format!("[{}]", dims.join(", ")),
            })
        }
    }

    /// Writes sample `index` as a preprocessed input tensor into `out`. For image folders this reads and decodes
    /// the file, which is why preprocessing is timed separately from inference.
    pub fn load_input(&self, index: usize, out: &mut Vec<f32>) -> Result<(), DataError> {
        match &self.images {
            Images::U8 { height, width, channels, pixels } => {
                let size = *height as usize * *width as usize * channels;
                let image = &pixels[index * size..(index + 1) * size];
                self.preprocess.apply(Pixels::U8(image), *height, *width, *channels, out);
            }
            Images::F32 { height, width, channels, pixels } => {
                let size = *height as usize * *width as usize * channels;
                let image = &pixels[index * size..(index + 1) * size];
                self.preprocess.apply(Pixels::F32(image), *height, *width, *channels, out);
            }
            Images::Files { paths, height, width } => {
                let path = &paths[index];
                let decoded = decode::decode_image(path)?;
                let (image_width, image_height) = (decoded.width as u32, decoded.height as u32);
                if self.preprocess.input_shape(image_height, image_width, 3) != self.input_shape() {
                    return Err(invalid(
                        path,
                        format!(
                            "is {image_width}x{image_height} but the first image is {width}x{height}, and [preprocess] \
                             gives their tensors different shapes; set resize = [h, w] (spec version 1) or end the transforms \
                             with a resize to [h, w] or a center_crop (version 2)"
                        ),
                    ));
                }
                self.preprocess.apply_loaded(decoded, out);
            }
        }
        Ok(())
    }

    /// The file sample `index` comes from, for datasets with one file per sample (image folders).
    pub fn sample_source(&self, index: usize) -> Option<&Path> {
        match &self.images {
            Images::Files { paths, .. } => paths.get(index).map(PathBuf::as_path),
            Images::U8 { .. } | Images::F32 { .. } => None,
        }
    }

    /// Reads and preprocesses every sample, stopping at the first that fails (`--strict`: check the whole dataset
    /// before measuring anything). `progress(done)` is called as it goes.
    pub fn check_every_sample(&self, mut progress: impl FnMut(usize)) -> Result<(), DataError> {
        let mut input = Vec::new();
        for index in 0..self.len() {
            self.load_input(index, &mut input)?;
            progress(index + 1);
        }
        Ok(())
    }

    /// A gray or RGB thumbnail of sample `index` as (width, height, channels, pixels), for display.
    pub fn thumbnail(&self, index: usize) -> Result<(u32, u32, usize, Vec<u8>), DataError> {
        match &self.images {
            Images::U8 { height, width, channels, pixels } => {
                let size = *height as usize * *width as usize * channels;
                Ok((*width, *height, *channels, pixels[index * size..(index + 1) * size].to_vec()))
            }
            Images::F32 { height, width, channels, pixels } => {
                let size = *height as usize * *width as usize * channels;
                let slice = &pixels[index * size..(index + 1) * size];
                let max = slice.iter().copied().fold(f32::MIN, f32::max).max(1e-6);
                let scale = if max <= 1.0 { 255.0 } else { 1.0 };
                Ok((*width, *height, *channels, slice.iter().map(|&v| (v * scale).clamp(0.0, 255.0) as u8).collect()))
            }
            Images::Files { paths, .. } => {
                let path = &paths[index];
                let decoded = decode::decode_image(path)?;
                Ok((decoded.width as u32, decoded.height as u32, decoded.channels, decoded.pixels))
            }
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| "dataset".into(), |n| n.to_string_lossy().into_owned())
}

/// `.../t10k-images-idx3-ubyte.gz` -> `.../t10k-labels-idx1-ubyte.gz`, `images.npy` -> `labels.npy`.
fn sibling_labels(images: &Path) -> Option<PathBuf> {
    let name = images.file_name()?.to_string_lossy().into_owned();
    let candidate = name.replace("images", "labels").replace("idx3", "idx1");
    (candidate != name).then(|| images.with_file_name(candidate))
}

/// How the sub-folders of a folder dataset map to labels.
fn folder_labels(spec: &DatasetSpec, source: &Path, directory: &Path) -> Result<formats::FolderLabels, DataError> {
    if spec.class_folders.is_some() && !spec.folder_labels.is_empty() {
        return Err(invalid(source, "give class_folders or [folder_labels], not both"));
    }
    if let Some(file) = &spec.class_folders {
        let path = directory.join(file);
        let text = std::fs::read_to_string(&path).map_err(|source| DataError::Io { path: path.clone(), source })?;
        let mut labels = std::collections::BTreeMap::new();
        let mut names = Vec::new();
        for (line_index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (folder, name) = line.split_once(char::is_whitespace).unwrap_or((line, line));
            let label = names.len() as u32;
            if labels.insert(folder.to_string(), label).is_some() {
                return Err(invalid(&path, format!("line {} names folder {folder:?} a second time", line_index + 1)));
            }
            names.push(name.trim().to_string());
        }
        if names.is_empty() {
            return Err(invalid(&path, "names no class folder (one folder name per line, label = line order)"));
        }
        if !spec.classes.is_empty() && spec.classes.len() != names.len() {
            return Err(invalid(
                source,
                format!(
                    "`classes` names {} classes but {} names {} folders",
                    spec.classes.len(),
                    path.display(),
                    names.len()
                ),
            ));
        }
        let classes = if spec.classes.is_empty() { names } else { spec.classes.clone() };
        return Ok(formats::FolderLabels::Named { labels, classes, file: path });
    }
    if !spec.folder_labels.is_empty() {
        let count = spec.folder_labels.values().max().map_or(0, |&m| m as usize + 1).max(spec.classes.len());
        let classes = if spec.classes.is_empty() {
            let mut classes: Vec<String> = (0..count).map(|i| format!("class {i}")).collect();
            for (folder, &label) in &spec.folder_labels {
                classes[label as usize] = folder.clone();
            }
            classes
        } else {
            spec.classes.clone()
        };
        if let Some((folder, label)) = spec.folder_labels.iter().find(|(_, l)| **l as usize >= classes.len()) {
            return Err(invalid(
                source,
                format!("[folder_labels] gives {folder:?} label {label} but `classes` names only {}", classes.len()),
            ));
        }
        return Ok(formats::FolderLabels::Named {
            labels: spec.folder_labels.clone(),
            classes,
            file: source.to_path_buf(),
        });
    }
    Ok(formats::FolderLabels::Sorted { classes: spec.classes.clone() })
}

/// Parses a dataset spec, checking its format and version first.
pub fn parse_spec(path: &Path, text: &str) -> Result<DatasetSpec, DataError> {
    use crate::format::{FileFormat, HeaderProblem};
    let format = FileFormat { name: DATASET_FORMAT, version: DATASET_VERSION };
    format.check_toml(text).map_err(|problem| match problem {
        HeaderProblem::Syntax(e) => invalid(path, format!("not a valid TOML dataset spec: {e}")),
        HeaderProblem::OtherFormat => {
            invalid(path, format!("not an edgescope dataset spec (expected format = \"{DATASET_FORMAT}\")"))
        }
        HeaderProblem::NoVersion => invalid(path, "the spec has no valid `version`"),
        HeaderProblem::Newer { found } => {
            DataError::NewerVersion { path: path.to_path_buf(), found, supported: DATASET_VERSION }
        }
    })?;
    let table: toml::Table =
        toml::from_str(text).map_err(|e| invalid(path, format!("not a valid TOML dataset spec: {e}")))?;
    if let Some(preprocess) = table.get("preprocess").and_then(toml::Value::as_table)
        && preprocess.contains_key("transforms")
    {
        let fixed: Vec<&str> = ["scale", "mean", "std", "channels", "resize", "center_crop"]
            .into_iter()
            .filter(|key| preprocess.contains_key(*key))
            .collect();
        if !fixed.is_empty() {
            return Err(invalid(
                path,
                format!(
                    "[preprocess] has both `transforms` and {}; with transforms, write resize and center_crop as steps, \
                     mean and std as a normalize step; to_tensor scales by 1/255 and grayscale sets the channels",
                    fixed.join(", ")
                ),
            ));
        }
    }
    toml::from_str(text).map_err(|e| invalid(path, format!("dataset spec error: {e}")))
}

/// Default cap on a gzip file's decompressed size (4 GiB; a runner sets its own, `--max-dataset-mib`).
pub const DEFAULT_MAX_DECOMPRESSED_BYTES: u64 = 4 << 30;

static MAX_DECOMPRESSED_BYTES: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(DEFAULT_MAX_DECOMPRESSED_BYTES);

/// Sets, for the whole process, the most bytes a gzip dataset file may expand to (a 1 MB file can otherwise
/// claim gigabytes of memory). The runner sets it from its limits.
pub fn set_max_decompressed_bytes(bytes: u64) {
    MAX_DECOMPRESSED_BYTES.store(bytes, std::sync::atomic::Ordering::SeqCst);
}

/// The current cap on a gzip file's decompressed size.
pub fn max_decompressed_bytes() -> u64 {
    MAX_DECOMPRESSED_BYTES.load(std::sync::atomic::Ordering::SeqCst)
}

/// Reads a whole file, transparently gunzipping it when it starts with the gzip magic; the decompressed size
/// is capped by [`max_decompressed_bytes`], and memory grows only as data really decompresses.
pub(crate) fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let cap = max_decompressed_bytes();
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .take(cap.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| invalid(path, format!("corrupt gzip data ({e}); download the file again")))?;
        if out.len() as u64 > cap {
            return Err(invalid(
                path,
                format!(
                    "expands to more than {} MiB when decompressed, over this process's limit; on a runner raise \
                     --max-dataset-mib, or split the dataset",
                    cap >> 20
                ),
            ));
        }
        Ok(out)
    } else {
        Ok(raw)
    }
}
