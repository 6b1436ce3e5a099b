//! The process-wide backend behind `#[cached]` functions and [`Cache`](crate::Cache)s built
//! without their own backend: [`init`] installs it, [`Runtime::shutdown`] removes it.

use std::sync::{Arc, Mutex, OnceLock, RwLock};

use crate::backend::{memory::MemoryBackend, Backend};
use crate::cache::{backend_prefix, CacheBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::refresh;
use crate::stats::Stats;
use crate::store::Store;
use crate::Error;

static INSTALLED: RwLock<Option<Arc<Control>>> = RwLock::new(None);
static DEFAULT: OnceLock<Arc<Store>> = OnceLock::new();

/// The store used right now: the installed one, or the embedded memory default.
pub(crate) fn current_store() -> Arc<Store> {
    if let Some(control) = INSTALLED.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return control.store.clone();
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
/// Until `init` is called (and after [`shutdown`]) everything runs on an embedded
/// [`MemoryBackend`], with the same semantics inside one process.
///
/// The installed backend and its refreshers run until [`Runtime::shutdown`] or [`shutdown`]:
/// dropping the returned [`Runtime`] does not stop them (so `let _ = atomcache::init(..)`
/// works as it reads). A second call while a backend is installed returns
/// [`Error::AlreadyInitialized`] and leaves the installed backend in place; shut it down first
/// to switch backends.
///
/// Fails with [`Error::NamespaceCollision`], installing nothing, when two `#[cached]`
/// functions linked into the program have the same namespace (they would read each other's
/// values; until fixed, they bypass the cache).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), atomcache::Error> {
/// let runtime = atomcache::init(atomcache::MemoryBackend::new()).await?;
/// assert!(matches!(
///     atomcache::init(atomcache::MemoryBackend::new()).await,
///     Err(atomcache::Error::AlreadyInitialized)
/// ));
/// drop(runtime); // still installed, refreshers still running
/// assert!(atomcache::shutdown().await, "shut down the installed backend");
/// # Ok(()) }
/// ```
pub async fn init(backend: impl Backend) -> Result<Runtime, Error> {
    crate::namespaces::check()?;
    let store = new_store(backend)?;
    let mut installed = INSTALLED.write().unwrap_or_else(|e| e.into_inner());
    if installed.is_some() {
        return Err(Error::AlreadyInitialized);
    }
    let control = Control::start(store);
    *installed = Some(control.clone());
    Ok(Runtime {
        control,
        detached: false,
    })
}

/// Shuts down the backend installed by [`init`], whether or not its [`Runtime`] handle is
/// still around: stops and waits for the auto-refresh tasks, uninstalls the backend (later
/// calls use the embedded memory backend) and closes its connections. Returns whether a
/// backend was installed.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// assert!(!atomcache::shutdown().await, "nothing installed");
/// # }
/// ```
pub async fn shutdown() -> bool {
    let control = INSTALLED.write().unwrap_or_else(|e| e.into_inner()).take();
    match control {
        Some(control) => {
            control.stop().await;
            true
        }
        None => false,
    }
}

fn new_store(backend: impl Backend) -> Result<Arc<Store>, Error> {
    let prefix = backend_prefix(&backend)?;
    Ok(Arc::new(Store::new(Arc::new(backend), prefix)))
}

/// A store with its running refreshers.
struct Control {
    store: Arc<Store>,
    stop: watch::Sender<bool>,
    refreshers: Mutex<Vec<JoinHandle<()>>>,
}

impl Control {
    fn start(store: Arc<Store>) -> Arc<Control> {
        let (stop, stop_rx) = watch::channel(false);
        let refreshers = refresh::start_all(&store, &stop_rx);
        Arc::new(Control {
            store,
            stop,
            refreshers: Mutex::new(refreshers),
        })
    }

    fn refreshers(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.refreshers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the refreshers, waits for them and closes the backend.
    async fn stop(&self) {
        self.stop.send_replace(true);
        let tasks = std::mem::take(&mut *self.refreshers());
        for task in tasks {
            if let Err(err) = task.await {
                if err.is_panic() {
                    tracing::error!(%err, "an auto-refresh task panicked");
                }
            }
        }
        self.store.backend.shutdown().await;
    }
}

/// The handle of a backend with its auto-refresh tasks: installed process-wide by [`init`],
/// or private to the handle with [`Runtime::detached`].
///
/// Dropping the handle of an installed backend leaves it installed and running (see
/// [`shutdown`]); dropping a detached one stops its refreshers, since nothing else can reach
/// them.
#[must_use = "a detached Runtime stops its refreshers when dropped; an installed one runs until `shutdown`"]
pub struct Runtime {
    control: Arc<Control>,
    detached: bool,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("detached", &self.detached)
            .field("stats", &self.control.store.stats())
            .finish()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if self.detached {
            self.control.stop.send_replace(true);
        }
    }
}

impl Runtime {
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
    /// Fails when the backend's key prefix is invalid (contains `{` or `}`), and with
    /// [`Error::NamespaceCollision`] as [`init`] does.
    pub fn detached(backend: impl Backend) -> Result<Runtime, Error> {
        crate::namespaces::check()?;
        Ok(Runtime {
            control: Control::start(new_store(backend)?),
            detached: true,
        })
    }

    /// Starts building a [`Cache`](crate::Cache) on this runtime's backend (sharing its
    /// single-flight table and [`Stats`]).
    pub fn cache(&self, namespace: impl Into<String>) -> CacheBuilder {
        CacheBuilder::on_store(namespace.into(), self.control.store.clone())
    }

    /// Counters of the runtime's store.
    pub fn stats(&self) -> Stats {
        self.control.store.stats()
    }

    /// Number of running auto-refresh tasks (one per `#[cached(auto_refresh)]` function).
    pub fn refreshers(&self) -> usize {
        self.control
            .refreshers()
            .iter()
            .filter(|task| !task.is_finished())
            .count()
    }

    /// Stops the auto-refresh tasks and waits for them (a refresh in progress is cancelled and
    /// its lease released), uninstalls the backend if this runtime is the installed one (later
    /// calls use the embedded memory backend until the next [`init`]) and closes the backend's
    /// connections.
    pub async fn shutdown(self) {
        if !self.detached {
            let mut installed = INSTALLED.write().unwrap_or_else(|e| e.into_inner());
            if installed
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, &self.control))
            {
                *installed = None;
            }
        }
        self.control.stop().await;
    }
}
