//! Image folders give the tensors torchvision gives on PIL images: edgescope's pipeline against reference
//! tensors that Pillow 13.0 made (tests/fixtures/pil, script beside them), for PNG and JPEG files.

mod common;

use std::path::{Path, PathBuf};

use common::fixture;
use edgescope::data::Dataset;

/// The pipelines `make_pil_fixtures.py` wrote, one spec (version 2) and one reference array each.
const PIPELINES: [&str; 8] = [
    "rgb_bilinear",
    "gray_bilinear",
    "gray_first_bicubic",
    "rgb_bicubic",
    "rgb_nearest",
    "rgb_lanczos_max_size",
    "rgb_box_hamming",
    "pad_crop",
];

/// Fixture images in sample order (one class folder each): the first four are PNG, the rest JPEG.
const IMAGES: [&str; 8] = [
    "0_rgb_odd/rgb_odd_37x23.png",
    "1_gray_odd/gray_odd_29x41.png",
    "2_rgb_small/rgb_small_13x11.png",
    "3_rgb_shrink/rgb_shrink_71x53.png",
    "4_jpeg_444/jpeg_444_45x33.jpg",
    "5_jpeg_420/jpeg_420_47x35.jpg",
    "6_jpeg_gray/jpeg_gray_31x39.jpg",
    "7_jpeg_cmyk/jpeg_cmyk_27x19.jpg",
];

fn pil(name: &str) -> PathBuf {
    fixture("pil").join(name)
}

fn read_npy<T: npyz::Deserialize>(path: &Path) -> (Vec<u64>, Vec<T>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).expect("npy header");
    let shape = npy.shape().to_vec();
    (shape, npy.into_vec().expect("npy data"))
}

#[test]
fn tensors_equal_torchvision_on_pil_for_png_and_jpeg() {
    for pipeline in PIPELINES {
        let dataset = Dataset::open(&pil(&format!("{pipeline}.toml"))).expect(pipeline);
        let (shape, reference) = read_npy::<f32>(&pil(&format!("{pipeline}.npy")));
        assert_eq!(shape[0] as usize, IMAGES.len(), "{pipeline}");
        assert_eq!(dataset.len(), IMAGES.len(), "{pipeline}");
        assert_eq!(dataset.labels, (0..IMAGES.len() as u32).collect::<Vec<_>>(), "sample order = image order");
        let expected_shape: Vec<usize> = std::iter::once(1).chain(shape[1..].iter().map(|&d| d as usize)).collect();
        assert_eq!(dataset.input_shape().to_vec(), expected_shape, "{pipeline}");
        let size = reference.len() / IMAGES.len();
        let mut tensor = Vec::new();
        let (mut png_max, mut jpeg_max) = (0.0f32, 0.0f32);
        for (sample, image) in IMAGES.iter().enumerate() {
            dataset.load_input(sample, &mut tensor).expect(image);
            let want = &reference[sample * size..(sample + 1) * size];
            assert_eq!(tensor.len(), want.len(), "{pipeline} {image}");
            let max_diff = tensor.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            // PNG: bit for bit up to float32 (<= 1e-6). JPEG: libjpeg-turbo decodes as Pillow does (measured
            // equal, see src/data/decode.rs), so the same bound holds.
            assert!(max_diff <= 1e-6, "{pipeline} {image}: max |diff| {max_diff}");
            let worst = if image.ends_with(".png") { &mut png_max } else { &mut jpeg_max };
            *worst = worst.max(max_diff);
        }
        println!("{pipeline}: max |diff| PNG {png_max:e}, JPEG {jpeg_max:e}");
    }
}

#[test]
fn uint8_arrays_take_the_same_pillow_path_in_both_spec_versions() {
    // NPY uint8 images as `Image.fromarray(array, mode="L")`: version 1 (resize, scale, mean, std) and
    // version 2 (bicubic resize, crop, to_tensor, normalize); the first 8 Fashion-MNIST test images.
    for (spec, shape) in [("npy_v1_resize", [1, 1, 32, 30]), ("npy_v2_bicubic", [1, 1, 32, 32])] {
        let dataset = Dataset::open(&pil(&format!("{spec}.toml"))).expect(spec);
        assert_eq!(dataset.input_shape(), shape, "{spec}");
        let (npy_shape, reference) = read_npy::<f32>(&pil(&format!("{spec}.npy")));
        let size = reference.len() / npy_shape[0] as usize;
        let mut tensor = Vec::new();
        for sample in 0..npy_shape[0] as usize {
            dataset.load_input(sample, &mut tensor).expect("sample");
            let want = &reference[sample * size..(sample + 1) * size];
            let max_diff = tensor.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(tensor.len() == want.len() && max_diff <= 1e-6, "{spec} sample {sample}: max |diff| {max_diff}");
        }
    }
}

#[test]
fn jpeg_pixels_equal_pillow_and_the_alternatives_are_measured() {
    for image in IMAGES.iter().filter(|i| i.ends_with(".jpg")) {
        let path = pil("images").join(image);
        let name = image.split('/').next().and_then(|n| n.split_once('_')).map(|(_, n)| n).expect("name");
        let (shape, want) = read_npy::<u8>(&pil(&format!("decoded/{name}.npy")));
        let decoded = edgescope::data::decode::decode_image(&path).expect("decodes");
        assert_eq!([decoded.height, decoded.width, decoded.channels].map(|d| d as u64).to_vec(), shape, "{image}");
        let differing = decoded.pixels.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 0, "{image}: libjpeg-turbo should decode as Pillow does");

        // For the record: the image crate's zune-jpeg on the same file (printed with --nocapture).
        if let Ok(other) = image::open(&path) {
            let other =
                if decoded.channels == 1 { other.into_luma8().into_raw() } else { other.into_rgb8().into_raw() };
            if other.len() == want.len() {
                let diffs: Vec<u8> = other.iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).collect();
                let max = diffs.iter().copied().max().unwrap_or(0);
                let count = diffs.iter().filter(|&&d| d > 0).count();
                println!("{image}: zune-jpeg max |diff| {max}, {count} of {} values differ", want.len());
            }
        }
    }
}

#[test]
fn spec_versions_load_and_newer_or_mixed_specs_are_refused() {
    // Version 1 (fixed fields) still loads, with its documented order; version 2 is the pipeline form.
    let v1 = Dataset::open(&fixture("folder/dataset.toml")).expect("version 1 spec");
    assert_eq!(v1.input_shape(), [1, 1, 28, 28]);
    let v2 = Dataset::open(&pil("rgb_bilinear.toml")).expect("version 2 spec");
    assert_eq!(v2.input_shape(), [1, 3, 20, 20]);

    let dir = tempfile::tempdir().expect("temp dir");
    let root = pil("images");
    let write = |name: &str, version: u32, preprocess: &str| {
        let path = dir.path().join(name);
        let text = format!(
            "format = \"edgescope-dataset\"\nversion = {version}\nname = \"x\"\nkind = \"folder\"\nroot = {root:?}\n[preprocess]\n{preprocess}\n"
        );
        std::fs::write(&path, text).expect("write");
        path
    };
    let newer = write("newer.toml", 4, "");
    let error = Dataset::open(&newer).expect_err("version 4").to_string();
    assert!(
        error.contains("newer.toml") && error.contains("version 4") && error.contains("update edgescope"),
        "{error}"
    );

    let v1_with_transforms = write("v1.toml", 1, "transforms = [\"to_tensor\"]");
    let error = Dataset::open(&v1_with_transforms).expect_err("transforms in v1").to_string();
    assert!(error.contains("v1.toml") && error.contains("version = 2"), "{error}");

    let mixed = write("mixed.toml", 2, "mean = [0.5]\ntransforms = [\"to_tensor\"]");
    let error = Dataset::open(&mixed).expect_err("mixed").to_string();
    assert!(error.contains("mixed.toml") && error.contains("mean") && error.contains("normalize step"), "{error}");

    let wrong_means = write(
        "means.toml",
        2,
        "transforms = [\"grayscale\", \"to_tensor\", { normalize = { mean = [0.1, 0.2, 0.3], std = [1] } }]",
    );
    let error = Dataset::open(&wrong_means).expect_err("3 means, 1 channel").to_string();
    assert!(error.contains("means.toml") && error.contains("1 channels"), "{error}");

    // Images of different sizes need a final fixed size.
    let ragged = write("ragged.toml", 2, "transforms = [{ resize = 16 }, \"to_tensor\"]");
    let dataset = Dataset::open(&ragged).expect("opens");
    let mut tensor = Vec::new();
    let error = (0..dataset.len())
        .find_map(|i| dataset.load_input(i, &mut tensor).err())
        .expect("a differently shaped image")
        .to_string();
    assert!(error.contains("different shapes") && error.contains("center_crop"), "{error}");
}

#[test]
fn sixteen_bit_gray_png_is_clipped_as_pillow_converts_it() {
    // Pillow opens a 16-bit gray PNG as "I;16"; convert("RGB") clips at 255 instead of scaling.
    let decoded = edgescope::data::decode::decode_image(&pil("gray16.png")).expect("decodes");
    let (shape, want) = read_npy::<u8>(&pil("decoded/gray16.npy"));
    assert_eq!(shape, [decoded.height as u64, decoded.width as u64, 3]);
    assert_eq!(decoded.channels, 1, "gray stays one stored channel");
    let red: Vec<u8> = want.chunks_exact(3).map(|p| p[0]).collect();
    assert_eq!(decoded.pixels, red);
    assert!(red.contains(&255) && red.iter().any(|&v| v > 0 && v < 255), "the fixture has both kinds");
}

#[test]
fn truncated_jpegs_are_refused_as_pillow_refuses_them() {
    let original = pil("images/5_jpeg_420/jpeg_420_47x35.jpg");
    let bytes = std::fs::read(&original).expect("fixture");
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, data: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, data).expect("write");
        path
    };
    // Pillow 13.0: "image file is truncated" for both; trailing bytes after the end marker load.
    for (name, data) in [("half.jpg", &bytes[..bytes.len() / 2]), ("no_end.jpg", &bytes[..bytes.len() - 2])] {
        let path = write(name, data);
        let error = edgescope::data::decode::decode_image(&path).expect_err(name).to_string();
        assert!(error.contains(name) && error.contains("truncated"), "{error}");
    }
    let mut junk = bytes.clone();
    junk.extend_from_slice(b"trailing junk");
    let with_junk = edgescope::data::decode::decode_image(&write("junk.jpg", &junk)).expect("trailing junk loads");
    assert_eq!(with_junk, edgescope::data::decode::decode_image(&original).expect("original"));
    // Garbage after a JPEG signature is an error naming the file, not a crash.
    let garbage = write("garbage.jpg", b"\xff\xd8\xff\xe0 not really a jpeg \xff\xda\xff\xd9");
    let error = edgescope::data::decode::decode_image(&garbage).expect_err("garbage").to_string();
    assert!(error.contains("garbage.jpg") && error.contains("unreadable image"), "{error}");
}
