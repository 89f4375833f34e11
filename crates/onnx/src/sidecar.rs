//! Preprocessing recorded next to a model file, shared by every backend plugin.
//!
//! irtdb's model card `<model>.json` carries it under `preprocess`; a timm hub folder's
//! `config.json` under `pretrained_cfg`. Either may be absent; unreadable files are ignored here
//! (the weights loader reports them when it needs them).

use std::path::Path;

/// The preprocessing object found beside `model`, if any: `<model>.json`'s `preprocess`, else
/// `config.json`'s `pretrained_cfg` in the same folder. Apply it with
/// `irtdb_core::Preprocess::apply_overrides`.
pub fn preprocess_hint(model: &Path) -> Option<serde_json::Value> {
    let card = model.with_extension("json");
    let hub = model.parent()?.join("config.json");
    [(card, "preprocess"), (hub, "pretrained_cfg")].into_iter().find_map(|(file, key)| {
        let text = std::fs::read_to_string(file).ok()?;
        serde_json::from_str::<serde_json::Value>(&text).ok()?.get(key).cloned()
    })
}
