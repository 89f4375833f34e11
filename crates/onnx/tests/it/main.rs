//! Integration tests of irtdb-onnx, in one binary (one link, one ONNX Runtime environment).
//!
//! - `parity`: the ONNX graph run by real ONNX Runtime against `reference::forward`;
//! - `config`: configuration inference from timm-shaped checkpoints, sidecars, dtypes;
//! - `errors`: every failure names the file and the tensor and says what to do;
//! - `precision`: int8 graphs against the f32 reference;
//! - `quantize`: user ONNX models rewritten to int8.

mod common;
mod config;
mod errors;
mod parity;
mod precision;
mod quantize;
