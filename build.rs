//! Generates the Duo Workflow gRPC types from `proto/contract.proto`, plus the
//! descriptor set that server reflection serves.
use std::{env, error::Error, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    let out = PathBuf::from(env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=proto/contract.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .file_descriptor_set_path(out.join("duo_workflow_descriptor.bin"))
        .compile_protos(&["proto/contract.proto"], &["proto"])?;
    Ok(())
}
