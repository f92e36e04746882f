//! Behaviour knobs (latency, time to first token, inter-token delay, forced
//! length, injected fault) and the three places they come from.
//!
//! One mock process serves many test cases at once, so every knob has a
//! process default (CLI flag / environment) that a request can override. A
//! request overrides with `x-mock-*` headers, or with `MOCK_*:` directive lines
//! in its last user message or prompt, because a gateway in between need not
//! forward arbitrary headers. Precedence: header, then directive, then process.

use std::{fmt, str::FromStr, time::Duration};

use axum::http::HeaderMap;

/// Injected failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 500 with an OpenAI-style JSON error.
    Status500,
    /// HTTP 429 with `Retry-After: 7`.
    Status429,
    /// HTTP 200 whose JSON body is cut off.
    InvalidJson,
    /// HTTP 502 with a proxy's HTML error page.
    Html,
    /// Accept the request, never send headers.
    Hang,
    /// Send two tokens (or half the body), then abort the connection.
    Reset,
    /// HTTP 200 event stream whose lines are not valid SSE JSON.
    GarbageSse,
    /// HTTP 400: the prompt does not fit the model's context window, in the
    /// OpenAI/vLLM error shape (`code: context_length_exceeded`).
    ContextLength,
}

impl Fault {
    const ALL: [(&'static str, Fault); 8] = [
        ("500", Fault::Status500),
        ("429", Fault::Status429),
        ("invalid-json", Fault::InvalidJson),
        ("html", Fault::Html),
        ("hang", Fault::Hang),
        ("reset", Fault::Reset),
        ("garbage-sse", Fault::GarbageSse),
        ("context-length", Fault::ContextLength),
    ];
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        Fault::ALL
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|(_, f)| *f)
            .ok_or_else(|| {
                let names: Vec<&str> = Fault::ALL.iter().map(|(n, _)| *n).collect();
                format!("unknown fault {s:?} (one of: {})", names.join(", "))
            })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = Fault::ALL
            .iter()
            .find(|(_, v)| v == self)
            .map_or("?", |(n, _)| *n);
        f.write_str(name)
    }
}

/// Process-wide defaults; also the effective values for one request.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Knobs {
    /// Delay before the response headers, in milliseconds.
    #[arg(long, env = "AIGW_MOCK_LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Streaming: delay between the headers and the first token, in milliseconds.
    #[arg(long, env = "AIGW_MOCK_TTFT_MS", default_value_t = 0)]
    pub ttft_ms: u64,
    /// Streaming: delay between two tokens, in milliseconds.
    #[arg(long, env = "AIGW_MOCK_INTER_TOKEN_MS", default_value_t = 0)]
    pub inter_token_ms: u64,
    /// Force every text reply to N tokens `tok0 tok1 ...`.
    #[arg(long, env = "AIGW_MOCK_TOKENS")]
    pub tokens: Option<u64>,
    /// Inject a fault into every request: 500, 429, invalid-json, html, hang,
    /// reset, garbage-sse, context-length.
    #[arg(long, env = "AIGW_MOCK_FAULT")]
    pub fault: Option<Fault>,
}

impl Knobs {
    /// These knobs with `o`'s values where it has one.
    pub fn with(&self, o: &Overrides) -> Knobs {
        Knobs {
            latency_ms: o.latency_ms.unwrap_or(self.latency_ms),
            ttft_ms: o.ttft_ms.unwrap_or(self.ttft_ms),
            inter_token_ms: o.inter_token_ms.unwrap_or(self.inter_token_ms),
            tokens: o.tokens.or(self.tokens),
            fault: o.fault.or(self.fault),
        }
    }

    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms)
    }

    pub fn ttft(&self) -> Duration {
        Duration::from_millis(self.ttft_ms)
    }

    pub fn inter_token(&self) -> Duration {
        Duration::from_millis(self.inter_token_ms)
    }
}

/// Per-request values; `None` keeps the layer below.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub latency_ms: Option<u64>,
    pub ttft_ms: Option<u64>,
    pub inter_token_ms: Option<u64>,
    pub tokens: Option<u64>,
    pub fault: Option<Fault>,
}

/// Knob names as they appear after `x-mock-` (headers) and `MOCK_` (directives).
const NAMES: [&str; 5] = ["latency-ms", "ttft-ms", "inter-token-ms", "tokens", "fault"];

impl Overrides {
    fn set(&mut self, name: &str, value: &str, origin: &str) -> Result<(), String> {
        let num = |v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| format!("{origin}: expected a non-negative integer, got {v:?}"))
        };
        match name {
            "latency-ms" => self.latency_ms = Some(num(value)?),
            "ttft-ms" => self.ttft_ms = Some(num(value)?),
            "inter-token-ms" => self.inter_token_ms = Some(num(value)?),
            "tokens" => self.tokens = Some(num(value)?),
            "fault" => self.fault = Some(value.parse().map_err(|e| format!("{origin}: {e}"))?),
            _ => {}
        }
        Ok(())
    }

    /// `x-mock-latency-ms`, `x-mock-ttft-ms`, `x-mock-inter-token-ms`,
    /// `x-mock-tokens`, `x-mock-fault`.
    pub fn from_headers(headers: &HeaderMap) -> Result<Overrides, String> {
        let mut o = Overrides::default();
        for name in NAMES {
            let header = format!("x-mock-{name}");
            if let Some(v) = headers.get(&header) {
                let v = v
                    .to_str()
                    .map_err(|_| format!("header {header}: not visible ASCII"))?;
                o.set(name, v, &format!("header {header}"))?;
            }
        }
        Ok(o)
    }

    /// `MOCK_LATENCY_MS: 50`, `MOCK_TTFT_MS:`, `MOCK_INTER_TOKEN_MS:`,
    /// `MOCK_TOKENS:`, `MOCK_FAULT: reset` anywhere in a line of `text` (so a
    /// directive also works inside a code comment); the first one wins.
    pub fn from_directives(text: &str) -> Result<Overrides, String> {
        let mut o = Overrides::default();
        for name in NAMES {
            let key = format!("MOCK_{}", name.replace('-', "_").to_ascii_uppercase());
            if let Some(v) = directive(text, &format!("{key}:")) {
                o.set(name, v, &format!("directive {key}"))?;
            }
        }
        Ok(o)
    }
}

/// The rest of the first line of `text` containing `marker`, after the marker
/// and one optional space.
pub fn directive<'a>(text: &'a str, marker: &'a str) -> Option<&'a str> {
    directives(text, marker).next()
}

/// All directive values for `marker`, in order (one per line).
pub fn directives<'a>(text: &'a str, marker: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    text.lines().filter_map(move |line| {
        let at = line.find(marker)?;
        let rest = &line[at + marker.len()..];
        Some(rest.strip_prefix(' ').unwrap_or(rest))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_beats_directive_beats_default() {
        let defaults = Knobs {
            latency_ms: 1,
            ttft_ms: 2,
            ..Knobs::default()
        };
        let d = Overrides::from_directives("x\n// MOCK_TTFT_MS: 20\nMOCK_FAULT: reset").unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-mock-fault", "500".parse().unwrap());
        let h = Overrides::from_headers(&h).unwrap();
        let k = defaults.with(&d).with(&h);
        assert_eq!((k.latency_ms, k.ttft_ms), (1, 20));
        assert_eq!(k.fault, Some(Fault::Status500));
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(Overrides::from_directives("MOCK_TOKENS: many").is_err());
        assert!("explode".parse::<Fault>().is_err());
        assert_eq!("GARBAGE-SSE".parse::<Fault>(), Ok(Fault::GarbageSse));
    }
}
