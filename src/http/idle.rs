//! The header timeout for HTTP/2 connections.
//!
//! hyper's `header_read_timeout` covers HTTP/1.1 only: it closes a connection that has not sent
//! a whole request head within `server.header_timeout_secs`, including an idle keep-alive one.
//! HTTP/2 has no such limit, so a client could hold a connection (or dribble a header block)
//! for ever. This module gives HTTP/2 the same rule: while a connection has no request in
//! progress (from the moment its request head is complete until its response body is done),
//! it must start the next one within the header timeout, or it is closed.
//!
//! [`IdleAcceptor`] wraps the TLS acceptor. For a connection that negotiated `h2`, it shares one
//! [`Activity`] between an I/O wrapper ([`IdleStream`], which ends the stream once the
//! connection has been idle past the deadline) and a service wrapper ([`CountRequests`], which
//! counts requests in progress). HTTP/1.1 connections pass through untouched.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::HttpBody;
use axum::http::Response;
use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_rustls::server::TlsStream;

/// Requests in progress on one connection, and since when it has had none.
#[derive(Debug)]
pub struct Activity {
    active: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Activity {
    fn new() -> Self {
        Activity {
            active: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.active.fetch_add(1, Ordering::SeqCst);
        Busy(Arc::clone(self))
    }

    /// `None` while a request is in progress.
    fn idle_since(&self) -> Option<Instant> {
        let since = *self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        (self.active.load(Ordering::SeqCst) == 0).then_some(since)
    }
}

/// One request in progress; dropped when its response body is finished (or abandoned).
#[derive(Debug)]
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut since = self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            *since = Instant::now();
        }
    }
}

/// Wraps the TLS acceptor: HTTP/2 connections get the idle deadline.
#[derive(Debug, Clone)]
pub struct IdleAcceptor<A> {
    inner: A,
    timeout: Duration,
}

impl<A> IdleAcceptor<A> {
    pub fn new(inner: A, timeout: Duration) -> Self {
        IdleAcceptor { inner, timeout }
    }
}

impl<A, I, S, T> Accept<I, S> for IdleAcceptor<A>
where
    A: Accept<I, S, Stream = TlsStream<T>>,
    A::Future: Send + 'static,
    A::Service: Send + 'static,
    T: Send + 'static,
{
    type Stream = IdleStream<TlsStream<T>>;
    type Service = CountRequests<A::Service>;
    type Future =
        Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send + 'static>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let accepted = self.inner.accept(stream, service);
        let timeout = self.timeout;
        Box::pin(async move {
            let (stream, service) = accepted.await?;
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            let activity = h2.then(|| Arc::new(Activity::new()));
            Ok((
                IdleStream {
                    inner: stream,
                    activity: activity.clone(),
                    timeout,
                    timer: Box::pin(tokio::time::sleep(timeout)),
                },
                CountRequests {
                    inner: service,
                    activity,
                },
            ))
        })
    }
}

/// The connection's I/O: reads end (EOF, so the connection closes) once it has been idle past
/// the deadline.
pub struct IdleStream<S> {
    inner: S,
    activity: Option<Arc<Activity>>,
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(since) = this.activity.as_ref().and_then(|a| a.idle_since()) {
            let deadline = since + this.timeout;
            if Instant::now() >= deadline {
                tracing::debug!("HTTP/2 connection idle past the header timeout; closing");
                return Poll::Ready(Ok(()));
            }
            if this.timer.deadline() != deadline {
                this.timer.as_mut().reset(deadline);
            }
            // Registers the wake-up at the deadline; the check above then ends the stream.
            if this.timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The connection's service: each request counts as in progress until its response body ends.
#[derive(Debug, Clone)]
pub struct CountRequests<S> {
    inner: S,
    activity: Option<Arc<Activity>>,
}

impl<S, R, B> tower::Service<R> for CountRequests<S>
where
    S: tower::Service<R, Response = Response<B>>,
    S::Future: Send + 'static,
    B: HttpBody + Send + 'static,
{
    type Response = Response<CountedBody<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let busy = self.activity.as_ref().map(Activity::begin);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| CountedBody {
                inner: Box::pin(body),
                busy,
            }))
        })
    }
}

/// A response body that holds its request's place in [`Activity`] until it is done.
pub struct CountedBody<B> {
    inner: Pin<Box<B>>,
    busy: Option<Busy>,
}

impl<B: HttpBody> HttpBody for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = self.inner.as_mut().poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            self.busy = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
