//! `irtdb plugins`: which plugin libraries are found and what they offer.

use anyhow::Result;
use irtdb_plugin_api::host;

/// List the plugins found, with their ABI version, capabilities, backbones and providers.
///
/// Searched, in order: each folder of IRTDB_PLUGIN_PATH, <exe dir>/plugins, <exe dir>,
/// <exe dir>/../lib/irtdb/plugins (scripts/install.sh) and <data dir>/irtdb/plugins. A library named libirtdb_plugin_NAME.so there is offered as NAME.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let found = host::discover();
    if args.json {
        let list: Vec<serde_json::Value> = found
            .iter()
            .map(|(path, r)| match r {
                Ok(p) => serde_json::json!({
                    "name": p.name(), "version": p.version(), "path": path, "abi": p.abi_version(),
                    "capabilities": p.capability_names(), "backbones": p.description().backbones,
                    "providers": p.description().providers,
                    "available_providers": p.description().available_providers,
                    "notes": p.description().notes,
                }),
                Err(e) => serde_json::json!({ "path": path, "error": e.to_string() }),
            })
            .collect();
        return super::print_json(&serde_json::json!({
            "searched": host::search_dirs(), "plugins": list
        }));
    }
    if found.is_empty() {
        println!("no plugins found; searched:");
        for d in host::search_dirs() {
            println!("  - {}", d.display());
        }
        return Ok(());
    }
    for (path, r) in &found {
        match r {
            Ok(p) => {
                let d = p.description();
                println!(
                    "{} {}  (ABI {}, {})",
                    p.name(),
                    p.version(),
                    p.abi_version(),
                    path.display()
                );
                println!("  capabilities: {}", p.capability_names().join(", "));
                println!("  backbones:    {}", d.backbones.join("; "));
                if !d.providers.is_empty() {
                    println!(
                        "  providers:    {} (available here: {})",
                        d.providers.join(" → "),
                        if d.available_providers.is_empty() {
                            "none".to_string()
                        } else {
                            d.available_providers.join(", ")
                        }
                    );
                }
                for n in &d.notes {
                    println!("  note:         {n}");
                }
            }
            Err(e) => println!("{}: unusable: {e}", path.display()),
        }
    }
    Ok(())
}
