//! Build steps:
//! - generates the Duo Workflow gRPC types from `proto/contract.proto`, plus the
//!   descriptor set that server reflection serves;
//! - extracts the Swagger UI files the docs page needs from the vendored
//!   Swagger UI release, so the page works air-gapped without shipping the
//!   whole distribution (source maps and all) in the binary.
use std::{
    env,
    error::Error,
    io::{Cursor, Read},
    path::PathBuf,
};

const SWAGGER_FILES: &[&str] = &[
    "swagger-ui-bundle.js",
    "swagger-ui.css",
    "favicon-32x32.png",
];

fn main() -> Result<(), Box<dyn Error>> {
    let out = PathBuf::from(env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=proto/contract.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .file_descriptor_set_path(out.join("duo_workflow_descriptor.bin"))
        .compile_protos(&["proto/contract.proto"], &["proto"])?;

    let mut archive =
        zip::ZipArchive::new(Cursor::new(utoipa_swagger_ui_vendored::SWAGGER_UI_VENDORED))?;
    let dir = out.join("swagger-ui");
    std::fs::create_dir_all(&dir)?;
    for wanted in SWAGGER_FILES {
        let suffix = format!("/dist/{wanted}");
        let name = archive
            .file_names()
            .find(|n| n.ends_with(&suffix))
            .map(str::to_string)
            .ok_or_else(|| format!("{wanted} missing from the vendored Swagger UI"))?;
        let mut bytes = Vec::new();
        archive.by_name(&name)?.read_to_end(&mut bytes)?;
        std::fs::write(dir.join(wanted), bytes)?;
    }
    Ok(())
}
