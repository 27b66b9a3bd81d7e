//! The per-app connection limit: requests, tunnels and raw TCP connections in flight per
//! app, so one busy app cannot take every connection of the proxy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// In-flight counts per app.
#[derive(Debug, Default)]
pub(crate) struct AppLimits {
    apps: Mutex<HashMap<String, usize>>,
}

/// One request or connection counted against its app until dropped.
#[derive(Debug)]
pub(crate) struct AppGuard {
    limits: Arc<AppLimits>,
    app: String,
}

// === impl AppLimits ===

impl AppLimits {
    /// Counts one more against `app`, unless it already has `max` in flight.
    pub(crate) fn acquire(self: &Arc<Self>, app: &str, max: usize) -> Option<AppGuard> {
        let mut apps = self.lock();
        let count = apps.entry(app.to_owned()).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(AppGuard {
            limits: Arc::clone(self),
            app: app.to_owned(),
        })
    }

    /// Every app with something in flight, and how much.
    pub(crate) fn snapshot(&self) -> Vec<(String, usize)> {
        self.lock()
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(app, n)| (app.clone(), *n))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.apps.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for AppGuard {
    fn drop(&mut self) {
        let mut apps = self.limits.lock();
        if let Some(count) = apps.get_mut(&self.app) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                apps.remove(&self.app);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_app_up_to_the_limit() {
        let limits = Arc::new(AppLimits::default());
        let a1 = limits.acquire("a", 2).expect("below the limit");
        let _a2 = limits.acquire("a", 2).expect("below the limit");
        assert!(limits.acquire("a", 2).is_none());
        let _b = limits
            .acquire("b", 2)
            .expect("another app has its own count");
        drop(a1);
        assert!(limits.acquire("a", 2).is_some());
        assert_eq!(limits.snapshot().len(), 2);
    }
}
