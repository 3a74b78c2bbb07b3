//! Compiles `proto/` with protox (a pure-Rust protobuf compiler), so building
//! tunemesh never needs a `protoc` binary.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = protox::compile(
        ["tunemesh/v1/index.proto", "tunemesh/v1/mesh.proto"],
        ["proto"],
    )?;
    prost_build::Config::new().compile_fds(files)?;
    Ok(())
}
