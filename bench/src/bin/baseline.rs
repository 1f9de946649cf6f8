//! `qminder-bridge-baseline`: the ceiling the bridge is measured against.
//!
//! actix-web 4 set up as the bridge sets it up — a Tokio runtime, the same number of HTTP
//! workers, the same route (`POST /webhooks/qminder`) and body limit — whose handler reads
//! the whole body and answers an empty 200. No signature, no parsing, no Kafka: whatever
//! the bridge does beyond this costs throughput relative to it.

use std::process::ExitCode;

use actix_web::{App, HttpResponse, HttpServer, web};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "qminder-bridge-baseline", version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: String,
    /// HTTP worker threads (the bridge's `server.workers`); 0 = one per CPU, as the bridge.
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// The webhook path.
    #[arg(long, default_value = "/webhooks/qminder")]
    path: String,
    /// Largest accepted body (the bridge's `server.max_body_bytes` default).
    #[arg(long, default_value_t = 1024 * 1024)]
    max_body_bytes: usize,
}

/// Reads the whole body (the extractor does) and answers 200.
async fn receive(body: web::Bytes) -> HttpResponse {
    drop(body);
    HttpResponse::Ok().finish()
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(error) => {
            eprintln!("qminder-bridge-baseline: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(async {
        let path = args.path.clone();
        let limit = args.max_body_bytes;
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(web::PayloadConfig::new(limit))
                .route(&path, web::post().to(receive))
        });
        if args.workers > 0 {
            server = server.workers(args.workers);
        }
        server.bind(&args.listen)?.run().await
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("qminder-bridge-baseline: {error}");
            ExitCode::FAILURE
        }
    }
}
