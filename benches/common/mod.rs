//! Helpers shared by the benchmarks: finding ONNX Runtime and the plugin, photo-like test images,
//! timing and Markdown tables. (A folder module, so that cargo does not take it for a bench.)

#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use image::codecs::jpeg::JpegEncoder;
use image::RgbImage;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Points `ORT_DYLIB_PATH` at the library `scripts/setup-onnxruntime.sh` installs, unless it is
/// set already; returns the library used.
pub fn setup_ort() -> Result<PathBuf> {
    let lib = match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) => PathBuf::from(p),
        None => {
            let p = root().join(".deps/onnxruntime/libonnxruntime.so");
            // Edition 2021, and no other thread runs yet.
            std::env::set_var("ORT_DYLIB_PATH", &p);
            p
        }
    };
    if !lib.is_file() {
        bail!(
            "ONNX Runtime not found at {}: run scripts/setup-onnxruntime.sh or set ORT_DYLIB_PATH",
            lib.display()
        );
    }
    Ok(lib)
}

/// The release build of the ort plugin: `IRTDB_BENCH_PLUGIN`, else beside the bench's own
/// profile folder (`target/release`), else `<root>/target/release`.
pub fn plugin_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("IRTDB_BENCH_PLUGIN") {
        return Ok(PathBuf::from(p));
    }
    let file = irtdb_plugin_api::host::library_file_name("ort-tensorrt");
    let mut candidates = Vec::new();
    // The bench runs as target/<profile>/deps/<bench>-<hash>.
    if let Some(profile_dir) =
        std::env::current_exe().ok().and_then(|e| e.parent()?.parent().map(Path::to_path_buf))
    {
        candidates.push(profile_dir.join(&file));
    }
    candidates.push(root().join("target/release").join(&file));
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => bail!(
            "the ort plugin is not built: run `cargo build --release -p irtdb-plugin-ort-tensorrt` \
             (looked for {})",
            candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// A line describing the machine, for the top of a report.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let load = load_average();
    format!(
        "{cores} cores available ({cpu}), rayon {} threads, load average {load}, no GPU used",
        rayon::current_num_threads()
    )
}

/// The 1, 5 and 15 minute load averages (other work on a shared machine skews the numbers).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

/// A photo-like RGB image: a two-tone sky/ground gradient, low-frequency shading, soft-edged
/// blobs, some mid-frequency texture and sensor-like noise, so that JPEG files have the size and
/// decode cost of real photos rather than of flat synthetic shapes.
pub fn photo(width: u32, height: u32, seed: u64) -> RgbImage {
    let mut rng = StdRng::seed_from_u64(seed);
    let colour = |rng: &mut StdRng| -> [f32; 3] {
        [
            rng.random_range(20.0..235.0),
            rng.random_range(20.0..235.0),
            rng.random_range(20.0..235.0),
        ]
    };
    let (w, h) = (width as f32, height as f32);
    let sky = colour(&mut rng);
    let ground = colour(&mut rng);
    let horizon = rng.random_range(0.3..0.7) * h;
    // (fx, fy, phase, amplitude) of smooth shading and of finer texture.
    let waves: Vec<[f32; 4]> = (0..6)
        .map(|i| {
            let (f, a) = if i < 4 { (0.004..0.03, 8.0..28.0) } else { (0.15..0.6, 3.0..9.0) };
            let fx = rng.random_range(f.clone()) * if rng.random_bool(0.5) { 1.0 } else { -1.0 };
            [fx, rng.random_range(f), rng.random_range(0.0..6.3), rng.random_range(a)]
        })
        .collect();
    // (cx, cy, rx, ry) and colour of soft ellipses.
    let blobs: Vec<([f32; 4], [f32; 3])> = (0..rng.random_range(4..9))
        .map(|_| {
            let geom = [
                rng.random_range(0.0..w),
                rng.random_range(0.0..h),
                rng.random_range(0.05..0.3) * w,
                rng.random_range(0.05..0.3) * h,
            ];
            (geom, colour(&mut rng))
        })
        .collect();
    let mut img = RgbImage::new(width, height);
    for (x, y, px) in img.enumerate_pixels_mut() {
        let (xf, yf) = (x as f32, y as f32);
        let t = ((yf - horizon) / (0.08 * h)).tanh() * 0.5 + 0.5;
        let mut c = [0f32; 3];
        for (ch, v) in c.iter_mut().enumerate() {
            *v = sky[ch] * (1.0 - t) + ground[ch] * t;
        }
        let shade: f32 =
            waves.iter().map(|[fx, fy, ph, a]| a * (fx * xf + fy * yf + ph).sin()).sum();
        for ([cx, cy, rx, ry], bc) in &blobs {
            let d = ((xf - cx) / rx).powi(2) + ((yf - cy) / ry).powi(2);
            let alpha = ((1.0 - d) * 6.0).clamp(0.0, 1.0);
            if alpha > 0.0 {
                for (v, b) in c.iter_mut().zip(bc) {
                    *v = *v * (1.0 - alpha) + b * alpha;
                }
            }
        }
        let noise = rng.random_range(-5.0..5.0f32);
        for (out, v) in px.0.iter_mut().zip(c) {
            *out = (v + shade + noise + rng.random_range(-3.0..3.0f32)).clamp(0.0, 255.0) as u8;
        }
    }
    img
}

/// Writes [`photo`] as a JPEG of quality 90; returns its size in bytes.
pub fn write_photo_jpeg(path: &Path, width: u32, height: u32, seed: u64) -> Result<u64> {
    let img = photo(width, height, seed);
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, 90).encode_image(&img)?;
    std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(bytes.len() as u64)
}

/// Writes `n` photo-like JPEGs under `dir` (spread over `classes` sub-folders when given);
/// returns their paths and the total size in bytes. Generated in parallel.
pub fn write_photos(
    dir: &Path,
    n: usize,
    (width, height): (u32, u32),
    seed: u64,
    classes: Option<usize>,
) -> Result<(Vec<PathBuf>, u64)> {
    use rayon::prelude::*;
    let paths: Vec<PathBuf> = (0..n)
        .map(|i| match classes {
            Some(c) => dir.join(format!("class{:02}", i % c)).join(format!("img{i:05}.jpg")),
            None => dir.join(format!("img{i:05}.jpg")),
        })
        .collect();
    for p in &paths {
        std::fs::create_dir_all(p.parent().expect("a file in a folder"))?;
    }
    let sizes = paths
        .par_iter()
        .enumerate()
        .map(|(i, p)| write_photo_jpeg(p, width, height, seed.wrapping_mul(1_000_003) + i as u64))
        .collect::<Result<Vec<u64>>>()?;
    Ok((paths, sizes.iter().sum()))
}

/// Runs `f` at least `min_iters` times and until `min_secs` have passed (at most `max_iters`
/// times); returns the seconds of each run.
pub fn measure(min_iters: usize, min_secs: f64, max_iters: usize, mut f: impl FnMut()) -> Vec<f64> {
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < min_iters
        || (times.len() < max_iters && start.elapsed().as_secs_f64() < min_secs)
    {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times
}

/// The median of `v` (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

pub fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

pub fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// A number with about three significant digits.
pub fn num(x: f64) -> String {
    let a = x.abs();
    if !x.is_finite() {
        "-".into()
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// Milliseconds from seconds.
pub fn ms(secs: f64) -> String {
    num(secs * 1000.0)
}

/// A Markdown table printed with aligned columns (first column left, others right).
#[derive(Debug)]
pub struct Table {
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: &str, header: &[&str]) -> Self {
        Self {
            title: title.into(),
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: vec![],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut width: Vec<usize> = self.header.iter().map(|h| h.chars().count().max(3)).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (i, w) in width.iter().enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                let _ = if i == 0 { write!(s, " {c:<w$} |") } else { write!(s, " {c:>w$} |") };
            }
            s
        };
        let mut out = format!("\n### {}\n\n{}\n|", self.title, line(&self.header));
        for (i, w) in width.iter().enumerate() {
            let dashes = if i == 0 { "-".repeat(*w) } else { format!("{}:", "-".repeat(w - 1)) };
            let _ = write!(out, " {dashes} |");
        }
        for r in &self.rows {
            out.push('\n');
            out.push_str(&line(r));
        }
        out.push('\n');
        out
    }

    pub fn print(&self) {
        println!("{}", self.render());
    }
}

/// Runs `cmd`, fails with its output unless it succeeds; returns stdout and the wall time.
pub fn run_timed(cmd: &mut std::process::Command) -> Result<(Vec<u8>, f64)> {
    let t = Instant::now();
    let out = cmd.output().context("running irtdb")?;
    let wall = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{:?} failed ({})\n{}{}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((out.stdout, wall))
}

/// The bench's first argument that is not a flag (cargo bench passes `--bench`), if any.
pub fn first_arg() -> Option<String> {
    std::env::args().skip(1).find(|a| !a.starts_with('-'))
}

/// The `irtdb` binary cargo built for this bench, with a clean environment: ONNX Runtime at
/// `ort`, plugins beside `plugin`, data and cache folders in `dir`.
pub fn irtdb(dir: &Path, ort: &Path, plugin: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_irtdb"));
    c.env_remove("IRTDB_MODEL")
        .env_remove("IRTDB_DB")
        .env("ORT_DYLIB_PATH", ort)
        .env("IRTDB_PLUGIN_PATH", plugin.parent().expect("a file in a folder"))
        .env("XDG_DATA_HOME", dir.join("xdg-data"))
        .env("XDG_CACHE_HOME", dir.join("xdg-cache"));
    c
}
