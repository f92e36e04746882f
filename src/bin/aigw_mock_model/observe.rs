//! What tests read back: the last requests as received (`/_mock/requests`)
//! and stream counters (`/_mock/stats`).
//!
//! Gateway tests assert on the upstream side: that the API key was forwarded,
//! what prompt was built, and that a client hanging up mid-stream cancelled the
//! upstream stream. The last is observed through [`StreamGuard`]: the response
//! body owns one, and hyper drops the body early when the peer goes away.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use axum::http::{HeaderMap, Method, Uri};
use serde_json::{Map, Value, json};

pub struct Observe {
    log: Mutex<VecDeque<Value>>,
    capacity: usize,
    requests: AtomicU64,
    active: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
}

impl Observe {
    pub fn new(capacity: usize) -> Observe {
        Observe {
            log: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity,
            requests: AtomicU64::new(0),
            active: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
        }
    }

    /// Counts a model API request and keeps it (headers unredacted: tests
    /// check `authorization`).
    pub fn record(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: Value) {
        self.requests.fetch_add(1, Relaxed);
        if self.capacity == 0 {
            return;
        }
        let mut map = Map::new();
        for (name, value) in headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            match map.get_mut(name.as_str()) {
                Some(Value::String(prev)) => {
                    prev.push_str(", ");
                    prev.push_str(&value);
                }
                _ => {
                    map.insert(name.as_str().to_string(), Value::from(value.into_owned()));
                }
            }
        }
        let entry = json!({
            "method": method.as_str(),
            "path": uri.path(),
            "query": uri.query(),
            "headers": map,
            "body": body,
        });
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() >= self.capacity {
            log.pop_front();
        }
        log.push_back(entry);
    }

    pub fn requests(&self) -> Value {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        Value::Array(log.iter().cloned().collect())
    }

    pub fn clear(&self) {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    pub fn stats(&self) -> Value {
        json!({
            "active_streams": self.active.load(Relaxed),
            "completed_streams": self.completed.load(Relaxed),
            "cancelled_streams": self.cancelled.load(Relaxed),
            "requests": self.requests.load(Relaxed),
        })
    }

    /// Zeroes the counters of finished things (`active_streams` stays true).
    pub fn reset_stats(&self) {
        self.requests.store(0, Relaxed);
        self.completed.store(0, Relaxed);
        self.cancelled.store(0, Relaxed);
    }

    pub fn stream_started(self: &Arc<Self>) -> StreamGuard {
        self.active.fetch_add(1, Relaxed);
        StreamGuard {
            observe: self.clone(),
            finished: false,
        }
    }
}

/// Lives inside a streaming body: dropped after [`StreamGuard::finish`] it
/// counts a completed stream, dropped before it a cancelled one.
pub struct StreamGuard {
    observe: Arc<Observe>,
    finished: bool,
}

impl StreamGuard {
    /// The server produced the whole script (including a scripted reset).
    pub fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let o = &self.observe;
        o.active.fetch_sub(1, Relaxed);
        if self.finished {
            o.completed.fetch_add(1, Relaxed);
        } else {
            o.cancelled.fetch_add(1, Relaxed);
            tracing::debug!("stream cancelled by the client");
        }
    }
}
