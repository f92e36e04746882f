//! `aigw`: parse the command line, run. Everything else lives in the library.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    aigw::cli::main()
}
