//! The plugin ABI seen from the command line: discovery, drop-in plugins, every error path.

use std::path::{Path, PathBuf};

use crate::util::*;

/// A folder holding only the stand-alone fixture plugin, as `libirtdb_plugin_fixture.so`.
fn fixture_dir() -> PathBuf {
    let lib = compile_fixture("fixture_plugin", "fixture");
    lib.parent().unwrap().to_path_buf()
}

/// A 64×64 PNG made of four solid quadrants, and the colours (TL, TR, BL, BR).
fn quadrant_png(dir: &Path) -> (PathBuf, [[u8; 3]; 4]) {
    let colours = [[200, 10, 10], [10, 200, 10], [10, 10, 200], [250, 250, 0]];
    let p = dir.join("quadrants.png");
    write_image(&p, 64, 64, |x, y| colours[(y / 32 * 2 + x / 32) as usize]);
    (p, colours)
}

fn embed_with_fixture(dir: &Path, pooling: &str, env: &[(&str, &str)]) -> std::process::Output {
    let (img, _) = quadrant_png(dir);
    let mut c = irtdb();
    c.env("IRTDB_PLUGIN_PATH", fixture_dir())
        .args(["embed", "--plugin", "fixture", "--json", "--pooling", pooling, "--model"])
        .arg(&img) // the fixture needs no weights; any existing file will do
        .arg(&img);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn normalise(v: [f32; 3]) -> [f32; 3] {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.map(|x| x / n)
}

#[test]
fn drop_in_plugin_beside_a_copied_binary_is_offered_and_used() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(bin.join("plugins")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_irtdb"), bin.join("irtdb")).unwrap();
    std::fs::copy(
        compile_fixture("fixture_plugin", "fixture"),
        bin.join("plugins/libirtdb_plugin_fixture.so"),
    )
    .unwrap();

    let out = run_expect(irtdb_at(&bin.join("irtdb")).args(["plugins", "--json"]), 0);
    let j = json(&out);
    let fixture = j["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "fixture")
        .unwrap_or_else(|| panic!("fixture not listed: {j:#}"));
    assert_eq!(fixture["abi"], 1);
    assert_eq!(fixture["capabilities"], serde_json::json!(["infer"]));
    assert_eq!(fixture["backbones"], serde_json::json!(["quadrant-means"]));

    // And it is used: max pooling over the four quadrant tokens, checked by hand. The fixture's
    // preprocessing is size 64, crop 1.0, mean = std = 0.5, so a channel value v maps to
    // (v/255 - 0.5)/0.5.
    let (img, colours) = quadrant_png(tmp.path());
    let out = run_expect(
        irtdb_at(&bin.join("irtdb"))
            .args(["embed", "--plugin", "fixture", "--pooling", "max", "--json", "--model"])
            .arg(&img)
            .arg(&img),
        0,
    );
    let got: Vec<f32> =
        serde_json::from_value(json(&out)["images"][0]["descriptor"].clone()).unwrap();
    let norm = |v: u8| (v as f32 / 255.0 - 0.5) / 0.5;
    let max = [0, 1, 2].map(|c| colours.iter().map(|q| norm(q[c])).fold(f32::MIN, f32::max));
    let want = normalise(max);
    for c in 0..3 {
        assert!((got[c] - want[c]).abs() < 1e-4, "got {got:?}, want {want:?}");
    }
}

#[test]
fn cls_and_mean_pooling_of_the_fixture_match_hand_computation() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, colours) = quadrant_png(tmp.path());
    let norm = |v: u8| (v as f32 / 255.0 - 0.5) / 0.5;
    let mean = [0, 1, 2].map(|c| colours.iter().map(|q| norm(q[c])).sum::<f32>() / 4.0);
    let want = normalise(mean);
    for pooling in ["cls", "mean"] {
        let out = embed_with_fixture(tmp.path(), pooling, &[]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let got: Vec<f32> =
            serde_json::from_value(json(&out)["images"][0]["descriptor"].clone()).unwrap();
        for c in 0..3 {
            assert!((got[c] - want[c]).abs() < 1e-4, "{pooling}: got {got:?}, want {want:?}");
        }
    }
}

#[test]
fn entry_point_failures_are_clear_errors_not_aborts() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("abi99", "speaks irtdb plugin ABI 99, this irtdb speaks ABI 1"),
        ("small", "function table of 16 bytes"),
        ("panic", "failed to initialise"),
        ("null", "failed to initialise"),
    ];
    for (entry, expected) in cases {
        let out = embed_with_fixture(tmp.path(), "cls", &[("IRTDB_FIXTURE_ENTRY", entry)]);
        assert_eq!(out.status.code(), Some(2), "{entry}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(expected), "{entry}: expected '{expected}' in:\n{err}");
        assert!(err.contains("libirtdb_plugin_fixture.so"), "{entry}: path missing in:\n{err}");
    }
}

#[test]
fn backbone_failures_are_clear_errors_not_aborts() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("panic-create", "panicked in backbone_create"),
        ("error-create", "refuses to create a backbone"),
        ("panic-forward", "panicked in backbone_forward"),
        ("nan", "non-finite value NaN"),
        ("wrong-shape", "does not match the declared output"),
        ("zero", "zero or non-finite vector"),
        ("null-handle", "returned a null handle"),
        ("bad-info", "invalid info JSON"),
        ("null-output", "invalid tensor (ndim 3, data null: true)"),
        ("huge-ndim", "invalid tensor (ndim 1000"),
        ("overflow-shape", "has more values than can exist"),
    ];
    for (mode, expected) in cases {
        let out = embed_with_fixture(tmp.path(), "cls", &[("IRTDB_FIXTURE_MODE", mode)]);
        assert_eq!(out.status.code(), Some(2), "{mode}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(expected), "{mode}: expected '{expected}' in:\n{err}");
    }
}

#[test]
fn missing_symbol_and_non_library_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let no_entry = compile_fixture("no_entry", "noentry");
    let out = run_expect(
        irtdb()
            .args(["embed", "--plugin"])
            .arg(&no_entry)
            .arg("--model")
            .arg(&no_entry)
            .arg(&no_entry),
        2,
    );
    let err = stderr(&out);
    assert!(err.contains("does not export `irtdb_plugin_entry`"), "{err}");
    assert!(err.contains("libirtdb_plugin_noentry.so"), "{err}");

    let text = tmp.path().join("libirtdb_plugin_text.so");
    std::fs::write(&text, "this is not a shared library").unwrap();
    let out = run_expect(
        irtdb().args(["embed", "--plugin"]).arg(&text).arg("--model").arg(&text).arg(&text),
        2,
    );
    let err = stderr(&out);
    assert!(err.contains("cannot load") && err.contains("libirtdb_plugin_text.so"), "{err}");

    // `irtdb plugins` lists a broken library as unusable and carries on.
    std::fs::copy(&no_entry, tmp.path().join("libirtdb_plugin_noentry.so")).unwrap();
    let out =
        run_expect(irtdb().env("IRTDB_PLUGIN_PATH", tmp.path()).args(["plugins", "--json"]), 0);
    let j = json(&out);
    let errors: Vec<String> = j["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["error"].as_str().map(String::from))
        .collect();
    assert!(errors.iter().any(|e| e.contains("does not export")), "{j:#}");
    assert!(errors.iter().any(|e| e.contains("cannot load")), "{j:#}");
}

#[test]
fn unknown_plugin_name_lists_every_place_searched() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_expect(
        irtdb()
            .env("IRTDB_PLUGIN_PATH", tmp.path())
            .args(["embed", "--plugin", "nonesuch", "--model", "Cargo.toml", "x.png"])
            .current_dir(root()),
        2,
    );
    let err = stderr(&out);
    assert!(err.contains("no plugin named 'nonesuch'"), "{err}");
    assert!(err.contains("libirtdb_plugin_nonesuch.so"), "{err}");
    assert!(err.contains(&tmp.path().display().to_string()), "{err}");
    assert!(err.contains("plugins"), "{err}");
}
