//! `irtdb`: the command-line front end. Argument parsing and printing only; every job is one
//! function in `irtdb-engine`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// Image retrieval with Vision Transformers: index a folder, query by image, train descriptors.
///
/// Start: `irtdb index ./photos` (embeds with DeiT-S, fetched once from the Hugging Face hub),
/// then `irtdb query photo.jpg --k 10`. Backbones run in plugins (shared libraries found on
/// IRTDB_PLUGIN_PATH, <exe dir>/plugins, <exe dir>, <exe dir>/../lib/irtdb/plugins and
/// <data dir>/irtdb/plugins); `irtdb plugins` lists them, `irtdb doctor` checks the install.
#[derive(Debug, Parser)]
#[command(name = "irtdb", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Index(cmd::index::Args),
    Query(cmd::query::Args),
    Info(cmd::info::Args),
    Reindex(cmd::index::ReindexArgs),
    Merge(cmd::merge::Args),
    Export(cmd::export::Args),
    Embed(cmd::embed::Args),
    Plugins(cmd::plugins::Args),
    Doctor(cmd::doctor::Args),
    Eval(cmd::eval::Args),
    Analyze(cmd::analyze::Args),
    Train(cmd::train::Args),
    Serve(cmd::serve::Args),
    Dups(cmd::dups::Args),
    #[command(subcommand)]
    Model(cmd::model::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Index(a) => cmd::index::run(a),
        Command::Query(a) => cmd::query::run(a),
        Command::Info(a) => cmd::info::run(a),
        Command::Reindex(a) => cmd::index::reindex(a),
        Command::Merge(a) => cmd::merge::run(a),
        Command::Export(a) => cmd::export::run(a),
        Command::Embed(a) => cmd::embed::run(a),
        Command::Plugins(a) => cmd::plugins::run(a),
        Command::Doctor(a) => cmd::doctor::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Analyze(a) => cmd::analyze::run(a),
        Command::Train(a) => cmd::train::run(a),
        Command::Serve(a) => cmd::serve::run(a),
        Command::Dups(a) => cmd::dups::run(a),
        Command::Model(c) => cmd::model::run(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `irtdb query ... | head` closes our stdout: that is the reader's choice, not an error.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {}", cmd::render(&e));
            ExitCode::from(2)
        }
    }
}
