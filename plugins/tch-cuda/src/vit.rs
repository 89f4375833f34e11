//! timm's `VisionTransformer` (ViT / DeiT / DeiT-3 / DINOv2, with or without registers, class
//! token or average-pooled with `fc_norm`) in tch, with timm's parameter names.
//!
//! Every parameter lives in one [`nn::VarStore`] under exactly its timm `state_dict` name
//! (`cls_token`, `pos_embed`, `patch_embed.proj.weight`, `blocks.3.attn.qkv.weight`, ...), so that
//! loading and saving a checkpoint is a name-for-name copy. The configuration is inferred from
//! the checkpoint by [`irtdb_onnx::VitWeights::load`], the same code the ONNX plugin uses.
//!
//! The maths is that of `VisionTransformer.forward_features` (pre-norm blocks, exact GELU,
//! LayerNorm ε = 1e-6 unless the checkpoint says otherwise); the yardstick in the tests is
//! [`irtdb_onnx::reference::forward`].

use irtdb_onnx::{VitConfig, VitWeights};
use tch::nn::{self, Module};
use tch::{Device, Tensor};

/// One pre-norm transformer block.
#[derive(Debug)]
struct Block {
    norm1: nn::LayerNorm,
    qkv: nn::Linear,
    proj: nn::Linear,
    ls1: Option<Tensor>,
    norm2: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    ls2: Option<Tensor>,
    heads: i64,
}

impl Block {
    fn new(p: nn::Path<'_>, c: &VitConfig) -> Self {
        let d = c.dim as i64;
        let hidden = c.mlp_hidden as i64;
        let ln = nn::LayerNormConfig { eps: f64::from(c.ln_eps), ..Default::default() };
        let lin = |bias: bool| nn::LinearConfig { bias, ..Default::default() };
        let attn = &p / "attn";
        let mlp = &p / "mlp";
        Block {
            norm1: nn::layer_norm(&p / "norm1", vec![d], ln),
            qkv: nn::linear(&attn / "qkv", d, 3 * d, lin(c.qkv_bias)),
            proj: nn::linear(&attn / "proj", d, d, lin(true)),
            ls1: c.layer_scale.then(|| (&p / "ls1").ones("gamma", &[d])),
            norm2: nn::layer_norm(&p / "norm2", vec![d], ln),
            fc1: nn::linear(&mlp / "fc1", d, hidden, lin(true)),
            fc2: nn::linear(&mlp / "fc2", hidden, d, lin(true)),
            ls2: c.layer_scale.then(|| (&p / "ls2").ones("gamma", &[d])),
            heads: c.heads as i64,
        }
    }

    fn attention(&self, x: &Tensor) -> Tensor {
        let (b, t, d) = x.size3().expect("tokens are [B, T, D]");
        let hd = d / self.heads;
        // [B, T, 3D] -> [3, B, heads, T, hd]: rows 0..D of qkv are q, D..2D k, 2D..3D v.
        let qkv = self.qkv.forward(x).reshape([b, t, 3, self.heads, hd]).permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        // Fused kernel (flash / memory-efficient attention on CUDA); scale 1/sqrt(hd) by default.
        let o = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            false,
            None,
            false,
        );
        self.proj.forward(&o.transpose(1, 2).reshape([b, t, d]))
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let scaled = |y: Tensor, ls: &Option<Tensor>| match ls {
            Some(g) => y * g,
            None => y,
        };
        let x = x + scaled(self.attention(&self.norm1.forward(x)), &self.ls1);
        let h = self.fc1.forward(&self.norm2.forward(&x)).gelu("none");
        &x + scaled(self.fc2.forward(&h), &self.ls2)
    }
}

/// A ViT whose parameters are in `vs` under timm's names.
#[derive(Debug)]
pub struct Vit {
    pub config: VitConfig,
    pub vs: nn::VarStore,
    patch_embed: nn::Conv2D,
    cls_token: Tensor,
    dist_token: Option<Tensor>,
    reg_token: Option<Tensor>,
    /// `[1, T, D]`, or `[1, M, D]` (patches only) for a no_embed_class model, as in timm.
    pos_embed: Tensor,
    blocks: Vec<Block>,
    /// `norm` over every token, or for an `fc_norm` model `fc_norm` after the mean.
    norm: nn::LayerNorm,
}

impl Vit {
    /// The network for `config` on `device`, parameters initialised to placeholders (zeros,
    /// ones, tch's default init); [`Vit::load_weights`] fills them.
    pub fn new(config: &VitConfig, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let (d, p) = (config.dim as i64, config.patch as i64);
        let conv = nn::ConvConfig { stride: p, ..Default::default() };
        let patch_embed = nn::conv2d(&root / "patch_embed" / "proj", 3, d, p, conv);
        let cls_token = root.zeros("cls_token", &[1, 1, d]);
        let dist_token = (config.prefix_tokens == 2).then(|| root.zeros("dist_token", &[1, 1, d]));
        let registers = config.reg_tokens as i64;
        let reg_token = (registers > 0).then(|| root.zeros("reg_token", &[1, registers, d]));
        let positions =
            if config.no_embed_class { config.num_patches() } else { config.num_tokens() };
        let pos_embed = root.zeros("pos_embed", &[1, positions as i64, d]);
        let blocks = (0..config.depth).map(|i| Block::new(&root / "blocks" / i, config)).collect();
        let ln = nn::LayerNormConfig { eps: f64::from(config.ln_eps), ..Default::default() };
        let norm_name = if config.fc_norm { "fc_norm" } else { "norm" };
        let norm = nn::layer_norm(&root / norm_name, vec![d], ln);
        Vit {
            config: config.clone(),
            vs,
            patch_embed,
            cls_token,
            dist_token,
            reg_token,
            pos_embed,
            blocks,
            norm,
        }
    }

    /// Builds the network for `weights.config` and copies every parameter from `weights`.
    pub fn from_weights(weights: &VitWeights, device: Device) -> Result<Self, String> {
        let mut vit = Self::new(&weights.config, device);
        vit.load_weights(weights)?;
        Ok(vit)
    }

    /// Copies each parameter from the tensor of the same timm name (all must be present, with
    /// the same number of elements; the checkpoint's other tensors, `head.*` etc., are ignored).
    /// `pos_embed` is taken in timm's layout ([`VitWeights::timm_pos_embed`]).
    pub fn load_weights(&mut self, weights: &VitWeights) -> Result<(), String> {
        let origin = weights.origin().to_string();
        let pos_embed = weights.timm_pos_embed().map_err(|e| e.to_string())?;
        tch::no_grad(|| {
            for (name, mut var) in self.vs.variables() {
                let (shape, data) = match name.as_str() {
                    "pos_embed" => (pos_embed.0.as_slice(), pos_embed.1),
                    _ => weights
                        .tensor(&name)
                        .ok_or_else(|| format!("{origin}: tensor `{name}` is missing"))?,
                };
                let want = var.size();
                let numel: i64 = want.iter().product();
                if data.len() as i64 != numel {
                    return Err(format!(
                        "{origin}: tensor `{name}` has shape {shape:?}, the model needs {want:?}"
                    ));
                }
                let src = Tensor::from_slice(data).reshape(&want);
                var.copy_(&src);
            }
            Ok(())
        })
    }

    /// The class (and distillation) token and the patch tokens after the final norm (none for
    /// an `fc_norm` model), `[B, prefix + M, D]`, for images `[B, 3, H, W]` (already normalised,
    /// at the configured size). Register tokens take part in attention and are then dropped.
    pub fn forward_tokens(&self, images: &Tensor) -> Tensor {
        let c = &self.config;
        let b = images.size()[0];
        let x = self.patch_embed.forward(images).flatten(2, -1).transpose(1, 2); // [B, M, D]
        let mut parts = vec![self.cls_token.expand([b, -1, -1], false)];
        if let Some(dist) = &self.dist_token {
            parts.push(dist.expand([b, -1, -1], false));
        }
        if let Some(reg) = &self.reg_token {
            parts.push(reg.expand([b, -1, -1], false));
        }
        // timm's _pos_embed: no_embed_class adds the positions to the patches before the concat.
        // (Out of place: the patch tokens are a view of the convolution's output.)
        parts.push(if c.no_embed_class { x + &self.pos_embed } else { x });
        let x = Tensor::cat(&parts, 1);
        let mut x = if c.no_embed_class { x } else { x + &self.pos_embed };
        for block in &self.blocks {
            x = block.forward(&x);
        }
        if !c.fc_norm {
            x = self.norm.forward(&x);
        }
        if c.reg_tokens > 0 {
            let (prefix, patches) = (c.prefix_tokens as i64, c.num_patches() as i64);
            let front = x.narrow(1, 0, prefix);
            let back = x.narrow(1, c.num_prefix() as i64, patches);
            x = Tensor::cat(&[front, back], 1);
        }
        x
    }

    /// What the plugin's backbone returns: the tokens of [`Vit::forward_tokens`] (the host
    /// pools them as the user chose), or for an `fc_norm` model its own descriptor.
    pub fn forward_features(&self, images: &Tensor) -> Tensor {
        let tokens = self.forward_tokens(images);
        if self.config.fc_norm {
            self.pool(&tokens)
        } else {
            tokens
        }
    }

    /// The descriptor before L2 normalisation: the class token, or for a distilled model the
    /// mean of class and distillation tokens, or for an `fc_norm` model `fc_norm` of the mean
    /// of the patch tokens (as [`irtdb_onnx::reference::pool`]).
    pub fn pool(&self, tokens: &Tensor) -> Tensor {
        if self.config.fc_norm {
            let prefix = self.config.prefix_tokens as i64;
            let patches = tokens.narrow(1, prefix, self.config.num_patches() as i64);
            self.norm.forward(&patches.mean_dim(1, false, None))
        } else if self.config.prefix_tokens == 2 {
            (tokens.select(1, 0) + tokens.select(1, 1)) / 2.0
        } else {
            tokens.select(1, 0)
        }
    }
}
