//! Writes a labelled gallery of synthetic images: one folder per class, each class a shape and
//! colour scheme drawn under varied pose, scale, position and background.
//!
//!     cargo run --release --example make_gallery -- ./gallery --classes 12 --per-class 20
//!
//! It is what the quickstart indexes and queries when no real photos are at hand, and what the
//! tests use: images of one class look alike to a person (same shape, same colours) while no two
//! images are equal.

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SHAPES: [&str; 6] = ["disc", "square", "triangle", "ring", "cross", "stripes"];
const PALETTES: [([u8; 3], [u8; 3]); 6] = [
    ([220, 40, 40], [250, 220, 200]),
    ([40, 160, 60], [230, 240, 210]),
    ([40, 70, 200], [210, 220, 250]),
    ([230, 180, 20], [60, 50, 70]),
    ([150, 50, 170], [240, 240, 240]),
    ([20, 20, 20], [120, 200, 220]),
];

struct Args {
    out: PathBuf,
    classes: usize,
    per_class: usize,
    size: u32,
    seed: u64,
}

fn parse_args() -> Args {
    let mut a =
        Args { out: PathBuf::from("gallery"), classes: 12, per_class: 20, size: 128, seed: 1 };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .unwrap_or_else(|| panic!("{name} needs a value"))
                .parse::<u64>()
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        match arg.as_str() {
            "--classes" => a.classes = value("--classes") as usize,
            "--per-class" => a.per_class = value("--per-class") as usize,
            "--size" => a.size = value("--size") as u32,
            "--seed" => a.seed = value("--seed"),
            "-h" | "--help" => {
                println!("make_gallery OUT [--classes N] [--per-class M] [--size PX] [--seed S]");
                std::process::exit(0);
            }
            other => a.out = PathBuf::from(other),
        }
    }
    assert!(
        a.classes <= SHAPES.len() * PALETTES.len(),
        "at most {} classes",
        SHAPES.len() * PALETTES.len()
    );
    a
}

/// Is (x, y), in the shape's own unit frame (centre 0, radius 1), inside the shape?
fn inside(shape: &str, x: f32, y: f32) -> bool {
    let r = (x * x + y * y).sqrt();
    match shape {
        "disc" => r < 1.0,
        "square" => x.abs() < 0.8 && y.abs() < 0.8,
        "triangle" => y < 0.7 && y > -0.9 + 1.6 * x.abs() * 1.1,
        "ring" => r < 1.0 && r > 0.6,
        "cross" => (x.abs() < 0.3 && y.abs() < 1.0) || (y.abs() < 0.3 && x.abs() < 1.0),
        "stripes" => r < 1.0 && ((x * 4.0).floor() as i32).rem_euclid(2) == 0,
        _ => false,
    }
}

fn draw(path: &Path, class: usize, size: u32, rng: &mut StdRng) {
    let shape = SHAPES[class % SHAPES.len()];
    let (fg, bg) = PALETTES[(class / SHAPES.len() + class) % PALETTES.len()];
    let angle: f32 = rng.random_range(0.0..std::f32::consts::TAU);
    let scale: f32 = rng.random_range(0.22..0.42) * size as f32;
    let cx: f32 = rng.random_range(0.35..0.65) * size as f32;
    let cy: f32 = rng.random_range(0.35..0.65) * size as f32;
    let jitter = |c: [u8; 3], rng: &mut StdRng, amount: i32| {
        c.map(|v| (v as i32 + rng.random_range(-amount..=amount)).clamp(0, 255) as u8)
    };
    let fg = jitter(fg, rng, 25);
    let bg = jitter(bg, rng, 25);
    let (gx, gy): (f32, f32) = (rng.random_range(-0.4..0.4), rng.random_range(-0.4..0.4));
    let (sin, cos) = angle.sin_cos();
    let img = image::RgbImage::from_fn(size, size, |px, py| {
        let (dx, dy) = ((px as f32 - cx) / scale, (py as f32 - cy) / scale);
        let (x, y) = (cos * dx + sin * dy, -sin * dx + cos * dy);
        // Background: the class's colour under a gentle gradient, so backgrounds vary.
        let shade =
            1.0 + gx * (px as f32 / size as f32 - 0.5) + gy * (py as f32 / size as f32 - 0.5);
        let c = if inside(shape, x, y) {
            fg
        } else {
            bg.map(|v| (v as f32 * shade).clamp(0.0, 255.0) as u8)
        };
        image::Rgb(c)
    });
    img.save(path).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn main() {
    let a = parse_args();
    let mut rng = StdRng::seed_from_u64(a.seed);
    for class in 0..a.classes {
        let name = format!("{:02}-{}", class, SHAPES[class % SHAPES.len()]);
        let dir = a.out.join(&name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        for i in 0..a.per_class {
            draw(&dir.join(format!("{i:03}.jpg")), class, a.size, &mut rng);
        }
    }
    eprintln!("wrote {} classes × {} images to {}", a.classes, a.per_class, a.out.display());
}
