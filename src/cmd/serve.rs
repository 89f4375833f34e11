//! `irtdb serve`.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Result;

/// Serve the collection over HTTP: a JSON API (/api/...) and a web page (/).
///
/// The model is loaded once; queries answer as `irtdb query --json` does. The database is only
/// read, and a new index generation from a running `irtdb index` is picked up without a restart.
/// Stops on Ctrl-C or SIGTERM, finishing the requests in flight.
///
/// Example: irtdb serve --db photos.db --bind 127.0.0.1:8080
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    db: super::index::DbArg,
    /// Address to listen on; port 0 picks a free port (the printed URL gives it). Anything but a
    /// loopback address exposes the collection's images to the network.
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// Model instances, i.e. image queries embedded at once (each holds its own copy of the
    /// model).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Largest upload accepted, in MiB (larger ones get 413).
    #[arg(long, default_value_t = 20)]
    max_upload_mib: usize,
    /// Time limit of one request, in seconds (503 beyond).
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Largest image (width × height) an upload may declare; decompression bombs get 413.
    #[arg(long, default_value_t = 100_000_000)]
    max_pixels: u64,
}

pub fn run(args: Args) -> Result<()> {
    anyhow::ensure!(args.workers >= 1, "--workers must be at least 1");
    anyhow::ensure!(args.max_upload_mib >= 1, "--max-upload-mib must be at least 1");
    anyhow::ensure!(args.timeout >= 1, "--timeout must be at least 1 second");
    let mut opts = irtdb_serve::ServeOptions::new(args.db.path.clone());
    opts.bind = args.bind;
    opts.workers = args.workers;
    opts.max_upload = args.max_upload_mib << 20;
    opts.timeout = std::time::Duration::from_secs(args.timeout);
    opts.limits.max_pixels = args.max_pixels;
    if !args.bind.ip().is_loopback() {
        eprintln!(
            "warning: listening on {}, not a loopback address: anyone who can reach this \
             machine can search the collection and download its images (there is no login)",
            args.bind.ip()
        );
    }
    irtdb_serve::serve_blocking(opts, |addr| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on http://{addr}");
        let _ = out.flush();
    })?;
    eprintln!("stopped");
    Ok(())
}
