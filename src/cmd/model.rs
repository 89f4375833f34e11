//! `irtdb model`: make and inspect model files.

use std::path::PathBuf;

use anyhow::Result;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write a ViT/DeiT with random weights (timm naming, safetensors) and its model card.
    ///
    /// For trying irtdb where no trained weights are at hand (this machine cannot download
    /// any): the pipeline runs for real, but descriptors of a random network only capture
    /// low-level colour and layout, and every command that uses it says so.
    Random(RandomArgs),
}

#[derive(Debug, clap::Args)]
pub struct RandomArgs {
    /// Architecture: deit_tiny_patch16_224, deit_small_patch16_224, deit_base_patch16_224 or
    /// vit_micro (a 2-block toy for tests).
    #[arg(long, default_value = "deit_tiny_patch16_224")]
    arch: String,
    /// Override the depth (number of blocks), e.g. to make a faster model.
    #[arg(long)]
    depth: Option<usize>,
    /// Override the input image size (a multiple of the patch size).
    #[arg(long)]
    image_size: Option<usize>,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output .safetensors file; the model card goes beside it as <name>.json.
    #[arg(long, short)]
    out: PathBuf,
}

pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Random(a) => random(a),
    }
}

fn random(a: RandomArgs) -> Result<()> {
    let opts = irtdb_engine::model::RandomModel {
        arch: a.arch,
        depth: a.depth,
        image_size: a.image_size,
        seed: a.seed,
    };
    let cfg = irtdb_engine::model::write_random_model(&opts, &a.out)?;
    eprintln!(
        "wrote {} ({}, {} blocks, dim {}, input {}; RANDOM weights) and its model card {}",
        a.out.display(),
        cfg.architecture,
        cfg.depth,
        cfg.dim,
        cfg.img_size[0],
        a.out.with_extension("json").display()
    );
    Ok(())
}
