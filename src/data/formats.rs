//! Readers for IDX, NPY and image folders. Each error names the file and what is wrong with it.

use std::path::{Path, PathBuf};

use super::{DataError, Images, invalid, read_maybe_gzip};

/// Parses an IDX header: returns (element type code, dimensions, offset of the data).
fn idx_header(path: &Path, bytes: &[u8]) -> Result<(u8, Vec<usize>, usize), DataError> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(invalid(path, "not an IDX file (bad magic number); is it the right file, fully downloaded?"));
    }
    let (code, rank) = (bytes[2], bytes[3] as usize);
    let offset = 4 + 4 * rank;
    if bytes.len() < offset {
        return Err(invalid(path, "truncated IDX header"));
    }
    let dims: Vec<usize> =
        bytes[4..offset].chunks_exact(4).map(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize).collect();
    if dims.contains(&0) {
        return Err(invalid(
            path,
            format!("IDX header has a zero dimension {dims:?}; an empty dataset cannot be used"),
        ));
    }
    if code != 0x08 {
        return Err(invalid(
            path,
            format!("IDX element type 0x{code:02x} is not supported (only unsigned bytes, 0x08)"),
        ));
    }
    let expected = dims.iter().try_fold(1usize, |product, &d| product.checked_mul(d)).ok_or_else(|| {
        invalid(path, format!("IDX header dimensions {dims:?} multiply past what memory can hold; the file is corrupt"))
    })?;
    if bytes.len() - offset != expected {
        return Err(invalid(
            path,
            format!(
                "IDX header promises {expected} bytes of data but the file holds {}; it is truncated or corrupt",
                bytes.len() - offset
            ),
        ));
    }
    Ok((code, dims, offset))
}

/// Reads IDX images (`count x height x width` or `count x height x width x channels`).
pub(super) fn read_idx_images(path: &Path) -> Result<(Images, usize), DataError> {
    let bytes = read_maybe_gzip(path)?;
    let (_, dims, offset) = idx_header(path, &bytes)?;
    let (count, height, width, channels) = match dims.as_slice() {
        [n, h, w] => (*n, *h, *w, 1),
        [n, h, w, c] if *c == 1 || *c == 3 => (*n, *h, *w, *c),
        _ => return Err(invalid(path, format!("IDX images need 3 or 4 dimensions (N, H, W[, C]), found {dims:?}"))),
    };
    let mut pixels = bytes;
    pixels.drain(..offset);
    Ok((Images::U8 { height: height as u32, width: width as u32, channels, pixels }, count))
}

/// Reads IDX labels (one dimension).
pub(super) fn read_idx_labels(path: &Path) -> Result<Vec<u32>, DataError> {
    let bytes = read_maybe_gzip(path)?;
    let (_, dims, offset) = idx_header(path, &bytes)?;
    if dims.len() != 1 {
        return Err(invalid(path, format!("IDX labels need 1 dimension, found {dims:?}")));
    }
    Ok(bytes[offset..].iter().map(|&b| u32::from(b)).collect())
}

/// The shape an NPY header claims, read before npyz sees it (npyz multiplies the dimensions unchecked, which
/// panics or wraps on a forged header). `None` when the header is not readable here; npyz then reports why.
fn npy_claimed_shape(bytes: &[u8]) -> Option<Vec<u64>> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return None;
    }
    let (start, length): (usize, usize) = if bytes[6] == 1 {
        (10, usize::from(u16::from_le_bytes([bytes[8], bytes[9]])))
    } else {
        let length = u32::from_le_bytes([bytes[8], bytes[9], *bytes.get(10)?, *bytes.get(11)?]);
        (12, usize::try_from(length).ok()?)
    };
    let header = std::str::from_utf8(bytes.get(start..start.checked_add(length)?)?).ok()?;
    let after = &header[header.find("'shape'").or_else(|| header.find("\"shape\""))?..];
    let open = after.find('(')?;
    let close = after[open..].find(')')? + open;
    after[open + 1..close]
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.trim_end_matches('L').parse::<u64>().ok())
        .collect()
}

fn open_npy(path: &Path) -> Result<npyz::NpyFile<std::io::Cursor<Vec<u8>>>, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    let file_bytes = bytes.len() as u64;
    if let Some(shape) = npy_claimed_shape(&bytes)
        && shape.iter().try_fold(1u64, |product, &d| product.checked_mul(d)).is_none_or(|n| n > file_bytes)
    {
        return Err(invalid(
            path,
            format!(
                "NPY shape {shape:?} needs more bytes than the file holds ({file_bytes}); it is truncated or corrupt"
            ),
        ));
    }
    let npy = npyz::NpyFile::new(std::io::Cursor::new(bytes))
        .map_err(|e| invalid(path, format!("not a valid NPY file ({e})")))?;
    // The shape is the file's claim: check it against the bytes really there before anything is allocated
    // for it (npyz sizes its output from the shape).
    let shape = npy.shape().to_vec();
    if shape.contains(&0) {
        return Err(invalid(
            path,
            format!("NPY shape {shape:?} has a zero dimension; an empty dataset cannot be used"),
        ));
    }
    let item_bytes = match npy.dtype() {
        npyz::DType::Plain(ts) => ts.size_field(),
        other => return Err(invalid(path, format!("unsupported NPY dtype {}", other.descr()))),
    };
    let data_bytes = shape
        .iter()
        .try_fold(item_bytes.max(1), |product, &d| product.checked_mul(d))
        .filter(|&total| total <= file_bytes)
        .ok_or_else(|| {
            invalid(path, format!("NPY shape {shape:?} needs more bytes than the file holds ({file_bytes}); it is truncated or corrupt"))
        })?;
    if usize::try_from(data_bytes).is_err() {
        return Err(invalid(path, "the array does not fit in memory on this machine"));
    }
    Ok(npy)
}

fn npy_type(path: &Path, npy: &npyz::NpyFile<std::io::Cursor<Vec<u8>>>) -> Result<(npyz::TypeChar, u64), DataError> {
    match npy.dtype() {
        npyz::DType::Plain(ts) => Ok((ts.type_char(), ts.size_field())),
        other => Err(invalid(path, format!("unsupported NPY dtype {}", other.descr()))),
    }
}

/// Reads NPY images: uint8 or float32, shaped `N x H x W` or `N x H x W x C` (C = 1 or 3), C order.
pub(super) fn read_npy_images(path: &Path) -> Result<(Images, usize), DataError> {
    let npy = open_npy(path)?;
    if npy.order() != npyz::Order::C {
        return Err(invalid(path, "Fortran-ordered arrays are not supported; save with np.ascontiguousarray"));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let (count, height, width, channels) = match shape.as_slice() {
        [n, h, w] => (*n, *h, *w, 1),
        [n, h, w, c] if *c == 1 || *c == 3 => (*n, *h, *w, *c),
        _ => return Err(invalid(path, format!("NPY images need shape (N, H, W) or (N, H, W, C), found {shape:?}"))),
    };
    let (Ok(height), Ok(width)) = (u32::try_from(height), u32::try_from(width)) else {
        return Err(invalid(path, format!("NPY images of {height} x {width} pixels are too large")));
    };
    let corrupt =
        |e: std::io::Error| invalid(path, format!("cannot read the array data ({e}); the file may be truncated"));
    let images = match npy_type(path, &npy)? {
        (npyz::TypeChar::Uint, 1) => {
            Images::U8 { height, width, channels, pixels: npy.into_vec::<u8>().map_err(corrupt)? }
        }
        (npyz::TypeChar::Float, 4) => {
            Images::F32 { height, width, channels, pixels: npy.into_vec::<f32>().map_err(corrupt)? }
        }
        (kind, size) => {
            return Err(invalid(path, format!("images must be uint8 or float32, found {kind:?} of {size} bytes")));
        }
    };
    Ok((images, count))
}

/// Reads NPY labels: any integer type, one dimension, non-negative.
pub(super) fn read_npy_labels(path: &Path) -> Result<Vec<u32>, DataError> {
    let npy = open_npy(path)?;
    if npy.shape().len() != 1 {
        return Err(invalid(path, format!("labels need one dimension, found shape {:?}", npy.shape())));
    }
    let corrupt = |e: std::io::Error| invalid(path, format!("cannot read the labels ({e}); the file may be truncated"));
    let values: Vec<i64> = match npy_type(path, &npy)? {
        (npyz::TypeChar::Int, 8) => npy.into_vec::<i64>().map_err(corrupt)?,
        (npyz::TypeChar::Int, 4) => npy.into_vec::<i32>().map_err(corrupt)?.into_iter().map(i64::from).collect(),
        (npyz::TypeChar::Int, 2) => npy.into_vec::<i16>().map_err(corrupt)?.into_iter().map(i64::from).collect(),
        (npyz::TypeChar::Int, 1) => npy.into_vec::<i8>().map_err(corrupt)?.into_iter().map(i64::from).collect(),
        (npyz::TypeChar::Uint, 8) => {
            npy.into_vec::<u64>().map_err(corrupt)?.into_iter().map(|v| v.min(i64::MAX as u64) as i64).collect()
        }
        (npyz::TypeChar::Uint, 4) => npy.into_vec::<u32>().map_err(corrupt)?.into_iter().map(i64::from).collect(),
        (npyz::TypeChar::Uint, 2) => npy.into_vec::<u16>().map_err(corrupt)?.into_iter().map(i64::from).collect(),
        (npyz::TypeChar::Uint, 1) => npy.into_vec::<u8>().map_err(corrupt)?.into_iter().map(i64::from).collect(),
        (kind, size) => return Err(invalid(path, format!("labels must be integers, found {kind:?} of {size} bytes"))),
    };
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| u32::try_from(v).map_err(|_| invalid(path, format!("label {v} of sample {i} is out of range"))))
        .collect()
}

/// What an image folder holds: file per sample, label per sample, class names.
pub(super) struct FolderScan {
    pub paths: Vec<PathBuf>,
    pub labels: Vec<u32>,
    pub classes: Vec<String>,
}

/// How class sub-folders become labels.
#[derive(Debug)]
pub(super) enum FolderLabels {
    /// torchvision's ImageFolder: the i-th sub-folder in sorted order is label i; `classes` (when given) names
    /// them, and then their counts must agree.
    Sorted { classes: Vec<String> },
    /// Each sub-folder's label by name (from `file`); every sub-folder must be named, some may be missing.
    Named { labels: std::collections::BTreeMap<String, u32>, classes: Vec<String>, file: PathBuf },
}

/// File endings torchvision's ImageFolder takes as images (case-insensitive). Only PNG and JPEG are decoded;
/// the others are listed as samples that a run skips with a clear reason, so sample indices equal the user's
/// Python ones.
const IMAGE_FOLDER_EXTENSIONS: [&str; 9] = ["jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp"];

/// Scans an image folder as torchvision's ImageFolder does: class sub-folders sorted by name (see
/// [`FolderLabels`] for their labels), then within each, every directory below it in sorted order of its path
/// (`sorted(os.walk(..., followlinks=True))`) and its image files in sorted order.
pub(super) fn scan_folder(root: &Path, labelling: &FolderLabels) -> Result<FolderScan, DataError> {
    let io = |source| DataError::Io { path: root.to_path_buf(), source };
    let mut class_dirs: Vec<(String, PathBuf)> = std::fs::read_dir(root)
        .map_err(io)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .map(|p| (p.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()), p))
        .collect();
    // Python sorts the names as strings: code point order, which is UTF-8 byte order.
    class_dirs.sort();
    if class_dirs.is_empty() {
        return Err(invalid(root, "an image-folder dataset needs one sub-folder per class"));
    }
    let classes = match labelling {
        FolderLabels::Sorted { classes } if classes.is_empty() => class_dirs.iter().map(|(n, _)| n.clone()).collect(),
        FolderLabels::Sorted { classes } => {
            if classes.len() != class_dirs.len() {
                return Err(invalid(
                    root,
                    format!(
                        "holds {} class sub-folders but the spec's `classes` names {}; labels follow the sorted \
                         sub-folders (as torchvision's ImageFolder), so a missing folder would shift every label \
                         after it. Map folders to labels with class_folders = FILE or [folder_labels] (spec \
                         version 3)",
                        class_dirs.len(),
                        classes.len()
                    ),
                ));
            }
            classes.clone()
        }
        FolderLabels::Named { classes, .. } => classes.clone(),
    };
    let mut paths = Vec::new();
    let mut labels = Vec::new();
    for (index, (name, dir)) in class_dirs.iter().enumerate() {
        let label = match labelling {
            FolderLabels::Sorted { .. } => index as u32,
            FolderLabels::Named { labels, file, .. } => *labels.get(name).ok_or_else(|| {
                invalid(
                    root,
                    format!("sub-folder {name:?} has no label in {}; add it there or move it away", file.display()),
                )
            })?,
        };
        let files = images_below(dir)?;
        labels.extend(std::iter::repeat_n(label, files.len()));
        paths.extend(files);
    }
    Ok(FolderScan { paths, labels, classes })
}

/// The image files in `dir` and every directory below it (links followed), in ImageFolder's order.
fn images_below(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut directories: Vec<(String, PathBuf)> = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    let mut visited = std::collections::BTreeSet::new();
    while let Some(current) = pending.pop() {
        // A link cycle would walk forever; each real directory is visited once.
        if !visited.insert(std::fs::canonicalize(&current).unwrap_or_else(|_| current.clone())) {
            continue;
        }
        let entries = std::fs::read_dir(&current).map_err(|source| DataError::Io { path: current.clone(), source })?;
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            }
        }
        directories.push((current.to_string_lossy().into_owned(), current));
    }
    directories.sort();
    let mut files = Vec::new();
    for (_, directory) in directories {
        let mut names: Vec<(String, PathBuf)> = std::fs::read_dir(&directory)
            .map_err(|source| DataError::Io { path: directory.clone(), source })?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                !p.is_dir()
                    && p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| IMAGE_FOLDER_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            })
            .map(|p| (p.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()), p))
            .collect();
        names.sort();
        files.extend(names.into_iter().map(|(_, p)| p));
    }
    Ok(files)
}
