//! Compiles every .proto file with the vendored protoc, so a fresh machine
//! needs no system protobuf compiler.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "shop/payments/v1/payments.proto",
    "shop/orders/v1/orders.proto",
    "shop/events/v1/events.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known = protoc_bin_vendored::include_path()?;
    let well_known = well_known.to_str().ok_or("non-UTF-8 include path")?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    config.enable_type_names();

    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("shop_descriptor.bin"))
        .compile_with_config(config, PROTOS, &[".", well_known])?;

    println!("cargo:rerun-if-changed=shop");
    Ok(())
}
