//! Build steps:
//! - generates the Duo Workflow gRPC types from `proto/contract.proto`, plus the
//!   descriptor set that server reflection serves. The .proto is compiled by
//!   `protox` (pure Rust, the well-known types built in), so the build needs
//!   no system `protoc` and no `google/protobuf/*.proto` files on the host;
//! - extracts the Swagger UI files the docs page needs from the vendored
//!   Swagger UI release, so the page works air-gapped without shipping the
//!   whole distribution (source maps and all) in the binary;
//! - embeds the prompt definitions (`src/prompts/definitions/**.toml`) as a
//!   table of `include_str!`s, so each file is tracked by cargo and the
//!   binary carries them without a directory-embedding crate.
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
    let descriptors = protox::compile(["proto/contract.proto"], ["proto"])?;
    std::fs::write(
        out.join("duo_workflow_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;

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
    embed_prompts(&out)
}

/// Writes `prompt_definitions.rs`: `(relative path, contents)` for every
/// prompt definition file, sorted for reproducible builds.
fn embed_prompts(out: &std::path::Path) -> Result<(), Box<dyn Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("src/prompts/definitions");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                let rel = path
                    .strip_prefix(&root)?
                    .to_string_lossy()
                    .replace('\\', "/");
                files.push((rel, path));
            }
        }
    }
    files.sort();
    let mut code = String::from(
        "/// Prompt definitions embedded at build time.\npub static EMBEDDED: &[(&str, &str)] = &[\n",
    );
    for (rel, path) in files {
        code.push_str(&format!(
            "    ({rel:?}, include_str!({:?})),\n",
            path.display().to_string()
        ));
    }
    code.push_str("];\n");
    std::fs::write(out.join("prompt_definitions.rs"), code)?;
    Ok(())
}
