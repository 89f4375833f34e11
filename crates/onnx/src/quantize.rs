//! int8 for a user's ONNX model: rewriting its weight `MatMul` / `Gemm` nodes into ONNX
//! Runtime's `com.microsoft.DynamicQuantizeMatMul`, the operator [`crate::Precision::Int8`]
//! graphs use.
//!
//! Why at the protobuf wire level: [`crate::proto`] holds only the subset of `onnx.proto` that
//! irtdb writes, so decoding a user's model with it and encoding it again would drop whatever
//! the subset lacks (sparse initializers, functions, training info, newer fields). Instead the
//! `ModelProto` and its main `GraphProto` are split into their raw fields ([`split_fields`]);
//! every field the rewrite does not change is copied byte for byte, and only the nodes it
//! replaces and the initializers it reads are decoded.
//!
//! The rewrite, node by node in the main graph (subgraphs of `If`/`Loop`/`Scan` are left as
//! they are):
//! - `MatMul(A, B)` with `B` a 2-D float32 initializer `[K, N]` becomes
//!   `DynamicQuantizeMatMul(A, B_q, scale)`, `B` quantised per output column by
//!   [`crate::quantize_per_column`] (symmetric int8, zero point 0);
//! - `Gemm(A, B, C)` likewise when `alpha = beta = 1`, `transA = 0` (with `transB = 1`, `B` is
//!   transposed first) and `C` is absent or a 1-D float32 initializer of length N (the bias);
//! - when the product's only consumer is an `Add` of a 1-D float32 initializer of length N, the
//!   `Add` is folded into the node's bias input (the new node takes the `Add`'s output name).
//!
//! Weights no longer used by any node are removed; the `com.microsoft` opset is imported.

use std::collections::{HashMap, HashSet};

use prost::encoding::{decode_key, decode_varint, encode_key, encode_varint, WireType};
use prost::Message;

use crate::error::{Error, Result};
use crate::graph::{quantize_per_column, MS_DOMAIN};
use crate::proto::{AttributeProto, DataType, NodeProto, OperatorSetIdProto, TensorProto};

/// The version of the rewrite [`quantize_onnx`] does: bump it whenever the same model would be
/// rewritten differently (the ort plugin's optimised-model cache keys on it).
pub const QUANTIZE_VERSION: u32 = 1;

/// What to do instead when a model cannot be rewritten.
const HINT: &str = "index it at fp32 (--precision fp32, the default), or quantise it yourself \
                    (e.g. with onnxruntime.quantization.quantize_dynamic) and index the result \
                    at fp32";

/// What [`quantize_onnx`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuantizeReport {
    /// `MatMul` / `Gemm` nodes rewritten to `DynamicQuantizeMatMul`.
    pub quantised: usize,
    /// Of those, the ones that took a bias (a `Gemm`'s `C` or a folded `Add`).
    pub with_bias: usize,
    /// `Add` nodes folded into the node before them.
    pub folded_adds: usize,
    /// `MatMul` / `Gemm` nodes left in fp32 (subgraphs included), each with the reason.
    pub left_fp32: Vec<(String, String)>,
    /// fp32 weight initializers removed (no node uses them any more).
    pub removed_initializers: usize,
}

impl QuantizeReport {
    /// One line: how many nodes were quantised, how many stayed fp32 and why.
    pub fn summary(&self) -> String {
        let total = self.quantised + self.left_fp32.len();
        let mut s = format!(
            "{} of {total} MatMul/Gemm nodes quantised to int8 ({} with a fused bias)",
            self.quantised, self.with_bias
        );
        if !self.left_fp32.is_empty() {
            s.push_str(&format!("; {} left fp32: {}", self.left_fp32.len(), self.reasons()));
        }
        s
    }

    /// The reasons nodes were left fp32, each with its count, most frequent first.
    fn reasons(&self) -> String {
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for (_, why) in &self.left_fp32 {
            match counts.iter_mut().find(|(w, _)| *w == why) {
                Some((_, n)) => *n += 1,
                None => counts.push((why, 1)),
            }
        }
        counts.sort_by_key(|c| std::cmp::Reverse(c.1));
        counts.iter().map(|(w, n)| format!("{n} {w}")).collect::<Vec<_>>().join(", ")
    }
}

/// One field of an encoded protobuf message, as it is on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawField<'a> {
    /// The field number.
    pub tag: u32,
    /// The wire type.
    pub wire_type: WireType,
    /// The whole field as encoded: key and value.
    pub bytes: &'a [u8],
    /// The value: a length-delimited field's content (without its length), else the varint or
    /// fixed-width bytes.
    pub value: &'a [u8],
}

/// Splits an encoded protobuf message into its fields, in order. Groups (a wire type proto3
/// and ONNX never use) are refused.
pub fn split_fields(msg: &[u8]) -> std::result::Result<Vec<RawField<'_>>, String> {
    let mut fields = Vec::new();
    let mut rest = msg;
    while !rest.is_empty() {
        let start = msg.len() - rest.len();
        let (tag, wire_type) = decode_key(&mut rest).map_err(|e| e.to_string())?;
        let value_start = msg.len() - rest.len();
        let (from, to) = match wire_type {
            WireType::Varint => {
                decode_varint(&mut rest).map_err(|e| e.to_string())?;
                (value_start, msg.len() - rest.len())
            }
            WireType::SixtyFourBit | WireType::ThirtyTwoBit => {
                let n = if wire_type == WireType::SixtyFourBit { 8 } else { 4 };
                if rest.len() < n {
                    return Err(format!("field {tag} is cut short"));
                }
                rest = &rest[n..];
                (value_start, value_start + n)
            }
            WireType::LengthDelimited => {
                let len = decode_varint(&mut rest).map_err(|e| e.to_string())?;
                let len = usize::try_from(len).map_err(|e| e.to_string())?;
                if rest.len() < len {
                    return Err(format!("field {tag} is cut short ({len} bytes announced)"));
                }
                let from = msg.len() - rest.len();
                rest = &rest[len..];
                (from, from + len)
            }
            WireType::StartGroup | WireType::EndGroup => {
                return Err(format!("field {tag} is a protobuf group, which ONNX never uses"))
            }
        };
        let end = msg.len() - rest.len();
        fields.push(RawField { tag, wire_type, bytes: &msg[start..end], value: &msg[from..to] });
    }
    Ok(fields)
}

/// Appends a length-delimited field `tag` holding `value`.
fn put_bytes(out: &mut Vec<u8>, tag: u32, value: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(value.len() as u64, out);
    out.extend_from_slice(value);
}

/// Appends message `msg` as field `tag`.
fn put_message(out: &mut Vec<u8>, tag: u32, msg: &impl Message) {
    put_bytes(out, tag, &msg.encode_to_vec());
}

fn invalid(what: String) -> Error {
    Error::Quantize {
        reason: format!("it is not a valid ONNX model ({what})"),
        hint: "check the file (e.g. with onnx.checker.check_model) or re-export it".into(),
    }
}

fn refuse(reason: String) -> Error {
    Error::Quantize { reason, hint: HINT.into() }
}

fn split<'a>(msg: &'a [u8], what: &str) -> Result<Vec<RawField<'a>>> {
    split_fields(msg).map_err(|e| invalid(format!("{what}: {e}")))
}

fn utf8(bytes: &[u8], what: &str) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| invalid(format!("{what} is not UTF-8")))
}

/// A varint field's value.
fn varint(f: &RawField<'_>) -> Result<u64> {
    let mut v = f.value;
    decode_varint(&mut v).map_err(|e| invalid(format!("field {}: {e}", f.tag)))
}

/// What an initializer says about itself, read without copying its data.
#[derive(Debug)]
struct TensorHead {
    name: String,
    dims: Vec<i64>,
    data_type: i32,
    /// Its data lives in another file (`data_location` EXTERNAL or `external_data` entries).
    external: bool,
    /// It has only fields [`TensorProto`] decodes (no `segment`, no other typed data).
    plain: bool,
}

/// Reads a `TensorProto`'s name, shape, type and where its data is.
fn tensor_head(bytes: &[u8]) -> Result<TensorHead> {
    let mut t = TensorHead {
        name: String::new(),
        dims: Vec::new(),
        data_type: 0,
        external: false,
        plain: true,
    };
    for f in split(bytes, "an initializer")? {
        match (f.tag, f.wire_type) {
            (1, WireType::Varint) => t.dims.push(varint(&f)? as i64),
            (1, WireType::LengthDelimited) => {
                let mut v = f.value;
                while !v.is_empty() {
                    let d = decode_varint(&mut v).map_err(|e| invalid(format!("dims: {e}")))?;
                    t.dims.push(d as i64);
                }
            }
            (2, _) => t.data_type = varint(&f)? as i32,
            (8, _) => t.name = utf8(f.value, "an initializer's name")?,
            (13, _) => t.external = true,
            (14, _) => t.external |= varint(&f)? == 1,
            (4 | 9 | 12 | 16, _) => {}
            _ => t.plain = false,
        }
    }
    Ok(t)
}

/// Every value name a graph mentions, its subgraphs included (node inputs and outputs,
/// initializers, sparse initializers, inputs, outputs, value infos), and how many `MatMul` /
/// `Gemm` nodes it holds.
fn graph_names(graph: &[u8], names: &mut HashSet<String>, matmuls: &mut Vec<String>) -> Result<()> {
    for f in split(graph, "a graph")? {
        match f.tag {
            1 => node_names(f.value, names, matmuls)?,
            5 => {
                for t in split(f.value, "an initializer")? {
                    if t.tag == 8 {
                        names.insert(utf8(t.value, "a name")?);
                    }
                }
            }
            15 => {
                for s in split(f.value, "a sparse initializer")? {
                    if s.tag == 1 || s.tag == 2 {
                        for t in split(s.value, "a sparse initializer")? {
                            if t.tag == 8 {
                                names.insert(utf8(t.value, "a name")?);
                            }
                        }
                    }
                }
            }
            11..=13 => {
                for v in split(f.value, "a value info")? {
                    if v.tag == 1 {
                        names.insert(utf8(v.value, "a name")?);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// [`graph_names`] of one node: its inputs and outputs and its subgraphs' names.
fn node_names(node: &[u8], names: &mut HashSet<String>, matmuls: &mut Vec<String>) -> Result<()> {
    let (mut op, mut domain, mut label) = (String::new(), String::new(), String::new());
    for f in split(node, "a node")? {
        match f.tag {
            1 | 2 => {
                let n = utf8(f.value, "a value name")?;
                if f.tag == 2 && label.is_empty() {
                    label = n.clone();
                }
                names.insert(n);
            }
            3 => label = utf8(f.value, "a node name")?,
            4 => op = utf8(f.value, "an op type")?,
            7 => domain = utf8(f.value, "a domain")?,
            5 => subgraph_names(f.value, names, matmuls)?,
            _ => {}
        }
    }
    if is_default_domain(&domain) && (op == "MatMul" || op == "Gemm") {
        matmuls.push(label);
    }
    Ok(())
}

/// [`graph_names`] of the subgraphs of one attribute (`g`, `graphs`).
fn subgraph_names(
    attr: &[u8],
    names: &mut HashSet<String>,
    matmuls: &mut Vec<String>,
) -> Result<()> {
    for a in split(attr, "an attribute")? {
        if a.tag == 6 || a.tag == 11 {
            graph_names(a.value, names, matmuls)?;
        }
    }
    Ok(())
}

fn is_default_domain(domain: &str) -> bool {
    domain.is_empty() || domain == "ai.onnx"
}

/// A main-graph node, decoded, with what the rewrite needs to know of its raw form.
struct Node {
    proto: NodeProto,
    /// Fields [`NodeProto`] does not decode (`overload`, `device_configurations`, ...): such a
    /// node is not replaced, since its replacement would lose them.
    extra_fields: bool,
}

/// How one `MatMul` / `Gemm` is rewritten.
struct Plan {
    node: usize,
    a: String,
    b: String,
    /// `B` is `[N, K]` (Gemm `transB = 1`).
    trans_b: bool,
    bias: Option<String>,
    /// The `Add` folded into it.
    folded: Option<usize>,
    output: String,
}

/// Rewrites an ONNX model's constant-weight `MatMul` / `Gemm` nodes to int8 (see the module
/// documentation) and returns the new model with what was done.
///
/// Fails, saying what to do instead, when the model is not valid protobuf, keeps weights in
/// external data files, or has no node to rewrite.
pub fn quantize_onnx(bytes: &[u8]) -> Result<(Vec<u8>, QuantizeReport)> {
    let model = split(bytes, "the model")?;
    let graphs: Vec<usize> = (0..model.len()).filter(|&i| model[i].tag == 7).collect();
    let &[graph_at] = graphs.as_slice() else {
        return Err(invalid(format!("{} graphs in the model, expected 1", graphs.len())));
    };
    let graph = split(model[graph_at].value, "the graph")?;

    // Names: every one the model mentions (new names must not collide), those its subgraphs
    // use (whose values must stay), the graph's inputs and outputs.
    let mut all_names = HashSet::new();
    let mut sub_names = HashSet::new();
    let mut sub_matmuls = Vec::new();
    graph_names(model[graph_at].value, &mut all_names, &mut Vec::new())?;
    let (mut inputs, mut outputs) = (HashSet::new(), HashSet::new());
    let mut nodes = Vec::new();
    let mut node_at = Vec::new();
    let mut inits: HashMap<String, usize> = HashMap::new();
    let mut heads = HashMap::new();
    for (i, f) in graph.iter().enumerate() {
        match f.tag {
            1 => {
                let proto =
                    NodeProto::decode(f.value).map_err(|e| invalid(format!("a node: {e}")))?;
                let mut extra_fields = false;
                for nf in split(f.value, "a node")? {
                    match nf.tag {
                        5 => subgraph_names(nf.value, &mut sub_names, &mut sub_matmuls)?,
                        1..=7 | 9 => {}
                        _ => extra_fields = true,
                    }
                }
                nodes.push(Node { proto, extra_fields });
                node_at.push(i);
            }
            5 => {
                let head = tensor_head(f.value)?;
                if head.external {
                    return Err(refuse(format!(
                        "initializer `{}` is stored as external data (a file beside the \
                         model); irtdb rewrites only models whose weights are inside the .onnx \
                         file",
                        head.name
                    )));
                }
                inits.insert(head.name.clone(), i);
                heads.insert(head.name.clone(), head);
            }
            11 | 12 => {
                for v in split(f.value, "a value info")? {
                    if v.tag == 1 {
                        let name = utf8(v.value, "a name")?;
                        if f.tag == 11 { &mut inputs } else { &mut outputs }.insert(name);
                    }
                }
            }
            _ => {}
        }
    }
    let training_info = model.iter().any(|f| f.tag == 20);

    // Who reads each value in the main graph (graph outputs and subgraphs count as readers).
    let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (j, n) in nodes.iter().enumerate() {
        for input in &n.proto.input {
            consumers.entry(input.as_str()).or_default().push(j);
        }
    }
    let readers = |name: &str| -> usize {
        consumers.get(name).map_or(0, Vec::len)
            + usize::from(outputs.contains(name) || sub_names.contains(name))
    };
    // A 1-D float32 initializer of length `n` that no one can override: a bias.
    let is_bias = |name: &str, n: i64| {
        heads.get(name).is_some_and(|h| {
            h.dims == [n] && h.data_type == DataType::Float as i32 && !inputs.contains(name)
        })
    };

    let mut report = QuantizeReport::default();
    let mut plans = Vec::new();
    let mut folded = HashSet::new();
    for (j, n) in nodes.iter().enumerate() {
        let p = &n.proto;
        let label =
            if p.name.is_empty() { p.output.first().cloned() } else { Some(p.name.clone()) }
                .unwrap_or_default();
        let gemm = match p.op_type.as_str() {
            _ if !is_default_domain(&p.domain) => continue,
            "MatMul" => false,
            "Gemm" => true,
            _ => continue,
        };
        let mut left = |why: &str| report.left_fp32.push((label.clone(), why.to_owned()));
        let [a, b, rest @ ..] = &p.input[..] else {
            left("with fewer than two inputs");
            continue;
        };
        let [output] = &p.output[..] else {
            left("with other than one output");
            continue;
        };
        if n.extra_fields {
            left("with node fields irtdb does not carry over");
            continue;
        }
        let Some(head) = heads.get(b.as_str()) else {
            left("whose weight is computed, not a constant (e.g. attention products)");
            continue;
        };
        if inputs.contains(b) {
            left("whose weight is also a graph input (it can be overridden at run time)");
            continue;
        }
        let shaped = head.dims.len() == 2 && head.dims.iter().all(|&d| d > 0);
        if head.data_type != DataType::Float as i32 || !shaped || !head.plain {
            left("whose weight is not a non-empty 2-D float32 tensor");
            continue;
        }
        let mut trans_b = false;
        let mut bias = None;
        if gemm {
            let mut ok = true;
            for at in &p.attribute {
                ok &= match at.name.as_str() {
                    "alpha" | "beta" => at.f.is_none_or(|f| f == 1.0),
                    "transA" => at.i.is_none_or(|i| i == 0),
                    "transB" => {
                        trans_b = at.i == Some(1);
                        at.i.is_none_or(|i| i == 0 || i == 1)
                    }
                    _ => false,
                };
            }
            if !ok {
                left("(Gemm) with alpha or beta other than 1, or transA");
                continue;
            }
            let n_out = head.dims[usize::from(!trans_b)];
            match rest {
                [] => {}
                [c] if c.is_empty() => {}
                [c] if is_bias(c, n_out) => bias = Some(c.clone()),
                _ => {
                    left("(Gemm) whose C is not a 1-D float32 initializer of length N");
                    continue;
                }
            }
        } else if !rest.is_empty() || !p.attribute.is_empty() {
            left("with unexpected inputs or attributes");
            continue;
        }
        let n_out = head.dims[usize::from(!trans_b)];
        let mut plan = Plan {
            node: j,
            a: a.clone(),
            b: b.clone(),
            trans_b,
            bias,
            folded: None,
            output: output.clone(),
        };
        // Fold the `Add` of a bias that alone reads the product.
        let only_reader = match consumers.get(output.as_str()).map(Vec::as_slice) {
            Some(&[k]) if readers(output) == 1 => Some(k),
            _ => None,
        };
        if let (None, Some(k)) = (&plan.bias, only_reader) {
            let add = &nodes[k];
            let q = &add.proto;
            if q.op_type == "Add"
                && is_default_domain(&q.domain)
                && q.attribute.is_empty()
                && !add.extra_fields
                && q.output.len() == 1
                && !folded.contains(&k)
            {
                let other = match &q.input[..] {
                    [x, c] if x == output => Some(c),
                    [c, x] if x == output => Some(c),
                    _ => None,
                };
                if let Some(c) = other.filter(|c| is_bias(c, n_out)) {
                    plan.bias = Some(c.clone());
                    plan.folded = Some(k);
                    plan.output = q.output[0].clone();
                    folded.insert(k);
                }
            }
        }
        plans.push(plan);
    }
    for m in &sub_matmuls {
        report.left_fp32.push((m.clone(), "inside a subgraph (If/Loop/Scan body)".to_owned()));
    }
    if plans.is_empty() {
        let why = match report.left_fp32.is_empty() {
            true => "it has no MatMul or Gemm node".to_owned(),
            false => format!(
                "none of its {} MatMul/Gemm nodes has a constant float32 weight irtdb can \
                 quantise ({})",
                report.left_fp32.len(),
                report.reasons()
            ),
        };
        return Err(refuse(why));
    }

    // Quantise each weight once (two nodes may share one).
    let mut new_inits: Vec<TensorProto> = Vec::new();
    let mut quantised: HashMap<(String, bool), (String, String)> = HashMap::new();
    let mut fresh = |base: String| {
        let mut name = base.clone();
        let mut i = 1;
        while all_names.contains(&name) {
            name = format!("{base}_{i}");
            i += 1;
        }
        all_names.insert(name.clone());
        name
    };
    let mut replaced: HashMap<usize, NodeProto> = HashMap::new();
    for plan in &plans {
        let key = (plan.b.clone(), plan.trans_b);
        if !quantised.contains_key(&key) {
            let raw = graph[inits[&plan.b]].value;
            let t = TensorProto::decode(raw)
                .map_err(|e| invalid(format!("initializer `{}`: {e}", plan.b)))?;
            let [rows, cols] = [t.dims[0] as usize, t.dims[1] as usize];
            let data = float_data(&t, rows * cols)?;
            let (k, n, w) = if plan.trans_b {
                let mut w = vec![0.0; data.len()];
                for r in 0..rows {
                    for c in 0..cols {
                        w[c * rows + r] = data[r * cols + c];
                    }
                }
                (cols, rows, w)
            } else {
                (rows, cols, data)
            };
            let (q, scales) = quantize_per_column(&w, k, n);
            let suffix = if plan.trans_b { "_T" } else { "" };
            let wq = fresh(format!("{}{suffix}_int8", plan.b));
            let scale = fresh(format!("{}{suffix}_scale", plan.b));
            new_inits.push(TensorProto {
                dims: vec![k as i64, n as i64],
                data_type: Some(DataType::Int8 as i32),
                name: wq.clone(),
                raw_data: Some(q),
                ..TensorProto::default()
            });
            new_inits.push(TensorProto {
                dims: vec![n as i64],
                data_type: Some(DataType::Float as i32),
                name: scale.clone(),
                raw_data: Some(scales.iter().flat_map(|s| s.to_le_bytes()).collect()),
                ..TensorProto::default()
            });
            quantised.insert(key.clone(), (wq, scale));
        }
        let (wq, scale) = &quantised[&key];
        let old = &nodes[plan.node].proto;
        let mut input = vec![plan.a.clone(), wq.clone(), scale.clone()];
        if let Some(b) = &plan.bias {
            // The zero point (absent: 0), then the bias.
            input.extend([String::new(), b.clone()]);
            report.with_bias += 1;
        }
        replaced.insert(
            plan.node,
            NodeProto {
                input,
                output: vec![plan.output.clone()],
                name: old.name.clone(),
                op_type: "DynamicQuantizeMatMul".into(),
                domain: MS_DOMAIN.into(),
                attribute: Vec::<AttributeProto>::new(),
                doc_string: old.doc_string.clone(),
                metadata_props: old.metadata_props.clone(),
            },
        );
        report.quantised += 1;
        report.folded_adds += usize::from(plan.folded.is_some());
    }

    // fp32 weights no node reads any more (all kept when training info may refer to them).
    let mut used: HashSet<&str> = HashSet::new();
    for (j, n) in nodes.iter().enumerate() {
        if folded.contains(&j) {
            continue;
        }
        let node = replaced.get(&j).unwrap_or(&n.proto);
        used.extend(node.input.iter().map(String::as_str));
    }
    let mut removed = HashSet::new();
    if !training_info {
        for plan in &plans {
            let b = plan.b.as_str();
            if !used.contains(b)
                && !inputs.contains(b)
                && !outputs.contains(b)
                && !sub_names.contains(b)
            {
                removed.insert(inits[b]);
            }
        }
    }
    report.removed_initializers = removed.len();

    // The graph: untouched fields as they were, replaced nodes in place, new initializers after
    // the last initializer.
    let node_index: HashMap<usize, usize> =
        node_at.iter().enumerate().map(|(j, &i)| (i, j)).collect();
    let last_init = graph.iter().rposition(|f| f.tag == 5);
    let mut g = Vec::with_capacity(model[graph_at].value.len());
    for (i, f) in graph.iter().enumerate() {
        match node_index.get(&i) {
            Some(j) if folded.contains(j) => {}
            Some(j) if replaced.contains_key(j) => put_message(&mut g, 1, &replaced[j]),
            _ if removed.contains(&i) => {}
            _ => g.extend_from_slice(f.bytes),
        }
        if Some(i) == last_init {
            for t in &new_inits {
                put_message(&mut g, 5, t);
            }
        }
    }

    // The model: the new graph in place; the contrib opset imported after the others.
    let has_ms = model
        .iter()
        .filter(|f| f.tag == 8)
        .any(|f| OperatorSetIdProto::decode(f.value).is_ok_and(|o| o.domain == MS_DOMAIN));
    let last_opset = model.iter().rposition(|f| f.tag == 8);
    let mut out = Vec::with_capacity(bytes.len());
    for (i, f) in model.iter().enumerate() {
        if i == graph_at {
            put_bytes(&mut out, 7, &g);
        } else {
            out.extend_from_slice(f.bytes);
        }
        if Some(i) == last_opset && !has_ms {
            let ms = OperatorSetIdProto { domain: MS_DOMAIN.into(), version: Some(1) };
            put_message(&mut out, 8, &ms);
        }
    }
    if last_opset.is_none() && !has_ms {
        let ms = OperatorSetIdProto { domain: MS_DOMAIN.into(), version: Some(1) };
        put_message(&mut out, 8, &ms);
    }
    Ok((out, report))
}

/// The f32 values of a decoded float initializer of `count` elements.
fn float_data(t: &TensorProto, count: usize) -> Result<Vec<f32>> {
    match &t.raw_data {
        Some(raw) if raw.len() == count * 4 => {
            Ok(raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
        }
        None if t.float_data.len() == count => Ok(t.float_data.clone()),
        _ => Err(invalid(format!(
            "initializer `{}` of shape {:?} does not hold {count} float32 values",
            t.name, t.dims
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_fields_round_trips_every_wire_type() {
        let mut msg = Vec::new();
        encode_key(1, WireType::Varint, &mut msg);
        encode_varint(300, &mut msg);
        put_bytes(&mut msg, 2, b"abc");
        encode_key(3, WireType::ThirtyTwoBit, &mut msg);
        msg.extend_from_slice(&1.5f32.to_le_bytes());
        encode_key(4, WireType::SixtyFourBit, &mut msg);
        msg.extend_from_slice(&7u64.to_le_bytes());
        let fields = split_fields(&msg).unwrap();
        assert_eq!(fields.iter().map(|f| f.tag).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(fields[1].value, b"abc");
        assert_eq!(fields[2].value, 1.5f32.to_le_bytes());
        let joined: Vec<u8> = fields.iter().flat_map(|f| f.bytes.iter().copied()).collect();
        assert_eq!(joined, msg);
        assert!(split_fields(&msg[..msg.len() - 1]).is_err(), "a cut field is an error");
    }
}
