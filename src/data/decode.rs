//! Image files decoded to the pixels Pillow gives for `Image.open(path).convert("RGB")`, the loader of
//! torchvision's `ImageFolder`.
//!
//! JPEG goes through libjpeg-turbo's decoder (the `mozjpeg` crate, built from source without SIMD), the
//! library Pillow's wheels bundle, with Pillow's settings (accurate integer IDCT, fancy upsampling). Measured on
//! the fixtures in `tests/fixtures/pil` plus four larger 4:2:0 / 4:4:4 / progressive JPEGs and ten of the
//! Fashion-MNIST JPEGs (README there): libjpeg-turbo through `mozjpeg` equals Pillow 13.0 byte for byte; the
//! `image` crate's `zune-jpeg` differs by up to 4 levels (18 % of the values of a 640x480 4:2:0 image) and
//! `jpeg-decoder` by up to 4 (6 %), because they implement the IDCT and chroma upsampling their own way.
//! PNG goes through the `image` crate (lossless; the pixel conversions below follow Pillow). Like Pillow's
//! `open`, nothing here applies EXIF orientation or colour profiles.

use std::path::Path;

use super::pil::ImageU8;
use super::{DataError, invalid};

/// Decodes an image file. Gray files stay one channel (their RGB conversion copies the value to R, G and B,
/// which the preprocessing does when it makes the tensor).
pub fn decode_image(path: &Path) -> Result<ImageU8, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    if bytes.starts_with(&[0xff, 0xd8, 0xff]) { decode_jpeg(path, &bytes) } else { decode_other(path, &bytes) }
}

/// Width and height of an image file without decoding its pixels.
pub(crate) fn image_dimensions(path: &Path) -> Result<(u32, u32), DataError> {
    image::image_dimensions(path).map_err(|e| unreadable(path, e))
}

fn unreadable(path: &Path, error: impl std::fmt::Display) -> DataError {
    invalid(path, format!("unreadable image: {error}; re-save it as PNG or JPEG, or remove it"))
}

/// libjpeg reports a corrupt file by unwinding out of its error handler (the `mozjpeg` crate's design), so the
/// whole decode runs under `catch_unwind` and such a panic becomes an error naming the file. (This needs
/// `panic = "unwind"`, Rust's default; edgescope never sets `abort`.)
fn decode_jpeg(path: &Path, bytes: &[u8]) -> Result<ImageU8, DataError> {
    if !ends_with_end_of_image(bytes) {
        return Err(invalid(
            path,
            "the JPEG data is truncated (no end-of-image marker after the last scan); Pillow refuses it too \
             (\"image file is truncated\"); download or re-save the file, or remove it",
        ));
    }
    std::panic::catch_unwind(|| decode_jpeg_unguarded(path, bytes)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "libjpeg failed".into());
        Err(unreadable(path, message))
    })
}

/// Pillow refuses a JPEG whose data stops before the end-of-image marker, where libjpeg would pad the image
/// with gray and only warn. Entropy-coded data cannot hold the marker (0xFF is stuffed), so it must follow the
/// last start-of-scan marker; bytes after it (trailing junk) are accepted, as Pillow accepts them.
fn ends_with_end_of_image(bytes: &[u8]) -> bool {
    const START_OF_SCAN: [u8; 2] = [0xff, 0xda];
    const END_OF_IMAGE: [u8; 2] = [0xff, 0xd9];
    let last_scan = bytes.windows(2).rposition(|w| w == START_OF_SCAN).unwrap_or(0);
    bytes[last_scan..].windows(2).any(|w| w == END_OF_IMAGE)
}

fn decode_jpeg_unguarded(path: &Path, bytes: &[u8]) -> Result<ImageU8, DataError> {
    use mozjpeg::{ColorSpace, Decompress};
    let decompress = Decompress::new_mem(bytes).map_err(|e| unreadable(path, e))?;
    let (width, height) = (decompress.width(), decompress.height());
    let image = |channels, pixels: Vec<u8>| {
        if pixels.len() == width * height * channels {
            Ok(ImageU8 { width, height, channels, pixels })
        } else {
            Err(unreadable(path, "the JPEG data ends early"))
        }
    };
    match decompress.color_space() {
        ColorSpace::JCS_GRAYSCALE => {
            let mut started = decompress.grayscale().map_err(|e| unreadable(path, e))?;
            let pixels = started.read_scanlines::<u8>().map_err(|e| unreadable(path, e))?;
            started.finish().map_err(|e| unreadable(path, e))?;
            image(1, pixels)
        }
        ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK => {
            let mut started = decompress.to_colorspace(ColorSpace::JCS_CMYK).map_err(|e| unreadable(path, e))?;
            let cmyk = started.read_scanlines::<u8>().map_err(|e| unreadable(path, e))?;
            started.finish().map_err(|e| unreadable(path, e))?;
            image(3, cmyk.chunks_exact(4).flat_map(adobe_cmyk_to_rgb).collect())
        }
        _ => {
            let mut started = decompress.rgb().map_err(|e| unreadable(path, e))?;
            let pixels = started.read_scanlines::<u8>().map_err(|e| unreadable(path, e))?;
            started.finish().map_err(|e| unreadable(path, e))?;
            image(3, pixels)
        }
    }
}

/// Pillow's CMYK JPEG handling: Adobe's inverted polarity (raw mode "CMYK;I"), then `cmyk2rgb` of
/// `Convert.c` (`nk - c * nk / 255` with its integer rounding).
fn adobe_cmyk_to_rgb(inverted: &[u8]) -> [u8; 3] {
    let muldiv255 = |a: i32, b: i32| {
        let t = a * b + 128;
        ((t >> 8) + t) >> 8
    };
    let [c, m, y, k] = [0, 1, 2, 3].map(|i| 255 - i32::from(inverted[i]));
    let nk = 255 - k;
    [c, m, y].map(|v| (nk - muldiv255(v, nk)).clamp(0, 255) as u8)
}

/// PNG (and the other formats the `image` crate reads) with Pillow's conversions to RGB: alpha dropped,
/// 16-bit gray clipped to 255 (Pillow's "I;16" -> "RGB"), other 16-bit data reduced to its high byte (Pillow
/// reads 16-bit RGB(A) and gray+alpha PNGs as 8-bit that way).
fn decode_other(path: &Path, bytes: &[u8]) -> Result<ImageU8, DataError> {
    use image::DynamicImage;
    let decoded = image::load_from_memory(bytes).map_err(|e| unreadable(path, e))?;
    let (width, height) = (decoded.width() as usize, decoded.height() as usize);
    let (channels, pixels) = match decoded {
        DynamicImage::ImageLuma8(i) => (1, i.into_raw()),
        DynamicImage::ImageLumaA8(i) => (1, i.into_raw().chunks_exact(2).map(|p| p[0]).collect()),
        DynamicImage::ImageRgb8(i) => (3, i.into_raw()),
        DynamicImage::ImageRgba8(i) => (3, i.into_raw().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect()),
        DynamicImage::ImageLuma16(i) => (1, i.into_raw().into_iter().map(|v| v.min(255) as u8).collect()),
        DynamicImage::ImageLumaA16(i) => (1, i.into_raw().chunks_exact(2).map(|p| (p[0] >> 8) as u8).collect()),
        DynamicImage::ImageRgb16(i) => (3, i.into_raw().into_iter().map(|v| (v >> 8) as u8).collect()),
        DynamicImage::ImageRgba16(i) => {
            (3, i.into_raw().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]].map(|v| (v >> 8) as u8)).collect())
        }
        other => (3, other.into_rgb8().into_raw()),
    };
    Ok(ImageU8 { width, height, channels, pixels })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmyk_follows_pillow() {
        // Inverted (Adobe) zeros are full ink: black. 255s are no ink: white.
        assert_eq!(adobe_cmyk_to_rgb(&[0, 0, 0, 0]), [0, 0, 0]);
        assert_eq!(adobe_cmyk_to_rgb(&[255, 255, 255, 255]), [255, 255, 255]);
        // c = 255 - 155 = 100, k = 255 - 205 = 50: nk = 205, 205 - 100 * 205 / 255 = 205 - 80 = 125.
        assert_eq!(adobe_cmyk_to_rgb(&[155, 255, 255, 205])[0], 125);
    }
}
