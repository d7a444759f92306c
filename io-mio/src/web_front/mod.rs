//! The web console's HTTPS front: TLS from rustls and HTTP/1.1 from hyper, on a thread of its own
//! running a single-threaded tokio runtime. Owns sockets, TLS and HTTP framing: each request,
//! parsed, goes to the node loop through a channel (with a wake byte on a socket pair the loop
//! polls), and the node's answer comes back to the connection. It holds every browser to the
//! limits the node sent (connections, time for a head and a body, body size) and never decides
//! what a request may do or what it is answered.

mod tls;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use cohort_core::node::Input;
use cohort_core::web::{Method, RequestId, WebLimits, WebRequest, WebResponse};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_rustls::TlsAcceptor;
use tracing::debug;

pub use tls::{TlsError, fingerprint, self_signed, server_config};

/// The largest request head hyper buffers.
const MAX_HEAD: usize = 64 * 1024;

/// What the front tells the node loop.
enum FrontEvent {
    Request { request: RequestId, web: Box<WebRequest>, answer: oneshot::Sender<Answer> },
    Sent { request: RequestId, bytes: usize },
    Gone { request: RequestId },
}

/// The node's answer to one request: the response, and the chunks that follow a streamed one.
struct Answer {
    response: WebResponse,
    chunks: Option<mpsc::UnboundedReceiver<Vec<u8>>>,
}

/// What the front's tasks share: the way to the node loop, the limits, the TLS acceptor.
struct Shared {
    events: Mutex<Sender<FrontEvent>>,
    wake: StdUnixStream,
    next: AtomicU64,
    limits: WebLimits,
    acceptor: TlsAcceptor,
    peers: Mutex<BTreeMap<IpAddr, usize>>,
}

impl Shared {
    fn tell(&self, event: FrontEvent) {
        // The loop is gone only when the process stops; nothing is left to tell then.
        let sent = self.events.lock().unwrap_or_else(PoisonError::into_inner).send(event);
        if sent.is_ok() {
            // A full socket pair means a wake is pending already.
            let _ = (&self.wake).write(&[1]);
        }
    }
}

/// The front, as the node loop holds it. See the module docs.
pub struct WebFront {
    events: Receiver<FrontEvent>,
    wake: mio::net::UnixStream,
    waiting: BTreeMap<RequestId, oneshot::Sender<Answer>>,
    streams: BTreeMap<RequestId, mpsc::UnboundedSender<Vec<u8>>>,
    stop: Option<oneshot::Sender<()>>,
    addr: SocketAddr,
}

impl std::fmt::Debug for WebFront {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebFront").field("addr", &self.addr).field("streams", &self.streams.len()).finish()
    }
}

impl WebFront {
    /// Binds `addr` (an error here is the caller's to report) and starts serving on the front's
    /// thread.
    pub fn start(
        addr: SocketAddr,
        limits: WebLimits,
        tls: Arc<rustls::ServerConfig>,
    ) -> io::Result<WebFront> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (wake_tx, wake_rx) = StdUnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        let (events_tx, events) = channel();
        let shared = Arc::new(Shared {
            events: Mutex::new(events_tx),
            wake: wake_tx,
            next: AtomicU64::new(1),
            limits,
            acceptor: TlsAcceptor::from(tls),
            peers: Mutex::new(BTreeMap::new()),
        });
        let (stop, stopped) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::Builder::new().name("web".into()).spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => accept_loop(listener, shared, stopped).await,
                    Err(e) => tracing::warn!(error = %e, "the web listener could not join the runtime"),
                }
            });
        })?;
        Ok(WebFront {
            events,
            wake: mio::net::UnixStream::from_std(wake_rx),
            waiting: BTreeMap::new(),
            streams: BTreeMap::new(),
            stop: Some(stop),
            addr,
        })
    }

    /// Where the front listens (the port the system chose, for `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The source the loop polls to hear that the front has something.
    pub fn wake_source(&mut self) -> &mut mio::net::UnixStream {
        &mut self.wake
    }

    /// Everything the front has said since the last call, as node inputs.
    pub fn take_inputs(&mut self) -> Vec<Input> {
        let mut scratch = [0u8; 256];
        while matches!(self.wake.read(&mut scratch), Ok(n) if n > 0) {}
        let mut inputs = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            inputs.push(match event {
                FrontEvent::Request { request, web, answer } => {
                    self.waiting.insert(request, answer);
                    Input::WebRequest { request, web }
                }
                FrontEvent::Sent { request, bytes } => Input::WebSent { request, bytes },
                FrontEvent::Gone { request } => {
                    self.waiting.remove(&request);
                    self.streams.remove(&request);
                    Input::WebGone { request }
                }
            });
        }
        inputs
    }

    /// Hands the node's answer to the request's connection; the input to feed if the browser
    /// has gone.
    pub fn respond(&mut self, request: RequestId, response: WebResponse) -> Option<Input> {
        let answer = self.waiting.remove(&request)?;
        let chunks = response.streamed.then(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            self.streams.insert(request, tx);
            rx
        });
        if answer.send(Answer { response, chunks }).is_err() {
            self.streams.remove(&request);
            return Some(Input::WebGone { request });
        }
        None
    }

    /// More of a streamed answer; the last one ends it. The node bounds what it hands out
    /// unread (it hears `WebSent` as the connection takes each chunk).
    pub fn chunk(&mut self, request: RequestId, bytes: Vec<u8>, last: bool) {
        if let Some(stream) = self.streams.get(&request)
            && !bytes.is_empty()
        {
            let _ = stream.send(bytes);
        }
        if last {
            self.streams.remove(&request);
        }
    }

    /// Stops accepting; open connections end with the front's thread.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for WebFront {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(shared.limits.max_connections.max(1)));
    loop {
        // Past the limit, connections wait in the kernel's backlog rather than cost memory here.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            _ = &mut stop => return,
        };
        let Ok(slot) = slot else { return };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stop => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                debug!(error = %e, "web accept failed");
                continue;
            }
        };
        let Some(peer_slot) = PeerSlot::take(&shared, peer.ip()) else {
            debug!(%peer, "web connection refused: too many open from this address");
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer.ip(), shared).await;
            drop((slot, peer_slot));
        });
    }
}

/// One of an address's connections; given back when dropped.
struct PeerSlot {
    shared: Arc<Shared>,
    peer: IpAddr,
}

impl PeerSlot {
    fn take(shared: &Arc<Shared>, peer: IpAddr) -> Option<PeerSlot> {
        let mut peers = shared.peers.lock().unwrap_or_else(PoisonError::into_inner);
        let open = peers.entry(peer).or_default();
        if *open >= shared.limits.max_per_peer {
            return None;
        }
        *open += 1;
        Some(PeerSlot { shared: shared.clone(), peer })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut peers = self.shared.peers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = peers.get_mut(&self.peer) {
            *open -= 1;
            if *open == 0 {
                peers.remove(&self.peer);
            }
        }
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, peer: IpAddr, shared: Arc<Shared>) {
    let head_time = Duration::from_millis(shared.limits.header_timeout_ms);
    // The handshake is held to the same time as a request head: a slow handshake is a slow head.
    let tls = match tokio::time::timeout(head_time, shared.acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return debug!(%peer, error = %e, "web TLS handshake failed"),
        Err(_) => return debug!(%peer, "web TLS handshake timed out"),
    };
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(head_time).max_buf_size(MAX_HEAD);
    let service = service_fn(move |request| handle(request, peer, shared.clone()));
    if let Err(e) = http.serve_connection(TokioIo::new(tls), service).await {
        debug!(%peer, error = %e, "web connection ended");
    }
}

async fn handle(
    request: Request<Incoming>,
    peer: IpAddr,
    shared: Arc<Shared>,
) -> Result<Response<AnswerBody>, Infallible> {
    let (parts, body) = request.into_parts();
    let limits = shared.limits;
    let read = Limited::new(body, limits.max_body).collect();
    let body = match tokio::time::timeout(Duration::from_millis(limits.body_timeout_ms), read).await {
        Ok(Ok(collected)) => collected.to_bytes().to_vec(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Ok(plain(413, &format!("the request body is over {} bytes", limits.max_body)));
        }
        Ok(Err(e)) => return Ok(plain(400, &format!("the request body could not be read: {e}"))),
        Err(_) => return Ok(plain(408, "the request body did not arrive in time")),
    };
    let method = match parts.method {
        hyper::Method::GET => Method::Get,
        hyper::Method::POST => Method::Post,
        other => Method::Other(other.as_str().to_owned()),
    };
    let web = WebRequest {
        method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts.headers.iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect(),
        body,
        peer: peer.to_string(),
    };
    let request = RequestId(shared.next.fetch_add(1, Ordering::Relaxed));
    let (answer, answered) = oneshot::channel();
    let guard = GoneGuard { request, shared: shared.clone(), done: false };
    shared.tell(FrontEvent::Request { request, web: Box::new(web), answer });
    let Ok(answer) = answered.await else {
        return Ok(plain(503, "the node is stopping; try again shortly"));
    };
    Ok(build(answer, guard))
}

fn build(answer: Answer, guard: GoneGuard) -> Response<AnswerBody> {
    let Answer { response, chunks } = answer;
    let mut builder = Response::builder().status(response.status);
    for (name, value) in &response.headers {
        builder = builder.header(name, value);
    }
    // A whole answer: the node has forgotten the request already, so no guard is needed.
    let guard = chunks.is_some().then_some(guard);
    let body = AnswerBody { whole: Some(Bytes::from(response.body)), chunks, guard };
    // The node's headers are its own constants and sealed values, so an error here is a bug:
    // the browser hears so instead of the connection dropping, and the body dropped with the
    // builder tells the node (through its guard) that a streamed answer has no one to go to.
    builder.body(body).unwrap_or_else(|e| plain(500, &format!("the node's answer had a bad header: {e}")))
}

/// A plain-text answer the front gives itself, for what never reached the node.
fn plain(status: u16, text: &str) -> Response<AnswerBody> {
    let body = AnswerBody { whole: Some(Bytes::from(format!("{text}\n"))), chunks: None, guard: None };
    let mut response = Response::new(body);
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_REQUEST);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Tells the node a request's browser went away, unless its answer ended first.
struct GoneGuard {
    request: RequestId,
    shared: Arc<Shared>,
    done: bool,
}

impl Drop for GoneGuard {
    fn drop(&mut self) {
        if !self.done {
            self.shared.tell(FrontEvent::Gone { request: self.request });
        }
    }
}

/// A response body: the node's whole body, then (streamed) each chunk as the node sends it,
/// reported to the node as the connection takes it.
struct AnswerBody {
    whole: Option<Bytes>,
    chunks: Option<mpsc::UnboundedReceiver<Vec<u8>>>,
    guard: Option<GoneGuard>,
}

impl Body for AnswerBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(whole) = this.whole.take().filter(|w| !w.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(whole))));
        }
        let Some(chunks) = &mut this.chunks else { return Poll::Ready(None) };
        match chunks.poll_recv(cx) {
            Poll::Ready(Some(bytes)) => {
                if let Some(guard) = &this.guard {
                    guard.shared.tell(FrontEvent::Sent { request: guard.request, bytes: bytes.len() });
                }
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(bytes)))))
            }
            Poll::Ready(None) => {
                this.chunks = None;
                if let Some(guard) = &mut this.guard {
                    guard.done = true;
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.whole.as_ref().is_none_or(Bytes::is_empty) && self.chunks.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.whole, &self.chunks) {
            (Some(whole), None) => SizeHint::with_exact(whole.len() as u64),
            (None, None) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
