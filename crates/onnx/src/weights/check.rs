//! Checking a configuration and every tensor the graph uses against it.

use crate::error::{Error, Result};
use crate::Tensors as TensorMap;
use crate::VitConfig;

use super::infer::Ctx;

/// Checks the configuration itself (values the shapes cannot contradict).
pub(super) fn check_config(c: &VitConfig, origin: &str) -> Result<()> {
    let bad = |what: String| Error::Config {
        origin: origin.to_owned(),
        what,
        hint: "fix the VitConfig".to_owned(),
    };
    if c.dim == 0 || c.heads == 0 || !c.dim.is_multiple_of(c.heads) {
        return Err(bad(format!("heads {} must be positive and divide dim {}", c.heads, c.dim)));
    }
    if c.patch == 0 || c.img_size.iter().any(|&s| s == 0 || s % c.patch != 0) {
        return Err(bad(format!(
            "image size {:?} must be positive multiples of the patch {}",
            c.img_size, c.patch
        )));
    }
    if !(1..=2).contains(&c.prefix_tokens) {
        return Err(bad(format!("prefix_tokens is {}, not 1 or 2", c.prefix_tokens)));
    }
    if c.depth > 0 && c.mlp_hidden == 0 {
        return Err(bad("mlp_hidden is 0".to_owned()));
    }
    if !(c.ln_eps.is_finite() && c.ln_eps > 0.0) {
        return Err(bad(format!("ln_eps {} must be positive", c.ln_eps)));
    }
    Ok(())
}

/// Every tensor the graph uses, with the shape `config` implies.
fn expected_shapes(c: &VitConfig) -> Vec<(String, Vec<usize>)> {
    let (d, h, p) = (c.dim, c.mlp_hidden, c.patch);
    let mut out = vec![
        ("cls_token".to_owned(), vec![1, 1, d]),
        ("pos_embed".to_owned(), vec![1, c.num_tokens(), d]),
        ("patch_embed.proj.weight".to_owned(), vec![d, 3, p, p]),
        ("patch_embed.proj.bias".to_owned(), vec![d]),
    ];
    if c.prefix_tokens == 2 {
        out.push(("dist_token".to_owned(), vec![1, 1, d]));
    }
    if c.reg_tokens > 0 {
        out.push(("reg_token".to_owned(), vec![1, c.reg_tokens, d]));
    }
    for i in 0..c.depth {
        let mut block = vec![
            ("norm1.weight", vec![d]),
            ("norm1.bias", vec![d]),
            ("attn.qkv.weight", vec![3 * d, d]),
            ("attn.proj.weight", vec![d, d]),
            ("attn.proj.bias", vec![d]),
            ("norm2.weight", vec![d]),
            ("norm2.bias", vec![d]),
            ("mlp.fc1.weight", vec![h, d]),
            ("mlp.fc1.bias", vec![h]),
            ("mlp.fc2.weight", vec![d, h]),
            ("mlp.fc2.bias", vec![d]),
        ];
        if c.qkv_bias {
            block.push(("attn.qkv.bias", vec![3 * d]));
        }
        if c.layer_scale {
            block.push(("ls1.gamma", vec![d]));
            block.push(("ls2.gamma", vec![d]));
        }
        out.extend(block.into_iter().map(|(name, shape)| (format!("blocks.{i}.{name}"), shape)));
    }
    let norm = if c.fc_norm { "fc_norm" } else { "norm" };
    out.push((format!("{norm}.weight"), vec![d]));
    out.push((format!("{norm}.bias"), vec![d]));
    out
}

pub(super) fn check_tensors(
    c: &VitConfig,
    tensors: &TensorMap,
    ctx: &Ctx,
    hint: &str,
) -> Result<()> {
    for (name, expected) in expected_shapes(c) {
        let found = ctx.shape(tensors, &name, hint)?;
        if found != expected.as_slice() {
            return Err(ctx.mismatch(&name, expected, found, hint));
        }
        let len = tensors[&name].1.len();
        if len != expected.iter().product::<usize>() {
            return Err(ctx.config(
                format!("tensor `{name}` holds {len} values, not as many as its shape {found:?}"),
                "the tensor data is corrupt; re-create it",
            ));
        }
    }
    if c.reg_tokens == 0 && tensors.contains_key("reg_token") {
        return Err(ctx.config(
            "`reg_token` is present but reg_tokens is 0".to_owned(),
            "set reg_tokens to the number of register tokens",
        ));
    }
    if c.prefix_tokens == 1 && tensors.contains_key("dist_token") {
        return Err(ctx.config(
            "`dist_token` is present but prefix_tokens is 1".to_owned(),
            "set prefix_tokens to 2 for a distilled DeiT",
        ));
    }
    Ok(())
}

/// Pads a `[1, M, D]` (no_embed_class) `pos_embed` to `[1, prefix + M, D]` with zero rows for
/// the class, distillation and register tokens.
pub(super) fn pad_pos_embed(mut tensors: TensorMap, c: &VitConfig) -> TensorMap {
    if let Some((shape, data)) = tensors.get_mut("pos_embed") {
        if *shape == [1, c.num_patches(), c.dim] && c.num_prefix() > 0 {
            let mut padded = vec![0.0; c.num_prefix() * c.dim];
            padded.extend_from_slice(data);
            *data = padded;
            *shape = vec![1, c.num_tokens(), c.dim];
        }
    }
    tensors
}
