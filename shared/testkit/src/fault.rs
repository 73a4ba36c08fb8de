//! A TCP fault proxy for tests: sits between a client and a real server and
//! misbehaves on demand (latency, dropped connections, 503s, truncated
//! bodies, not listening at all, or every open connection going silent).
//! Counts the connections it receives, so a test can prove that no call was
//! made.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to the next connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward faithfully.
    Pass,
    /// Forward after waiting this long.
    Latency(Duration),
    /// Close the connection at once.
    Drop,
    /// Answer `503 Service Unavailable` without forwarding.
    Unavailable,
    /// Answer `200` with a JSON body cut short (the connection closes
    /// before `content-length` bytes arrive).
    Truncated,
    /// Answer `200` with a complete body that is not the JSON expected.
    Garbled,
}

/// The proxy; stops when dropped.
pub struct FaultProxy {
    port: u16,
    upstream: u16,
    fault: Arc<Mutex<Fault>>,
    connections: Arc<AtomicUsize>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    live: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    /// While set, forwarded connections carry nothing either way (and stay
    /// open): a server that stopped reading, such as a broker under a
    /// resource alarm.
    stalled: Arc<AtomicBool>,
}

impl FaultProxy {
    /// A proxy on a random loopback port in front of `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fault proxy");
        let port = listener.local_addr().expect("local addr").port();
        let proxy = FaultProxy {
            port,
            upstream,
            fault: Arc::new(Mutex::new(Fault::Pass)),
            connections: Arc::new(AtomicUsize::new(0)),
            arrivals: Arc::new(Mutex::new(Vec::new())),
            task: Mutex::new(None),
            live: Arc::new(Mutex::new(Vec::new())),
            stalled: Arc::new(AtomicBool::new(false)),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let (fault, connections, arrivals, upstream, live, stalled) = (
            Arc::clone(&self.fault),
            Arc::clone(&self.connections),
            Arc::clone(&self.arrivals),
            self.upstream,
            Arc::clone(&self.live),
            Arc::clone(&self.stalled),
        );
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut a) = arrivals.lock() {
                    a.push(Instant::now());
                }
                let current = fault.lock().map(|f| *f).unwrap_or(Fault::Pass);
                let connection =
                    tokio::spawn(handle(client, upstream, current, Arc::clone(&stalled)));
                if let Ok(mut live) = live.lock() {
                    live.retain(|c| !c.is_finished());
                    live.push(connection.abort_handle());
                }
            }
        });
        if let Ok(mut slot) = self.task.lock() {
            *slot = Some(task);
        }
    }

    /// The port clients should use.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Misbehave like this from now on.
    pub fn set(&self, fault: Fault) {
        if let Ok(mut f) = self.fault.lock() {
            *f = fault;
        }
    }

    /// Open connections go silent (`true`: nothing is forwarded either
    /// way, nothing is closed) or carry on (`false`).
    pub fn stall(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::SeqCst);
    }

    /// Connections received so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// When each connection arrived.
    pub fn arrivals(&self) -> Vec<Instant> {
        self.arrivals.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// Stops listening and cuts every open connection, as a killed server
    /// would: connections are refused until [`FaultProxy::resume`].
    pub fn stop_listening(&self) {
        if let Ok(mut slot) = self.task.lock()
            && let Some(task) = slot.take()
        {
            task.abort();
        }
        if let Ok(mut live) = self.live.lock() {
            for connection in live.drain(..) {
                connection.abort();
            }
        }
    }

    /// Listens again on the same port (retrying for a while: the listener
    /// of an aborted accept loop is closed when its task is next polled).
    pub async fn resume(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("rebind fault proxy: {e}"),
            }
        };
        self.serve(listener);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop_listening();
    }
}

async fn handle(mut client: TcpStream, upstream: u16, fault: Fault, stalled: Arc<AtomicBool>) {
    match fault {
        Fault::Drop => drop(client),
        Fault::Unavailable => {
            read_head(&mut client).await;
            let _ = client
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        }
        Fault::Truncated => {
            read_head(&mut client).await;
            let _ = client
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 200\r\nconnection: close\r\n\r\n{\"id\": \"01")
                .await;
        }
        Fault::Garbled => {
            read_head(&mut client).await;
            let body = b"{\"id\": 42, \"name\": [";
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = client.write_all(head.as_bytes()).await;
            let _ = client.write_all(body).await;
        }
        Fault::Pass | Fault::Latency(_) => {
            if let Fault::Latency(delay) = fault {
                tokio::time::sleep(delay).await;
            }
            if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await {
                let (client_in, client_out) = client.into_split();
                let (server_in, server_out) = server.into_split();
                tokio::join!(
                    forward(client_in, server_out, &stalled),
                    forward(server_in, client_out, &stalled),
                );
            }
        }
    }
}

/// Copies `from` to `to` until either closes, holding what it read while
/// `stalled` is set.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: &AtomicBool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Reads until the end of the request head (enough for bodiless requests).
async fn read_head(client: &mut TcpStream) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
        if seen.len() > 64 * 1024 {
            return;
        }
    }
}
