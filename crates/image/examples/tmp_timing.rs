use std::time::Instant;
fn main() {
    let dir = tempfile::tempdir().unwrap();
    let img = image::RgbImage::from_fn(4000, 3000, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8]));
    let path = dir.path().join("big.jpg");
    img.save(&path).unwrap();
    let small = image::imageops::resize(&img, 500, 375, image::imageops::FilterType::Triangle);
    let spath = dir.path().join("small.jpg");
    small.save(&spath).unwrap();
    let p = irtdb_core::Preprocess::imagenet(224);
    let l = irtdb_image::DecodeLimits::default();
    for (name, path) in [("4000x3000", &path), ("500x375", &spath)] {
        let t = Instant::now();
        let n = 10;
        let mut dec = 0.0;
        for _ in 0..n {
            let t0 = Instant::now();
            let d = irtdb_image::decode_file(path, &l).unwrap();
            dec += t0.elapsed().as_secs_f64();
            let _ = irtdb_image::preprocess_to_array(&d.rgb, &p);
        }
        let total = t.elapsed().as_secs_f64() / n as f64;
        println!("{name}: decode {:.1} ms, preprocess {:.1} ms", dec / n as f64 * 1e3, (total - dec / n as f64) * 1e3);
    }
    let paths: Vec<_> = (0..64).map(|_| spath.clone()).collect();
    let t = Instant::now();
    let n = irtdb_image::prepare_batch(&paths, &p, &l).len();
    println!("prepare_batch 64×500x375: {:.1} ms ({n})", t.elapsed().as_secs_f64() * 1e3);
}
