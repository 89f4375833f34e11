//! Photo libraries as they are: HEIC and AVIF files (made by an independent encoder, Python's
//! pillow-heif and Pillow, each with its own libheif/libavif), transparency.

use std::path::Path;
use std::process::Command;

use irtdb_image::{decode_file, DecodeLimits};

use crate::util::*;

/// Runs `script` with the test Python (which must have pillow_heif), in `dir`.
fn python(dir: &Path, script: &str) -> bool {
    let Some(py) = test_python_with("pillow_heif") else { return false };
    let out = Command::new(py).current_dir(dir).args(["-c", script]).output().unwrap();
    assert!(out.status.success(), "python failed:\n{}", String::from_utf8_lossy(&out.stderr));
    true
}

/// Removes `key` from the preprocessing stored with the collection at `db`: the record an
/// irtdb from before that key wrote.
fn forget_preprocess_key(py: &Path, db: &Path, key: &str) {
    let edit = "import json, sqlite3, sys\n\
                c = sqlite3.connect(sys.argv[1])\n\
                (i, cfg), = c.execute('select id, config from models').fetchall()\n\
                cfg = json.loads(cfg)\n\
                del cfg['backbone']['preprocess'][sys.argv[2]]\n\
                c.execute('update models set config = ? where id = ?', (json.dumps(cfg), i))\n\
                c.commit()\n";
    let out = Command::new(py).args(["-c", edit]).arg(db).arg(key).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The same picture as HEIC and AVIF, each also decoded by Python and saved as PNG; an RGBA
/// HEIC; and a HEIC written from an image with EXIF orientation 6 (pillow-heif stores it as the
/// HEIF rotation `irot`).
const MAKE: &str = r#"
import pillow_heif
from PIL import Image
pillow_heif.register_heif_opener()
w, h = 96, 64
im = Image.new("RGB", (w, h))
im.putdata([(x * 2, y * 3, x + y) for y in range(h) for x in range(w)])
im.save("photo.src.png")
im.save("photo.heic", quality=95)
im.save("photo.avif", quality=95)
Image.open("photo.heic").convert("RGB").save("photo.heic.png")
Image.open("photo.avif").convert("RGB").save("photo.avif.png")
rgba = im.convert("RGBA")
rgba.putalpha(Image.new("L", (w, h), 0).point(lambda _: 0))
alpha = Image.new("L", (w, h))
alpha.putdata([255 if x < w // 2 else 0 for y in range(h) for x in range(w)])
rgba.putalpha(alpha)
rgba.save("alpha.heic", quality=95)
a = Image.open("alpha.heic")
a.convert("RGB").save("alpha.heic.rgb.png")
a.getchannel("A").save("alpha.heic.a.png")
tall = Image.new("RGB", (64, 32), (255, 0, 0))
tall.paste((0, 0, 255), (32, 0, 64, 32))
exif = Image.Exif()
exif[0x0112] = 6
tall.save("rotated.heic", exif=exif.tobytes(), quality=95)
Image.open("rotated.heic").convert("RGB").save("rotated.heic.png")
"#;

fn max_diff(a: &image::RgbImage, b: &image::RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0)
}

/// A folder with the files of [`MAKE`], or `None` (skipped) without libheif or the test Python.
fn made_photos() -> Option<tempfile::TempDir> {
    if irtdb_image::heif::libheif_version().is_err() {
        // The test command installs libheif1 (scripts/apt-packages.txt); a bare machine may not.
        assert!(std::env::var_os("IRTDB_TEST_STRICT").is_none(), "libheif is missing");
        eprintln!("skipped: no libheif");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    python(tmp.path(), MAKE).then_some(tmp)
}

#[test]
fn heic_and_avif_decode_like_pillow_with_rotation_and_alpha() {
    let Some(tmp) = made_photos() else { return };
    let dir = tmp.path();
    let limits = DecodeLimits::default();
    let png = |name: &str| image::open(dir.join(name)).unwrap().to_rgb8();
    for name in ["photo.heic", "photo.avif"] {
        let ours = decode_file(&dir.join(name), &limits).unwrap();
        assert!(ours.alpha.is_none(), "{name}");
        let theirs = png(&format!("{name}.png"));
        // The same bitstream through two decoders: YCbCr → RGB rounding may differ by a step.
        let d = max_diff(&ours.rgb, &theirs);
        assert!(d <= 3, "{name}: max |irtdb − Pillow| = {d}");
        // And close to the picture that was encoded (lossy at quality 95).
        let source = png("photo.src.png");
        let mean = ours
            .rgb
            .as_raw()
            .iter()
            .zip(source.as_raw())
            .map(|(a, b)| f64::from(a.abs_diff(*b)))
            .sum::<f64>()
            / source.as_raw().len() as f64;
        assert!(mean <= 3.0, "{name}: mean |decoded − source| = {mean}");
    }
    let alpha = decode_file(&dir.join("alpha.heic"), &limits).unwrap();
    let a = alpha.alpha.as_ref().expect("alpha channel");
    let theirs = image::open(dir.join("alpha.heic.a.png")).unwrap().to_luma8();
    let d = a.as_raw().iter().zip(theirs.as_raw()).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
    assert!(d <= 3, "alpha differs by {d}");
    assert!(max_diff(&alpha.rgb, &png("alpha.heic.rgb.png")) <= 3);
    // Composited on white, the transparent right half is white.
    let flat = alpha.flattened(irtdb_core::AlphaBackground::Color([255; 3]));
    assert!(flat.get_pixel(90, 10).0.iter().all(|&c| c >= 250), "{:?}", flat.get_pixel(90, 10));

    // irot applied: the stored 64×32 picture comes out 32×64, as Pillow shows it.
    let rotated = decode_file(&dir.join("rotated.heic"), &limits).unwrap();
    assert_eq!(rotated.rgb.dimensions(), (32, 64));
    assert!(max_diff(&rotated.rgb, &png("rotated.heic.png")) <= 3);
    assert!(rotated.rgb.get_pixel(16, 8)[0] > 200, "top is red after the rotation");

    // A truncated HEIC is an error for that file, naming it.
    let bytes = std::fs::read(dir.join("photo.heic")).unwrap();
    std::fs::write(dir.join("cut.heic"), &bytes[..bytes.len() / 2]).unwrap();
    let err = decode_file(&dir.join("cut.heic"), &limits).unwrap_err().to_string();
    assert!(err.contains("cut.heic"), "{err}");
    // A decompression bomb is refused from the header.
    let tiny = DecodeLimits { max_pixels: 1000, ..limits };
    let err = decode_file(&dir.join("photo.heic"), &tiny).unwrap_err().to_string();
    assert!(err.contains("too large"), "{err}");
}

/// Index a folder of HEIC and AVIF photos: they are embedded (not skipped), and each finds its
/// own PNG twin (Pillow's decode of it) first.
#[test]
fn a_folder_of_heic_and_avif_indexes_and_queries() {
    let Some(tmp) = made_photos() else { return };
    let dir = tmp.path();
    let gallery = dir.join("gallery");
    std::fs::create_dir_all(&gallery).unwrap();
    for f in ["photo.heic", "photo.avif", "rotated.heic"] {
        std::fs::copy(dir.join(f), gallery.join(f)).unwrap();
    }
    for seed in 0..4 {
        write_picture(&gallery.join(format!("other{seed}.jpg")), 64, 48, seed);
    }
    let (model, _) = write_micro_vit(dir, false);
    let db = dir.join("c.db");
    let out = run_expect(
        irtdb()
            .args(["index", "--json", "--dim", "0", "--db"])
            .arg(&db)
            .arg(&gallery)
            .arg("--model")
            .arg(&model),
        0,
    );
    let r = json(&out);
    assert_eq!((r["added"].as_u64(), r["failed"].as_u64()), (Some(7), Some(0)), "{r}");
    // The PNG that was encoded finds both its HEIC and its AVIF, at cosine ≥ 0.99.
    let q = json(&run_expect(
        irtdb()
            .args(["query", "--json", "--exact", "--k", "2", "--db"])
            .arg(&db)
            .arg(dir.join("photo.src.png")),
        0,
    ));
    let hits = q["results"][0]["hits"].as_array().unwrap();
    let mut top: Vec<&str> = hits.iter().map(|h| h["path"].as_str().unwrap()).collect();
    top.sort();
    assert_eq!(top, ["photo.avif", "photo.heic"], "{q}");
    assert!(hits.iter().all(|h| h["score"].as_f64().unwrap() >= 0.99), "{q}");
    for (file, twin) in [("photo.heic", "photo.heic.png"), ("rotated.heic", "rotated.heic.png")] {
        let q = json(&run_expect(
            irtdb()
                .args(["query", "--json", "--exact", "--k", "1", "--db"])
                .arg(&db)
                .arg(dir.join(twin)),
            0,
        ));
        let top = &q["results"][0]["hits"][0];
        assert_eq!(top["path"], file, "{q}");
        assert!(top["score"].as_f64().unwrap() > 0.999, "{q}");
    }
}

/// An opaque disc on a transparent background, the invisible pixels holding `junk`.
fn write_cutout(path: &Path, junk: [u8; 3]) {
    let img = image::RgbaImage::from_fn(64, 64, |x, y| {
        let (dx, dy) = (x as i32 - 32, y as i32 - 32);
        if dx * dx + dy * dy < 20 * 20 {
            image::Rgba([200, (x * 3) as u8, (y * 3) as u8, 255])
        } else {
            image::Rgba([junk[0], junk[1], junk[2], 0])
        }
    });
    img.save(path).unwrap();
}

fn embed(model: &Path, files: &[&Path], extra: &[&str]) -> Vec<Vec<f32>> {
    let out = json(&run_expect(
        irtdb().args(["embed", "--json", "--model"]).arg(model).args(extra).args(files),
        0,
    ));
    out["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| serde_json::from_value(i["descriptor"].clone()).unwrap())
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// What lies under transparent pixels must not decide the descriptor: composited (the default,
/// white, or any colour) two cut-outs that differ only there embed identically; with `drop` they
/// do not. The choice is part of the collection's identity.
#[test]
fn transparent_pixels_are_composited_and_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (model, _) = write_micro_vit(dir, false);
    let gallery = dir.join("gallery");
    std::fs::create_dir_all(&gallery).unwrap();
    let (a, b) = (gallery.join("a.png"), gallery.join("b.png"));
    write_cutout(&a, [0, 0, 0]);
    write_cutout(&b, [250, 30, 160]);
    // The same disc composited on white by hand, as an opaque file: the independent yardstick.
    let white = dir.join("white.png");
    let on_white = image::open(&a).unwrap().to_rgba8();
    image::RgbImage::from_fn(64, 64, |x, y| {
        let p = on_white.get_pixel(x, y);
        if p[3] == 255 {
            image::Rgb([p[0], p[1], p[2]])
        } else {
            image::Rgb([255, 255, 255])
        }
    })
    .save(&white)
    .unwrap();

    let d = embed(&model, &[&a, &b, &white], &[]);
    assert_eq!(d[0], d[1], "default: composited, the invisible junk does not matter");
    assert_eq!(d[0], d[2], "default: white, as composited by hand");
    let black = embed(&model, &[&a, &b], &["--alpha-background", "#000"]);
    assert_eq!(black[0], black[1]);
    assert!(cosine(&black[0], &d[0]) < 0.9999, "another background, another descriptor");
    let dropped = embed(&model, &[&a, &b], &["--alpha-background", "drop"]);
    let c = cosine(&dropped[0], &dropped[1]);
    eprintln!("cut-outs differing only under transparency: cosine {c} with drop, 1 composited");
    assert!(c < 0.9999, "drop: the invisible pixels change the descriptor ({c})");

    // Recorded: a rerun asking for another background is refused, not mixed.
    let db = dir.join("c.db");
    let index = |extra: &[&str]| {
        let mut c = irtdb();
        c.args(["index", "--json", "--dim", "0", "--db"]).arg(&db).arg(&gallery);
        c.arg("--model").arg(&model).args(extra);
        c
    };
    run_expect(&mut index(&["--alpha-background", "white"]), 0);
    let out = run_expect(&mut index(&["--alpha-background", "black"]), 2);
    assert!(stderr(&out).contains("another model"), "{}", stderr(&out));
    // Queries use the collection's background.
    let q = json(&run_expect(
        irtdb().args(["query", "--json", "--exact", "--k", "2", "--db"]).arg(&db).arg(&white),
        0,
    ));
    let score = q["results"][0]["hits"][0]["score"].as_f64().unwrap();
    assert!(score > 0.99999, "{q}");
    let info = json(&run_expect(irtdb().args(["info", "--json", "--db"]).arg(&db), 0));
    assert!(info.to_string().contains("\"alpha_background\":\"white\""), "{info}");
}

/// A collection made before irtdb composited transparency recorded no alpha background: it
/// keeps dropping alpha (for new files and for queries), so its descriptors stay comparable.
#[test]
fn collections_from_before_compositing_keep_dropping_alpha() {
    let Some(py) = test_python_with("sqlite3") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (model, _) = write_micro_vit(dir, false);
    let gallery = dir.join("gallery");
    std::fs::create_dir_all(&gallery).unwrap();
    write_cutout(&gallery.join("a.png"), [0, 0, 0]);
    let db = dir.join("c.db");
    let index = || {
        let mut c = irtdb();
        c.args(["index", "--json", "--dim", "0", "--db"]).arg(&db).arg(&gallery);
        c
    };
    run_expect(index().arg("--model").arg(&model), 0);
    // What an older irtdb wrote: the same record without the key.
    forget_preprocess_key(&py, &db, "alpha_background");
    let info = json(&run_expect(irtdb().args(["info", "--json", "--db"]).arg(&db), 0));
    assert_eq!(info["model"]["alpha_background"], "drop", "{info}");

    let c = gallery.join("c.png");
    write_cutout(&c, [250, 30, 160]);
    let r = json(&run_expect(&mut index(), 0));
    assert_eq!(r["added"], 1, "{r}");
    let q = json(&run_expect(
        irtdb().args(["query", "--json", "--exact", "--k", "1", "--db"]).arg(&db).arg(&c),
        0,
    ));
    let top = &q["results"][0]["hits"][0];
    assert_eq!(top["path"], "c.png", "{q}");
    assert!(top["score"].as_f64().unwrap() > 0.99999, "query embedded as the collection: {q}");
}

/// Camera photos are decoded at 1/8 scale in the DCT domain when preprocessing shrinks them
/// anyway: on a 12-megapixel photo-like JPEG, a random ViT at 224×224 gives a descriptor within
/// cosine 0.999 of the full decode's, and an EXIF orientation 6 or 8 file gives that of an
/// independent full decode turned by the image crate.
#[test]
fn scaled_jpeg_decoding_keeps_descriptors_and_orientation() {
    use image::{imageops, Rgb, RgbImage};
    use irtdb_core::Preprocess;

    let mut cfg = irtdb_onnx::testing::deit_config("vit_micro").expect("vit_micro preset");
    cfg.img_size = [224, 224];
    cfg.patch = 16;
    let overrides = irtdb_onnx::ConfigOverrides { heads: Some(cfg.heads), ..Default::default() };
    let weights =
        irtdb_onnx::VitWeights::from_tensors(irtdb_onnx::testing::random_vit(&cfg, 11), &overrides)
            .unwrap();
    let descriptor = |x: &[f32]| -> Vec<f32> {
        let tokens = irtdb_onnx::reference::forward(&weights, x, 1);
        let cls = &tokens[..cfg.dim];
        let n = cls.iter().map(|v| v * v).sum::<f32>().sqrt();
        cls.iter().map(|v| v / n).collect()
    };
    let cosine = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();

    // Smooth colour fields, fine texture (which a 1/8 decode averages) and noise.
    let (w, h) = (4000u32, 3000u32);
    let photo = RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let texture = 20.0 * (x as f32 * 0.31).sin() * (y as f32 * 0.23).cos();
        let noise = ((x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) % 13) as f32;
        let v = |base: f32| (base + texture + noise - 6.0).clamp(0.0, 255.0) as u8;
        Rgb([
            v(128.0 + 90.0 * (5.0 * fx).sin()),
            v(128.0 + 90.0 * (3.0 * fy + 1.0).cos()),
            v(128.0 + 80.0 * (4.0 * (fx - fy)).sin()),
        ])
    });
    let mut plain = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut plain, 90)
        .encode_image(&photo)
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let limits = DecodeLimits::default();
    let scaled = Preprocess::imagenet(224);
    assert!(scaled.jpeg_dct_scaling, "new records scale");
    let full = Preprocess { jpeg_dct_scaling: false, ..scaled.clone() };

    let path = tmp.path().join("photo.jpg");
    std::fs::write(&path, &plain).unwrap();
    let (xs, meta) = irtdb_image::prepare_file(&path, &scaled, &limits).unwrap();
    assert_eq!((meta.width, meta.height), (w, h), "the stored size is the full one");
    let (xf, _) = irtdb_image::prepare_file(&path, &full, &limits).unwrap();
    let c = cosine(&descriptor(xs.as_slice().unwrap()), &descriptor(xf.as_slice().unwrap()));
    assert!(c >= 0.999, "1/8 decode vs full decode: descriptor cosine {c}");

    let stored = decode_file(&path, &limits).unwrap().rgb;
    for (orientation, turned) in
        [(6u16, imageops::rotate90(&stored)), (8, imageops::rotate270(&stored))]
    {
        // EXIF APP1 with only Orientation, right after SOI.
        let mut exif = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01".to_vec();
        exif.extend_from_slice(&orientation.to_be_bytes());
        exif.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        let mut bytes = plain[..2].to_vec();
        bytes.extend_from_slice(&[0xFF, 0xE1]);
        bytes.extend_from_slice(&((exif.len() + 2) as u16).to_be_bytes());
        bytes.extend_from_slice(&exif);
        bytes.extend_from_slice(&plain[2..]);
        let file = tmp.path().join(format!("o{orientation}.jpg"));
        std::fs::write(&file, &bytes).unwrap();
        let (x, meta) = irtdb_image::prepare_file(&file, &scaled, &limits).unwrap();
        assert_eq!((meta.width, meta.height), (h, w), "orientation {orientation} turns the photo");
        let independent = irtdb_image::preprocess_to_array(&turned, &scaled);
        let c = cosine(
            &descriptor(x.as_slice().unwrap()),
            &descriptor(independent.as_slice().unwrap()),
        );
        assert!(c >= 0.999, "orientation {orientation}: cosine {c} with the turned full decode");
    }
}

/// A textured 1600×1200 photo-like JPEG (decoded at 1/8 for the micro ViT's 36-pixel resize).
fn write_textured_photo(path: &Path, seed: u32) {
    let s = seed as f32;
    write_image(path, 1600, 1200, |x, y| {
        let (fx, fy) = (x as f32 / 1600.0, y as f32 / 1200.0);
        let t = 30.0 * (x as f32 * 0.7 + s).sin() * (y as f32 * 0.9).cos();
        let v = |b: f32| (b + t).clamp(0.0, 255.0) as u8;
        [v(128.0 + 90.0 * (4.0 * fx + s).sin()), v(128.0 + 90.0 * (3.0 * fy).cos()), v(100.0)]
    });
}

/// Scaled JPEG decoding is recorded with the collection: a new collection says so, and one made
/// before the flag existed (its record lacks the key) keeps decoding every pixel, for new files
/// and for queries, so its descriptors are never mixed with scaled ones.
#[test]
fn scaled_jpeg_decoding_is_part_of_the_collection_record() {
    let Some(py) = test_python_with("sqlite3") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (model, _) = write_micro_vit(dir, false);
    let gallery = dir.join("gallery");
    std::fs::create_dir_all(&gallery).unwrap();
    let a = gallery.join("a.jpg");
    write_textured_photo(&a, 1);
    let db = dir.join("c.db");
    let index = || {
        let mut c = irtdb();
        c.args(["index", "--json", "--dim", "0", "--db"]).arg(&db).arg(&gallery);
        c
    };
    // A copy outside the gallery is embedded (a collection's own file would be looked up).
    let query = |file: &Path| {
        let copy = dir.join("query.jpg");
        std::fs::copy(file, &copy).unwrap();
        let q = json(&run_expect(
            irtdb().args(["query", "--json", "--exact", "--k", "1", "--db"]).arg(&db).arg(&copy),
            0,
        ));
        q["results"][0]["hits"][0]["score"].as_f64().unwrap()
    };
    run_expect(index().arg("--model").arg(&model), 0);
    let info = json(&run_expect(irtdb().args(["info", "--json", "--db"]).arg(&db), 0));
    assert_eq!(info["model"]["jpeg_dct_scaling"], true, "{info}");
    let scaled_self = query(&a);
    assert!(scaled_self > 0.99999, "a query decodes as the collection did: {scaled_self}");

    // What an older irtdb wrote: the same record without the key.
    forget_preprocess_key(&py, &db, "jpeg_dct_scaling");
    let info = json(&run_expect(irtdb().args(["info", "--json", "--db"]).arg(&db), 0));
    assert_eq!(info["model"]["jpeg_dct_scaling"], false, "{info}");
    // The query is now decoded in full: close to, but not exactly, the stored (scaled) one.
    let mixed = query(&a);
    eprintln!("stored 1/8 descriptor vs full-decode query: cosine {mixed}");
    assert!(mixed > 0.99 && mixed < scaled_self, "{mixed} vs {scaled_self}");
    // A new file is embedded as the record says (in full), and its query finds it exactly.
    let b = gallery.join("b.jpg");
    write_textured_photo(&b, 2);
    let r = json(&run_expect(&mut index(), 0));
    assert_eq!(r["added"], 1, "{r}");
    let full_self = query(&b);
    assert!(full_self > 0.99999, "new files and queries both decode in full: {full_self}");
}
