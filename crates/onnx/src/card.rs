//! irtdb's model card: `<weights>.json` beside a weights file, the one place where what the
//! weights are (architecture, heads, preprocessing, pooling) is written down, and how they were
//! made (a random seed, a training recipe and its metrics) is kept.
//!
//! One writer: [`ModelCard::to_json`] (the trainer and `irtdb model random` write the card
//! through it). One reader: [`Sidecars::read`], which finds the card and, beside it, a timm hub
//! folder's `config.json`, with one precedence for every key: **the card's value, else the hub
//! config's** (key by key, so a card that leaves a key out lets the hub config answer it).
//! The weights loader reads the files strictly (a damaged file is an error naming it);
//! [`crate::sidecar`]'s hints leniently (a damaged file is passed over).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// The `format` of the cards irtdb writes.
pub const CARD_FORMAT: &str = "irtdb-model-card/1";

/// irtdb's model card. Known keys are typed; every other key (training recipe, metrics, the
/// full config of a random model) is kept in `extra` as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// [`CARD_FORMAT`] for cards irtdb writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// Attention heads (what both plugins need to build a ViT from its tensors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_heads: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dim: Option<usize>,
    /// The preprocessing (`irtdb_core::Preprocess` as JSON, or overrides of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocess: Option<Value>,
    /// `[H, W]` the weights were trained (and their position embedding saved) at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_size: Option<[u32; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooling: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalisation: Option<String>,
    /// The weights are random (`irtdb model random`): scores measure colour and layout.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub random_weights: bool,
    /// Every other key.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl ModelCard {
    /// Where the card of `weights` lives: `<weights stem>.json` beside it.
    pub fn path_for(weights: &Path) -> PathBuf {
        weights.with_extension("json")
    }

    /// The card as irtdb writes it (pretty JSON).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a model card serialises")
    }

    /// Writes the card of `weights` (plainly; a caller that needs the write to be durable
    /// writes [`ModelCard::to_json`] its own way).
    pub fn write(&self, weights: &Path) -> Result<()> {
        let path = Self::path_for(weights);
        std::fs::write(&path, self.to_json()).map_err(|source| Error::Io {
            action: "write",
            path,
            source,
        })
    }

    /// The card of `weights` if it exists and is a valid card, else `None` (for callers that
    /// only look for hints).
    pub fn read_lenient(weights: &Path) -> Option<ModelCard> {
        Sidecars::read_lenient(weights).card.and_then(|(_, json)| serde_json::from_value(json).ok())
    }
}

/// The JSON files beside a weights file: irtdb's card and a timm hub `config.json`.
#[derive(Clone, Debug, Default)]
pub struct Sidecars {
    /// `<weights>.json` and its contents.
    pub card: Option<(PathBuf, Value)>,
    /// `config.json` in the weights' folder and its contents.
    pub hub: Option<(PathBuf, Value)>,
}

impl Sidecars {
    /// The two files read beside `weights`, whether or not they exist: `<weights>.json` and
    /// `config.json` in its folder (anything caching what is built from the weights keys on
    /// both).
    pub fn paths(weights: &Path) -> [PathBuf; 2] {
        let hub = weights.parent().unwrap_or(Path::new("")).join("config.json");
        [ModelCard::path_for(weights), hub]
    }

    /// Reads both files where they exist; one that cannot be read or is not JSON is an error
    /// naming it.
    pub fn read(weights: &Path) -> Result<Self> {
        let [card, hub] = Self::paths(weights).map(|path| -> Result<Option<(PathBuf, Value)>> {
            if !path.is_file() {
                return Ok(None);
            }
            let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
                action: "read",
                path: path.clone(),
                source,
            })?;
            let json = serde_json::from_str(&text).map_err(|e| Error::Sidecar {
                path: path.clone(),
                reason: format!("not valid JSON ({e})"),
            })?;
            Ok(Some((path, json)))
        });
        Ok(Sidecars { card: card?, hub: hub? })
    }

    /// Reads both files where they exist and parse; the others are left out.
    pub fn read_lenient(weights: &Path) -> Self {
        let [card, hub] = Self::paths(weights).map(|path| {
            let text = std::fs::read_to_string(&path).ok()?;
            Some((path, serde_json::from_str(&text).ok()?))
        });
        Sidecars { card, hub }
    }

    /// The files in order of precedence (card, then hub config), with whether each is the card.
    pub fn in_order(&self) -> impl Iterator<Item = (&Path, &Value, bool)> {
        let card = self.card.iter().map(|(p, j)| (p.as_path(), j, true));
        card.chain(self.hub.iter().map(|(p, j)| (p.as_path(), j, false)))
    }

    /// The first value of a key found in the files in order of precedence: each file is asked
    /// with `get` (given its JSON and whether it is the card), and the first `Some` wins.
    pub fn first<T>(&self, mut get: impl FnMut(&Value, bool) -> Option<T>) -> Option<(&Path, T)> {
        self.in_order().find_map(|(path, json, is_card)| Some((path, get(json, is_card)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_card_round_trips_with_its_unknown_keys() {
        let json = serde_json::json!({
            "format": CARD_FORMAT, "num_heads": 3, "random_weights": true, "seed": 7,
            "loss": {"contrastive_beta": 0.5},
        });
        let card: ModelCard = serde_json::from_value(json.clone()).unwrap();
        assert_eq!((card.num_heads, card.random_weights), (Some(3), true));
        assert_eq!(card.extra["seed"], 7);
        let back: Value = serde_json::from_str(&card.to_json()).unwrap();
        assert_eq!(back, json);
    }

    #[test]
    fn the_card_wins_key_by_key_over_the_hub_config() {
        let dir = tempfile::tempdir().unwrap();
        let weights = dir.path().join("m.safetensors");
        std::fs::write(dir.path().join("config.json"), r#"{"architecture": "a", "num_heads": 6}"#)
            .unwrap();
        std::fs::write(ModelCard::path_for(&weights), r#"{"num_heads": 3}"#).unwrap();
        let s = Sidecars::read(&weights).unwrap();
        let heads = s.first(|j, _| j.get("num_heads")?.as_u64()).unwrap();
        assert_eq!((heads.0, heads.1), (ModelCard::path_for(&weights).as_path(), 3));
        let arch = s.first(|j, _| j.get("architecture")?.as_str().map(String::from)).unwrap();
        assert_eq!(arch.1, "a");
        std::fs::write(ModelCard::path_for(&weights), "not json").unwrap();
        assert!(Sidecars::read(&weights).is_err());
        assert!(Sidecars::read_lenient(&weights).card.is_none());
    }
}
