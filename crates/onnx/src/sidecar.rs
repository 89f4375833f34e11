//! What is recorded next to a model file, shared by every backend plugin and the trainer.
//!
//! irtdb's model card `<model>.json` carries it at its top level (`preprocess`, `num_heads`); a
//! timm hub folder's `config.json` under `pretrained_cfg` and `model_args`. Either may be absent;
//! unreadable files are ignored here (the weights loader reports them when it needs them). Both
//! are found and ranked by [`crate::card::Sidecars`], the one reader.

use std::path::Path;

use crate::card::Sidecars;

/// The preprocessing object found beside `model`, if any: `<model>.json`'s `preprocess`, else
/// `config.json`'s `pretrained_cfg` in the same folder. Apply it with
/// `irtdb_core::Preprocess::apply_overrides`.
pub fn preprocess_hint(model: &Path) -> Option<serde_json::Value> {
    let files = Sidecars::read_lenient(model);
    let key = |is_card| if is_card { "preprocess" } else { "pretrained_cfg" };
    files.first(|json, is_card| json.get(key(is_card)).cloned()).map(|(_, v)| v)
}

/// The attention-head count found beside `model`, if any: `num_heads` (top level or under
/// `model_args`) of `<model>.json`, else of `config.json` in the same folder. The weights loader
/// reads the same keys, strictly; this is the lenient look for callers that only pass it on.
pub fn num_heads_hint(model: &Path) -> Option<usize> {
    let files = Sidecars::read_lenient(model);
    files
        .first(|json, _| {
            let v = json.get("num_heads").or_else(|| json.pointer("/model_args/num_heads"))?;
            v.as_u64().filter(|&h| h > 0).map(|h| h as usize)
        })
        .map(|(_, h)| h)
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
