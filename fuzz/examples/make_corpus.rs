//! Writes the seed corpus of every fuzz target into `fuzz/corpus/<target>/` (a few KB in all):
//! small valid inputs of each kind, so that the fuzzer starts from the formats' real structure
//! instead of having to discover a PNG header or a safetensors JSON by chance.
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example make_corpus

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageFormat, RgbImage};
use irtdb_index::{HnswIndex, HnswParams};
use irtdb_onnx::testing::{random_vit, save_safetensors_as, StoreDtype};
use irtdb_onnx::VitConfig;

fn out(target: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn encode(img: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut c = Cursor::new(Vec::new());
    img.write_to(&mut c, format).unwrap();
    c.into_inner()
}

fn images() {
    let dir = out("decode_image");
    let rgb = DynamicImage::from(RgbImage::from_fn(12, 9, |x, y| {
        image::Rgb([(x * 20) as u8, (y * 28) as u8, ((x ^ y) * 16) as u8])
    }));
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("rgb.jpg", encode(rgb.clone(), ImageFormat::Jpeg)),
        ("rgb.png", encode(rgb.clone(), ImageFormat::Png)),
        ("gray16.png", encode(DynamicImage::ImageLuma16(rgb.to_luma16()), ImageFormat::Png)),
        ("rgba.png", encode(DynamicImage::ImageRgba8(rgb.to_rgba8()), ImageFormat::Png)),
        ("rgb.gif", encode(rgb.clone(), ImageFormat::Gif)),
        ("rgb.bmp", encode(rgb.clone(), ImageFormat::Bmp)),
        ("rgb.tiff", encode(rgb.clone(), ImageFormat::Tiff)),
        ("rgb.webp", encode(rgb.clone(), ImageFormat::WebP)),
    ];
    for (i, (name, bytes)) in seeds.into_iter().enumerate() {
        // Two leading bytes choose the preprocessing.
        let mut input = vec![(i * 37) as u8, (i * 91) as u8];
        input.extend_from_slice(&bytes);
        std::fs::write(dir.join(name), input).unwrap();
    }
}

fn vits() {
    let dir = out("vit_safetensors");
    let tiny = VitConfig {
        architecture: "vit".into(),
        dim: 8,
        depth: 1,
        heads: 2,
        mlp_hidden: 16,
        patch: 4,
        img_size: [8, 8],
        prefix_tokens: 1,
        qkv_bias: true,
        layer_scale: false,
        ln_eps: 1e-6,
        reg_tokens: 0,
        no_embed_class: false,
        fc_norm: false,
    };
    let variants = [
        ("tiny_f32.safetensors", tiny.clone(), StoreDtype::F32),
        ("tiny_f16.safetensors", tiny.clone(), StoreDtype::F16),
        (
            "distilled_bf16.safetensors",
            VitConfig { prefix_tokens: 2, ..tiny.clone() },
            StoreDtype::Bf16,
        ),
        ("layer_scale_f16.safetensors", VitConfig { layer_scale: true, ..tiny }, StoreDtype::F16),
    ];
    for (name, cfg, dtype) in variants {
        save_safetensors_as(&dir.join(name), &random_vit(&cfg, 1), dtype).unwrap();
    }
}

fn hnsw() {
    let dir = out("hnsw_load");
    let tmp = tempfile::tempdir().unwrap();
    let (n, dim) = (6usize, 4usize);
    let data: Vec<f32> = (0..n * dim).map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0).collect();
    let ids: Vec<i64> = (1..=n as i64).collect();
    let index =
        HnswIndex::build(&data, dim, &ids, &HnswParams { m: 4, ..Default::default() }).unwrap();
    let mut gone = index;
    gone.remove(&[2]);
    gone.save(tmp.path(), "f.db.hnsw-1").unwrap();
    let file = std::fs::read(tmp.path().join("f.db.hnsw-1.irtdb-hnsw")).unwrap();
    // Mode 0: the file as it is.
    std::fs::write(dir.join("raw"), [&[0u8][..], &file].concat()).unwrap();
    // Mode 1: the file without its checksum (the target appends a valid one).
    let body = &file[..file.len() - 32];
    std::fs::write(dir.join("checksummed"), [&[1u8][..], body].concat()).unwrap();
}

fn main() {
    images();
    vits();
    hnsw();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for target in ["decode_image", "vit_safetensors", "hnsw_load"] {
        let total: u64 = std::fs::read_dir(root.join(target))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        println!("corpus/{target}: {total} bytes");
    }
}
