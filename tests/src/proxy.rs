//! A delaying TCP proxy: "a few ms of network" between a client (a replica) and a Redis server
//! on the same machine.
//!
//! Loopback answers in microseconds, which hides every bug that needs a request to be in flight
//! while something else happens. [`DelayProxy`] sits between the client and the server and holds
//! every chunk of bytes, in each direction, for a configurable one-way delay. It is a delay
//! line, not a sleep per chunk: a chunk read at `t` is written at `t + delay` (or right after the
//! chunk before it, if that one is still being written), so N pipelined commands take about one
//! round trip, not N of them.
//!
//! It also simulates network faults: [`freeze`](DelayProxy::freeze) black-holes every connection
//! (connections stay open, nothing arrives) until [`thaw`](DelayProxy::thaw), and
//! [`cut`](DelayProxy::cut) closes every current connection at once (a connection reset).
//!
//! The proxy runs on its own OS thread with its own tokio runtime, so it works from sync tests
//! and from `#[tokio::test]`s of any flavor, and keeps forwarding while the test's runtime is
//! busy or blocked. Dropping it stops it and closes all its connections.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Size of the read buffer of each direction of each connection.
const CHUNK: usize = 64 * 1024;

/// A chunk of bytes and the moment it may be written.
type Chunk = (Instant, Vec<u8>);

/// Requests from the test thread to the proxy thread.
enum Control {
    /// Close every current connection, then acknowledge.
    Cut(std::sync::mpsc::Sender<()>),
}

/// State shared by the handle and the proxy thread.
struct Shared {
    target_port: u16,
    /// One-way delay in nanoseconds.
    delay_nanos: AtomicU64,
    /// `true` while frozen.
    frozen: watch::Sender<bool>,
    /// Connections currently open.
    open: AtomicUsize,
}

impl Shared {
    fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay_nanos.load(Ordering::Relaxed))
    }
}

/// A TCP proxy on 127.0.0.1 that forwards every connection to a local port, delaying each
/// direction by a fixed one-way delay. See the [module docs](self).
///
/// Dropping it stops the proxy thread and closes all its connections (before `drop` returns).
pub struct DelayProxy {
    port: u16,
    shared: Arc<Shared>,
    /// `None` only during `drop`; dropping the sender tells the proxy thread to stop.
    control: Option<mpsc::UnboundedSender<Control>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for DelayProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelayProxy")
            .field("port", &self.port)
            .field("target_port", &self.shared.target_port)
            .field("one_way", &self.shared.delay())
            .field("frozen", &*self.shared.frozen.borrow())
            .field("connections", &self.connections())
            .finish()
    }
}

impl DelayProxy {
    /// Starts a proxy on a free port of 127.0.0.1 that forwards every accepted connection to
    /// `127.0.0.1:target_port`, delaying every chunk by `one_way` in each direction (so a round
    /// trip takes at least `2 × one_way`).
    ///
    /// A connection whose target refuses the connection is closed right away.
    ///
    /// Panics if it cannot bind a port or start its thread.
    pub fn start(target_port: u16, one_way: Duration) -> DelayProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("DelayProxy: cannot bind an ephemeral port on 127.0.0.1");
        let port = listener
            .local_addr()
            .expect("DelayProxy: local address of the listener")
            .port();
        listener
            .set_nonblocking(true)
            .expect("DelayProxy: cannot make the listener non-blocking");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("DelayProxy: cannot build its tokio runtime");
        let shared = Arc::new(Shared {
            target_port,
            delay_nanos: AtomicU64::new(nanos(one_way)),
            frozen: watch::Sender::new(false),
            open: AtomicUsize::new(0),
        });
        let (control, control_rx) = mpsc::unbounded_channel();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("delay-proxy-{port}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener)
                        .expect("DelayProxy: cannot register the listener with tokio");
                    serve(listener, control_rx, thread_shared).await;
                });
                // Dropping the runtime drops every connection task, closing their sockets.
                drop(runtime);
            })
            .expect("DelayProxy: cannot spawn its thread");
        DelayProxy {
            port,
            shared,
            control: Some(control),
            thread: Some(thread),
        }
    }

    /// The port the proxy listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Changes the one-way delay. It applies to chunks read from now on; chunks already in
    /// flight keep their deadline (and writes always stay in order).
    pub fn set_delay(&self, one_way: Duration) {
        self.shared
            .delay_nanos
            .store(nanos(one_way), Ordering::Relaxed);
    }

    /// Black-holes the network: from now on bytes are neither read nor forwarded, in either
    /// direction, while connections stay open (a client's commands time out). New
    /// connections are still accepted, and frozen too. [`thaw`](Self::thaw) undoes it.
    pub fn freeze(&self) {
        self.shared.frozen.send_replace(true);
    }

    /// Ends a [`freeze`](Self::freeze): everything buffered is forwarded at once, in order,
    /// and reading resumes.
    pub fn thaw(&self) {
        self.shared.frozen.send_replace(false);
    }

    /// Closes every connection accepted so far, both sides, at once (bytes still in the delay
    /// line are lost), and returns once they are closed. New connections are accepted as usual.
    pub fn cut(&self) {
        let (ack, acked) = std::sync::mpsc::channel();
        self.control
            .as_ref()
            .expect("DelayProxy: control channel")
            .send(Control::Cut(ack))
            .expect("DelayProxy: the proxy thread is gone");
        acked
            .recv()
            .expect("DelayProxy: the proxy thread did not acknowledge the cut");
    }

    /// Number of connections currently open (accepted and not yet closed).
    pub fn connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        // Closing the control channel ends the accept loop; the thread then drops its runtime.
        drop(self.control.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The accept loop: runs until the control channel closes.
async fn serve(
    listener: TcpListener,
    mut control: mpsc::UnboundedReceiver<Control>,
    shared: Arc<Shared>,
) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            request = control.recv() => match request {
                Some(Control::Cut(ack)) => {
                    connections.abort_all();
                    // Wait until every task is gone: its sockets are closed by then.
                    while connections.join_next().await.is_some() {}
                    let _ = ack.send(());
                }
                None => return,
            },
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    // Counted here, so `connections()` never misses an accepted connection.
                    let guard = OpenGuard::new(&shared);
                    connections.spawn(connection(client, Arc::clone(&shared), guard));
                }
                Err(err) => {
                    eprintln!("DelayProxy on port {port}: accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            // Reap finished connections.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Counts an open connection while it lives.
struct OpenGuard(Arc<Shared>);

impl OpenGuard {
    fn new(shared: &Arc<Shared>) -> OpenGuard {
        shared.open.fetch_add(1, Ordering::SeqCst);
        OpenGuard(Arc::clone(shared))
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One proxied connection: runs until both directions have forwarded their end of stream, or
/// one of them fails (then both sockets are closed).
async fn connection(client: TcpStream, shared: Arc<Shared>, _guard: OpenGuard) {
    let server = match TcpStream::connect(("127.0.0.1", shared.target_port)).await {
        Ok(server) => server,
        Err(_) => return, // Like the target: refused. Dropping `client` closes it.
    };
    // Without NODELAY, Nagle + delayed ACKs would add their own (tens of ms) delays.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let _ = tokio::try_join!(
        direction(client_read, server_write, &shared),
        direction(server_read, client_write, &shared),
    );
}

/// One direction of a connection: a reader that stamps every chunk with its deadline and a
/// writer that writes each chunk at its deadline, joined by a queue.
async fn direction(from: OwnedReadHalf, to: OwnedWriteHalf, shared: &Shared) -> io::Result<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::try_join!(read_side(from, tx, shared), write_side(to, rx, shared))?;
    Ok(())
}

/// Reads chunks (not while frozen) and queues them with `now + delay`. Returns at end of stream,
/// dropping the queue's sender so that the writer forwards the end of stream after the data.
async fn read_side(
    mut from: OwnedReadHalf,
    tx: mpsc::UnboundedSender<Chunk>,
    shared: &Shared,
) -> io::Result<()> {
    let mut frozen = shared.frozen.subscribe();
    let mut buf = vec![0u8; CHUNK];
    loop {
        // `shared` (and so the sender) outlives this task: `wait_for` cannot fail.
        let _ = frozen.wait_for(|frozen| !*frozen).await;
        let n = tokio::select! {
            biased;
            _ = frozen.wait_for(|frozen| *frozen) => continue,
            read = from.read(&mut buf) => read?,
        };
        if n == 0 {
            return Ok(());
        }
        let deadline = Instant::now() + shared.delay();
        if tx.send((deadline, buf[..n].to_vec())).is_err() {
            return Ok(()); // The writer failed; its error ends the connection.
        }
    }
}

/// Writes every queued chunk at its deadline (not while frozen), in order, then forwards the
/// end of stream.
async fn write_side(
    mut to: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Chunk>,
    shared: &Shared,
) -> io::Result<()> {
    let mut frozen = shared.frozen.subscribe();
    while let Some((deadline, bytes)) = rx.recv().await {
        tokio::time::sleep_until(deadline).await;
        let _ = frozen.wait_for(|frozen| !*frozen).await;
        to.write_all(&bytes).await?;
    }
    to.shutdown().await
}
