//! Writing the ViT forward pass as an ONNX graph (opset 17, IR version 8).
//!
//! Why this module exists: ONNX Runtime (and TensorRT behind it) runs graphs, not timm
//! checkpoints. The graph mirrors timm's `VisionTransformer.forward_features` op by op, so that
//! [`crate::reference::forward`] (the same maths in plain loops) can check it number for number.
//! Only standard ONNX operators are used, all available since opset 17, so any ONNX Runtime
//! execution provider (CPU, CUDA, TensorRT) can run it.

use std::collections::HashSet;

use prost::Message;

use crate::error::{Error, Result};
use crate::proto::{
    tensor_shape_proto::Dimension, AttributeProto, AttributeType, DataType, GraphProto, ModelProto,
    NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto, ValueInfoProto,
};
use crate::VitWeights;

/// The version of the graph [`build_vit_onnx`] writes (with how [`VitWeights::load`] reads a
/// file): bump it whenever the same weights file and options would give a different graph. The
/// ort plugin's optimised-model cache keys on it (with this crate's version), so a stale cached
/// graph is never run after an upgrade.
pub const GRAPH_BUILDER_VERSION: u32 = 1;
/// Domain of ONNX Runtime's contrib operators (`DynamicQuantizeMatMul`), imported only by an
/// [`Precision::Int8`] graph.
pub const MS_DOMAIN: &str = "com.microsoft";
/// ONNX opset of the graph (LayerNormalization needs 17).
pub const OPSET: i64 = 17;
/// ONNX IR version of the model.
const IR_VERSION: i64 = 8;
/// Name of the graph input: f32 `[batch, 3, H, W]`, normalised pixels.
pub const INPUT_NAME: &str = "pixel_values";
/// Name of the output of [`GraphOutput::Tokens`]: f32 `[batch, T, D]`.
pub const TOKENS_OUTPUT: &str = "tokens";
/// Name of the output of [`GraphOutput::Pooled`]: f32 `[batch, D]`.
pub const POOLED_OUTPUT: &str = "pooled";
/// Symbolic name of the batch dimension.
const BATCH: &str = "batch";

/// What the graph returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphOutput {
    /// `tokens` `[batch, prefix + M, D]`: the class (and distillation) token and the patch
    /// tokens after the final norm, register tokens left out (an `fc_norm` model has no final
    /// norm: its tokens are as timm's `forward_features` returns them).
    Tokens,
    /// `pooled` `[batch, D]`: the model's own descriptor, timm's `forward_head(pre_logits=True)`:
    /// the class token after the final norm; for a distilled DeiT the mean of the class and
    /// distillation tokens, as timm does at inference; for an `fc_norm` (average-pooled) model
    /// `fc_norm` of the mean of the patch tokens.
    Pooled,
}

/// The arithmetic of the graph's linear layers (`qkv`, `proj`, `fc1`, `fc2`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// Every layer in f32.
    #[default]
    Fp32,
    /// Linear weights quantised at build time to int8, symmetric per output channel
    /// (`scale = max|w| / 127`, zero point 0); activations quantised at run time per tensor
    /// (uint8, asymmetric) by ONNX Runtime's `com.microsoft.DynamicQuantizeMatMul`, bias fused.
    /// The patch-embedding Conv, attention products, norms and everything else stay f32.
    Int8,
}

impl Precision {
    /// `fp32` or `int8`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
        }
    }
}

/// How an int8 linear layer is written (both give the same numbers up to rounding): the
/// builder uses [`Int8Ops::DynamicQuantizeMatMul`]; the other is kept to measure against
/// (`benches/embed.rs`).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int8Ops {
    /// One contrib node `DynamicQuantizeMatMul(x, W_q, scale, 0, bias)`.
    DynamicQuantizeMatMul,
    /// Standard ops: `DynamicQuantizeLinear` → `MatMulInteger` → `Cast` → `Mul` → `Add`.
    MatMulInteger,
}

/// Builds the ONNX graph of `w` in f32 (see [`build_vit_onnx_with`]).
pub fn build_vit_onnx(w: &VitWeights, output: GraphOutput) -> Result<Vec<u8>> {
    build_vit_onnx_with(w, output, Precision::Fp32)
}

/// [`build_vit_onnx`] at `precision`.
pub fn build_vit_onnx_with(
    w: &VitWeights,
    output: GraphOutput,
    precision: Precision,
) -> Result<Vec<u8>> {
    let ops = (precision == Precision::Int8).then_some(Int8Ops::DynamicQuantizeMatMul);
    build(w, output, ops)
}

/// An int8 graph written with `ops` (for measuring the formulations against each other).
#[doc(hidden)]
pub fn build_vit_onnx_int8_ops(
    w: &VitWeights,
    output: GraphOutput,
    ops: Int8Ops,
) -> Result<Vec<u8>> {
    build(w, output, Some(ops))
}

/// Builds the ONNX graph of `w` and returns the serialized `ModelProto`.
///
/// Weights are stored as initializers (raw little-endian f32); linear layers use weights
/// pre-transposed to `[in, out]` so that each is one `MatMul` plus an `Add`. Node names follow
/// timm's module names (`blocks.3.attn.qkv`), with `/step` suffixes for the smaller steps. The
/// model's metadata carries the [`crate::VitConfig`] as JSON under `irtdb.vit_config`.
fn build(w: &VitWeights, output: GraphOutput, int8: Option<Int8Ops>) -> Result<Vec<u8>> {
    w.check()?;
    let c = &w.config;
    let mut g = GraphBuilder { int8, ..GraphBuilder::default() };
    let k = BlockConsts::new(&mut g, c);
    let mut x = g.tokens(w, &k)?;
    for i in 0..c.depth {
        x = g.block(w, &k, i, x)?;
    }
    let out_info = g.head(w, &k, x, output)?;
    model_proto(w, g, out_info)
}

/// Constants shared by every block and the head.
struct BlockConsts {
    zero: String,
    one: String,
    indices: [String; 3],
    scale: String,
    qkv_shape: String,
    merge_shape: String,
    sqrt2: String,
    half: String,
    unit: String,
}

impl BlockConsts {
    fn new(g: &mut GraphBuilder, c: &crate::VitConfig) -> Self {
        let d = c.dim as i64;
        BlockConsts {
            zero: g.const_i64("const.0", &[0]),
            one: g.const_i64("const.1", &[1]),
            scale: g.const_f32("const.attn_scale", (c.head_dim() as f32).powf(-0.5)),
            qkv_shape: g
                .const_i64("const.qkv_shape", &[0, 0, 3, c.heads as i64, c.head_dim() as i64]),
            merge_shape: g.const_i64("const.merge_heads_shape", &[0, 0, d]),
            indices: [0, 1, 2].map(|i| g.const_i64_scalar(&format!("const.index.{i}"), i)),
            sqrt2: g.const_f32("const.sqrt2", std::f32::consts::SQRT_2),
            half: g.const_f32("const.half", 0.5),
            unit: g.const_f32("const.one", 1.0),
        }
    }
}

impl GraphBuilder {
    /// Patch embedding, prefix tokens (class, distillation, registers) and position embedding:
    /// `[B, 3, H, W]` → `[B, prefix + M, D]`.
    fn tokens(&mut self, w: &VitWeights, k: &BlockConsts) -> Result<String> {
        let g = self;
        let c = &w.config;
        let d = c.dim as i64;
        // Patch embedding: Conv with stride P, then [B, D, gh, gw] → [B, M, D].
        g.weight(w, "patch_embed.proj.weight")?;
        g.weight(w, "patch_embed.proj.bias")?;
        let p = c.patch as i64;
        let x = g.add_node(
            "Conv",
            "patch_embed.proj",
            &[INPUT_NAME, "patch_embed.proj.weight", "patch_embed.proj.bias"],
            vec![attr_ints("kernel_shape", &[p, p]), attr_ints("strides", &[p, p])],
        );
        let shape = g.const_i64("patch_embed.flatten.shape", &[0, d, -1]);
        let x = g.add_node("Reshape", "patch_embed.flatten", &[&x, &shape], vec![]);
        let x = g.add_node("Transpose", "patch_embed.transpose", &[&x], vec![perm(&[0, 2, 1])]);

        // Prefix tokens (class, distillation, registers: timm's order), expanded to the batch size,
        // in front of the patches.
        let mut prefix_parts = vec![g.weight(w, "cls_token")?];
        if c.prefix_tokens == 2 {
            prefix_parts.push(g.weight(w, "dist_token")?);
        }
        if c.reg_tokens > 0 {
            prefix_parts.push(g.weight(w, "reg_token")?);
        }
        let prefix = match prefix_parts.as_slice() {
            [one] => one.clone(),
            parts => {
                let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
                g.add_node("Concat", "prefix_tokens", &parts, vec![axis(1)])
            }
        };
        let in_shape = g.add_node("Shape", "batch_size/shape", &[INPUT_NAME], vec![]);
        let (zero, one) = (&k.zero, &k.one);
        let batch = g.add_node("Slice", "batch_size", &[&in_shape, zero, one, zero], vec![]);
        let rest = g.const_i64("prefix_tokens/expand.rest", &[c.num_prefix() as i64, d]);
        let target =
            g.add_node("Concat", "prefix_tokens/expand.shape", &[&batch, &rest], vec![axis(0)]);
        let prefix = g.add_node("Expand", "prefix_tokens/expand", &[&prefix, &target], vec![]);
        let x = g.add_node("Concat", "tokens/concat", &[&prefix, &x], vec![axis(1)]);
        g.weight(w, "pos_embed")?;
        Ok(g.add_node("Add", "pos_embed/add", &[&x, "pos_embed"], vec![]))
    }

    /// Transformer block `i`: attention and MLP branches, each with its residual.
    fn block(&mut self, w: &VitWeights, k: &BlockConsts, i: usize, x: String) -> Result<String> {
        let g = self;
        let c = &w.config;
        let mut x = x;
        let (scale, qkv_shape, merge_shape, indices) =
            (&k.scale, &k.qkv_shape, &k.merge_shape, &k.indices);
        let (sqrt2, half, unit) = (&k.sqrt2, &k.half, &k.unit);
        let b = format!("blocks.{i}");
        // Attention branch.
        let h = g.layer_norm(w, &x, &format!("{b}.norm1"), c.ln_eps)?;
        let qkv = g.linear(w, &h, &format!("{b}.attn.qkv"), c.qkv_bias)?;
        let qkv =
            g.add_node("Reshape", &format!("{b}.attn/split_heads"), &[&qkv, qkv_shape], vec![]);
        // [B, T, 3, heads, hd] → [3, B, heads, T, hd]
        let qkv = g.add_node(
            "Transpose",
            &format!("{b}.attn/qkv_first"),
            &[&qkv],
            vec![perm(&[2, 0, 3, 1, 4])],
        );
        let [q, k, v] = [0, 1, 2].map(|j| {
            let name = format!("{b}.attn/{}", ["q", "k", "v"][j]);
            g.add_node("Gather", &name, &[&qkv, &indices[j]], vec![axis(0)])
        });
        let q = g.add_node("Mul", &format!("{b}.attn/q_scaled"), &[&q, scale], vec![]);
        let kt =
            g.add_node("Transpose", &format!("{b}.attn/k_t"), &[&k], vec![perm(&[0, 1, 3, 2])]);
        let logits = g.add_node("MatMul", &format!("{b}.attn/logits"), &[&q, &kt], vec![]);
        let probs = g.add_node("Softmax", &format!("{b}.attn/softmax"), &[&logits], vec![axis(-1)]);
        let ctx = g.add_node("MatMul", &format!("{b}.attn/context"), &[&probs, &v], vec![]);
        let ctx = g.add_node(
            "Transpose",
            &format!("{b}.attn/merge_heads.t"),
            &[&ctx],
            vec![perm(&[0, 2, 1, 3])],
        );
        let ctx =
            g.add_node("Reshape", &format!("{b}.attn/merge_heads"), &[&ctx, merge_shape], vec![]);
        let mut y = g.linear(w, &ctx, &format!("{b}.attn.proj"), true)?;
        if c.layer_scale {
            y = g.layer_scale(w, &y, &format!("{b}.ls1"))?;
        }
        x = g.add_node("Add", &format!("{b}/residual1"), &[&x, &y], vec![]);

        // MLP branch with exact GELU: 0.5 · x · (1 + erf(x / √2)).
        let h = g.layer_norm(w, &x, &format!("{b}.norm2"), c.ln_eps)?;
        let h = g.linear(w, &h, &format!("{b}.mlp.fc1"), true)?;
        let act = format!("{b}.mlp.act");
        let e = g.add_node("Div", &format!("{act}/div_sqrt2"), &[&h, sqrt2], vec![]);
        let e = g.add_node("Erf", &format!("{act}/erf"), &[&e], vec![]);
        let e = g.add_node("Add", &format!("{act}/add_one"), &[&e, unit], vec![]);
        let e = g.add_node("Mul", &format!("{act}/mul_x"), &[&h, &e], vec![]);
        let h = g.add_node("Mul", &act, &[&e, half], vec![]);
        let mut y = g.linear(w, &h, &format!("{b}.mlp.fc2"), true)?;
        if c.layer_scale {
            y = g.layer_scale(w, &y, &format!("{b}.ls2"))?;
        }
        x = g.add_node("Add", &format!("{b}/residual2"), &[&x, &y], vec![]);
        Ok(x)
    }

    /// The final norm, register tokens dropped, and the output (tokens or pooled).
    fn head(
        &mut self,
        w: &VitWeights,
        k: &BlockConsts,
        x: String,
        output: GraphOutput,
    ) -> Result<ValueInfoProto> {
        let g = self;
        let c = &w.config;
        let (d, t) = (c.dim as i64, c.output_tokens() as i64);
        let (zero, one, indices) = (&k.zero, &k.one, &k.indices);
        let x = if c.fc_norm { x } else { g.layer_norm(w, &x, "norm", c.ln_eps)? };
        // [B, 1 + reg + M, D] → [B, 1 + M, D]: register tokens are internal to the network.
        let slices = c.reg_tokens > 0 || (c.fc_norm && output == GraphOutput::Pooled);
        let end = if slices { g.const_i64("const.end", &[i64::MAX]) } else { String::new() };
        let x = if c.reg_tokens > 0 {
            let patches_from = g.const_i64("const.patches_from", &[c.num_prefix() as i64]);
            let heads = g.const_i64("const.prefix_end", &[c.prefix_tokens as i64]);
            let front =
                g.add_node("Slice", "drop_registers/prefix", &[&x, zero, &heads, one], vec![]);
            let patches = g.add_node(
                "Slice",
                "drop_registers/patches",
                &[&x, &patches_from, &end, one],
                vec![],
            );
            g.add_node("Concat", "drop_registers", &[&front, &patches], vec![axis(1)])
        } else {
            x
        };

        let batch_dim = || Dimension::symbol(BATCH);
        Ok(match output {
            GraphOutput::Tokens => {
                g.add_node_named("Identity", "output", &[&x], TOKENS_OUTPUT, vec![]);
                let dims = [batch_dim(), Dimension::fixed(t), Dimension::fixed(d)];
                ValueInfoProto::tensor(TOKENS_OUTPUT, DataType::Float, dims)
            }
            GraphOutput::Pooled => {
                if c.fc_norm {
                    // timm global_pool='avg': x[:, num_prefix_tokens:].mean(1), then fc_norm.
                    let from = g.const_i64("const.pool_from", &[c.prefix_tokens as i64]);
                    let patches =
                        g.add_node("Slice", "pool/patches", &[&x, &from, &end, one], vec![]);
                    let mean = g.add_node(
                        "ReduceMean",
                        "pool/mean",
                        &[&patches],
                        vec![attr_ints("axes", &[1]), attr_int("keepdims", 0)],
                    );
                    let normed = g.layer_norm(w, &mean, "fc_norm", c.ln_eps)?;
                    g.add_node_named("Identity", "pool", &[&normed], POOLED_OUTPUT, vec![]);
                } else if c.prefix_tokens == 2 {
                    // timm: (x[:, 0] + x[:, 1]) / 2 for distilled models at inference.
                    let end = g.const_i64("const.2", &[2]);
                    let both = g.add_node("Slice", "pool/prefix", &[&x, zero, &end, one], vec![]);
                    g.add_node_named(
                        "ReduceMean",
                        "pool",
                        &[&both],
                        POOLED_OUTPUT,
                        vec![attr_ints("axes", &[1]), attr_int("keepdims", 0)],
                    );
                } else {
                    g.add_node_named(
                        "Gather",
                        "pool",
                        &[&x, &indices[0]],
                        POOLED_OUTPUT,
                        vec![axis(1)],
                    );
                }
                ValueInfoProto::tensor(
                    POOLED_OUTPUT,
                    DataType::Float,
                    [batch_dim(), Dimension::fixed(d)],
                )
            }
        })
    }
}

/// The model around graph `g` with output `out_info`: input, opset, metadata (the config).
fn model_proto(w: &VitWeights, g: GraphBuilder, out_info: ValueInfoProto) -> Result<Vec<u8>> {
    let c = &w.config;
    let batch_dim = || Dimension::symbol(BATCH);
    let [ih, iw] = c.img_size.map(|s| s as i64);
    let input = ValueInfoProto::tensor(
        INPUT_NAME,
        DataType::Float,
        [batch_dim(), Dimension::fixed(3), Dimension::fixed(ih), Dimension::fixed(iw)],
    );
    let config_json = serde_json::to_string(c).map_err(|e| Error::Config {
        origin: w.origin().to_owned(),
        what: format!("the config cannot be written as JSON ({e})"),
        hint: "report this as a bug".to_owned(),
    })?;
    let mut opset_import = vec![OperatorSetIdProto { domain: String::new(), version: Some(OPSET) }];
    if g.int8 == Some(Int8Ops::DynamicQuantizeMatMul) {
        opset_import.push(OperatorSetIdProto { domain: MS_DOMAIN.to_owned(), version: Some(1) });
    }
    let model = ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import,
        producer_name: "irtdb-onnx".to_owned(),
        producer_version: env!("CARGO_PKG_VERSION").to_owned(),
        doc_string: format!("{} built by irtdb-onnx from {}", c.architecture, w.origin()),
        graph: Some(GraphProto {
            node: g.nodes,
            name: c.architecture.clone(),
            initializer: g.initializers,
            input: vec![input],
            output: vec![out_info],
            ..GraphProto::default()
        }),
        metadata_props: vec![StringStringEntryProto {
            key: "irtdb.vit_config".to_owned(),
            value: config_json,
        }],
        ..ModelProto::default()
    };
    Ok(model.encode_to_vec())
}

/// Accumulates nodes and initializers; every node has one output named like the node.
#[derive(Default)]
struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    /// Every value name so far, to catch a duplicate (a builder bug) early.
    names: HashSet<String>,
    /// Set: linear layers are int8, written with these ops.
    int8: Option<Int8Ops>,
}

impl GraphBuilder {
    /// Adds node `name` running `op` on `inputs`; its single output is also called `name`.
    fn add_node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> String {
        self.add_node_named(op, name, inputs, name, attrs)
    }

    /// Adds node `name` whose single output is called `output` (for graph outputs).
    fn add_node_named(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        output: &str,
        attrs: Vec<AttributeProto>,
    ) -> String {
        self.claim(output);
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: vec![output.to_owned()],
            name: name.to_owned(),
            op_type: op.to_owned(),
            attribute: attrs,
            ..NodeProto::default()
        });
        output.to_owned()
    }

    /// Adds an f32 initializer stored as raw little-endian bytes.
    fn add_initializer(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len(), "initializer {name}");
        self.claim(name);
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(DataType::Float as i32),
            name: name.to_owned(),
            raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ..TensorProto::default()
        });
        name.to_owned()
    }

    /// Adds a 1-D int64 constant (shapes, indices, axes).
    fn const_i64(&mut self, name: &str, values: &[i64]) -> String {
        self.int64_initializer(name, vec![values.len() as i64], values)
    }

    /// Adds a scalar (0-D) int64 constant, e.g. a Gather index that drops the axis.
    fn const_i64_scalar(&mut self, name: &str, value: i64) -> String {
        self.int64_initializer(name, vec![], &[value])
    }

    fn int64_initializer(&mut self, name: &str, dims: Vec<i64>, values: &[i64]) -> String {
        self.claim(name);
        self.initializers.push(TensorProto {
            dims,
            data_type: Some(DataType::Int64 as i32),
            name: name.to_owned(),
            raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ..TensorProto::default()
        });
        name.to_owned()
    }

    /// Adds a scalar (0-D) f32 constant.
    fn const_f32(&mut self, name: &str, value: f32) -> String {
        self.add_initializer(name, &[], &[value])
    }

    /// Adds the checkpoint tensor `name` as an initializer under the same name.
    fn weight(&mut self, w: &VitWeights, name: &str) -> Result<String> {
        let shape = w.tensor(name).map(|(shape, _)| shape.to_vec()).unwrap_or_default();
        Ok(self.add_initializer(name, &shape, w.data(name)?))
    }

    /// timm `nn.Linear` `{module}.weight [out, in]` (+ bias): `x · Wᵀ + b` as MatMul + Add.
    /// The weight is stored transposed, as `{module}.weight.T [in, out]`.
    fn linear(&mut self, w: &VitWeights, x: &str, module: &str, bias: bool) -> Result<String> {
        let name = format!("{module}.weight");
        let data = w.data(&name)?;
        let shape = w.tensor(&name).map(|(s, _)| s.to_vec()).unwrap_or_default();
        let [rows, cols] = shape[..] else {
            return Err(Error::ShapeMismatch {
                origin: w.origin().to_owned(),
                tensor: name,
                expected: vec![0, 0],
                found: shape,
                hint: "a linear layer's weight must be 2-D".to_owned(),
            });
        };
        let mut transposed = vec![0.0; data.len()];
        for r in 0..rows {
            for c in 0..cols {
                transposed[c * rows + r] = data[r * cols + c];
            }
        }
        if let Some(ops) = self.int8 {
            return self.linear_int8(w, x, module, bias, ops, &transposed, [cols, rows]);
        }
        let wt = self.add_initializer(&format!("{name}.T"), &[cols, rows], &transposed);
        let y = self.add_node("MatMul", module, &[x, &wt], vec![]);
        if !bias {
            return Ok(y);
        }
        let b = self.weight(w, &format!("{module}.bias"))?;
        Ok(self.add_node("Add", &format!("{module}/add_bias"), &[&y, &b], vec![]))
    }

    /// [`Self::linear`] in int8: `wt` `[in, out]` quantised per output column.
    #[allow(clippy::too_many_arguments)]
    fn linear_int8(
        &mut self,
        w: &VitWeights,
        x: &str,
        module: &str,
        bias: bool,
        ops: Int8Ops,
        wt: &[f32],
        [k, n]: [usize; 2],
    ) -> Result<String> {
        let (q, scales) = quantize_per_column(wt, k, n);
        let name = format!("{module}.weight.T");
        let wq = self.add_tensor(&format!("{name}.int8"), &[k, n], DataType::Int8, q);
        let scale = self.add_initializer(&format!("{name}.scale"), &[n], &scales);
        let zero = self.add_tensor(&format!("{name}.zero_point"), &[n], DataType::Int8, vec![0; n]);
        let b = if bias { Some(self.weight(w, &format!("{module}.bias"))?) } else { None };
        match ops {
            Int8Ops::DynamicQuantizeMatMul => {
                let mut inputs = vec![x, &wq, &scale, &zero];
                if let Some(b) = &b {
                    inputs.push(b);
                }
                let out = module.to_owned();
                self.claim(&out);
                self.nodes.push(NodeProto {
                    input: inputs.iter().map(|s| (*s).to_owned()).collect(),
                    output: vec![out.clone()],
                    name: out.clone(),
                    op_type: "DynamicQuantizeMatMul".to_owned(),
                    domain: MS_DOMAIN.to_owned(),
                    ..NodeProto::default()
                });
                Ok(out)
            }
            Int8Ops::MatMulInteger => {
                let dq = format!("{module}/quantize");
                let outs = [dq.clone(), format!("{dq}.scale"), format!("{dq}.zero_point")];
                for o in &outs {
                    self.claim(o);
                }
                self.nodes.push(NodeProto {
                    input: vec![x.to_owned()],
                    output: outs.to_vec(),
                    name: dq.clone(),
                    op_type: "DynamicQuantizeLinear".to_owned(),
                    ..NodeProto::default()
                });
                let mm = self.add_node(
                    "MatMulInteger",
                    &format!("{module}/matmul_integer"),
                    &[&outs[0], &wq, &outs[2], &zero],
                    vec![],
                );
                let f = self.add_node(
                    "Cast",
                    &format!("{module}/cast"),
                    &[&mm],
                    vec![attr_int("to", DataType::Float as i64)],
                );
                let s =
                    self.add_node("Mul", &format!("{module}/scale"), &[&outs[1], &scale], vec![]);
                let y = self.add_node("Mul", module, &[&f, &s], vec![]);
                match b {
                    None => Ok(y),
                    Some(b) => {
                        Ok(self.add_node("Add", &format!("{module}/add_bias"), &[&y, &b], vec![]))
                    }
                }
            }
        }
    }

    /// Adds an initializer of `data_type` whose raw bytes are `bytes` (one per element).
    fn add_tensor(
        &mut self,
        name: &str,
        dims: &[usize],
        data_type: DataType,
        bytes: Vec<u8>,
    ) -> String {
        self.claim(name);
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(data_type as i32),
            name: name.to_owned(),
            raw_data: Some(bytes),
            ..TensorProto::default()
        });
        name.to_owned()
    }

    /// timm `nn.LayerNorm` over the last axis.
    fn layer_norm(&mut self, w: &VitWeights, x: &str, module: &str, eps: f32) -> Result<String> {
        let scale = self.weight(w, &format!("{module}.weight"))?;
        let bias = self.weight(w, &format!("{module}.bias"))?;
        Ok(self.add_node(
            "LayerNormalization",
            module,
            &[x, &scale, &bias],
            vec![axis(-1), attr_float("epsilon", eps)],
        ))
    }

    /// timm `LayerScale`: `x · gamma`.
    fn layer_scale(&mut self, w: &VitWeights, x: &str, module: &str) -> Result<String> {
        let gamma = self.weight(w, &format!("{module}.gamma"))?;
        Ok(self.add_node("Mul", module, &[x, &gamma], vec![]))
    }

    fn claim(&mut self, name: &str) {
        let fresh = self.names.insert(name.to_owned());
        debug_assert!(fresh, "value name {name} used twice in the ViT graph");
    }
}

/// Symmetric per-column int8 quantisation of a row-major `[k, n]` matrix: column `j` becomes
/// `round(w / s_j)` clamped to ±127 with `s_j = max_i |w_ij| / 127` (1 for an all-zero column).
/// Returns the int8 values (as bytes, row-major) and the `n` scales.
pub fn quantize_per_column(w: &[f32], k: usize, n: usize) -> (Vec<u8>, Vec<f32>) {
    let mut max = vec![0.0f32; n];
    for row in w.chunks_exact(n).take(k) {
        for (m, v) in max.iter_mut().zip(row) {
            *m = m.max(v.abs());
        }
    }
    let scales: Vec<f32> = max.iter().map(|&m| if m > 0.0 { m / 127.0 } else { 1.0 }).collect();
    let q = w
        .iter()
        .enumerate()
        .map(|(i, v)| (v / scales[i % n]).round().clamp(-127.0, 127.0) as i8 as u8)
        .collect();
    (q, scales)
}

fn attr_int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        r#type: Some(AttributeType::Int as i32),
        i: Some(value),
        ..AttributeProto::default()
    }
}

fn attr_ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        r#type: Some(AttributeType::Ints as i32),
        ints: values.to_vec(),
        ..AttributeProto::default()
    }
}

fn attr_float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        r#type: Some(AttributeType::Float as i32),
        f: Some(value),
        ..AttributeProto::default()
    }
}

fn axis(value: i64) -> AttributeProto {
    attr_int("axis", value)
}

fn perm(values: &[i64]) -> AttributeProto {
    attr_ints("perm", values)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use prost::Message;

    use super::*;
    use crate::proto::tensor_shape_proto::dimension::Value as Dim;
    use crate::proto::type_proto::Value as Type;
    use crate::proto::TypeProto;
    use crate::testing::{deit_config, random_vit};
    use crate::{ConfigOverrides, VitConfig};

    fn model(cfg: &VitConfig, output: GraphOutput) -> ModelProto {
        let w = VitWeights::with_config(cfg.clone(), random_vit(cfg, 1)).expect("weights");
        let bytes = build_vit_onnx(&w, output).expect("graph");
        ModelProto::decode(bytes.as_slice()).expect("decodes")
    }

    fn dims(info: &ValueInfoProto) -> Vec<Dim> {
        let Some(TypeProto { value: Some(Type::TensorType(t)), .. }) = &info.r#type else {
            panic!("{} is not a tensor", info.name)
        };
        t.shape.as_ref().unwrap().dim.iter().map(|d| d.value.clone().unwrap()).collect()
    }

    #[test]
    fn header_inputs_and_outputs() {
        let cfg = deit_config("vit_micro").unwrap();
        let m = model(&cfg, GraphOutput::Tokens);
        assert_eq!(m.ir_version, Some(8));
        assert_eq!(m.opset_import[0].version, Some(17));
        let g = m.graph.unwrap();
        assert_eq!(g.input.len(), 1);
        assert_eq!(g.input[0].name, "pixel_values");
        let batch = Dim::DimParam("batch".into());
        assert_eq!(
            dims(&g.input[0]),
            [batch.clone(), Dim::DimValue(3), Dim::DimValue(32), Dim::DimValue(32)]
        );
        assert_eq!(g.output[0].name, "tokens");
        assert_eq!(dims(&g.output[0]), [batch.clone(), Dim::DimValue(17), Dim::DimValue(32)]);

        let pooled = model(&cfg, GraphOutput::Pooled).graph.unwrap();
        assert_eq!(pooled.output[0].name, "pooled");
        assert_eq!(dims(&pooled.output[0]), [batch, Dim::DimValue(32)]);
        let config = &m.metadata_props[0];
        assert_eq!(config.key, "irtdb.vit_config");
        assert_eq!(serde_json::from_str::<VitConfig>(&config.value).unwrap(), cfg);
    }

    /// Every node input is defined before use, every name is unique, weights are raw f32.
    #[test]
    fn graph_is_well_formed() {
        for cfg in [
            deit_config("vit_micro").unwrap(),
            VitConfig {
                prefix_tokens: 2,
                layer_scale: true,
                qkv_bias: false,
                ..deit_config("vit_micro").unwrap()
            },
            VitConfig {
                reg_tokens: 4,
                no_embed_class: true,
                layer_scale: true,
                ..deit_config("vit_micro").unwrap()
            },
            VitConfig { reg_tokens: 1, fc_norm: true, ..deit_config("vit_micro").unwrap() },
        ] {
            for output in [GraphOutput::Tokens, GraphOutput::Pooled] {
                let g = model(&cfg, output).graph.unwrap();
                let mut defined: HashSet<&str> = g.input.iter().map(|i| i.name.as_str()).collect();
                for init in &g.initializer {
                    assert!(defined.insert(&init.name), "duplicate {}", init.name);
                    let bytes = init.raw_data.as_ref().expect("raw_data").len();
                    let elems: i64 = init.dims.iter().product();
                    let size = if init.data_type == Some(DataType::Int64 as i32) { 8 } else { 4 };
                    assert_eq!(bytes as i64, elems * size, "{}", init.name);
                }
                let mut node_names = HashSet::new();
                for node in &g.node {
                    assert!(node_names.insert(&node.name), "duplicate node {}", node.name);
                    for input in &node.input {
                        assert!(
                            defined.contains(input.as_str()),
                            "{}: {input} undefined",
                            node.name
                        );
                    }
                    for out in &node.output {
                        assert!(defined.insert(out), "{out} defined twice");
                    }
                }
                assert!(defined.contains(g.output[0].name.as_str()));
            }
        }
    }

    #[test]
    fn nodes_carry_timm_module_names() {
        let g = model(&deit_config("vit_micro").unwrap(), GraphOutput::Tokens).graph.unwrap();
        let names: HashSet<&str> = g.node.iter().map(|n| n.name.as_str()).collect();
        for name in ["patch_embed.proj", "blocks.1.attn.qkv", "blocks.0.mlp.fc2", "norm"] {
            assert!(names.contains(name), "no node {name}");
        }
        let qkv = g.initializer.iter().find(|t| t.name == "blocks.0.attn.qkv.weight.T").unwrap();
        assert_eq!(qkv.dims, [32, 96], "stored as [in, out]");
        // A zero-valued INT attribute must still be written (ONNX Runtime checks presence).
        let gather = g.node.iter().find(|n| n.name == "blocks.0.attn/q").unwrap();
        assert_eq!(gather.attribute[0].i, Some(0));
    }

    #[test]
    fn head_tensors_are_not_in_the_graph() {
        let cfg = deit_config("vit_micro").unwrap();
        let heads = ConfigOverrides { heads: Some(4), ..ConfigOverrides::default() };
        let w = VitWeights::from_tensors(random_vit(&cfg, 2), &heads).unwrap();
        assert!(w.tensor("head.weight").is_some());
        let bytes = build_vit_onnx(&w, GraphOutput::Tokens).unwrap();
        let g = ModelProto::decode(bytes.as_slice()).unwrap().graph.unwrap();
        assert!(g.initializer.iter().all(|t| !t.name.starts_with("head")));
    }
}
