//! Preprocessing: turns decoded pixels into the float tensor a model expects (resize, center crop, channel
//! conversion, scale / mean / std, NCHW or NHWC).

use serde::{Deserialize, Serialize};

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

/// How pixels become model input: `x = (pixel * scale - mean[c]) / std[c]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    /// Factor applied to raw pixel values first (1/255 maps 8-bit pixels to [0, 1]).
    #[serde(default = "default_scale")]
    pub scale: f32,
    /// Mean subtracted per channel (one value applies to every channel).
    #[serde(default)]
    pub mean: Vec<f32>,
    /// Standard deviation divided per channel (one value applies to every channel).
    #[serde(default)]
    pub std: Vec<f32>,
    /// Tensor layout.
    #[serde(default)]
    pub layout: Layout,
    /// Channels the model expects: 1 (gray) or 3 (RGB). Images are converted as needed.
    #[serde(default = "default_channels")]
    pub channels: usize,
    /// Resize to `[height, width]` before cropping (bilinear), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<[u32; 2]>,
    /// Center crop to `[height, width]`, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub center_crop: Option<[u32; 2]>,
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

impl Preprocess {
    /// Checks the spec; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
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

    /// One line for people: `scale 0.00392, mean [0.286], std [0.353], NCHW, 1 channel, resize 32x32`.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("scale {}", self.scale)];
        if !self.mean.is_empty() {
            parts.push(format!("mean {:?}", self.mean));
        }
        if !self.std.is_empty() {
            parts.push(format!("std {:?}", self.std));
        }
        parts.push(format!("{:?}", self.layout).to_uppercase());
        parts.push(format!("{} channel{}", self.channels, if self.channels == 1 { "" } else { "s" }));
        if let Some([h, w]) = self.resize {
            parts.push(format!("resize {h}x{w}"));
        }
        if let Some([h, w]) = self.center_crop {
            parts.push(format!("center crop {h}x{w}"));
        }
        parts.join(", ")
    }

    /// Output height and width for an image of `height` x `width`.
    pub fn output_size(&self, height: u32, width: u32) -> (u32, u32) {
        let (h, w) = self.resize.map_or((height, width), |[h, w]| (h, w));
        self.center_crop.map_or((h, w), |[ch, cw]| (ch.min(h), cw.min(w)))
    }

    /// The batch-1 input shape for images of `height` x `width`.
    pub fn input_shape(&self, height: u32, width: u32) -> [usize; 4] {
        let (h, w) = self.output_size(height, width);
        let (h, w) = (h as usize, w as usize);
        match self.layout {
            Layout::Nchw => [1, self.channels, h, w],
            Layout::Nhwc => [1, h, w, self.channels],
        }
    }

    fn per_channel(values: &[f32], channel: usize, default: f32) -> f32 {
        match values {
            [] => default,
            [one] => *one,
            many => many[channel],
        }
    }

    /// Converts one decoded image (`height` x `width` x `channels_in`, row-major) into `out`.
    pub fn apply(&self, pixels: Pixels<'_>, height: u32, width: u32, channels_in: usize, out: &mut Vec<f32>) {
        let resized;
        let (mut data, mut h, mut w): (std::borrow::Cow<'_, [f32]>, u32, u32) = match pixels {
            Pixels::U8(p) => (p.iter().map(|&v| f32::from(v)).collect::<Vec<_>>().into(), height, width),
            Pixels::F32(p) => (p.into(), height, width),
        };
        let data_channels = channels_in;
        if let Some([rh, rw]) = self.resize.filter(|&[rh, rw]| rh != h || rw != w) {
            resized = resize_bilinear(&data, h, w, data_channels, rh, rw);
            data = resized.into();
            h = rh;
            w = rw;
        }
        let (out_h, out_w) = self.output_size(h, w);
        let top = (h - out_h) / 2;
        let left = (w - out_w) / 2;

        out.clear();
        out.resize(self.channels * out_h as usize * out_w as usize, 0.0);
        let plane = out_h as usize * out_w as usize;
        for c in 0..self.channels {
            let mean = Self::per_channel(&self.mean, c, 0.0);
            let std = Self::per_channel(&self.std, c, 1.0);
            for y in 0..out_h as usize {
                for x in 0..out_w as usize {
                    let source = ((top as usize + y) * w as usize + left as usize + x) * data_channels;
                    let value = match (data_channels, self.channels) {
                        (1, _) => data[source],
                        // Gray stored as RGB converts back exactly; true colour uses the ITU-R BT.601 luma weights.
                        (_, 1) if data[source] == data[source + 1] && data[source] == data[source + 2] => data[source],
                        (_, 1) => 0.299 * data[source] + 0.587 * data[source + 1] + 0.114 * data[source + 2],
                        (_, _) => data[source + c.min(data_channels - 1)],
                    };
                    let normalized = (value * self.scale - mean) / std;
                    let index = match self.layout {
                        Layout::Nchw => c * plane + y * out_w as usize + x,
                        Layout::Nhwc => (y * out_w as usize + x) * self.channels + c,
                    };
                    out[index] = normalized;
                }
            }
        }
    }
}

/// Bilinear resize with half-pixel centers (as PIL / OpenCV `INTER_LINEAR` without antialiasing).
fn resize_bilinear(data: &[f32], h: u32, w: u32, channels: usize, out_h: u32, out_w: u32) -> Vec<f32> {
    let mut out = vec![0.0; out_h as usize * out_w as usize * channels];
    let scale_y = h as f32 / out_h as f32;
    let scale_x = w as f32 / out_w as f32;
    for y in 0..out_h as usize {
        let sy = ((y as f32 + 0.5) * scale_y - 0.5).clamp(0.0, (h - 1) as f32);
        let y0 = sy.floor() as usize;
        let y1 = (y0 + 1).min(h as usize - 1);
        let fy = sy - y0 as f32;
        for x in 0..out_w as usize {
            let sx = ((x as f32 + 0.5) * scale_x - 0.5).clamp(0.0, (w - 1) as f32);
            let x0 = sx.floor() as usize;
            let x1 = (x0 + 1).min(w as usize - 1);
            let fx = sx - x0 as f32;
            for c in 0..channels {
                let at = |yy: usize, xx: usize| data[(yy * w as usize + xx) * channels + c];
                let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
                let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
                out[(y * out_w as usize + x) * channels + c] = top * (1.0 - fy) + bottom * fy;
            }
        }
    }
    out
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
        assert_eq!(spec.input_shape(3, 3), [1, 1, 1, 3]);
    }

    #[test]
    fn resize_keeps_a_constant_image_constant() {
        let spec = Preprocess { resize: Some([5, 7]), scale: 1.0, ..Preprocess::default() };
        let mut out = Vec::new();
        spec.apply(Pixels::U8(&[9; 12]), 3, 4, 1, &mut out);
        assert_eq!(out.len(), 35);
        assert!(out.iter().all(|&v| (v - 9.0).abs() < 1e-5));
    }
}
