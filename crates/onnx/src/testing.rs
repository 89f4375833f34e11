//! Fixtures for tests anywhere in the workspace: the random models of [`crate::random`]
//! (re-exported here), random images, and ONNX files shaped like the ones found in the wild
//! ([`identity_model`], [`PixelModel`]).

pub use crate::random::*;
pub use crate::Tensors;

use std::path::Path;

use prost::Message;

use crate::error::{Error, Result};
use crate::proto::{
    tensor_shape_proto::Dimension, AttributeProto, AttributeType, DataType, GraphProto, ModelProto,
    NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto, ValueInfoProto,
};

/// A one-node model (`Identity`) whose float input and output have shape `dims` (negative
/// entries become the symbolic dimension `batch`): for tests of how odd models are refused.
pub fn identity_model(dims: &[i64]) -> Vec<u8> {
    let shape = || {
        dims.iter()
            .map(|&d| if d < 0 { Dimension::symbol("batch") } else { Dimension::fixed(d) })
            .collect::<Vec<_>>()
    };
    let graph = GraphProto {
        name: "identity".into(),
        node: vec![NodeProto {
            op_type: "Identity".into(),
            input: vec!["x".into()],
            output: vec!["y".into()],
            ..Default::default()
        }],
        input: vec![ValueInfoProto::tensor("x", DataType::Float, shape())],
        output: vec![ValueInfoProto::tensor("y", DataType::Float, shape())],
        ..Default::default()
    };
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: Some(17) }],
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Element type of [`PixelModel`]'s image input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelType {
    F32,
    F16,
    U8,
}

/// A small ONNX model shaped like the image models found in the wild, for tests of how irtdb
/// feeds them: input in NCHW or NHWC, float32 / float16 / uint8, fixed or dynamic size and
/// batch; optionally normalising itself (x/255, ImageNet mean/std, as SSCD-style exports do).
/// It computes `Flatten(AveragePool(x, 16×16))` (`[B, 3·H/16·W/16]`, channel-major), times a
/// weight vector when `weights` is given. Everything but layout, type and normalisation is the
/// same computation, so two variants on the same image must agree.
#[derive(Clone, Debug)]
pub struct PixelModel {
    pub nhwc: bool,
    pub pixels: PixelType,
    /// `[H, W]`, or `None` for dynamic.
    pub size: Option<[i64; 2]>,
    /// A fixed batch size, or `None` for dynamic.
    pub batch: Option<i64>,
    /// The graph does x/255 and ImageNet mean/std itself.
    pub normalises: bool,
    /// Also output the `[B, 3, H/16, W/16]` map, as the first output (`feature_map`).
    pub two_outputs: bool,
    /// Multiply the embedding by these (length 3·H/16·W/16; the size must be fixed); with
    /// `external`, kept in that file beside the model (ONNX external data).
    pub weights: Option<Vec<f32>>,
    pub external: Option<String>,
}

impl PixelModel {
    /// NCHW float32, fixed size and dynamic batch: the plain layout irtdb always fed.
    pub fn plain(size: i64) -> Self {
        Self {
            nhwc: false,
            pixels: PixelType::F32,
            size: Some([size, size]),
            batch: None,
            normalises: false,
            two_outputs: false,
            weights: None,
            external: None,
        }
    }

    /// The model bytes; with `external`, the weights file is written into `dir` too.
    pub fn build(&self, dir: &Path) -> Result<Vec<u8>> {
        let (h, w) = (self.size.map(|s| s[0]), self.size.map(|s| s[1]));
        let in_dims = if self.nhwc {
            vec![dim(self.batch, "batch"), dim(h, "height"), dim(w, "width"), Dimension::fixed(3)]
        } else {
            vec![dim(self.batch, "batch"), Dimension::fixed(3), dim(h, "height"), dim(w, "width")]
        };
        let elem = match self.pixels {
            PixelType::F32 => DataType::Float,
            PixelType::F16 => DataType::Float16,
            PixelType::U8 => DataType::Uint8,
        };
        let mut nodes = Vec::new();
        let mut inits = Vec::new();
        let x = self.to_normalised_nchw(&mut nodes, &mut inits);
        let out_elem = self.pooled_embedding(&x, dir, &mut nodes, &mut inits)?;
        let graph = GraphProto {
            name: "pixels".into(),
            node: nodes,
            initializer: inits,
            input: vec![ValueInfoProto::tensor("image", elem, in_dims)],
            output: self.outputs(out_elem),
            ..Default::default()
        };
        Ok(ModelProto {
            ir_version: Some(8),
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: Some(17) }],
            graph: Some(graph),
            ..Default::default()
        }
        .encode_to_vec())
    }

    /// Cast to float, NHWC → NCHW, ×1/255 and ImageNet normalisation, as the model asks;
    /// returns the name of the normalised NCHW tensor.
    fn to_normalised_nchw(
        &self,
        nodes: &mut Vec<NodeProto>,
        inits: &mut Vec<TensorProto>,
    ) -> String {
        let mut x = "image".to_string();
        if self.pixels != PixelType::F32 {
            nodes.push(node("Cast", &[&x], "as_float", vec![int("to", DataType::Float as i64)]));
            x = "as_float".into();
        }
        if self.nhwc {
            nodes.push(node("Transpose", &[&x], "nchw", vec![ints("perm", &[0, 3, 1, 2])]));
            x = "nchw".into();
        }
        if self.normalises {
            inits.push(f32s("c255", &[], &[255.0]));
            inits.push(f32s("mean", &[1, 3, 1, 1], &[0.485, 0.456, 0.406]));
            inits.push(f32s("std", &[1, 3, 1, 1], &[0.229, 0.224, 0.225]));
            nodes.push(node("Div", &[&x, "c255"], "unit", vec![]));
            nodes.push(node("Sub", &["unit", "mean"], "centred", vec![]));
            nodes.push(node("Div", &["centred", "std"], "normalised", vec![]));
            x = "normalised".into();
        }
        x
    }

    /// 16×16 average pooling, flattened, scaled by the weights (inline or external), cast to
    /// the output type: the `embedding` output. Returns its element type.
    fn pooled_embedding(
        &self,
        x: &str,
        dir: &Path,
        nodes: &mut Vec<NodeProto>,
        inits: &mut Vec<TensorProto>,
    ) -> Result<DataType> {
        nodes.push(node(
            "AveragePool",
            &[x],
            "feature_map",
            vec![ints("kernel_shape", &[16, 16]), ints("strides", &[16, 16])],
        ));
        nodes.push(node("Flatten", &["feature_map"], "flat", vec![int("axis", 1)]));
        let mut out = "flat".to_string();
        if let Some(wts) = &self.weights {
            let mut t = f32s("scale", &[1, wts.len() as i64], wts);
            if let Some(file) = &self.external {
                let bytes = t.raw_data.take().unwrap_or_default();
                std::fs::write(dir.join(file), &bytes).map_err(|e| Error::Io {
                    action: "write",
                    path: dir.join(file),
                    source: e,
                })?;
                t.data_location = Some(1);
                let kv = |k: &str, v: String| StringStringEntryProto { key: k.into(), value: v };
                t.external_data = vec![
                    kv("location", file.clone()),
                    kv("offset", "0".into()),
                    kv("length", bytes.len().to_string()),
                ];
            }
            inits.push(t);
            nodes.push(node("Mul", &["flat", "scale"], "scaled", vec![]));
            out = "scaled".into();
        }
        Ok(if self.pixels == PixelType::F16 {
            let to = vec![int("to", DataType::Float16 as i64)];
            nodes.push(node("Cast", &[&out], "embedding", to));
            DataType::Float16
        } else {
            nodes.push(node("Identity", &[&out], "embedding", vec![]));
            DataType::Float
        })
    }

    /// The graph's outputs: `embedding` (and the `feature_map` before it, when asked for).
    fn outputs(&self, out_elem: DataType) -> Vec<ValueInfoProto> {
        let (h, w) = (self.size.map(|s| s[0]), self.size.map(|s| s[1]));
        let d = self.size.map(|s| 3 * (s[0] / 16) * (s[1] / 16));
        let mut outputs = Vec::new();
        if self.two_outputs {
            outputs.push(ValueInfoProto::tensor(
                "feature_map",
                DataType::Float,
                vec![
                    dim(self.batch, "batch"),
                    Dimension::fixed(3),
                    dim(h.map(|v| v / 16), "gh"),
                    dim(w.map(|v| v / 16), "gw"),
                ],
            ));
        }
        outputs.push(ValueInfoProto::tensor(
            "embedding",
            out_elem,
            vec![dim(self.batch, "batch"), dim(d, "dim")],
        ));
        outputs
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        attribute: attrs,
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn f32s(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        name: name.into(),
        raw_data: Some(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        ..Default::default()
    }
}

/// A fixed dimension, or the symbol `sym` when `d` is `None`.
fn dim(d: Option<i64>, sym: &str) -> Dimension {
    match d {
        Some(v) => Dimension::fixed(v),
        None => Dimension::symbol(sym),
    }
}
