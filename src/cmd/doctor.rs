//! `irtdb doctor`: what irtdb finds where, and for anything missing the command that fixes it.

use anyhow::Result;
use irtdb_plugin_api::host;
use serde::Serialize;

/// Check the installation: the binary, its plugins, ONNX Runtime, the Hugging Face cache.
///
/// Each line says what was found where; anything missing comes with the command that fixes it.
/// Exits with status 2 when something `irtdb index` and `irtdb query` need is missing.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Check {
    what: &'static str,
    ok: bool,
    /// Needed by index and query (false: optional, e.g. training).
    required: bool,
    found: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    let mut checks = vec![on_path()];
    plugins(&mut checks);
    checks.push(image_formats());
    checks.push(jpeg_decoder());
    checks.push(cpu());
    hub(&mut checks);
    let broken = checks.iter().filter(|c| c.required && !c.ok).count();
    if args.json {
        super::print_json(&serde_json::json!({ "ok": broken == 0, "checks": checks }))?;
    } else {
        for c in &checks {
            let mark = if c.ok {
                "ok  "
            } else if c.required {
                "FAIL"
            } else {
                "--  "
            };
            println!("{mark} {:<20} {}", c.what, c.found);
            if let Some(f) = &c.fix {
                println!("     {:<20} fix: {f}", "");
            }
        }
    }
    if broken > 0 {
        anyhow::bail!(
            "{broken} thing{} that index and query need {} missing (see the fixes above)",
            if broken == 1 { "" } else { "s" },
            if broken == 1 { "is" } else { "are" }
        );
    }
    Ok(())
}

/// The binary on PATH.
fn on_path() -> Check {
    let exe = std::env::current_exe().ok();
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("irtdb")).find(|c| c.is_file()))
        .unwrap_or_default();
    Check {
        what: "irtdb on PATH",
        ok: on_path.is_some(),
        required: false,
        found: match (&on_path, &exe) {
            (Some(p), _) => p.display().to_string(),
            (None, Some(e)) => format!("not on PATH (this is {})", e.display()),
            (None, None) => "not on PATH".into(),
        },
        fix: on_path.is_none().then(|| {
            "scripts/install.sh (installs into ~/.local; add ~/.local/bin to PATH)".into()
        }),
    }
}

/// The plugins the host discovers (and, for the ort plugin, the ONNX Runtime it loaded).
fn plugins(checks: &mut Vec<Check>) {
    let found = host::discover();
    let plugin = |name: &str| {
        found.iter().find_map(|(path, r)| match r {
            Ok(p) if p.name() == name => Some((path.clone(), Ok(p))),
            Err(e) if path.to_string_lossy().contains(&host::library_file_name(name)) => {
                Some((path.clone(), Err(e.to_string())))
            }
            _ => None,
        })
    };
    let searched =
        host::search_dirs().iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ");
    for (name, required, fix) in [
        ("ort-tensorrt", true, "scripts/install.sh"),
        ("tch-cuda", false, "scripts/install.sh --with-tch (only `irtdb train` needs it)"),
    ] {
        let what = if required { "plugin ort-tensorrt" } else { "plugin tch-cuda" };
        match plugin(name) {
            Some((path, Ok(p))) => {
                checks.push(Check {
                    what,
                    ok: true,
                    required,
                    found: format!("{} {} at {}", p.name(), p.version(), path.display()),
                    fix: None,
                });
                if name == "ort-tensorrt" {
                    let notes = &p.description().notes;
                    let loaded = notes.iter().find(|n| n.starts_with("ONNX Runtime loaded from"));
                    checks.push(Check {
                        what: "ONNX Runtime",
                        ok: loaded.is_some(),
                        required: true,
                        found: loaded.cloned().unwrap_or_else(|| notes.join("; ")),
                        fix: loaded.is_none().then(|| {
                            format!(
                                "scripts/install.sh (puts ONNX Runtime's library beside the \
                                 plugin), or set ORT_DYLIB_PATH to it; {} was searched",
                                path.parent().map(|d| d.display().to_string()).unwrap_or_default()
                            )
                        }),
                    });
                    // Where CPU sessions keep their optimised graphs (the plugin says).
                    if let Some(cache) =
                        notes.iter().find_map(|n| n.strip_prefix("optimised-model cache: "))
                    {
                        checks.push(Check {
                            what: "model cache",
                            ok: true,
                            required: false,
                            found: cache.to_string(),
                            fix: None,
                        });
                    }
                }
            }
            Some((path, Err(e))) => checks.push(Check {
                what,
                ok: false,
                required,
                found: format!("{} is unusable: {e}", path.display()),
                fix: Some(fix.into()),
            }),
            None => checks.push(Check {
                what,
                ok: false,
                required,
                found: format!("not found (searched {searched})"),
                fix: Some(fix.into()),
            }),
        }
    }
}

/// The decodable image formats (HEIC/AVIF through libheif when installed).
fn image_formats() -> Check {
    let heif = irtdb_image::heif::libheif_version();
    Check {
        what: "image formats",
        ok: heif.is_ok(),
        required: false,
        found: match &heif {
            Ok(v) => format!("JPEG, PNG, WebP, BMP, TIFF, GIF; HEIC/HEIF and AVIF via libheif {v}"),
            Err(why) => format!("JPEG, PNG, WebP, BMP, TIFF, GIF; no HEIC/AVIF ({why})"),
        },
        fix: heif.is_err().then(|| irtdb_image::heif::INSTALL_HINT.to_string()),
    }
}

/// The JPEG decoder of large photos (libjpeg-turbo's scaled decoding when installed).
fn jpeg_decoder() -> Check {
    let turbo = irtdb_image::turbo::library();
    Check {
        what: "JPEG decoding",
        ok: turbo.is_ok(),
        required: false,
        found: match &turbo {
            Ok(lib) => format!("libjpeg-turbo ({lib}): large photos decoded at 1/2, 1/4 or 1/8"),
            Err(why) => {
                format!("jpeg-decoder at 1/4 or 1/8 (about 1.5x slower on 12 MP photos): {why}")
            }
        },
        fix: turbo.is_err().then(|| irtdb_image::turbo::INSTALL_HINT.to_string()),
    }
}

/// What this CPU offers the forward: the instructions that make `--precision int8` (VNNI) and
/// `--precision bf16` (AVX512-BF16) pay, and the threads.
fn cpu() -> Check {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    #[cfg(target_arch = "x86_64")]
    let (vnni, bf16) = (
        is_x86_feature_detected!("avx512vnni") || is_x86_feature_detected!("avxvnni"),
        is_x86_feature_detected!("avx512bf16"),
    );
    #[cfg(not(target_arch = "x86_64"))]
    let (vnni, bf16) = (false, false);
    let int8 = if vnni {
        "int8 fast (VNNI: --precision int8, ~2x fp32)"
    } else {
        "no VNNI (--precision int8 gains less)"
    };
    let b16 = if bf16 {
        "bf16 fast (AVX512-BF16: --plugin tch-cuda --precision bf16, ~1.7x fp32)"
    } else {
        "no AVX512-BF16 (bf16 would be slower than fp32)"
    };
    Check {
        what: "CPU",
        ok: true,
        required: false,
        found: format!("{threads} threads; {int8}; {b16}"),
        fix: None,
    }
}

/// The Hugging Face cache and whether the default model is in it.
fn hub(checks: &mut Vec<Check>) {
    let client = irtdb_hub::Client::from_env();
    let cache = client.cache().root().to_path_buf();
    let cache_ok = writable(&cache);
    checks.push(Check {
        what: "Hugging Face cache",
        ok: cache_ok,
        required: true,
        found: format!(
            "{} ({}); hub {}{}{}",
            cache.display(),
            if cache_ok { "writable" } else { "not writable" },
            client.endpoint(),
            if client.offline() { ", HF_HUB_OFFLINE: cache only" } else { "" },
            if client.has_token() { ", token set" } else { "" },
        ),
        fix: (!cache_ok)
            .then(|| "set HF_HUB_CACHE (or HF_HOME) to a folder you can write".to_string()),
    });
    let default = irtdb_engine::model::DEFAULT_MODEL;
    let cached = client.cache().has_model(default);
    checks.push(Check {
        what: "default model",
        ok: cached,
        required: false,
        found: format!("{default} {}", if cached { "is cached" } else { "is not cached yet" }),
        fix: (!cached).then(|| {
            format!(
                "nothing to do: the first `irtdb index DIR` fetches it (88 MB); or `irtdb model \
                 fetch {default}` now"
            )
        }),
    });
}

/// Whether a file can be created in `dir` (made if missing).
fn writable(dir: &std::path::Path) -> bool {
    let probe = dir.join(format!(".irtdb-doctor-{}", std::process::id()));
    std::fs::create_dir_all(dir).is_ok()
        && std::fs::write(&probe, b"").is_ok()
        && std::fs::remove_file(&probe).is_ok()
}
