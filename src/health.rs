//! Process readiness shared by the HTTP readiness probe, the gRPC health
//! service and the systemd notifier: not ready until every listener is bound,
//! not ready again once draining starts. Warnings are informational: the
//! unsafe settings in force, and whatever live sources report (an OIDC issuer
//! that has never answered); none of them makes the process unready.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

/// Something that may have warnings to report while running.
pub trait WarningSource: Send + Sync {
    fn warnings(&self) -> Vec<String>;
}

#[derive(Default)]
pub struct Health {
    ready: AtomicBool,
    draining: AtomicBool,
    unsafe_settings: Mutex<Vec<String>>,
    sources: Vec<Arc<dyn WarningSource>>,
}

impl Health {
    pub fn new(unsafe_settings: Vec<String>) -> Self {
        Self {
            unsafe_settings: Mutex::new(unsafe_settings),
            ..Self::default()
        }
    }

    /// Adds a live source of warnings.
    pub fn with_source(mut self, source: Arc<dyn WarningSource>) -> Self {
        self.sources.push(source);
        self
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
    pub fn unsafe_settings(&self) -> Vec<String> {
        self.unsafe_settings
            .lock()
            .map(|w| w.clone())
            .unwrap_or_default()
    }

    /// Every warning now: unsafe settings first, then the live sources'.
    pub fn warnings(&self) -> Vec<String> {
        let mut all = self.unsafe_settings();
        for source in &self.sources {
            all.extend(source.warnings());
        }
        all
    }
}
