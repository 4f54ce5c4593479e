//! Application state shared by every request.

use std::sync::Arc;

use crate::artifacts::Artifacts;
use crate::auth::Auth;
use crate::observability::Metrics;
use crate::store::Store;
use crate::studies::LeaseTiming;

/// Application-wide components.
#[derive(Debug)]
pub struct App {
    /// Metadata: SQLite by default, Postgres for several replicas.
    pub store: Store,
    /// Artifact bytes behind `object_store`.
    pub artifacts: Artifacts,
    /// Who may call what.
    pub auth: Auth,
    /// Request metrics for `/metrics`.
    pub metrics: Metrics,
    /// Lease lifetime of worker agents.
    pub lease_timing: LeaseTiming,
    /// Wakes the webhook delivery task.
    pub webhooks: crate::webhooks::Dispatcher,
}

/// Cheap-to-clone handle that handlers take as `State(app): State<AppState>`.
#[derive(Clone, Debug)]
pub struct AppState(pub Arc<App>);

impl std::ops::Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

impl AppState {
    /// Wraps the components.
    pub fn new(store: Store, artifacts: Artifacts, auth: Auth) -> Self {
        Self::with_lease_timing(store, artifacts, auth, LeaseTiming::default())
    }

    /// Wraps the components, with leases of the given lifetime.
    pub fn with_lease_timing(store: Store, artifacts: Artifacts, auth: Auth, lease_timing: LeaseTiming) -> Self {
        let metrics = Metrics::new(&store);
        let app = Arc::new(App { store, artifacts, auth, metrics, lease_timing, webhooks: Default::default() });
        // Both run until this state is dropped.
        crate::webhooks::Dispatcher::start(&app);
        crate::studies::sweep_expired_leases_in_background(&app);
        AppState(app)
    }
}
