//! `irtdb dups` on a gallery with planted near-duplicates among distinct pictures, through the
//! real ort plugin and a random micro ViT; and the same groups from `irtdb serve`.

use std::path::Path;

use crate::serve::{Gallery, Server};
use crate::util::*;

/// Light edits of `src` that even a random ViT maps close to it: an exact copy, a re-encode at
/// JPEG quality 85, and a PNG of the same pixels.
fn plant(src: &Path, dir: &Path, stem: &str) -> Vec<String> {
    let img = image::open(src).unwrap().to_rgb8();
    std::fs::copy(src, dir.join(format!("{stem}-copy.jpg"))).unwrap();
    let mut q85 = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut q85, 85).encode_image(&img).unwrap();
    std::fs::write(dir.join(format!("{stem}-q85.jpg")), q85).unwrap();
    img.save(dir.join(format!("{stem}.png"))).unwrap();
    vec![format!("{stem}-copy.jpg"), format!("{stem}-q85.jpg"), format!("{stem}.png")]
}

/// A 64×48 picture of 4×3 blocks of seeded random colours: distinct seeds give layouts that a
/// random ViT tells apart (the smooth test pictures of `write_picture` are too alike for it).
fn write_blocks(path: &Path, seed: u64) {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut colours = [[0u8; 3]; 12];
    for c in colours.iter_mut() {
        for v in c.iter_mut() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            *v = (state >> 56) as u8;
        }
    }
    write_image(path, 64, 48, |x, y| colours[(y / 16 * 4 + x / 16) as usize]);
}

#[test]
fn planted_near_duplicates_are_grouped_exactly() {
    let g = Gallery::empty();
    for i in 0..40 {
        let dir = g.gallery.join(format!("class{:02}", i % 4));
        std::fs::create_dir_all(&dir).unwrap();
        write_blocks(&dir.join(format!("{:03}.jpg", i / 4)), i);
    }
    let dupes = g.gallery.join("dupes");
    std::fs::create_dir_all(&dupes).unwrap();
    let mut planted: Vec<Vec<String>> = Vec::new();
    for (i, src) in ["class00/003.jpg", "class02/007.jpg", "class03/001.jpg"].iter().enumerate() {
        let mut group = vec![src.to_string()];
        group.extend(
            plant(&g.gallery.join(src), &dupes, &format!("d{i}"))
                .into_iter()
                .map(|f| format!("dupes/{f}")),
        );
        planted.push(group);
    }
    g.index();
    let html = g.dir.join("dups.html");
    let mut c = irtdb();
    c.args(["dups", "--json", "--db"]).arg(&g.db).arg("--html").arg(&html);
    let r = json(&run_expect(&mut c, 0));
    let groups: Vec<Vec<String>> = r["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let mut paths: Vec<String> = g["images"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["path"].as_str().unwrap().to_string())
                .collect();
            paths.sort();
            paths
        })
        .collect();
    let mut want: Vec<Vec<String>> = planted
        .iter()
        .map(|g| {
            let mut g = g.clone();
            g.sort();
            g
        })
        .collect();
    want.sort();
    let mut got = groups.clone();
    got.sort();
    assert_eq!(got, want, "groups: {r:#}");
    // Scores: the first member 1, the others their cosine to it, high.
    for grp in r["groups"].as_array().unwrap() {
        let images = grp["images"].as_array().unwrap();
        assert_eq!(images[0]["score"], 1.0);
        assert!(images
            .iter()
            .all(|m| m["score"].as_f64().unwrap() >= r["threshold"].as_f64().unwrap()));
        assert!(images.iter().all(|m| m["id"].as_i64().is_some()));
    }
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("data:image/jpeg;base64,").count(), 12, "one thumbnail per member");

    // A threshold above every pair leaves nothing; the server gives the CLI's groups.
    let mut c = irtdb();
    c.args(["dups", "--json", "--threshold", "1.0001", "--db"]).arg(&g.db);
    let out = run_expect(&mut c, 2);
    assert!(stderr(&out).contains("between -1 and 1"), "{}", stderr(&out));
    let server = Server::start(&g.db, &[]);
    let api = server.get("/api/duplicates").json();
    assert_eq!(api["groups"], r["groups"]);
    let strict = server.get("/api/duplicates?threshold=0.99999").json();
    assert!(strict["groups"].as_array().unwrap().len() <= 3);
}
