//! `quantize_onnx`: a user's ONNX model rewritten to int8. irtdb's own fp32 ViT graph against
//! the int8 graph irtdb builds directly (same quantiser) and the fp32 one; hand-made Gemm /
//! MatMul + Add models against plain-Rust products (fp32, and int8 with ONNX Runtime's dynamic
//! uint8 activation quantisation done by hand); fields the rewrite does not touch kept byte for
//! byte; subgraphs left alone; the refusals.

use std::collections::HashSet;

use irtdb_onnx::proto::{
    tensor_shape_proto::Dimension, AttributeProto, AttributeType, DataType, GraphProto, ModelProto,
    NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto, ValueInfoProto,
};
use irtdb_onnx::quantize::split_fields;
use irtdb_onnx::testing::{deit_config, random_images, random_vit_with_std};
use irtdb_onnx::{
    build_vit_onnx, build_vit_onnx_with, quantize_onnx, quantize_per_column, GraphOutput,
    Precision, VitWeights, INPUT_NAME, MS_DOMAIN, POOLED_OUTPUT,
};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::{max_abs_diff, run_onnx};

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let n = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

fn graph_of(model: &[u8]) -> GraphProto {
    ModelProto::decode(model).expect("decodes").graph.expect("graph")
}

fn count(g: &GraphProto, op: &str) -> usize {
    g.node.iter().filter(|n| n.op_type == op).count()
}

#[test]
fn irtdbs_own_fp32_graph_rewrites_to_its_int8_graph() {
    let cfg = deit_config("vit_micro").expect("preset");
    let w = VitWeights::with_config(cfg.clone(), random_vit_with_std(&cfg, 31, 0.05)).unwrap();
    let fp32 = build_vit_onnx(&w, GraphOutput::Pooled).expect("fp32 graph");
    let built = build_vit_onnx_with(&w, GraphOutput::Pooled, Precision::Int8).expect("int8");
    let (rewritten, report) = quantize_onnx(&fp32).expect("rewrites");
    println!("{}", report.summary());

    let linear = 4 * cfg.depth;
    assert_eq!(report.quantised, linear, "qkv, proj, fc1, fc2 per block");
    assert_eq!(report.with_bias, linear, "every linear layer has a bias here");
    assert_eq!(report.folded_adds, linear);
    assert_eq!(report.removed_initializers, linear, "the fp32 weights are gone");
    assert_eq!(report.left_fp32.len(), 2 * cfg.depth, "attention logits and context");
    assert!(report.left_fp32.iter().all(|(_, why)| why.contains("computed")), "{report:?}");

    let m = ModelProto::decode(&rewritten[..]).unwrap();
    assert!(m.opset_import.iter().any(|o| o.domain == MS_DOMAIN && o.version == Some(1)));
    let g = m.graph.unwrap();
    let before = graph_of(&fp32);
    assert_eq!(count(&g, "DynamicQuantizeMatMul"), linear);
    assert_eq!(count(&g, "Add"), count(&before, "Add") - linear, "bias Adds folded");
    let inits: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    for n in g.node.iter().filter(|n| n.op_type == "MatMul") {
        assert!(n.input.iter().all(|i| !inits.contains(i.as_str())), "{} kept a weight", n.name);
    }
    assert!(!inits.iter().any(|n| n.ends_with(".weight.T")), "no fp32 linear weight left");
    for i in 0..cfg.depth {
        let node = g.node.iter().find(|n| n.name == format!("blocks.{i}.mlp.fc1")).unwrap();
        assert_eq!(node.op_type, "DynamicQuantizeMatMul");
        assert_eq!(node.domain, MS_DOMAIN);
        assert_eq!(node.output, [format!("blocks.{i}.mlp.fc1/add_bias")], "the Add's output");
        assert_eq!(node.input[3], "", "zero point absent (0)");
        assert_eq!(node.input[4], format!("blocks.{i}.mlp.fc1.bias"));
    }
    // The same quantiser as the int8 build: the same int8 weights and scales.
    let built_g = graph_of(&built);
    let tensor = |g: &GraphProto, name: &str| {
        g.initializer.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("{name}")).clone()
    };
    for module in ["blocks.0.attn.qkv", "blocks.1.mlp.fc2"] {
        let ours = tensor(&g, &format!("{module}.weight.T_int8"));
        let theirs = tensor(&built_g, &format!("{module}.weight.T.int8"));
        assert_eq!((ours.dims, ours.raw_data), (theirs.dims, theirs.raw_data), "{module}");
        let ours = tensor(&g, &format!("{module}.weight.T_scale"));
        let theirs = tensor(&built_g, &format!("{module}.weight.T.scale"));
        assert_eq!(ours.raw_data, theirs.raw_data, "{module} scales");
    }

    let batch = 6;
    let images = random_images(&cfg, batch, 32);
    let shape = vec![batch, 3, cfg.img_size[0], cfg.img_size[1]];
    let run =
        |model: &[u8]| run_onnx(model, INPUT_NAME, shape.clone(), images.clone(), POOLED_OUTPUT).1;
    let (f, q, b) = (run(&fp32), run(&rewritten), run(&built));
    let diff = max_abs_diff(&q, &b);
    println!("rewritten vs int8 build: max |diff| {diff:e}");
    assert!(diff <= 1e-4, "the rewrite computes what the int8 build does: {diff}");
    for (i, (a, r)) in q.chunks(cfg.dim).zip(f.chunks(cfg.dim)).enumerate() {
        let c = cosine(a, r);
        println!("image {i}: int8 rewrite vs fp32 cosine {c:.6}");
        assert!(c >= 0.99, "image {i}: cosine {c}");
    }
    assert!(max_abs_diff(&q, &f) > 1e-6, "int8 rounding shows: not the fp32 graph");
}

fn f32_tensor(name: &str, dims: &[i64], v: &[f32], raw: bool) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        name: name.into(),
        raw_data: raw.then(|| v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        float_data: if raw { Vec::new() } else { v.to_vec() },
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: format!("{output}_node"),
        attribute: attrs,
        ..Default::default()
    }
}

fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: Some(AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}

fn vec2(name: &str, cols: i64) -> ValueInfoProto {
    ValueInfoProto::tensor(
        name,
        DataType::Float,
        [Dimension::symbol("batch"), Dimension::fixed(cols)],
    )
}

fn model(graph: GraphProto) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: Some(17) }],
        producer_name: "irtdb-tests".into(),
        graph: Some(graph),
        ..Default::default()
    }
}

fn randn(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale).collect()
}

/// `x [B, K]` → `h = Gemm(x, W1 [N, K], c1, transB = 1)` → `y = b2 + MatMul(h, W2 [N, M])`
/// (the bias first, W2 in `float_data`); `v = Gemm(x, W4 [K, 3]) + b4` (transB = 0, the bias
/// an `Add`); and `z = Gemm(x, W3 [K, 4], alpha = 0.5)`, which stays fp32. Outputs h, y, z, v.
struct Dense {
    k: usize,
    n: usize,
    m: usize,
    w1: Vec<f32>,
    c1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
    w3: Vec<f32>,
    w4: Vec<f32>,
    b4: Vec<f32>,
}

impl Dense {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let (k, n, m) = (16, 12, 8);
        Dense {
            k,
            n,
            m,
            w1: randn(&mut rng, n * k, 0.5),
            c1: randn(&mut rng, n, 0.2),
            w2: randn(&mut rng, n * m, 0.5),
            b2: randn(&mut rng, m, 0.2),
            w3: randn(&mut rng, k * 4, 0.5),
            w4: randn(&mut rng, k * 3, 0.5),
            b4: randn(&mut rng, 3, 0.2),
        }
    }

    fn graph(&self) -> GraphProto {
        let (k, n, m) = (self.k as i64, self.n as i64, self.m as i64);
        GraphProto {
            name: "dense".into(),
            node: vec![
                node("Gemm", &["x", "W1", "c1"], "h", vec![attr_int("transB", 1)]),
                node("MatMul", &["h", "W2"], "mm", vec![]),
                node("Add", &["b2", "mm"], "y", vec![]),
                node("Gemm", &["x", "W3"], "z", vec![attr_float("alpha", 0.5)]),
                node("Gemm", &["x", "W4"], "g4", vec![attr_int("transB", 0)]),
                node("Add", &["g4", "b4"], "v", vec![]),
            ],
            initializer: vec![
                f32_tensor("W1", &[n, k], &self.w1, true),
                f32_tensor("c1", &[n], &self.c1, true),
                f32_tensor("W2", &[n, m], &self.w2, false),
                f32_tensor("b2", &[m], &self.b2, true),
                f32_tensor("W3", &[k, 4], &self.w3, true),
                f32_tensor("W4", &[k, 3], &self.w4, true),
                f32_tensor("b4", &[3], &self.b4, true),
            ],
            input: vec![vec2("x", k)],
            output: vec![vec2("h", n), vec2("y", m), vec2("z", 4), vec2("v", 3)],
            ..Default::default()
        }
    }

    /// fp32 in plain loops: h, y, z, v for `x` `[rows, K]`.
    fn forward(&self, x: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
        let (k, n, m) = (self.k, self.n, self.m);
        let rows = x.len() / k;
        let mut h = vec![0.0; rows * n];
        let mut y = vec![0.0; rows * m];
        let mut z = vec![0.0; rows * 4];
        let mut v = vec![0.0; rows * 3];
        for r in 0..rows {
            let xr = &x[r * k..(r + 1) * k];
            for j in 0..n {
                h[r * n + j] = self.c1[j] + (0..k).map(|i| xr[i] * self.w1[j * k + i]).sum::<f32>();
            }
            for j in 0..m {
                y[r * m + j] =
                    self.b2[j] + (0..n).map(|i| h[r * n + i] * self.w2[i * m + j]).sum::<f32>();
            }
            for j in 0..4 {
                z[r * 4 + j] = 0.5 * (0..k).map(|i| xr[i] * self.w3[i * 4 + j]).sum::<f32>();
            }
            for j in 0..3 {
                v[r * 3 + j] = self.b4[j] + (0..k).map(|i| xr[i] * self.w4[i * 3 + j]).sum::<f32>();
            }
        }
        (h, y, z, v)
    }
}

/// ONNX Runtime's `DynamicQuantizeLinear` of the activations (uint8, per tensor, the range
/// widened to hold 0), then the integer product with the int8 weights `[K, N]`, scaled back,
/// plus the bias.
fn int8_product(x: &[f32], k: usize, wq: &[u8], scales: &[f32], bias: &[f32]) -> Vec<f32> {
    let n = scales.len();
    let lo = x.iter().copied().fold(0.0f32, f32::min);
    let hi = x.iter().copied().fold(0.0f32, f32::max);
    let scale = (hi - lo) / 255.0;
    let zp = (-lo / scale).round_ties_even().clamp(0.0, 255.0);
    let q: Vec<f32> =
        x.iter().map(|v| ((v / scale).round_ties_even() + zp).clamp(0.0, 255.0) - zp).collect();
    let rows = x.len() / k;
    let mut out = vec![0.0; rows * n];
    for r in 0..rows {
        for j in 0..n {
            let acc: f32 = (0..k).map(|i| q[r * k + i] * f32::from(wq[i * n + j] as i8)).sum();
            out[r * n + j] = acc * scale * scales[j] + bias[j];
        }
    }
    out
}

#[test]
fn gemm_and_matmul_add_against_plain_products() {
    let d = Dense::new(5);
    let fp32 = model(d.graph()).encode_to_vec();
    let (q, report) = quantize_onnx(&fp32).expect("rewrites");
    println!("{}", report.summary());
    assert_eq!((report.quantised, report.with_bias, report.folded_adds), (3, 3, 2));
    assert_eq!(report.removed_initializers, 3, "W1, W2 and W4");
    assert_eq!(report.left_fp32.len(), 1, "{report:?}");
    assert!(report.left_fp32[0].1.contains("alpha"), "{report:?}");
    assert!(
        report.summary().contains("3 of 4 MatMul/Gemm nodes quantised"),
        "{}",
        report.summary()
    );
    let g = graph_of(&q);
    assert_eq!(count(&g, "DynamicQuantizeMatMul"), 3);
    assert_eq!(count(&g, "Add"), 0);
    assert_eq!(count(&g, "Gemm"), 1, "the alpha = 0.5 Gemm stays");
    let names: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    assert!(["W1", "W2", "W4"].iter().all(|w| !names.contains(w)), "{names:?}");
    assert!(names.contains("W3"), "{names:?}");

    let rows = 5;
    let x = randn(&mut StdRng::seed_from_u64(6), rows * d.k, 1.5);
    let run = |model: &[u8], out: &str| run_onnx(model, "x", vec![rows, d.k], x.clone(), out).1;
    let (h, y, z, v) = d.forward(&x);
    let qv = run(&q, "v");
    let (qh, qy, qz) = (run(&q, "h"), run(&q, "y"), run(&q, "z"));
    assert!(max_abs_diff(&qz, &z) < 1e-5, "the fp32 Gemm is untouched");
    for (name, got, want, width) in [("h", &qh, &h, d.n), ("y", &qy, &y, d.m), ("v", &qv, &v, 3)] {
        for (r, (a, b)) in got.chunks(width).zip(want.chunks(width)).enumerate() {
            let c = cosine(a, b);
            assert!(c >= 0.99, "{name} row {r}: int8 vs fp32 cosine {c}");
        }
        assert!(max_abs_diff(got, want) > 1e-6, "{name}: int8 rounding shows");
    }
    // h by hand: W1ᵀ [K, N] quantised per column, x quantised as ONNX Runtime does.
    let mut w1t = vec![0.0; d.k * d.n];
    for j in 0..d.n {
        for i in 0..d.k {
            w1t[i * d.n + j] = d.w1[j * d.k + i];
        }
    }
    let (wq, scales) = quantize_per_column(&w1t, d.k, d.n);
    let hand = int8_product(&x, d.k, &wq, &scales, &d.c1);
    let peak = hand.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = max_abs_diff(&qh, &hand);
    println!("h: ONNX Runtime vs hand int8 max |diff| {diff:e} (peak {peak})");
    assert!(diff <= 1e-4 * peak.max(1.0), "h against the hand int8 product: {diff}");
}

/// Raw fields of a message whose tag is not in `skip`, as bytes.
fn fields_except(msg: &[u8], skip: &[u32]) -> Vec<Vec<u8>> {
    split_fields(msg)
        .expect("splits")
        .into_iter()
        .filter(|f| !skip.contains(&f.tag))
        .map(|f| f.bytes.to_vec())
        .collect()
}

/// The value of field `tag` (the first), raw.
fn field(msg: &[u8], tag: u32) -> Vec<u8> {
    split_fields(msg).unwrap().into_iter().find(|f| f.tag == tag).unwrap().value.to_vec()
}

#[test]
fn fields_the_rewrite_does_not_touch_survive_byte_for_byte() {
    let d = Dense::new(7);
    let mut g = d.graph();
    g.doc_string = "a graph doc string".into();
    // A value info of the product the Add is folded into (it disappears) and of h.
    g.value_info = vec![vec2("mm", d.m as i64), vec2("h", d.n as i64)];
    g.node[1].doc_string = "the second layer".into();
    g.node[1].metadata_props =
        vec![StringStringEntryProto { key: "origin".into(), value: "layer2".into() }];
    let mut m = model(g);
    m.doc_string = "a model doc string".into();
    m.metadata_props = vec![StringStringEntryProto { key: "author".into(), value: "me".into() }];
    let mut bytes = m.encode_to_vec();
    // Fields this crate's proto subset does not know, in the model and in the graph: a model
    // (and graph) field number from a future IR, kept as unknown bytes.
    let mut graph = field(&bytes, 7);
    let unknown_graph = [0xaa, 0x06, 0x03, b'x', b'y', b'z']; // field 101, "xyz"
    graph.extend_from_slice(&unknown_graph);
    let unknown_model = [0xa8, 0x06, 0x2a]; // field 101, varint 42
    let mut with_unknown = fields_except(&bytes, &[7]).concat();
    with_unknown.extend_from_slice(&unknown_model);
    with_unknown.push(0x3a); // field 7, length-delimited
    prost::encoding::encode_varint(graph.len() as u64, &mut with_unknown);
    with_unknown.extend_from_slice(&graph);
    bytes = with_unknown;

    let (q, report) = quantize_onnx(&bytes).expect("rewrites");
    assert_eq!(report.quantised, 3);
    // The model: every field but the graph as it was, plus the contrib opset import.
    let before = fields_except(&bytes, &[7]);
    let after = fields_except(&q, &[7]);
    let ms = OperatorSetIdProto { domain: MS_DOMAIN.into(), version: Some(1) };
    let mut opset = vec![0x42];
    prost::encoding::encode_varint(ms.encoded_len() as u64, &mut opset);
    opset.extend(ms.encode_to_vec());
    let mut expected = before.clone();
    let at = before.iter().rposition(|f| f[0] == 0x42).unwrap() + 1;
    expected.insert(at, opset);
    assert_eq!(after, expected, "model fields kept in order, the opset import added");
    assert!(after.iter().any(|f| f[..] == unknown_model), "the unknown model field survives");
    // The graph: every field but nodes and initializers untouched, in order.
    let (g0, g1) = (field(&bytes, 7), field(&q, 7));
    assert_eq!(fields_except(&g0, &[1, 5]), fields_except(&g1, &[1, 5]));
    assert!(fields_except(&g1, &[1, 5]).iter().any(|f| f[..] == unknown_graph));
    // Initializers kept (c1, b2, W3) and the untouched node (the alpha Gemm) byte-identical.
    let kept: Vec<Vec<u8>> = fields_except(&g1, &[]);
    for f in split_fields(&g0).unwrap() {
        let keep = match f.tag {
            5 => ["c1", "b2", "W3"].contains(&TensorProto::decode(f.value).unwrap().name.as_str()),
            1 => NodeProto::decode(f.value).unwrap().output == ["z"],
            _ => false,
        };
        if keep {
            assert!(kept.contains(&f.bytes.to_vec()), "field {} changed", f.tag);
        }
    }
    // The replaced node carries its name, doc string and metadata over.
    let g = graph_of(&q);
    let n = g.node.iter().find(|n| n.name == "mm_node").unwrap();
    assert_eq!(n.op_type, "DynamicQuantizeMatMul");
    assert_eq!(n.doc_string, "the second layer");
    assert_eq!(n.metadata_props[0].value, "layer2");
    // ONNX Runtime loads it (a value info of a value that no longer exists is harmless) and
    // computes what the plain model does.
    let x = randn(&mut StdRng::seed_from_u64(8), 3 * d.k, 1.0);
    let y = run_onnx(&q, "x", vec![3, d.k], x.clone(), "y").1;
    let (_, want, _, _) = d.forward(&x);
    assert!(cosine(&y, &want) >= 0.99);
}

#[test]
fn subgraphs_are_left_alone_and_names_do_not_collide() {
    let mut rng = StdRng::seed_from_u64(9);
    let (k, n) = (8, 6);
    let w = randn(&mut rng, k * n, 0.5);
    let branch = |name: &str| GraphProto {
        name: name.into(),
        node: vec![node("MatMul", &["x", "W"], &format!("{name}_out"), vec![])],
        output: vec![vec2(&format!("{name}_out"), n as i64)],
        ..Default::default()
    };
    let sub = |name: &str, g: GraphProto| AttributeProto {
        name: name.into(),
        r#type: Some(AttributeType::Graph as i32),
        g: Some(Box::new(g)),
        ..Default::default()
    };
    let graph = GraphProto {
        name: "if".into(),
        node: vec![
            node("MatMul", &["x", "W"], "y", vec![]),
            node(
                "If",
                &["cond"],
                "s",
                vec![sub("then_branch", branch("then")), sub("else_branch", branch("else"))],
            ),
            // Holds the name the quantised weight would take.
            node("Identity", &["x"], "W_int8", vec![]),
        ],
        initializer: vec![
            f32_tensor("W", &[k as i64, n as i64], &w, true),
            TensorProto {
                data_type: Some(DataType::Bool as i32),
                name: "cond".into(),
                raw_data: Some(vec![1]),
                ..Default::default()
            },
        ],
        input: vec![vec2("x", k as i64)],
        output: vec![vec2("y", n as i64), vec2("s", n as i64), vec2("W_int8", k as i64)],
        ..Default::default()
    };
    let (q, report) = quantize_onnx(&model(graph).encode_to_vec()).expect("rewrites");
    println!("{}", report.summary());
    assert_eq!(report.quantised, 1);
    let sub_left: Vec<_> =
        report.left_fp32.iter().filter(|(_, w)| w.contains("subgraph")).collect();
    assert_eq!(sub_left.len(), 2, "{report:?}");
    assert_eq!(report.removed_initializers, 0, "W is still read inside the branches");
    let g = graph_of(&q);
    let dq = g.node.iter().find(|n| n.op_type == "DynamicQuantizeMatMul").unwrap();
    assert_eq!(dq.input[1], "W_int8_1", "a fresh name");
    let x = randn(&mut rng, 4 * k, 1.0);
    let run = |out: &str| run_onnx(&q, "x", vec![4, k], x.clone(), out).1;
    let mut want = vec![0.0f32; 4 * n];
    for r in 0..4 {
        for j in 0..n {
            want[r * n + j] = (0..k).map(|i| x[r * k + i] * w[i * n + j]).sum();
        }
    }
    assert!(max_abs_diff(&run("s"), &want) < 1e-5, "the branch runs fp32 on the kept W");
    assert!(cosine(&run("y"), &want) >= 0.99);
}

#[test]
fn models_with_nothing_to_quantise_or_external_weights_are_refused() {
    let err = |bytes: &[u8]| quantize_onnx(bytes).expect_err("refused").to_string();
    // Only a product of two activations (attention-like) and an Identity.
    let g = GraphProto {
        name: "qk".into(),
        node: vec![
            node("MatMul", &["x", "x_t"], "y", vec![]),
            node("Identity", &["x"], "x_t", vec![]),
        ],
        input: vec![vec2("x", 4)],
        output: vec![vec2("y", 4)],
        ..Default::default()
    };
    let e = err(&model(g).encode_to_vec());
    assert!(e.contains("none of its 1 MatMul/Gemm nodes") && e.contains("computed"), "{e}");
    assert!(
        e.contains("--precision fp32") && e.contains("quantize_dynamic"),
        "says what to do: {e}"
    );
    let e = err(&irtdb_onnx::testing::identity_model(&[-1, 4]));
    assert!(e.contains("no MatMul or Gemm node") && e.contains("quantize_dynamic"), "{e}");
    // A weight also declared as a graph input (an old exporter's overridable initializer).
    let d = Dense::new(3);
    let mut overridable = d.graph();
    overridable.node.truncate(1);
    overridable.output.truncate(1);
    overridable.input.push(vec2("W1", d.k as i64));
    let e = err(&model(overridable).encode_to_vec());
    assert!(e.contains("also a graph input"), "{e}");
    // Weights in an external data file.
    let mut external = d.graph();
    let w1 = &mut external.initializer[0];
    w1.raw_data = None;
    w1.data_location = Some(1);
    w1.external_data = vec![
        StringStringEntryProto { key: "location".into(), value: "weights.bin".into() },
        StringStringEntryProto { key: "length".into(), value: "768".into() },
    ];
    let e = err(&model(external).encode_to_vec());
    assert!(e.contains("`W1` is stored as external data") && e.contains("quantize_dynamic"), "{e}");
    let e = err(b"\xff\xff\xff not a model");
    assert!(e.contains("not a valid ONNX model"), "{e}");
}
