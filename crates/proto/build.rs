//! Generates the gRPC and event code from `proto/`.
//!
//! `protox` parses the `.proto` files in pure Rust, so neither a fresh machine nor a Nix build
//! needs a `protoc` binary.

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new("proto");
    let files = [
        "realchat/auth/v1/auth.proto",
        "realchat/delivery/v1/delivery.proto",
        "realchat/events/v1/events.proto",
        "realchat/messaging/v1/messaging.proto",
        "realchat/profile/v1/profile.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let descriptors = protox::compile(files, [root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
