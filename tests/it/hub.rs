//! Models by name from the hub: `hf-hub:` references, the Hugging Face cache shared with
//! Python, resumable verified downloads, offline use, the default model, and an installed irtdb
//! in a clean environment. All against the loopback stand-in of `hubstand.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::hubstand::{git_blob_id, sha256_hex, Hub};
use crate::util::{irtdb, json, run_expect, stderr, write_picture};

const DEFAULT_REPO: &str = "timm/deit_small_patch16_224.fb_in1k";

/// A tiny ViT in timm's hub format: `config.json` (architecture, `model_args`,
/// `pretrained_cfg`) and `model.safetensors` with the classifier head.
fn timm_repo_files(seed: u64) -> Vec<(&'static str, Vec<u8>)> {
    let cfg = irtdb_onnx::testing::deit_config("vit_micro").unwrap();
    let tensors = irtdb_onnx::testing::random_vit(&cfg, seed);
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("model.safetensors");
    irtdb_onnx::testing::save_safetensors(&w, &tensors).unwrap();
    let config = serde_json::json!({
        "architecture": "vit_micro_patch8_32",
        "num_classes": 10,
        "num_features": cfg.dim,
        "global_pool": "token",
        "model_args": {"num_heads": cfg.heads, "img_size": 32},
        "pretrained_cfg": {
            "tag": "test", "input_size": [3, 32, 32], "interpolation": "bicubic",
            "crop_pct": 0.875, "crop_mode": "center",
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            "num_classes": 10, "pool_size": null, "first_conv": "patch_embed.proj",
            "classifier": "head"
        }
    });
    vec![
        ("config.json", serde_json::to_vec_pretty(&config).unwrap()),
        ("model.safetensors", std::fs::read(&w).unwrap()),
        ("README.md", b"---\nlicense: apache-2.0\n---\n# a test model\n".to_vec()),
    ]
}

/// A test's own environment: a hub stand-in, a cold cache, a gallery.
struct Env {
    hub: Hub,
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let hub = Hub::start();
        let dir = tempfile::tempdir().unwrap();
        let gallery = dir.path().join("gallery");
        std::fs::create_dir_all(&gallery).unwrap();
        for i in 0..4 {
            write_picture(&gallery.join(format!("p{i}.png")), 48, 40, i);
        }
        Self { hub, dir }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn cache(&self) -> PathBuf {
        self.path("hf-cache")
    }
    fn irtdb(&self) -> Command {
        let mut c = irtdb();
        c.env("HF_ENDPOINT", &self.hub.url)
            .env("HF_HUB_CACHE", self.cache())
            .current_dir(self.dir.path());
        c
    }
    fn repo_dir(&self, repo: &str) -> PathBuf {
        self.cache().join(format!("models--{}", repo.replace('/', "--")))
    }
    fn blobs(&self, repo: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.repo_dir(repo).join("blobs"))
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

fn weights_of(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    files.iter().find(|(n, _)| *n == "model.safetensors").unwrap().1.clone()
}

/// The descriptor JSON of one image through `irtdb embed`.
fn embed(cmd: &mut Command, model: &str, image: &Path) -> Vec<f64> {
    let out = run_expect(cmd.args(["embed", "--json", "--model", model]).arg(image), 0);
    let v = json(&out);
    v["images"][0]["descriptor"]
        .as_array()
        .unwrap_or_else(|| panic!("no descriptor in {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn default_model_is_fetched_once_into_the_standard_cache_and_used_offline() {
    let env = Env::new();
    let files = timm_repo_files(11);
    let commit = env.hub.put_repo(DEFAULT_REPO, files.clone(), None);
    let weights = weights_of(&files);
    let sha = sha256_hex(&weights);

    // `irtdb index ./gallery` as typed: no --model.
    let out = run_expect(env.irtdb().args(["index", "./gallery"]), 0);
    let err = stderr(&out);
    assert!(err.contains("hf-hub:timm/deit_small_patch16_224.fb_in1k"), "{err}");
    assert!(err.contains("default model"), "{err}");
    assert!(env.path("irtdb.db").is_file());

    // huggingface_hub's layout: blobs named by sha256 / git blob id, snapshot links, refs/main.
    let repo = env.repo_dir(DEFAULT_REPO);
    assert_eq!(std::fs::read_to_string(repo.join("refs/main")).unwrap(), commit);
    let snap = repo.join("snapshots").join(&commit);
    assert_eq!(
        std::fs::read_link(snap.join("model.safetensors")).unwrap(),
        Path::new("../../blobs").join(&sha)
    );
    assert_eq!(std::fs::read(snap.join("model.safetensors")).unwrap(), weights);
    let config = &files[0].1;
    assert_eq!(std::fs::read(repo.join("blobs").join(git_blob_id(config))).unwrap(), *config);
    let mut want = vec![sha.clone(), git_blob_id(config)];
    want.sort();
    assert_eq!(env.blobs(DEFAULT_REPO), want, "only config.json and the weights are fetched");
    assert_eq!(env.hub.cdn_gets().len(), 1);

    // The collection records the exact commit; later runs need no network at all.
    let info = json(&run_expect(env.irtdb().args(["info", "--json"]), 0));
    assert!(info.to_string().contains(&commit), "{info}");
    write_picture(&env.path("gallery/p9.png"), 48, 40, 9);
    let offline = |c: &mut Command| {
        c.env("HF_HUB_OFFLINE", "1").env("HF_ENDPOINT", "http://127.0.0.1:9");
    };
    let mut c = env.irtdb();
    offline(&mut c);
    let out = run_expect(c.args(["index", "./gallery", "--json"]), 0);
    assert_eq!(json(&out)["added"], 1, "{}", stderr(&out));
    let mut c = env.irtdb();
    offline(&mut c);
    let hits = json(&run_expect(c.args(["query", "gallery/p9.png", "--k", "2", "--json"]), 0));
    assert!(hits.to_string().contains("p9.png"), "{hits}");

    // Online again: `model fetch` revalidates with HEAD requests only.
    run_expect(env.irtdb().args(["model", "fetch", "--json"]), 0);
    assert_eq!(env.hub.cdn_gets().len(), 1, "a second run downloads nothing");

    // The weights are the hub's: the same descriptors as the same file given by path.
    let local = env.path("local");
    std::fs::create_dir_all(&local).unwrap();
    std::fs::write(local.join("model.safetensors"), &weights).unwrap();
    std::fs::write(local.join("config.json"), config).unwrap();
    let img = env.path("gallery/p1.png");
    let a = embed(&mut env.irtdb(), &format!("hf-hub:{DEFAULT_REPO}"), &img);
    let b = embed(&mut env.irtdb(), local.join("model.safetensors").to_str().unwrap(), &img);
    assert_eq!(a, b);

    // If the cache loses the weights, a query that must embed says what to do.
    std::fs::remove_dir_all(env.cache()).unwrap();
    write_picture(&env.path("outside.png"), 48, 40, 21);
    let mut c = env.irtdb();
    offline(&mut c);
    let out = run_expect(c.args(["query", "outside.png"]), 2);
    let err = stderr(&out);
    assert!(err.contains("no longer in the Hugging Face cache"), "{err}");
    assert!(err.contains(&format!("irtdb model fetch hf-hub:{DEFAULT_REPO}@{commit}")), "{err}");
}

#[test]
fn a_cut_transfer_resumes_and_a_corrupt_one_is_refused() {
    let env = Env::new();
    let files = timm_repo_files(12);
    env.hub.put_repo("org/cut", files.clone(), None);
    let weights = weights_of(&files);
    let sha = sha256_hex(&weights);
    let half = weights.len() / 2;
    env.hub.state.lock().unwrap().cut_after.insert(sha.clone(), half);
    let out = run_expect(env.irtdb().args(["model", "fetch", "hf-hub:org/cut", "--json"]), 0);
    let v = json(&out);
    assert_eq!(std::fs::read(v["weights"].as_str().unwrap()).unwrap(), weights);
    let gets = env.hub.cdn_gets();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].1, None);
    assert_eq!(gets[1].1.as_deref(), Some(format!("bytes={half}-").as_str()), "resumed with Range");

    // Corrupt bytes: refused, nothing usable left behind; a later clean download works.
    env.hub.put_repo("org/bad", timm_repo_files(13), None);
    let bad_sha = sha256_hex(&weights_of(&timm_repo_files(13)));
    env.hub.state.lock().unwrap().corrupt.insert(bad_sha.clone());
    let out = run_expect(env.irtdb().args(["model", "fetch", "hf-hub:org/bad"]), 2);
    let err = stderr(&out);
    assert!(err.contains("corrupt") && err.contains(&bad_sha), "{err}");
    let repo = env.repo_dir("org/bad");
    let snaps: Vec<_> = walk(&repo.join("snapshots"))
        .into_iter()
        .filter(|p| p.ends_with("model.safetensors"))
        .collect();
    assert!(snaps.is_empty(), "{snaps:?}");
    assert!(!repo.join("blobs").join(&bad_sha).exists());
    assert!(!repo.join("blobs").join(format!("{bad_sha}.incomplete")).exists());
    env.hub.state.lock().unwrap().corrupt.clear();
    run_expect(env.irtdb().args(["model", "fetch", "hf-hub:org/bad"]), 0);
    assert!(repo.join("blobs").join(&bad_sha).is_file());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn unknown_names_gated_repos_and_offline_caches_get_clear_errors() {
    let env = Env::new();
    env.hub.put_repo("org/open", timm_repo_files(14), None);
    env.hub.put_repo("org/gated", timm_repo_files(15), Some("hf_secret"));
    let fetch = |args: &[&str], code| {
        stderr(&run_expect(env.irtdb().args(["model", "fetch"]).args(args), code))
    };

    let e = fetch(&["hf-hub:org/nope"], 2);
    assert!(e.contains("org/nope") && e.contains("no model repository"), "{e}");
    let e = fetch(&["hf-hub:org/open@v9"], 2);
    assert!(e.contains("no revision 'v9'"), "{e}");
    let e = stderr(&run_expect(
        env.irtdb()
            .args(["embed", "--model", "hf-hub:org/open@main", "x.png"])
            .env("HF_HUB_OFFLINE", "1"),
        2,
    ));
    assert!(e.contains("HF_HUB_OFFLINE") && e.contains("not in the Hugging Face cache"), "{e}");
    let e = fetch(&["not-a-ref"], 2);
    assert!(e.contains("hf-hub:ORG/NAME"), "{e}");
    let e = fetch(&["hf-hub:org/gated"], 2);
    assert!(e.contains("gated") && e.contains("HF_TOKEN"), "{e}");
    let e = stderr(&run_expect(
        env.irtdb().args(["model", "fetch", "hf-hub:org/gated"]).env("HF_TOKEN", "hf_wrong"),
        2,
    ));
    assert!(e.contains("no access"), "{e}");
    run_expect(
        env.irtdb().args(["model", "fetch", "hf-hub:org/gated"]).env("HF_TOKEN", "hf_secret"),
        0,
    );

    // A repository without usable weights names the files it looked for.
    env.hub.put_repo(
        "org/binonly",
        vec![("config.json", b"{}".to_vec()), ("pytorch_model.bin", b"x".to_vec())],
        None,
    );
    let e = fetch(&["hf-hub:org/binonly"], 2);
    assert!(e.contains("model.safetensors") && e.contains("pytorch_model.bin"), "{e}");

    // No network and a cold cache; then a warm cache with no network is fine.
    let e = stderr(&run_expect(
        env.irtdb()
            .args(["model", "fetch", "hf-hub:org/open"])
            .env("HF_ENDPOINT", "http://127.0.0.1:9"),
        2,
    ));
    assert!(e.contains("cannot reach") && e.contains("not in the Hugging Face cache"), "{e}");
    run_expect(env.irtdb().args(["model", "fetch", "hf-hub:org/open"]), 0);
    run_expect(
        env.irtdb()
            .args(["model", "fetch", "hf-hub:org/open"])
            .env("HF_ENDPOINT", "http://127.0.0.1:9"),
        0,
    );
    run_expect(
        env.irtdb().args(["model", "fetch", "hf-hub:org/open"]).env("HF_HUB_OFFLINE", "1"),
        0,
    );
}

#[test]
fn two_processes_fetching_the_same_file_download_it_once() {
    let env = Env::new();
    let files = timm_repo_files(16);
    env.hub.put_repo("org/race", files.clone(), None);
    env.hub.state.lock().unwrap().slow = Some(std::time::Duration::from_millis(40));
    let spawn = || {
        env.irtdb()
            .args(["model", "fetch", "hf-hub:org/race", "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(std::fs::read(v["weights"].as_str().unwrap()).unwrap(), weights_of(&files));
    }
    assert_eq!(env.hub.cdn_gets().len(), 1, "{:?}", env.hub.cdn_gets());
}

/// Python's huggingface_hub (from PyPI, in the test venv) against the same stand-in: what it
/// caches irtdb uses offline, and what irtdb caches it finds offline.
#[test]
fn the_cache_is_shared_with_python_huggingface_hub() {
    let Some(python) = crate::util::test_python_with("huggingface_hub") else { return };
    let env = Env::new();
    let files = timm_repo_files(17);
    let commit = env.hub.put_repo("org/py", files.clone(), None);
    let script = r#"
import os, sys
from huggingface_hub import hf_hub_download
for f in ("config.json", "model.safetensors"):
    print(hf_hub_download(sys.argv[1], f))
"#;
    let py = |repo: &str, offline: bool| {
        let mut c = Command::new(&python);
        c.args(["-c", script, repo])
            .env("HF_ENDPOINT", &env.hub.url)
            .env("HF_HUB_CACHE", env.cache())
            .env("HF_HUB_DISABLE_TELEMETRY", "1")
            .env("HF_HUB_DISABLE_XET", "1")
            .env_remove("HF_TOKEN");
        if offline {
            c.env("HF_HUB_OFFLINE", "1");
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    // Python fills the cache; irtdb uses it with no network.
    let printed = py("org/py", false);
    assert!(printed.contains(&commit), "{printed}");
    let gets = env.hub.cdn_gets().len();
    let img = env.path("gallery/p0.png");
    let mut c = env.irtdb();
    c.env("HF_HUB_OFFLINE", "1");
    let a = embed(&mut c, "hf-hub:org/py", &img);
    assert!(!a.is_empty());
    run_expect(env.irtdb().args(["model", "fetch", "hf-hub:org/py"]), 0);
    assert_eq!(env.hub.cdn_gets().len(), gets, "irtdb reused Python's download");

    // irtdb fills the cache; Python finds it offline.
    env.hub.put_repo("org/rs", timm_repo_files(18), None);
    run_expect(env.irtdb().args(["model", "fetch", "hf-hub:org/rs"]), 0);
    let printed = py("org/rs", true);
    let weights = printed.lines().nth(1).unwrap();
    assert_eq!(std::fs::read(weights).unwrap(), weights_of(&timm_repo_files(18)));
}

/// `scripts/install.sh` into a temporary prefix, then the installed irtdb in a shell with no
/// irtdb or ONNX Runtime variables: doctor, index (the default model), query.
#[test]
fn an_installed_irtdb_works_in_a_clean_environment() {
    let env = Env::new();
    env.hub.put_repo(DEFAULT_REPO, timm_repo_files(19), None);
    let prefix = env.path("prefix");
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_irtdb"));
    let target_dir = exe.parent().unwrap().parent().unwrap();
    let profile = exe.parent().unwrap().file_name().unwrap().to_str().unwrap();
    let out = Command::new(crate::util::root().join("scripts/install.sh"))
        .args(["--prefix", prefix.to_str().unwrap(), "--profile", profile, "--no-build"])
        .env("CARGO_TARGET_DIR", target_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install.sh: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let home = env.path("home");
    std::fs::create_dir_all(&home).unwrap();
    let clean = |args: &[&str]| {
        let mut c = Command::new("irtdb");
        c.env_clear()
            .env("HOME", &home)
            .env("PATH", format!("{}:/usr/bin:/bin", prefix.join("bin").display()))
            .env("HF_ENDPOINT", &env.hub.url)
            .current_dir(env.dir.path())
            .args(args);
        c
    };
    let doctor = stdout_of(&run_expect(&mut clean(&["doctor"]), 0));
    assert!(doctor.contains("ONNX Runtime loaded from"), "{doctor}");
    assert!(doctor.contains(&prefix.join("lib/irtdb/plugins").display().to_string()), "{doctor}");
    run_expect(&mut clean(&["plugins"]), 0);
    run_expect(&mut clean(&["index", "./gallery"]), 0);
    // The standard cache under the clean HOME.
    assert!(home
        .join(".cache/huggingface/hub")
        .join(format!("models--{}", DEFAULT_REPO.replace('/', "--")))
        .is_dir());
    let hits = json(&run_expect(&mut clean(&["query", "gallery/p2.png", "--k", "2", "--json"]), 0));
    assert!(hits.to_string().contains("p2.png"), "{hits}");
    let out = Command::new(crate::util::root().join("scripts/install.sh"))
        .args(["--uninstall", "--prefix", prefix.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!prefix.join("bin/irtdb").exists() && !prefix.join("lib/irtdb").exists());
}

fn stdout_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
