//! The configurations the host hands to `backbone_create` and `trainer_create`, typed once for
//! both sides: the host builds them, [`export_plugin!`](crate::export_plugin) parses them, and a
//! plugin receives the struct.
//!
//! The keys every plugin shares have fields; a plugin's own keys (the ort plugin's `layout` or
//! `trt_fp16`, the tch plugin's `device` or `amp`) travel in `extra`, which the plugin reads
//! into a type of its own with [`BackboneConfig::extra_as`] (refusing keys it does not know).
//! On the wire the JSON is flat: `{"model": …, "providers": […], "layout": "nhwc"}`; absent
//! options are left out, so a plugin built before a key existed never sees it unless asked.

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// JSON object of plugin-specific keys.
pub type Extra = serde_json::Map<String, serde_json::Value>;

/// What `backbone_create` receives. Only `model` is required.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BackboneConfig {
    /// The weights: an `.onnx` file or a timm-named `.safetensors` file (which kinds a plugin
    /// reads is its own).
    pub model: PathBuf,
    /// Execution providers to insist on, in order (`irtdb --providers`), by the names the
    /// plugin lists in its description; each must work or creation fails. Absent: the plugin's
    /// own choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub providers: Option<Vec<String>>,
    /// GPU index (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<u32>,
    /// CPU threads for the runtime's intra-op pool (0 or absent: the runtime's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// Overrides of the preprocessing the plugin derives from the model: any subset of
    /// [`irtdb_core::Preprocess`]'s fields (or timm's keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocess: Option<serde_json::Value>,
    /// Attention heads of a ViT when neither the file nor its model card tells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<usize>,
    /// Run at this `[H, W]` (`irtdb --input-size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_size: Option<[u32; 2]>,
    /// Arithmetic of the forward (`irtdb --precision`): `fp32` (absent means the same) or
    /// `int8` (linear weights int8 per output channel, activations quantised at run time). A
    /// plugin refuses a value it cannot run, saying what works instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
    /// The plugin's own keys.
    #[serde(flatten)]
    pub extra: Extra,
}

/// What `trainer_create` receives: the network as for a backbone, plus the training recipe.
/// Absent recipe values mean the recipe's defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerConfig {
    /// The starting weights and how to run them; its `extra` holds the plugin's own keys of
    /// both parts.
    #[serde(flatten)]
    pub backbone: BackboneConfig,
    /// Where to train (`irtdb train --device`): `auto`, `cpu` or `cuda`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Contrastive margin β.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<f64>,
    /// KoLeo weight λ (0: IRT_L).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda: Option<f64>,
    /// Cross-batch memory size in embeddings (0: no memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<usize>,
    /// AdamW weight decay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
}

impl BackboneConfig {
    /// A configuration for `model` with every option absent.
    pub fn new(model: impl Into<PathBuf>) -> Self {
        BackboneConfig { model: model.into(), ..Default::default() }
    }

    /// Lays `options` (e.g. `irtdb --plugin-config`) over this configuration: a shared key
    /// replaces the field (and must have its type), any other key goes to `extra`.
    pub fn merge(&mut self, options: &Extra) -> Result<(), String> {
        let mut v = serde_json::to_value(&*self).map_err(|e| e.to_string())?;
        let obj = v.as_object_mut().expect("a struct serialises to an object");
        obj.extend(options.iter().map(|(k, v)| (k.clone(), v.clone())));
        *self = serde_json::from_value(v).map_err(|e| format!("plugin options: {e}"))?;
        Ok(())
    }

    /// Reads the plugin-specific keys into the plugin's own type. Give `T`
    /// `#[serde(deny_unknown_fields)]` so that a misspelt key is an error naming it.
    pub fn extra_as<T: DeserializeOwned>(&self) -> Result<T, String> {
        extra_as(&self.extra)
    }
}

impl TrainerConfig {
    /// A configuration for the starting weights `model` with every option absent.
    pub fn new(model: impl Into<PathBuf>) -> Self {
        TrainerConfig { backbone: BackboneConfig::new(model), ..Default::default() }
    }

    /// [`BackboneConfig::extra_as`] for the trainer.
    pub fn extra_as<T: DeserializeOwned>(&self) -> Result<T, String> {
        extra_as(&self.backbone.extra)
    }
}

fn extra_as<T: DeserializeOwned>(extra: &Extra) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::Object(extra.clone())).map_err(|e| e.to_string())
}

/// Parses a configuration received across the ABI, naming `what` (`backbone` or `trainer`) in
/// the error.
pub(crate) fn parse<T: DeserializeOwned>(json: &str, what: &str) -> Result<T, String> {
    serde_json::from_str(json).map_err(|e| format!("invalid {what} config: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Own {
        #[serde(default)]
        layout: Option<String>,
        #[serde(default)]
        amp: Option<bool>,
    }

    #[test]
    fn shared_keys_are_typed_and_the_rest_is_extra() {
        let c: BackboneConfig = serde_json::from_value(json!({
            "model": "m.onnx", "providers": ["cpu"], "threads": 2, "layout": "nhwc"
        }))
        .unwrap();
        assert_eq!(c.providers.as_deref(), Some(&["cpu".to_string()][..]));
        assert_eq!((c.threads, c.heads), (Some(2), None));
        assert_eq!(c.extra_as::<Own>().unwrap(), Own { layout: Some("nhwc".into()), amp: None });
        // Flat on the wire, absent options left out.
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({"model": "m.onnx", "providers": ["cpu"], "threads": 2, "layout": "nhwc"})
        );
        // A key the plugin does not know is named.
        let c = BackboneConfig { extra: json!({"lay_out": 1}).as_object().unwrap().clone(), ..c };
        assert!(c.extra_as::<Own>().unwrap_err().contains("lay_out"));
        // A shared key of the wrong type is refused.
        let e = parse::<BackboneConfig>(r#"{"model": "m", "threads": "two"}"#, "backbone");
        assert!(e.unwrap_err().starts_with("invalid backbone config"));
    }

    #[test]
    fn trainer_config_nests_the_backbone_and_keeps_the_wire_flat() {
        let wire = json!({
            "model": "w.safetensors", "heads": 4, "device": "cpu", "beta": 0.5, "memory": 20,
            "amp": false
        });
        let t: TrainerConfig = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(t.backbone.heads, Some(4));
        assert_eq!(
            (t.device.as_deref(), t.beta, t.memory, t.lambda),
            (Some("cpu"), Some(0.5), Some(20), None)
        );
        assert_eq!(t.extra_as::<Own>().unwrap(), Own { layout: None, amp: Some(false) });
        assert_eq!(serde_json::to_value(&t).unwrap(), wire);
    }

    #[test]
    fn merged_options_replace_fields_or_join_extra() {
        let mut c = BackboneConfig::new("m.onnx");
        c.providers = Some(vec!["cuda".into()]);
        let o = json!({"input_size": [64, 48], "output": "tokens", "providers": ["cpu"]});
        c.merge(o.as_object().unwrap()).unwrap();
        assert_eq!(c.input_size, Some([64, 48]));
        assert_eq!(c.providers, Some(vec!["cpu".to_string()]));
        assert_eq!(c.extra.get("output"), Some(&json!("tokens")));
        let bad = json!({"heads": "four"});
        assert!(c.merge(bad.as_object().unwrap()).unwrap_err().contains("plugin options"));
    }
}
