//! The process-wide backend behind `#[cached]` functions and [`Cache`](crate::Cache)s built
//! without their own backend: [`init`] installs it, [`Runtime::shutdown`] removes it.

use std::sync::{Arc, OnceLock, RwLock};

use crate::backend::{memory::MemoryBackend, Backend};
use crate::cache::{backend_prefix, CacheBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::refresh;
use crate::stats::Stats;
use crate::store::Store;
use crate::Error;

static INSTALLED: RwLock<Option<Arc<Store>>> = RwLock::new(None);
static DEFAULT: OnceLock<Arc<Store>> = OnceLock::new();

/// The store used right now: the installed one, or the embedded memory default.
pub(crate) fn current_store() -> Arc<Store> {
    if let Some(store) = INSTALLED.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return store.clone();
    }
    DEFAULT
        .get_or_init(|| Arc::new(Store::new(Arc::new(MemoryBackend::new()), String::new())))
        .clone()
}

/// Installs `backend` as the process-wide backend of `#[cached]` functions and of every
/// [`Cache`](crate::Cache) without its own backend, and starts one background task per
/// `#[cached(auto_refresh)]` function linked into the program. Must be called inside a Tokio
/// runtime.
///
/// Until `init` is called (and after [`Runtime::shutdown`]) everything runs on an embedded
/// [`MemoryBackend`], with the same semantics inside one process.
///
/// A second call while a [`Runtime`] is installed returns [`Error::AlreadyInitialized`] and
/// leaves the installed backend in place; call [`Runtime::shutdown`] first to switch backends.
/// Dropping the `Runtime` without `shutdown` leaves the backend installed for the rest of the
/// process.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), atomcache::Error> {
/// let runtime = atomcache::init(atomcache::MemoryBackend::new()).await?;
/// assert!(matches!(
///     atomcache::init(atomcache::MemoryBackend::new()).await,
///     Err(atomcache::Error::AlreadyInitialized)
/// ));
/// runtime.shutdown().await;
/// # Ok(()) }
/// ```
pub async fn init(backend: impl Backend) -> Result<Runtime, Error> {
    let store = new_store(backend)?;
    {
        let mut installed = INSTALLED.write().unwrap_or_else(|e| e.into_inner());
        if installed.is_some() {
            return Err(Error::AlreadyInitialized);
        }
        *installed = Some(store.clone());
    }
    Ok(Runtime::start(store))
}

fn new_store(backend: impl Backend) -> Result<Arc<Store>, Error> {
    let prefix = backend_prefix(&backend)?;
    Ok(Arc::new(Store::new(Arc::new(backend), prefix)))
}

/// The handle of an installed backend; see [`init`].
#[must_use = "dropping the Runtime leaves the backend installed; call `shutdown` to stop it"]
pub struct Runtime {
    store: Arc<Store>,
    stop: watch::Sender<bool>,
    refreshers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("stats", &self.store.stats())
            .finish()
    }
}

impl Runtime {
    fn start(store: Arc<Store>) -> Runtime {
        let (stop, stop_rx) = watch::channel(false);
        let refreshers = refresh::start_all(&store, &stop_rx);
        Runtime {
            store,
            stop,
            refreshers,
        }
    }

    /// Like [`init`], but without installing the backend process-wide: starts the auto-refresh
    /// tasks on `backend` and hands out caches bound to it through [`Runtime::cache`]. Useful to
    /// model several replicas in one process (tests, benchmarks) or to run a second store.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), atomcache::Error> {
    /// let replica = atomcache::Runtime::detached(atomcache::MemoryBackend::new())?;
    /// let cache = replica.cache("users").build()?;
    /// cache.set("1", &"ada").await?;
    /// assert_eq!(replica.stats().hits, 0);
    /// replica.shutdown().await;
    /// # Ok(()) }
    /// ```
    ///
    /// Fails only when the backend's key prefix is invalid (contains `{` or `}`).
    pub fn detached(backend: impl Backend) -> Result<Runtime, Error> {
        Ok(Runtime::start(new_store(backend)?))
    }

    /// Starts building a [`Cache`](crate::Cache) on this runtime's backend (sharing its
    /// single-flight table and [`Stats`]).
    pub fn cache(&self, namespace: impl Into<String>) -> CacheBuilder {
        CacheBuilder::on_store(namespace.into(), self.store.clone())
    }

    /// Counters of the installed store.
    pub fn stats(&self) -> Stats {
        self.store.stats()
    }

    /// Number of running auto-refresh tasks (one per `#[cached(auto_refresh)]` function).
    pub fn refreshers(&self) -> usize {
        self.refreshers
            .iter()
            .filter(|task| !task.is_finished())
            .count()
    }

    /// Stops the auto-refresh tasks and waits for them (a refresh in progress is cancelled and
    /// its lock released), uninstalls the backend (later calls use the embedded memory backend
    /// until the next [`init`]) and closes the backend's connections.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        for task in self.refreshers {
            if let Err(err) = task.await {
                if err.is_panic() {
                    tracing::error!(%err, "an auto-refresh task panicked");
                }
            }
        }
        {
            let mut installed = INSTALLED.write().unwrap_or_else(|e| e.into_inner());
            if installed
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, &self.store))
            {
                *installed = None;
            }
        }
        self.store.backend.shutdown().await;
    }
}
