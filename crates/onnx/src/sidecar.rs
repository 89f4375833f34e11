//! What is recorded next to a model file, shared by every backend plugin and the trainer.
//!
//! irtdb's model card `<model>.json` carries it at its top level (`preprocess`, `num_heads`); a
//! timm hub folder's `config.json` under `pretrained_cfg` and `model_args`. Either may be absent;
//! unreadable files are ignored here (the weights loader reports them when it needs them).

use std::path::Path;

/// The sidecars of `model` that exist and parse, in order of precedence: `<model>.json`, then
/// `config.json` in the same folder; each with whether it is irtdb's card.
fn sidecars(model: &Path) -> impl Iterator<Item = (serde_json::Value, bool)> {
    let card = model.with_extension("json");
    let hub = model.parent().map(|p| p.join("config.json"));
    [Some((card, true)), hub.map(|h| (h, false))].into_iter().flatten().filter_map(
        |(file, is_card)| {
            let text = std::fs::read_to_string(file).ok()?;
            Some((serde_json::from_str::<serde_json::Value>(&text).ok()?, is_card))
        },
    )
}

/// The preprocessing object found beside `model`, if any: `<model>.json`'s `preprocess`, else
/// `config.json`'s `pretrained_cfg` in the same folder. Apply it with
/// `irtdb_core::Preprocess::apply_overrides`.
pub fn preprocess_hint(model: &Path) -> Option<serde_json::Value> {
    sidecars(model).find_map(|(json, is_card)| {
        json.get(if is_card { "preprocess" } else { "pretrained_cfg" }).cloned()
    })
}

/// The attention-head count found beside `model`, if any: `num_heads` (top level or under
/// `model_args`) of `<model>.json`, else of `config.json` in the same folder. The weights loader
/// reads the same keys, strictly; this is the lenient look for callers that only pass it on.
pub fn num_heads_hint(model: &Path) -> Option<usize> {
    sidecars(model).find_map(|(json, _)| {
        let v = json.get("num_heads").or_else(|| json.pointer("/model_args/num_heads"))?;
        v.as_u64().filter(|&h| h > 0).map(|h| h as usize)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_first_then_hub_config() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.safetensors");
        assert_eq!((num_heads_hint(&model), preprocess_hint(&model)), (None, None));
        let hub = r#"{"model_args": {"num_heads": 6}, "pretrained_cfg": {"crop_pct": 1.0}}"#;
        std::fs::write(dir.path().join("config.json"), hub).unwrap();
        assert_eq!(num_heads_hint(&model), Some(6));
        assert_eq!(preprocess_hint(&model), Some(serde_json::json!({"crop_pct": 1.0})));
        let card = r#"{"num_heads": 3, "preprocess": {"crop_pct": 0.9}}"#;
        std::fs::write(model.with_extension("json"), card).unwrap();
        assert_eq!(num_heads_hint(&model), Some(3));
        assert_eq!(preprocess_hint(&model), Some(serde_json::json!({"crop_pct": 0.9})));
        // Broken or useless values are passed over (to the next sidecar).
        std::fs::write(model.with_extension("json"), r#"{"num_heads": 0}"#).unwrap();
        assert_eq!(num_heads_hint(&model), Some(6));
        std::fs::write(model.with_extension("json"), "not json").unwrap();
        assert_eq!(num_heads_hint(&model), Some(6));
    }
}
