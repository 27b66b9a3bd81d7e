//! The per-app connection limit: requests, tunnels and raw TCP connections in flight per
//! app, so one busy app cannot take every connection of the proxy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// In-flight counts per app. An app's counter is made once and kept (there are as many as
/// apps the proxy has routed to), so counting a request allocates nothing and its release
/// takes no lock.
#[derive(Debug, Default)]
pub(crate) struct AppLimits {
    apps: Mutex<HashMap<Arc<str>, Arc<AtomicUsize>>>,
}

/// One request or connection counted against its app until dropped.
#[derive(Debug)]
pub(crate) struct AppGuard {
    count: Arc<AtomicUsize>,
}

// === impl AppLimits ===

impl AppLimits {
    /// Counts one more against `app`, unless it already has `max` in flight.
    pub(crate) fn acquire(&self, app: &str, max: usize) -> Option<AppGuard> {
        let count = self.counter(app);
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(AppGuard { count })
    }

    /// Every app with something in flight, and how much.
    pub(crate) fn snapshot(&self) -> Vec<(String, usize)> {
        self.lock()
            .iter()
            .map(|(app, n)| (app.to_string(), n.load(Ordering::Acquire)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    fn counter(&self, app: &str) -> Arc<AtomicUsize> {
        let mut apps = self.lock();
        if let Some(count) = apps.get(app) {
            return Arc::clone(count);
        }
        let count = Arc::new(AtomicUsize::new(0));
        apps.insert(Arc::from(app), Arc::clone(&count));
        count
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<AtomicUsize>>> {
        self.apps.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for AppGuard {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
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
