//! Writes a labelled gallery of synthetic images: one folder per class, each class a shape, a
//! colour and a texture (solid, stripes, checker), drawn under varied pose, scale and position
//! on a background of any colour (a gradient with noise) that says nothing about the class.
//!
//!     cargo run --release --example make_gallery -- ./gallery --classes 12 --per-class 20
//!
//! It is what the quickstart indexes and queries when no real photos are at hand, and what the
//! tests use: images of one class look alike to a person (same shape, same colours) while no two
//! images are equal. `--first-class K` starts at class K, so that a training set (classes
//! 0..24) and a test set (`--first-class 24`) share no class, as retrieval benchmarks split.

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SHAPES: [&str; 6] = ["disc", "square", "triangle", "ring", "cross", "stripes"];
/// Class colours (the first of each pair; the second is unused since backgrounds became random).
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
    first_class: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        out: PathBuf::from("gallery"),
        classes: 12,
        per_class: 20,
        size: 128,
        seed: 1,
        first_class: 0,
    };
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
            "--first-class" => a.first_class = value("--first-class") as usize,
            "-h" | "--help" => {
                println!(
                    "make_gallery OUT [--classes N] [--first-class K] [--per-class M] [--size PX] \
                     [--seed S]"
                );
                std::process::exit(0);
            }
            other => a.out = PathBuf::from(other),
        }
    }
    assert!(
        a.first_class + a.classes <= SHAPES.len() * PALETTES.len(),
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

/// The fill of a class: solid, stripes or a checkerboard (in the shape's own frame, so the
/// texture turns and scales with it).
const TEXTURES: [&str; 3] = ["solid", "stripes", "checker"];

fn draw(path: &Path, class: usize, size: u32, rng: &mut StdRng) {
    let shape = SHAPES[class % SHAPES.len()];
    // Colour and texture vary with the class too, in other cycles than the shape, so that the
    // classes of a test set (other class numbers) are new combinations of known parts.
    let (fg, _) = PALETTES[(class / SHAPES.len() + class) % PALETTES.len()];
    let texture = TEXTURES[(class / SHAPES.len()) % TEXTURES.len()];
    let angle: f32 = rng.random_range(0.0..std::f32::consts::TAU);
    let scale: f32 = rng.random_range(0.22..0.42) * size as f32;
    let cx: f32 = rng.random_range(0.35..0.65) * size as f32;
    let cy: f32 = rng.random_range(0.35..0.65) * size as f32;
    let jitter = |c: [u8; 3], rng: &mut StdRng, amount: i32| {
        c.map(|v| (v as i32 + rng.random_range(-amount..=amount)).clamp(0, 255) as u8)
    };
    let fg = jitter(fg, rng, 25);
    let fg2 = fg.map(|v| (v as f32 * 0.45) as u8);
    // The background belongs to no class: any colour, under a random gradient, with noise.
    let bg = [rng.random::<u8>(), rng.random::<u8>(), rng.random::<u8>()];
    let (gx, gy): (f32, f32) = (rng.random_range(-0.6..0.6), rng.random_range(-0.6..0.6));
    let noise_seed: u32 = rng.random();
    let (sin, cos) = angle.sin_cos();
    let img = image::RgbImage::from_fn(size, size, |px, py| {
        let (dx, dy) = ((px as f32 - cx) / scale, (py as f32 - cy) / scale);
        let (x, y) = (cos * dx + sin * dy, -sin * dx + cos * dy);
        if inside(shape, x, y) {
            let alt = match texture {
                "stripes" => ((y * 3.0).floor() as i32).rem_euclid(2) == 1,
                "checker" => {
                    ((x * 3.0).floor() as i32 + (y * 3.0).floor() as i32).rem_euclid(2) == 1
                }
                _ => false,
            };
            return image::Rgb(if alt { fg2 } else { fg });
        }
        let shade =
            1.0 + gx * (px as f32 / size as f32 - 0.5) + gy * (py as f32 / size as f32 - 0.5);
        let h = (px.wrapping_mul(73_856_093) ^ py.wrapping_mul(19_349_663) ^ noise_seed)
            .wrapping_mul(2_654_435_761);
        let noise = (h >> 24) as f32 / 255.0 * 40.0 - 20.0;
        image::Rgb(bg.map(|v| (v as f32 * shade + noise).clamp(0.0, 255.0) as u8))
    });
    img.save(path).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn main() {
    let a = parse_args();
    let mut rng = StdRng::seed_from_u64(a.seed);
    for class in a.first_class..a.first_class + a.classes {
        let name = format!(
            "{:02}-{}-{}",
            class,
            SHAPES[class % SHAPES.len()],
            TEXTURES[(class / SHAPES.len()) % TEXTURES.len()]
        );
        let dir = a.out.join(&name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        for i in 0..a.per_class {
            draw(&dir.join(format!("{i:03}.jpg")), class, a.size, &mut rng);
        }
    }
    eprintln!("wrote {} classes × {} images to {}", a.classes, a.per_class, a.out.display());
}
