//! Preprocessing: turns decoded pixels into the float tensor a model expects, with the arithmetic of
//! torchvision's transforms on PIL images, so accuracy equals what users measure in Python.
//!
//! Two ways to write it in a dataset spec's `[preprocess]` table:
//!
//! - **Version 2, an ordered pipeline** (`transforms = [...]`), applied in the order written, as
//!   `torchvision.transforms.Compose` would:
//!   `{ resize = 256, interpolation = "bilinear", max_size = 300 }` (an int: the shorter side, the longer one
//!   `int(256 * long / short)`; `[h, w]`: exactly that; interpolation `nearest`, `bilinear` (default),
//!   `bicubic`, `box`, `hamming` or `lanczos`, with Pillow's antialiasing and uint8 rounding),
//!   `{ center_crop = 224 }` or `[h, w]` (zero padding when larger than the image, offsets rounded half to
//!   even), `"grayscale"` or `{ grayscale = 3 }` (Pillow's "L"), `"to_tensor"` (uint8 / 255 in float32),
//!   `{ normalize = { mean = [...], std = [...] } }` (`(x - mean) / std` in float32). Image files are loaded
//!   as torchvision's `ImageFolder` loads them (`convert("RGB")`); IDX/NPY arrays are images of mode "L"
//!   (one channel) or "RGB" as stored. Plus `layout` (NCHW or NHWC) for the tensor.
//! - **Version 1, fixed fields**, applied in this order: `resize = [h, w]` (Pillow bilinear, antialiased,
//!   uint8), `center_crop = [h, w]` (as above), conversion to `channels` (1: Pillow's "L"; 3: gray copied to
//!   R, G, B), then `x = (pixel * scale - mean[c]) / std[c]` in float32 (a multiplication by `scale`, as
//!   version 1 always did), then `layout`.
//!
//! Float (NPY float32) sources stay float: resizing uses Pillow's mode "F" arithmetic and `to_tensor` leaves
//! the values as they are (torchvision's `to_tensor` only divides uint8 data).

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use super::pil::Interpolation;
use super::pil::{self, ImageF32, ImageU8};

/// Memory layout of the image tensor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Batch, channels, height, width (PyTorch exports).
    #[default]
    Nchw,
    /// Batch, height, width, channels (TensorFlow exports).
    Nhwc,
}

/// A size as torchvision takes it: one int, or `[height, width]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// One int: for `resize`, the shorter side; for `center_crop`, a square.
    Side(u32),
    /// `[height, width]` in pixels.
    HeightWidth([u32; 2]),
}

impl Size {
    fn is_positive(self) -> bool {
        match self {
            Self::Side(s) => s > 0,
            Self::HeightWidth([h, w]) => h > 0 && w > 0,
        }
    }

    fn describe(self) -> String {
        match self {
            Self::Side(s) => s.to_string(),
            Self::HeightWidth([h, w]) => format!("{h}x{w}"),
        }
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Side(s) => serializer.serialize_u32(*s),
            Self::HeightWidth(hw) => hw.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl<'de> Visitor<'de> for SizeVisitor {
            type Value = Size;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a size: one positive integer or [height, width]")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                u32::try_from(v).map(Size::Side).map_err(|_| E::custom(format!("size {v} is too large")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("size {v} must be positive")))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Size, A::Error> {
                // torchvision takes a one-element sequence as the int itself.
                match Vec::<u32>::deserialize(de::value::SeqAccessDeserializer::new(seq))?.as_slice() {
                    [side] => Ok(Size::Side(*side)),
                    [h, w] => Ok(Size::HeightWidth([*h, *w])),
                    other => Err(de::Error::custom(format!(
                        "a size is one integer or [height, width], not {} values",
                        other.len()
                    ))),
                }
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// One step of a version-2 pipeline, named after the torchvision transform it reproduces.
#[derive(Clone, Debug, PartialEq)]
pub enum Transform {
    /// `Resize(size, interpolation, max_size)` on the PIL image.
    Resize {
        /// Target size.
        size: Size,
        /// Resampling filter.
        interpolation: Interpolation,
        /// Cap on the longer side, pixels (only with a one-int size).
        max_size: Option<u32>,
    },
    /// `CenterCrop(size)`.
    CenterCrop(Size),
    /// `Grayscale(num_output_channels)`: Pillow's "L", copied to 3 channels when asked.
    Grayscale {
        /// 1 or 3.
        channels: usize,
    },
    /// `ToTensor()`: uint8 / 255 in float32.
    ToTensor,
    /// `Normalize(mean, std)`: `(x - mean) / std` in float32, one value or one per channel.
    Normalize {
        /// Per-channel means.
        mean: Vec<f32>,
        /// Per-channel standard deviations.
        std: Vec<f32>,
    },
}

/// The table form of a [`Transform`] in TOML/JSON.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransformTable {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resize: Option<Size>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interpolation: Option<Interpolation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    center_crop: Option<Size>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grayscale: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    normalize: Option<NormalizeTable>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NormalizeTable {
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl Serialize for Transform {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let table = match self {
            Self::ToTensor => return serializer.serialize_str("to_tensor"),
            Self::Grayscale { channels: 1 } => return serializer.serialize_str("grayscale"),
            Self::Grayscale { channels } => TransformTable { grayscale: Some(*channels), ..TransformTable::default() },
            Self::Resize { size, interpolation, max_size } => TransformTable {
                resize: Some(*size),
                interpolation: Some(*interpolation),
                max_size: *max_size,
                ..TransformTable::default()
            },
            Self::CenterCrop(size) => TransformTable { center_crop: Some(*size), ..TransformTable::default() },
            Self::Normalize { mean, std } => TransformTable {
                normalize: Some(NormalizeTable { mean: mean.clone(), std: std.clone() }),
                ..TransformTable::default()
            },
        };
        table.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Transform {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TransformVisitor;
        impl<'de> Visitor<'de> for TransformVisitor {
            type Value = Transform;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a transform: \"to_tensor\", \"grayscale\", or a table such as { resize = 256 }")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Transform, E> {
                match name {
                    "to_tensor" => Ok(Transform::ToTensor),
                    "grayscale" => Ok(Transform::Grayscale { channels: 1 }),
                    other => Err(E::custom(format!(
                        "unknown transform \"{other}\"; write \"to_tensor\", \"grayscale\", or a table: \
                         {{ resize = 256 }}, {{ center_crop = 224 }}, {{ normalize = {{ mean = [..], std = [..] }} }}"
                    ))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Transform, A::Error> {
                let table = TransformTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                table.into_transform().map_err(de::Error::custom)
            }
        }
        deserializer.deserialize_any(TransformVisitor)
    }
}

impl TransformTable {
    fn into_transform(self) -> Result<Transform, String> {
        let resize_options = self.interpolation.is_some() || self.max_size.is_some();
        match (self.resize, self.center_crop, self.grayscale, self.normalize) {
            (Some(size), None, None, None) => Ok(Transform::Resize {
                size,
                interpolation: self.interpolation.unwrap_or_default(),
                max_size: self.max_size,
            }),
            (None, None, None, None) => {
                Err("a transform table names one of resize, center_crop, grayscale, normalize".into())
            }
            (None, ..) if resize_options => Err("interpolation and max_size belong in a resize table".into()),
            (None, Some(size), None, None) => Ok(Transform::CenterCrop(size)),
            (None, None, Some(channels), None) => Ok(Transform::Grayscale { channels }),
            (None, None, None, Some(NormalizeTable { mean, std })) => Ok(Transform::Normalize { mean, std }),
            _ => Err("each transform table names exactly one of resize, center_crop, grayscale, normalize \
                      (write one table per step)"
                .into()),
        }
    }
}

/// How pixels become model input: a version-2 pipeline (`transforms`) or the version-1 fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    /// Version 1: factor applied to raw pixel values first (1/255 maps 8-bit pixels to [0, 1]).
    #[serde(default = "default_scale")]
    pub scale: f32,
    /// Version 1: mean subtracted per channel (one value applies to every channel).
    #[serde(default)]
    pub mean: Vec<f32>,
    /// Version 1: standard deviation divided per channel (one value applies to every channel).
    #[serde(default)]
    pub std: Vec<f32>,
    /// Tensor layout (both versions).
    #[serde(default)]
    pub layout: Layout,
    /// Version 1: channels the model expects: 1 (gray) or 3 (RGB). Images are converted as needed.
    #[serde(default = "default_channels")]
    pub channels: usize,
    /// Version 1: resize to `[height, width]` first (Pillow bilinear, antialiased, uint8), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<[u32; 2]>,
    /// Version 1: then center crop to `[height, width]`, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub center_crop: Option<[u32; 2]>,
    /// Version 2: the ordered pipeline. When it is not empty, the version-1 fields other than `layout` are
    /// not used (a spec file may not set them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transforms: Vec<Transform>,
}

fn default_scale() -> f32 {
    1.0 / 255.0
}

fn default_channels() -> usize {
    1
}

impl Default for Preprocess {
    fn default() -> Self {
        Self {
            scale: default_scale(),
            mean: Vec::new(),
            std: Vec::new(),
            layout: Layout::Nchw,
            channels: default_channels(),
            resize: None,
            center_crop: None,
            transforms: Vec::new(),
        }
    }
}

/// Pixels of one image, height x width x channels, 8-bit or float.
#[derive(Clone, Debug)]
pub enum Pixels<'a> {
    /// 8-bit pixels.
    U8(&'a [u8]),
    /// Float pixels (already in the unit the scale expects).
    F32(&'a [f32]),
}

/// The steps both spec versions run, in order.
#[derive(Clone, Debug)]
enum Step {
    Resize {
        size: Size,
        interpolation: Interpolation,
        max_size: Option<u32>,
    },
    CenterCrop(Size),
    /// Pillow "L" (1) or "L" copied to 3 channels (3).
    Grayscale(usize),
    /// Version 1's conversion to 3 channels (gray copied; RGB unchanged).
    Rgb,
    /// uint8 to float: `x / 255` (version 2) or `x * scale` (version 1, also for float data).
    ToTensor {
        v1_scale: Option<f32>,
    },
    Normalize {
        mean: Vec<f32>,
        std: Vec<f32>,
    },
}

/// The image between steps: 8-bit or float, with the channel count the pipeline sees. A gray image that
/// stands for an RGB one (a gray file loaded as RGB) keeps one stored channel: every step keeps R = G = B
/// and Pillow's "L" of such a pixel is the pixel itself, so it is copied out only when the tensor is made.
enum Working {
    U8(ImageU8),
    F32(ImageF32),
}

impl Working {
    fn size(&self) -> (usize, usize) {
        match self {
            Self::U8(i) => (i.height, i.width),
            Self::F32(i) => (i.height, i.width),
        }
    }
}

impl Preprocess {
    fn steps(&self) -> Vec<Step> {
        if !self.transforms.is_empty() {
            return self
                .transforms
                .iter()
                .map(|t| match t {
                    Transform::Resize { size, interpolation, max_size } => {
                        Step::Resize { size: *size, interpolation: *interpolation, max_size: *max_size }
                    }
                    Transform::CenterCrop(size) => Step::CenterCrop(*size),
                    Transform::Grayscale { channels } => Step::Grayscale(*channels),
                    Transform::ToTensor => Step::ToTensor { v1_scale: None },
                    Transform::Normalize { mean, std } => Step::Normalize { mean: mean.clone(), std: std.clone() },
                })
                .collect();
        }
        let mut steps = Vec::new();
        if let Some(hw) = self.resize {
            steps.push(Step::Resize {
                size: Size::HeightWidth(hw),
                interpolation: Interpolation::Bilinear,
                max_size: None,
            });
        }
        if let Some(hw) = self.center_crop {
            steps.push(Step::CenterCrop(Size::HeightWidth(hw)));
        }
        steps.push(if self.channels == 1 { Step::Grayscale(1) } else { Step::Rgb });
        steps.push(Step::ToTensor { v1_scale: Some(self.scale) });
        steps.push(Step::Normalize { mean: self.mean.clone(), std: self.std.clone() });
        steps
    }

    /// Checks the spec; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !self.transforms.is_empty() {
            return self.validate_pipeline();
        }
        if !(self.channels == 1 || self.channels == 3) {
            return Err(format!("channels must be 1 or 3, not {}", self.channels));
        }
        for (name, values) in [("mean", &self.mean), ("std", &self.std)] {
            if !(values.is_empty() || values.len() == 1 || values.len() == self.channels) {
                return Err(format!("{name} needs 1 or {} values, not {}", self.channels, values.len()));
            }
        }
        if self.std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
            return Err("std values must be finite and non-zero".into());
        }
        if !self.scale.is_finite() {
            return Err("scale must be finite".into());
        }
        if [self.resize, self.center_crop].iter().flatten().any(|[h, w]| *h == 0 || *w == 0) {
            return Err("resize and center_crop sizes must be positive".into());
        }
        Ok(())
    }

    fn validate_pipeline(&self) -> Result<(), String> {
        let mut tensor = false;
        for (index, transform) in self.transforms.iter().enumerate() {
            let step = index + 1;
            let image_step =
                matches!(transform, Transform::Resize { .. } | Transform::CenterCrop(_) | Transform::Grayscale { .. });
            if tensor && image_step {
                return Err(format!(
                    "transform {step}: resize, center_crop and grayscale after to_tensor work on tensors in \
                     torchvision, with other arithmetic; put them before \"to_tensor\""
                ));
            }
            match transform {
                Transform::Resize { size, max_size, .. } => {
                    if !size.is_positive() {
                        return Err(format!("transform {step}: resize sizes must be positive"));
                    }
                    match (size, max_size) {
                        (Size::HeightWidth(_), Some(_)) => {
                            return Err(format!(
                                "transform {step}: max_size only goes with a one-int resize (the shorter side)"
                            ));
                        }
                        (Size::Side(side), Some(max)) if max <= side => {
                            return Err(format!(
                                "transform {step}: max_size = {max} must be greater than the size {side}, as torchvision requires"
                            ));
                        }
                        _ => {}
                    }
                }
                Transform::CenterCrop(size) if !size.is_positive() => {
                    return Err(format!("transform {step}: center_crop sizes must be positive"));
                }
                Transform::Grayscale { channels } if !(*channels == 1 || *channels == 3) => {
                    return Err(format!("transform {step}: grayscale gives 1 or 3 channels, not {channels}"));
                }
                Transform::ToTensor if tensor => {
                    return Err(format!("transform {step}: to_tensor appears twice"));
                }
                Transform::ToTensor => tensor = true,
                Transform::Normalize { mean, std } => {
                    if !tensor {
                        return Err(format!(
                            "transform {step}: normalize works on a tensor; put \"to_tensor\" before it"
                        ));
                    }
                    if mean.is_empty() || std.is_empty() {
                        return Err(format!("transform {step}: normalize needs mean and std values"));
                    }
                    if std.iter().any(|&s| s == 0.0 || !s.is_finite()) || mean.iter().any(|m| !m.is_finite()) {
                        return Err(format!("transform {step}: std values must be finite and non-zero, means finite"));
                    }
                }
                _ => {}
            }
        }
        if !tensor {
            return Err("the transforms need a \"to_tensor\" step (after the image steps)".into());
        }
        Ok(())
    }

    /// Checks what depends on the source: normalize's per-channel values against the channels they meet.
    /// `channels_in` is what the source gives: 3 for image files (loaded as RGB), 1 or 3 for arrays.
    pub fn validate_for(&self, channels_in: usize) -> Result<(), String> {
        let mut channels = channels_in;
        for step in self.steps() {
            match step {
                Step::Grayscale(c) => channels = c,
                Step::Rgb => channels = 3,
                Step::Normalize { mean, std } => {
                    for (name, values) in [("mean", &mean), ("std", &std)] {
                        if !(values.is_empty() || values.len() == 1 || values.len() == channels) {
                            return Err(format!(
                                "normalize {name} has {} values but the tensor has {channels} channels; give 1 or {channels}",
                                values.len()
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// One line for people, e.g. `resize 256 (bilinear) -> center crop 224 -> to tensor -> normalize .., NCHW`.
    pub fn describe(&self) -> String {
        let layout = format!("{:?}", self.layout).to_uppercase();
        if !self.transforms.is_empty() {
            let steps: Vec<String> = self
                .transforms
                .iter()
                .map(|t| match t {
                    Transform::Resize { size, interpolation, max_size } => format!(
                        "resize {} ({interpolation:?}{})",
                        size.describe(),
                        max_size.map_or(String::new(), |m| format!(", max {m}"))
                    )
                    .to_lowercase(),
                    Transform::CenterCrop(size) => format!("center crop {}", size.describe()),
                    Transform::Grayscale { channels: 1 } => "grayscale".into(),
                    Transform::Grayscale { channels } => format!("grayscale x{channels}"),
                    Transform::ToTensor => "to tensor".into(),
                    Transform::Normalize { mean, std } => format!("normalize mean {mean:?} std {std:?}"),
                })
                .collect();
            return format!("{}, {layout}", steps.join(" -> "));
        }
        let mut parts = vec![format!("scale {}", self.scale)];
        if !self.mean.is_empty() {
            parts.push(format!("mean {:?}", self.mean));
        }
        if !self.std.is_empty() {
            parts.push(format!("std {:?}", self.std));
        }
        parts.push(layout);
        parts.push(format!("{} channel{}", self.channels, if self.channels == 1 { "" } else { "s" }));
        if let Some([h, w]) = self.resize {
            parts.push(format!("resize {h}x{w}"));
        }
        if let Some([h, w]) = self.center_crop {
            parts.push(format!("center crop {h}x{w}"));
        }
        parts.join(", ")
    }

    /// Channels, height and width of the tensor for a source image of `height` x `width` with `channels_in`
    /// channels (3 for image files, which load as RGB).
    pub fn output_size(&self, height: u32, width: u32, channels_in: usize) -> (usize, u32, u32) {
        let (mut c, mut h, mut w) = (channels_in, height as usize, width as usize);
        for step in self.steps() {
            match step {
                Step::Resize { size, max_size, .. } => (h, w) = resized(h, w, size, max_size),
                Step::CenterCrop(size) => (h, w) = crop_size(size),
                Step::Grayscale(channels) => c = channels,
                Step::Rgb => c = 3,
                Step::ToTensor { .. } | Step::Normalize { .. } => {}
            }
        }
        (c, h as u32, w as u32)
    }

    /// The batch-1 input shape for images of `height` x `width` with `channels_in` channels.
    pub fn input_shape(&self, height: u32, width: u32, channels_in: usize) -> [usize; 4] {
        let (c, h, w) = self.output_size(height, width, channels_in);
        let (h, w) = (h as usize, w as usize);
        match self.layout {
            Layout::Nchw => [1, c, h, w],
            Layout::Nhwc => [1, h, w, c],
        }
    }

    /// Converts one decoded array image (`height` x `width` x `channels_in`, row-major) into `out`. The image is
    /// taken as Pillow would hold it after `Image.fromarray`: mode "L" for one channel, "RGB" for three.
    pub fn apply(&self, pixels: Pixels<'_>, height: u32, width: u32, channels_in: usize, out: &mut Vec<f32>) {
        let (height, width) = (height as usize, width as usize);
        let working = match pixels {
            Pixels::U8(p) => Working::U8(ImageU8 { width, height, channels: channels_in, pixels: p.to_vec() }),
            Pixels::F32(p) => Working::F32(ImageF32 { width, height, channels: channels_in, pixels: p.to_vec() }),
        };
        self.run(working, channels_in, out);
    }

    /// Converts one image loaded from a file into `out`, as torchvision's `ImageFolder` loader would see it:
    /// converted to RGB. A gray image (one channel) stands for its RGB copy.
    pub fn apply_loaded(&self, image: ImageU8, out: &mut Vec<f32>) {
        self.run(Working::U8(image), 3, out);
    }

    /// Runs the steps; `channels` is how many channels the image has for the pipeline (3 for a gray file loaded
    /// as RGB, while one is stored).
    fn run(&self, mut working: Working, mut channels: usize, out: &mut Vec<f32>) {
        // Tensor values in height x width x channels order once made.
        let mut tensor: Vec<f32> = Vec::new();
        for step in self.steps() {
            match step {
                Step::Resize { size, interpolation, max_size } => {
                    let (h, w) = working.size();
                    let (new_h, new_w) = resized(h, w, size, max_size);
                    working = match working {
                        Working::U8(i) => Working::U8(pil::resize_u8(&i, new_w, new_h, interpolation)),
                        Working::F32(i) => Working::F32(pil::resize_f32(&i, new_w, new_h, interpolation)),
                    };
                }
                Step::CenterCrop(size) => {
                    let (crop_h, crop_w) = crop_size(size);
                    working = match working {
                        Working::U8(i) => Working::U8(ImageU8 {
                            pixels: pil::center_crop(&i.pixels, i.width, i.height, i.channels, crop_w, crop_h),
                            width: crop_w,
                            height: crop_h,
                            channels: i.channels,
                        }),
                        Working::F32(i) => Working::F32(ImageF32 {
                            pixels: pil::center_crop(&i.pixels, i.width, i.height, i.channels, crop_w, crop_h),
                            width: crop_w,
                            height: crop_h,
                            channels: i.channels,
                        }),
                    };
                }
                Step::Grayscale(to) => {
                    working = match working {
                        Working::U8(i) => Working::U8(pil::to_gray_u8(&i)),
                        Working::F32(i) => Working::F32(pil::to_gray_f32(&i)),
                    };
                    channels = to;
                }
                Step::Rgb => channels = 3,
                Step::ToTensor { v1_scale } => {
                    tensor = match &working {
                        Working::U8(i) => expand(&i.pixels, i.channels, channels, |v| {
                            let v = f32::from(v);
                            v1_scale.map_or(v / 255.0, |scale| v * scale)
                        }),
                        Working::F32(i) => expand(&i.pixels, i.channels, channels, |v| v1_scale.map_or(v, |s| v * s)),
                    };
                }
                Step::Normalize { mean, std } => {
                    for (index, value) in tensor.iter_mut().enumerate() {
                        let c = index % channels;
                        *value = (*value - per_channel(&mean, c, 0.0)) / per_channel(&std, c, 1.0);
                    }
                }
            }
        }
        let (h, w) = working.size();
        out.clear();
        match self.layout {
            Layout::Nhwc => out.extend_from_slice(&tensor),
            Layout::Nchw => {
                out.resize(tensor.len(), 0.0);
                let plane = h * w;
                for (index, value) in tensor.into_iter().enumerate() {
                    out[(index % channels) * plane + index / channels] = value;
                }
            }
        }
    }
}

/// Pixels of `stored` channels as `channels` float values each (a stored gray value fills every channel).
fn expand<T: Copy>(pixels: &[T], stored: usize, channels: usize, convert: impl Fn(T) -> f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(pixels.len() / stored * channels);
    for pixel in pixels.chunks_exact(stored) {
        for c in 0..channels {
            out.push(convert(pixel[c.min(stored - 1)]));
        }
    }
    out
}

fn per_channel(values: &[f32], channel: usize, default: f32) -> f32 {
    match values {
        [] => default,
        [one] => *one,
        many => many[channel.min(many.len() - 1)],
    }
}

/// Height and width after a resize of an image of `height` x `width`.
fn resized(height: usize, width: usize, size: Size, max_size: Option<u32>) -> (usize, usize) {
    match size {
        Size::Side(side) => pil::shorter_side_size(height, width, side as usize, max_size.map(|m| m as usize)),
        Size::HeightWidth([h, w]) => (h as usize, w as usize),
    }
}

fn crop_size(size: Size) -> (usize, usize) {
    match size {
        Size::Side(side) => (side as usize, side as usize),
        Size::HeightWidth([h, w]) => (h as usize, w as usize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_and_lays_out_nchw() {
        let spec = Preprocess { mean: vec![0.5], std: vec![0.5], channels: 1, ..Preprocess::default() };
        let mut out = Vec::new();
        spec.apply(Pixels::U8(&[0, 255, 51, 204]), 2, 2, 1, &mut out);
        let expected = [-1.0, 1.0, -0.6, 0.6];
        for (a, b) in out.iter().zip(expected) {
            assert!((a - b).abs() < 1e-5, "{out:?}");
        }
    }

    #[test]
    fn gray_to_rgb_nhwc_and_center_crop() {
        let spec = Preprocess {
            channels: 3,
            layout: Layout::Nhwc,
            scale: 1.0,
            center_crop: Some([1, 1]),
            ..Preprocess::default()
        };
        let mut out = Vec::new();
        // 3x3 gray image, center pixel 7.
        spec.apply(Pixels::U8(&[0, 0, 0, 0, 7, 0, 0, 0, 0]), 3, 3, 1, &mut out);
        assert_eq!(out, vec![7.0, 7.0, 7.0]);
        assert_eq!(spec.input_shape(3, 3, 1), [1, 1, 1, 3]);
    }

    #[test]
    fn version_1_gray_uses_pillow_rounding_and_resize_rounds_to_uint8() {
        // RGB (1, 0, 0): the float formula gave 0.299, Pillow's "L" gives 0.
        let spec = Preprocess { scale: 1.0, ..Preprocess::default() };
        let mut out = Vec::new();
        spec.apply(Pixels::U8(&[1, 0, 0, 2, 1, 0]), 1, 2, 3, &mut out);
        assert_eq!(out, vec![0.0, 1.0]);
        // Shrinking [0, 255, 0, 255] by 2 with antialiasing averages pixel pairs to uint8, not to 127.5.
        let spec = Preprocess { scale: 1.0, resize: Some([1, 2]), ..Preprocess::default() };
        spec.apply(Pixels::U8(&[0, 255, 0, 255]), 1, 4, 1, &mut out);
        assert!(out.iter().all(|&v| v == v.round()), "{out:?}");
    }

    #[test]
    fn resize_keeps_a_constant_image_constant() {
        let spec = Preprocess { resize: Some([5, 7]), scale: 1.0, ..Preprocess::default() };
        let mut out = Vec::new();
        spec.apply(Pixels::U8(&[9; 12]), 3, 4, 1, &mut out);
        assert_eq!(out.len(), 35);
        assert!(out.iter().all(|&v| (v - 9.0).abs() < 1e-5));
    }

    fn pipeline(text: &str) -> Result<Preprocess, String> {
        #[derive(Deserialize)]
        struct Spec {
            preprocess: Preprocess,
        }
        let spec: Spec = toml::from_str(text).map_err(|e| e.to_string())?;
        spec.preprocess.validate()?;
        Ok(spec.preprocess)
    }

    #[test]
    fn pipelines_parse_round_trip_and_give_their_shapes() {
        let spec = pipeline(
            r#"[preprocess]
            transforms = [{ resize = 32, interpolation = "bicubic" }, { center_crop = [28, 30] }, "grayscale",
                          "to_tensor", { normalize = { mean = [0.5], std = [0.25] } }]"#,
        )
        .expect("valid");
        assert_eq!(spec.transforms.len(), 5);
        let one = pipeline("[preprocess]\ntransforms = [{ resize = [32] }, \"to_tensor\"]").expect("valid");
        assert_eq!(
            one.transforms[0],
            Transform::Resize { size: Size::Side(32), interpolation: Interpolation::Bilinear, max_size: None }
        );
        assert!(
            pipeline("[preprocess]\ntransforms = [{ center_crop = [1, 2, 3] }, \"to_tensor\"]")
                .expect_err("3")
                .contains("not 3 values")
        );
        // A 40x80 RGB file: shorter side 40 -> 32, longer 64; crop 28x30; gray.
        assert_eq!(spec.input_shape(40, 80, 3), [1, 1, 28, 30]);
        let json = serde_json::to_string(&spec).expect("json");
        assert_eq!(serde_json::from_str::<Preprocess>(&json).expect("back"), spec);
        // Without grayscale an image file gives 3 channels; an "L" array keeps one.
        let rgb = pipeline("[preprocess]\ntransforms = [{ resize = [4, 6] }, \"to_tensor\"]").expect("valid");
        assert_eq!(rgb.input_shape(9, 9, 3), [1, 3, 4, 6]);
        assert_eq!(rgb.input_shape(9, 9, 1), [1, 1, 4, 6]);
        let mut out = Vec::new();
        rgb.apply_loaded(ImageU8 { width: 2, height: 1, channels: 1, pixels: vec![51, 255] }, &mut out);
        assert_eq!(out.len(), 3 * 24, "a gray file becomes three equal channels");
        assert!(out[..24] == out[24..48] && out[24..48] == out[48..]);
    }

    #[test]
    fn bad_pipelines_say_what_to_fix() {
        let cases = [
            ("[\"to_tensor\", { resize = 4 }]", "before \"to_tensor\""),
            ("[{ normalize = { mean = [0.5], std = [0.5] } }, \"to_tensor\"]", "put \"to_tensor\" before it"),
            ("[{ resize = 4 }]", "need a \"to_tensor\""),
            ("[{ resize = 4, center_crop = 2 }, \"to_tensor\"]", "exactly one"),
            ("[{ center_crop = 2, max_size = 3 }, \"to_tensor\"]", "belong in a resize table"),
            ("[{ resize = [4, 5], max_size = 9 }, \"to_tensor\"]", "one-int resize"),
            ("[\"resize\", \"to_tensor\"]", "unknown transform \"resize\""),
            ("[{ resize = 4, max_size = 3 }, \"to_tensor\"]", "max_size = 3"),
            ("[{ resize = 4, interpolation = \"cubic\" }, \"to_tensor\"]", "unknown variant"),
            ("[{ grayscale = 2 }, \"to_tensor\"]", "1 or 3"),
        ];
        for (transforms, message) in cases {
            let error = pipeline(&format!("[preprocess]\ntransforms = {transforms}")).expect_err(transforms);
            assert!(error.contains(message), "{transforms}: {error}");
        }
        let spec = pipeline("[preprocess]\ntransforms = [\"to_tensor\", { normalize = { mean = [1, 2], std = [1] } }]")
            .expect("parses");
        assert!(spec.validate_for(3).expect_err("2 means for 3 channels").contains("2 values"));
    }
}
