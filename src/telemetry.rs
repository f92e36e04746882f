//! Log output: journald when stderr is connected to the journal, else JSON or
//! text on stderr.
//!
//! systemd sets `JOURNAL_STREAM=<dev>:<ino>` for a service whose stderr goes to
//! the journal; only when that matches our stderr do we speak the native journal
//! protocol (structured fields, priorities). In a terminal or a container the
//! output stays readable. Nothing here ever receives a secret: callers log
//! origins of keys, never keys, and never tokens.

use std::{
    io::IsTerminal,
    os::{fd::AsFd, unix::fs::MetadataExt},
};

use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::LoggingConfig;

/// Where logs went, reported once logging is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSink {
    Journald,
    StderrJson,
    StderrText,
}

fn stderr_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // fstat(2) of fd 2, through a duplicate so that nothing closes stderr.
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(m) => m.dev() == dev && m.ino() == ino,
        Err(_) => false,
    }
}

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(cfg: &LoggingConfig) -> LogSink {
    // `config` has already validated and translated the level.
    let filter = || EnvFilter::try_new(&cfg.level).unwrap_or_else(|_| EnvFilter::new("info"));
    if stderr_is_journal()
        && let Ok(journald) = tracing_journald::layer()
    {
        let journald = journald
            .with_syslog_identifier("aigw".to_string())
            .with_filter(filter());
        let _ = tracing_subscriber::registry().with(journald).try_init();
        return LogSink::Journald;
    }
    if cfg.json {
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(filter());
        let _ = tracing_subscriber::registry().with(layer).try_init();
        LogSink::StderrJson
    } else {
        // Colour only for a person at a terminal: a log file or a pipe
        // gets plain text.
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(cfg.color && std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .with_filter(filter());
        let _ = tracing_subscriber::registry().with(layer).try_init();
        LogSink::StderrText
    }
}

/// An error with its whole `source()` chain, for log lines and error details:
/// reqwest's own Display hides the cause ("error sending request").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
