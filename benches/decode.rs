//! Camera photos: decode + timm preprocessing (224 crop) of 12-megapixel JPEGs, irtdb decoding
//! at a reduced scale in the DCT domain (what `jpeg_dct_scaling` does; with libjpeg-turbo where
//! it is installed, and with jpeg-decoder, its fallback) against irtdb's full decode, and against
//! Pillow with and without `Image.draft` (the same scaling in libjpeg-turbo), on the same files in
//! the same run. Then the preparation side of `irtdb index`
//! (`BatchPipeline`, all cores) on 12 MP photos against 800×600 ones.
//!
//!     cargo bench --bench decode [-- FILES]          # default 8 photos per size
//!
//! Pillow: `IRTDB_BENCH_PYTHON`, else `.deps/venv/bin/python` (skipped when neither has PIL).
//! Per-image rows run on one thread (a one-thread rayon pool), as Pillow does; photos are
//! `common::photo` (gradients, blobs, texture, noise) at JPEG quality 90.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use common::{median, ms, num, Table};
use irtdb_core::Preprocess;
use irtdb_image::{
    decode_file_sized, prepare_file, turbo, BatchPipeline, DecodeLimits, DecodeSize,
};

const ROUNDS: usize = 5;

fn main() -> Result<()> {
    let files: usize = common::first_arg().map(|a| a.parse()).transpose()?.unwrap_or(8);
    println!("# irtdb bench: decode ({files} photos per size)");
    println!("machine: {}", common::machine());
    let tmp = tempfile::tempdir()?;
    let t = Instant::now();
    let (big, big_bytes) =
        common::write_photos(&tmp.path().join("12mp"), files, (4000, 3000), 1, None)?;
    let (small, small_bytes) =
        common::write_photos(&tmp.path().join("800"), files, (800, 600), 2, None)?;
    println!(
        "photos: {files} × 4000×3000 ({:.1} MB each), {files} × 800×600 ({:.0} kB each), made in {:.1} s",
        big_bytes as f64 / files as f64 / 1e6,
        small_bytes as f64 / files as f64 / 1e3,
        t.elapsed().as_secs_f64()
    );

    let limits = DecodeLimits::default();
    let scaled = Preprocess::imagenet(224);
    let full = Preprocess { jpeg_dct_scaling: false, ..scaled.clone() };
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;

    // Per image, one thread; the contenders take turns within each round. libjpeg-turbo is
    // switched on or off for each (`turbo::set_enabled`); rows needing it are left out without it.
    let has_turbo = turbo::available();
    if !has_turbo {
        println!("(libjpeg-turbo not loaded: {:?}; its rows are left out)", turbo::library());
    }
    type Job<'a> = Box<dyn Fn(&Path) + Send + Sync + 'a>;
    let (scaled_ref, limits_ref) = (&scaled, &limits);
    let decode_scaled = |use_turbo: bool| -> Job {
        Box::new(move |f: &Path| {
            let (scaled, limits) = (scaled_ref, limits_ref);
            turbo::set_enabled(use_turbo);
            let size = DecodeSize::for_preprocess(scaled);
            std::hint::black_box(decode_file_sized(f, limits, size).expect("decodes"));
        })
    };
    let prepare_scaled = |use_turbo: bool| -> Job {
        Box::new(move |f: &Path| {
            let (scaled, limits) = (scaled_ref, limits_ref);
            turbo::set_enabled(use_turbo);
            std::hint::black_box(prepare_file(f, scaled, limits).expect("prepares"));
        })
    };
    let mut jobs: Vec<(&str, Job)> = Vec::new();
    if has_turbo {
        // The yardstick of the decoder alone: libjpeg-turbo on bytes already in memory (no file
        // read, no format or EXIF check, no orientation).
        let bytes: std::collections::HashMap<PathBuf, Vec<u8>> =
            big.iter().map(|f| Ok((f.clone(), std::fs::read(f)?))).collect::<Result<_>>()?;
        jobs.push((
            "libjpeg-turbo alone at 1/8 (bytes in memory)",
            Box::new(move |f: &Path| {
                turbo::set_enabled(true);
                let data = &bytes[f];
                let out = turbo::decode_scaled(data, 4000, 3000, 8).expect("decodes");
                std::hint::black_box(out);
            }),
        ));
        jobs.push(("irtdb decode at 1/8 (libjpeg-turbo, DCT scaling)", decode_scaled(true)));
    }
    jobs.push(("irtdb decode at 1/8 (jpeg-decoder, DCT scaling)", decode_scaled(false)));
    jobs.push((
        "irtdb decode in full (image crate, zune-jpeg)",
        Box::new(|f: &Path| {
            std::hint::black_box(decode_file_sized(f, &limits, DecodeSize::Full).expect("decodes"));
        }),
    ));
    if has_turbo {
        jobs.push(("irtdb decode at 1/8 + preprocess (libjpeg-turbo)", prepare_scaled(true)));
    }
    jobs.push(("irtdb decode at 1/8 + preprocess (jpeg-decoder)", prepare_scaled(false)));
    jobs.push((
        "irtdb full decode + preprocess (prepare_file)",
        Box::new(|f: &Path| {
            std::hint::black_box(prepare_file(f, &full, &limits).expect("prepares"));
        }),
    ));
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); jobs.len()];
    one_thread.install(|| {
        for f in &big {
            for (_, job) in &jobs {
                job(f); // warm-up: page cache, code, the resizer's buffers
            }
        }
        for _ in 0..ROUNDS {
            for f in &big {
                for ((_, job), t) in jobs.iter().zip(&mut times) {
                    let start = Instant::now();
                    job(f);
                    t.push(start.elapsed().as_secs_f64());
                }
            }
        }
    });

    turbo::set_enabled(true);
    let pillow = run_pillow(&big)?;
    let yardstick = median(times.last().expect("the full decode + preprocess row"));
    let mut table = Table::new(
        "4000×3000 JPEG (q90) → 224×224 (resize shorter side to 256, bicubic; centre crop), one thread, per image",
        &["", "median ms", "speed vs irtdb full decode + preprocess"],
    );
    for ((name, _), t) in jobs.iter().zip(&times) {
        table.row(vec![
            name.to_string(),
            ms(median(t)),
            format!("{}×", num(yardstick / median(t))),
        ]);
    }
    match &pillow {
        Some((version, full, draft)) => {
            for (name, t) in [
                (format!("Pillow {version}: open, convert, resize, crop"), full),
                (format!("Pillow {version}: with draft('RGB', (256, 256)) (1/8)"), draft),
            ] {
                table.row(vec![name, ms(median(t)), format!("{}×", num(yardstick / median(t)))]);
            }
        }
        None => println!("(Pillow skipped: set IRTDB_BENCH_PYTHON to a Python with PIL)"),
    }
    table.print();

    // Decode alone at each scale and decoder against the full decode (zune-jpeg), one thread:
    // where scaling pays, and where a slower entropy decoder eats the gain (jpeg-decoder at 1/2 is
    // slower than the full decode, so it is not used: DecodeSize::jpeg_denominator).
    let mut table = Table::new(
        "Decode alone, one thread, per image: each scale against the full decode",
        &["photo", "scale", "decoder", "median ms", "speed vs full"],
    );
    for (label, files, (w, h)) in
        [("4000×3000", &big, (4000u32, 3000u32)), ("800×600", &small, (800, 600))]
    {
        let mut cases: Vec<(u32, bool)> = vec![(1, false), (2, false), (4, false), (8, false)];
        if has_turbo {
            cases.extend([(2, true), (4, true), (8, true)]);
        }
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
        one_thread.install(|| {
            for round in 0..=ROUNDS {
                for f in files.iter() {
                    for ((d, use_turbo), t) in cases.iter().zip(&mut times) {
                        turbo::set_enabled(*use_turbo);
                        let size = if *d == 1 {
                            DecodeSize::Full
                        } else {
                            DecodeSize::AtLeast { width: w / d, height: h / d }
                        };
                        let start = Instant::now();
                        let img = match (*d, *use_turbo) {
                            // jpeg-decoder at 1/2, which irtdb never picks: called directly.
                            (2, false) => {
                                let data = std::fs::read(f).expect("reads");
                                let mut dec = jpeg_decoder::Decoder::new(data.as_slice());
                                dec.read_info().expect("header");
                                dec.scale((w / 2) as u16, (h / 2) as u16).expect("scales");
                                std::hint::black_box(dec.decode().expect("decodes"));
                                None
                            }
                            _ => Some(decode_file_sized(f, &limits, size).expect("decodes")),
                        };
                        let secs = start.elapsed().as_secs_f64();
                        if let Some(img) = img {
                            assert_eq!(img.scale_denominator, *d);
                        }
                        if round > 0 {
                            t.push(secs);
                        }
                    }
                }
            }
        });
        turbo::set_enabled(true);
        let yardstick = median(&times[0]);
        for ((d, use_turbo), t) in cases.iter().zip(&times) {
            let decoder = match (*d, *use_turbo) {
                (1, _) => "zune-jpeg (image)",
                (_, true) => "libjpeg-turbo",
                (_, false) => "jpeg-decoder",
            };
            table.row(vec![
                label.into(),
                format!("1/{d}"),
                decoder.into(),
                ms(median(t)),
                format!("{}×", num(yardstick / median(t))),
            ]);
        }
    }
    table.print();

    // The preparation side of `irtdb index`: all cores, batches of 32, as the index pipeline.
    let mut table = Table::new(
        "BatchPipeline (decode + preprocess on all cores, batches of 32), images per second",
        &["", "12 MP photos", "800×600 photos", "12 MP / 800×600"],
    );
    let mut setups =
        vec![("DCT scaling, jpeg-decoder", &scaled, false), ("full decode", &full, false)];
    if has_turbo {
        setups.insert(0, ("DCT scaling, libjpeg-turbo (new collections)", &scaled, true));
    }
    for (name, p, use_turbo) in setups {
        turbo::set_enabled(use_turbo);
        let rate = |files: &[PathBuf]| -> Result<f64> {
            // Enough images for a steady pipeline: the files, repeated.
            let items: Vec<(usize, PathBuf)> =
                (0..64.max(files.len())).map(|i| (i, files[i % files.len()].clone())).collect();
            let n = items.len();
            let start = Instant::now();
            let mut done = 0;
            for batch in BatchPipeline::new(items, 32, p.clone(), limits) {
                ensure!(batch.failed.is_empty(), "a photo failed: {:?}", batch.failed[0].2);
                done += batch.items.len();
            }
            ensure!(done == n, "{done} of {n} images prepared");
            Ok(n as f64 / start.elapsed().as_secs_f64())
        };
        let (b, s) = (rate(&big)?, rate(&small)?);
        table.row(vec![
            name.into(),
            format!("{b:.1}"),
            format!("{s:.1}"),
            format!("{:.2}×", b / s),
        ]);
    }
    table.print();
    Ok(())
}

/// Pillow's times (full, draft) on `files`, or `None` without a Python that has PIL.
#[allow(clippy::type_complexity)]
fn run_pillow(files: &[PathBuf]) -> Result<Option<(String, Vec<f64>, Vec<f64>)>> {
    let python = match std::env::var_os("IRTDB_BENCH_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => common::root().join(".deps/venv/bin/python"),
    };
    let version = Command::new(&python).args(["-c", "import PIL; print(PIL.__version__)"]).output();
    let version = match version {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => return Ok(None),
    };
    let mut c = Command::new(&python);
    c.arg(common::root().join("benches/decode_pillow.py"));
    c.args(["256", "224", &ROUNDS.to_string()]).args(files);
    let out = c.stderr(Stdio::inherit()).output().context("running decode_pillow.py")?;
    ensure!(out.status.success(), "decode_pillow.py failed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let times = |k: &str| -> Result<Vec<f64>> {
        serde_json::from_value(v[k].clone()).with_context(|| format!("no {k} in Pillow's answer"))
    };
    Ok(Some((version, times("full")?, times("draft")?)))
}
