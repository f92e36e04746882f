//! Process readiness shared by the HTTP readiness probe, the gRPC health
//! service and the systemd notifier: not ready until every listener is bound,
//! not ready again once draining starts.

use std::sync::{
    Mutex,
    atomic::{AtomicBool, Ordering},
};

#[derive(Default)]
pub struct Health {
    ready: AtomicBool,
    draining: AtomicBool,
    warnings: Mutex<Vec<String>>,
}

impl Health {
    pub fn new(warnings: Vec<String>) -> Self {
        Self {
            warnings: Mutex::new(warnings),
            ..Self::default()
        }
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.draining.load(Ordering::SeqCst)
    }

    /// Unsafe settings in force (authentication bypass, throwaway keys).
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.lock().map(|w| w.clone()).unwrap_or_default()
    }
}
