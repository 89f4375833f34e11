//! Folder scanning and content hashing.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::Path;

use irtdb_image::{
    content_hash, has_image_extension, scan, scan_filtered, shard_of, Error, ScanOptions,
    IMAGE_EXTENSIONS,
};

use crate::util::write;

fn gallery(root: &Path) {
    write(root, "top.jpg", b"1");
    write(root, "cats/1.png", b"22");
    write(root, "cats/2.JPG", b"333");
    write(root, "cats/readme.md", b"not an image");
    write(root, "dogs/puppies/3.webp", b"4444");
    write(root, "dogs/4.TiFf", b"55555");
    write(root, "notes.txt", b"x");
    write(root, "archive.jpg.zip", b"x");
    write(root, ".hidden/5.jpg", b"x");
    write(root, "cats/._2.JPG", b"x");
}

fn rel_paths(files: &[irtdb_image::ScannedFile]) -> Vec<&str> {
    files.iter().map(|f| f.rel_path.as_str()).collect()
}

#[test]
fn finds_images_with_labels_in_sorted_order() {
    let dir = tempfile::tempdir().unwrap();
    gallery(dir.path());
    let result = scan(dir.path(), &ScanOptions::default());
    assert_eq!(result.problems, vec![]);
    assert_eq!(
        rel_paths(&result.files),
        ["cats/1.png", "cats/2.JPG", "dogs/4.TiFf", "dogs/puppies/3.webp", "top.jpg"]
    );
    let labels: Vec<Option<&str>> = result.files.iter().map(|f| f.label.as_deref()).collect();
    assert_eq!(labels, [Some("cats"), Some("cats"), Some("dogs"), Some("dogs/puppies"), None]);
    let sizes: Vec<u64> = result.files.iter().map(|f| f.size).collect();
    assert_eq!(sizes, [2, 3, 5, 4, 1]);
    for f in &result.files {
        assert!(f.abs_path.is_absolute() && f.abs_path.is_file(), "{:?}", f.abs_path);
        assert!(f.mtime_ns > 1_500_000_000_000_000_000, "{} mtime {}", f.rel_path, f.mtime_ns);
    }
    assert_eq!(result, scan(dir.path(), &ScanOptions::default()), "deterministic");

    let all = scan(dir.path(), &ScanOptions { include_hidden: true, ..ScanOptions::default() });
    assert_eq!(all.files.len(), 7);
    assert!(rel_paths(&all.files).contains(&".hidden/5.jpg"));
}

#[test]
fn relative_root_gives_absolute_paths() {
    let dir = tempfile::tempdir().unwrap();
    gallery(dir.path());
    let cwd = std::env::current_dir().unwrap();
    let relative = pathdiff(dir.path(), &cwd);
    let result = scan(&relative, &ScanOptions::default());
    assert_eq!(result.files.len(), 5);
    assert!(result.files.iter().all(|f| f.abs_path.is_absolute() && f.abs_path.is_file()));
}

/// `target` relative to `base` with `..` steps (both absolute).
fn pathdiff(target: &Path, base: &Path) -> std::path::PathBuf {
    let mut out = std::path::PathBuf::new();
    for _ in base.components().skip(1) {
        out.push("..");
    }
    out.join(target.strip_prefix("/").unwrap())
}

#[test]
fn symlink_loops_terminate() {
    let dir = tempfile::tempdir().unwrap();
    gallery(dir.path());
    symlink(dir.path(), dir.path().join("cats/loop")).unwrap();
    symlink(dir.path().join("dogs"), dir.path().join("cats/loop.jpg")).unwrap();

    let result = scan(dir.path(), &ScanOptions::default());
    assert_eq!(result.files.len(), 5, "links to folders are not descended by default");
    assert_eq!(result.problems, vec![]);

    let followed = scan(dir.path(), &ScanOptions { follow_links: true, ..ScanOptions::default() });
    assert!(!followed.problems.is_empty(), "the loop is reported");
    assert!(followed.problems.iter().any(|(_, m)| m.contains("loop")), "{:?}", followed.problems);
    // cats/loop.jpg → dogs is a folder once followed: its files appear under that name too.
    assert!(rel_paths(&followed.files).contains(&"cats/loop.jpg/4.TiFf"));
}

#[test]
fn file_links_are_listed_and_broken_links_reported() {
    let dir = tempfile::tempdir().unwrap();
    gallery(dir.path());
    symlink(dir.path().join("top.jpg"), dir.path().join("alias.jpg")).unwrap();
    symlink(dir.path().join("gone.jpg"), dir.path().join("broken.jpg")).unwrap();
    let result = scan(dir.path(), &ScanOptions::default());
    let alias = result.files.iter().find(|f| f.rel_path == "alias.jpg").expect("link listed");
    assert_eq!(alias.size, 1);
    assert_eq!(result.problems.len(), 1);
    assert!(result.problems[0].0.ends_with("broken.jpg"));
    assert!(result.problems[0].1.contains("broken symbolic link"));
}

#[test]
fn non_utf8_names_are_listed_lossily_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let name = std::ffi::OsStr::from_bytes(b"bad\xffname.jpg");
    std::fs::write(dir.path().join(name), b"x").unwrap();
    let result = scan(dir.path(), &ScanOptions::default());
    assert_eq!(rel_paths(&result.files), ["bad\u{fffd}name.jpg"]);
    assert!(result.files[0].abs_path.is_file(), "abs_path keeps the real name");
    assert_eq!(result.problems.len(), 1);
    assert!(result.problems[0].1.contains("UTF-8"));
}

#[test]
fn non_utf8_names_that_convert_alike_are_listed_once() {
    // Found by tests/it/reliability.rs: both were stored under one row that flip-flopped
    // between the two files on every run.
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [(&b"tw\xffin.jpg"[..], &b"second"[..]), (b"tw\xfein.jpg", b"first")] {
        std::fs::write(dir.path().join(std::ffi::OsStr::from_bytes(name)), content).unwrap();
    }
    for _ in 0..2 {
        let result = scan(dir.path(), &ScanOptions::default());
        assert_eq!(rel_paths(&result.files), ["tw\u{fffd}in.jpg"]);
        assert_eq!(
            std::fs::read(&result.files[0].abs_path).unwrap(),
            b"first",
            "byte order decides"
        );
        let twin = result
            .problems
            .iter()
            .find(|(p, _)| p.ends_with(std::ffi::OsStr::from_bytes(b"tw\xffin.jpg")));
        assert!(twin.is_some_and(|(_, m)| m.contains("not indexed")), "{:?}", result.problems);
    }
}

#[test]
fn missing_root_and_unreadable_folders_are_problems() {
    let result = scan(Path::new("/nonexistent/irtdb-gallery"), &ScanOptions::default());
    assert!(result.files.is_empty());
    assert_eq!(result.problems.len(), 1);
    assert!(result.problems[0].1.starts_with("cannot read"), "{:?}", result.problems);

    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    gallery(dir.path());
    let locked = dir.path().join("dogs");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let enforced = std::fs::read_dir(&locked).is_err(); // root ignores permissions
    let result = scan(dir.path(), &ScanOptions::default());
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    if enforced {
        assert_eq!(rel_paths(&result.files), ["cats/1.png", "cats/2.JPG", "top.jpg"]);
        assert_eq!(result.problems.len(), 1);
        assert_eq!(result.problems[0].0, locked);
    } else {
        assert_eq!(result.files.len(), 5);
    }
}

#[test]
fn a_file_as_root_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "one.png", b"abc");
    let result = scan(&path, &ScanOptions::default());
    assert_eq!(rel_paths(&result.files), ["one.png"]);
    assert_eq!(result.files[0].abs_path, path);
    assert_eq!(result.files[0].label, None);
}

#[test]
fn extensions() {
    assert_eq!(
        IMAGE_EXTENSIONS,
        ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif", "heic", "heif", "hif", "avif"]
    );
    assert!(has_image_extension(Path::new("IMG_0001.HEIC")));
    assert!(has_image_extension(Path::new("a/B.JPEG")));
    assert!(!has_image_extension(Path::new("a/jpg")));
    assert!(!has_image_extension(Path::new("a/b.jpg.txt")));
}

#[test]
fn content_hash_is_blake3_of_the_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "abc.jpg", b"abc");
    // BLAKE3("abc"), from the reference test vectors.
    assert_eq!(
        content_hash(&path).unwrap(),
        "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
    );
    let big = write(dir.path(), "big.bin", &vec![7u8; 3 << 20]);
    assert_eq!(content_hash(&big).unwrap().len(), 64);
    let missing = dir.path().join("missing.jpg");
    let err = content_hash(&missing).unwrap_err();
    assert!(matches!(err, Error::Io { .. }) && err.path() == missing, "{err:?}");
}

#[test]
fn a_filtered_scan_is_the_scan_of_the_files_it_keeps() {
    let dir = tempfile::tempdir().unwrap();
    gallery(dir.path());
    for i in 0..20 {
        write(dir.path(), &format!("many/{i:02}.jpg"), b"x");
    }
    write(dir.path(), "odd/\u{e9}t\u{e9}.jpg", b"x");
    let full = scan(dir.path(), &ScanOptions::default());
    let mut union = Vec::new();
    for i in 0..3 {
        let asked = std::sync::Mutex::new(Vec::new());
        let keep = |rel: &str| {
            asked.lock().unwrap().push(rel.to_string());
            shard_of(rel, 3) == i
        };
        let part = scan_filtered(dir.path(), &ScanOptions::default(), &keep, &|_| {});
        let expected: Vec<_> =
            full.files.iter().filter(|f| shard_of(&f.rel_path, 3) == i).cloned().collect();
        assert_eq!(part.files, expected, "shard {i}");
        assert_eq!(part.problems, full.problems);
        // Asked about image files only, by the names the scan lists them under.
        let mut asked = asked.into_inner().unwrap();
        asked.sort();
        assert_eq!(asked, rel_paths(&full.files));
        union.extend(part.files);
    }
    union.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
    assert_eq!(union, full.files, "the shards partition the folder");
}
