//! The agent's HTTPS client, for its two conversations with the control plane: enrollment
//! (one JSON POST, server-authenticated TLS) and the self-updater (mutual-TLS GETs, the build
//! streamed into a file). Both go through [`Client`].
//!
//! One request per connection: resolve, connect (within the connect timeout), TLS with the
//! caller's rustls configuration and the URL's host as the server name, HTTP/1.1 with
//! hyper's connection-level client, one request, the answer. No proxies, redirects, pooling,
//! compression or HTTP/2: the agent needs none of them, and leaving them out keeps the
//! binary small (the MQTT client already links tokio-rustls; hyper's HTTP/1 client is the
//! only addition).

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use hyper::body::{Body as _, Bytes, Incoming};
use hyper::header::{HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The `User-Agent` of every request.
pub const AGENT: &str = concat!("hearth-agent/", env!("CARGO_PKG_VERSION"));

/// The most an answer read whole into memory (JSON) may hold.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Bytes copied from the TLS stream into hyper's read buffer at a time (one TLS record's
/// plaintext at most).
const READ_CHUNK: usize = 16 * 1024;

/// An absolute `https://host[:port][/path]` URL without user name, query or fragment: all
/// the agent ever asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `https://{authority}{path}`.
    text: String,
    /// `host[:port]`, as written (the `Host` header).
    authority: String,
    /// The host without the brackets of an IPv6 address (the TLS server name, what is
    /// resolved).
    host: String,
    port: u16,
    /// Where the path starts in `text`.
    path_at: usize,
}

impl Url {
    /// Parses `s`; the error is the reason it is refused.
    pub fn parse(s: &str) -> Result<Url, String> {
        let uri: Uri = s.parse().map_err(|e: hyper::http::uri::InvalidUri| e.to_string())?;
        if uri.scheme_str().is_none_or(|scheme| !scheme.eq_ignore_ascii_case("https")) {
            return Err("must start with https://".into());
        }
        // The URI parser drops a fragment silently; refuse it like a query.
        if uri.query().is_some() || s.contains('#') {
            return Err("must not have a query or fragment".into());
        }
        let Some(authority) = uri.authority() else { return Err("has no host".into()) };
        if authority.as_str().contains('@') {
            return Err("must not have a user name or password".into());
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err("has no host".into());
        }
        let authority = authority.as_str().to_ascii_lowercase();
        let text = format!("https://{authority}{}", uri.path());
        Ok(Url {
            path_at: "https://".len() + authority.len(),
            host: host.to_ascii_lowercase(),
            port: uri.port_u16().unwrap_or(443),
            authority,
            text,
        })
    }

    /// This URL with `path` appended to its path (without doubling the `/` between them).
    pub fn join(&self, path: &str) -> Url {
        let text = format!("{}{path}", self.text.trim_end_matches('/'));
        Url { text, ..self.clone() }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The path, `/` at least.
    pub fn path(&self) -> &str {
        match &self.text[self.path_at..] {
            "" => "/",
            path => path,
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("no connection to {addr} within {} s", .limit.as_secs())]
    ConnectTimeout { addr: String, limit: Duration },
    #[error("{0:?} cannot be a TLS server name")]
    ServerName(String),
    #[error("TLS handshake: {0}")]
    Tls(io::Error),
    #[error("cannot make the request: {0}")]
    Build(#[from] hyper::http::Error),
    #[error("{0}")]
    Http(#[source] hyper::Error),
    #[error("the server sent nothing for {} s", .0.as_secs())]
    ReadTimeout(Duration),
    #[error("no complete answer within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("the answer is longer than {0} bytes")]
    TooLong(usize),
}

/// An HTTPS client: a TLS configuration and timeouts. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    tls: Arc<ClientConfig>,
    connect_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
}

impl Client {
    /// A client that trusts what `tls` trusts (and presents its client certificate, if any).
    pub fn new(tls: ClientConfig) -> Client {
        Client { tls: Arc::new(tls), connect_timeout: None, read_timeout: None }
    }

    /// The longest the TCP connection and the TLS handshake may take together.
    pub fn connect_timeout(self, limit: Duration) -> Client {
        Client { connect_timeout: Some(limit), ..self }
    }

    /// The longest the server may send nothing, once the request is sent: for the answer's
    /// head, then between pieces of its body.
    pub fn read_timeout(self, limit: Duration) -> Client {
        Client { read_timeout: Some(limit), ..self }
    }

    /// `GET url` with `headers` besides `Host`, `User-Agent` and `Accept`.
    pub async fn get(&self, url: &Url, headers: &[(HeaderName, String)]) -> Result<Response, Error> {
        self.send(Method::GET, url, headers, None).await
    }

    /// `POST url` of a JSON document.
    pub async fn post_json(&self, url: &Url, json: String) -> Result<Response, Error> {
        self.send(Method::POST, url, &[], Some(json)).await
    }

    async fn send(
        &self,
        method: Method,
        url: &Url,
        headers: &[(HeaderName, String)],
        json: Option<String>,
    ) -> Result<Response, Error> {
        let mut request = Request::builder()
            .method(method)
            .uri(url.path())
            .header(HOST, &url.authority)
            .header(USER_AGENT, AGENT)
            .header(ACCEPT, "*/*");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if json.is_some() {
            request = request.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let request = request.body(json.unwrap_or_default())?;

        let stream = match self.connect_timeout {
            Some(limit) => tokio::time::timeout(limit, self.connect(url))
                .await
                .map_err(|_| Error::ConnectTimeout { addr: addr(url), limit })??,
            None => self.connect(url).await?,
        };
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(Io { stream, chunk: vec![0; READ_CHUNK].into_boxed_slice() })
                .await
                .map_err(Error::Http)?;
        // The connection is driven by its own task while the answer is read; it ends when the
        // answer has been read (the sender is dropped, so no second request), or is
        // stopped when the answer is dropped.
        let connection = Connection(tokio::spawn(async move {
            let _ = connection.await;
        }));
        let response = within_read(self.read_timeout, sender.send_request(request)).await?.map_err(Error::Http)?;
        Ok(Response {
            status: response.status(),
            body: response.into_body(),
            read_timeout: self.read_timeout,
            _connection: connection,
        })
    }

    async fn connect(&self, url: &Url) -> Result<TlsStream<TcpStream>, Error> {
        let tcp = TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|source| Error::Connect { addr: addr(url), source })?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(url.host.as_str()).map_err(|_| Error::ServerName(url.host.clone()))?.to_owned();
        TlsConnector::from(self.tls.clone()).connect(name, tcp).await.map_err(Error::Tls)
    }
}

fn addr(url: &Url) -> String {
    match url.host.contains(':') {
        true => format!("[{}]:{}", url.host, url.port),
        false => format!("{}:{}", url.host, url.port),
    }
}

/// `f`, cut off after `limit`.
pub async fn within<T>(limit: Duration, f: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    tokio::time::timeout(limit, f).await.unwrap_or(Err(Error::Timeout(limit)))
}

async fn within_read<F: Future>(limit: Option<Duration>, f: F) -> Result<F::Output, Error> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, f).await.map_err(|_| Error::ReadTimeout(limit)),
        None => Ok(f.await),
    }
}

/// An answer: its status, then its body, read whole or piece by piece.
#[derive(Debug)]
pub struct Response {
    status: StatusCode,
    body: Incoming,
    read_timeout: Option<Duration>,
    _connection: Connection,
}

impl Response {
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The next piece of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
        loop {
            let frame = within_read(self.read_timeout, poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx))).await?;
            match frame {
                None => return Ok(None),
                Some(Err(e)) => return Err(Error::Http(e)),
                // Trailers and empty pieces are skipped.
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => return Ok(Some(data)),
                    _ => {}
                },
            }
        }
    }

    /// The whole body, if it is at most `limit` bytes.
    pub async fn bytes(mut self, limit: usize) -> Result<Vec<u8>, Error> {
        let mut body = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            if body.len() + chunk.len() > limit {
                return Err(Error::TooLong(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// The start of the body, at most `limit` bytes of it, for an error message: whatever
    /// arrived before the body ended, failed or passed `limit`.
    pub async fn start(mut self, limit: usize) -> Vec<u8> {
        let mut body = Vec::new();
        while body.len() < limit {
            match self.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        body.truncate(limit);
        body
    }
}

/// The task driving a connection, stopped when its answer is dropped.
#[derive(Debug)]
struct Connection(JoinHandle<()>);

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The TLS stream as hyper's I/O. hyper's read buffer can only be filled by copying into it
/// from safe code, so reads go through `chunk`.
struct Io {
    stream: TlsStream<TcpStream>,
    chunk: Box<[u8]>,
}

impl hyper::rt::Read for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let n = buf.remaining().min(this.chunk.len());
        let mut read = ReadBuf::new(&mut this.chunk[..n]);
        ready!(Pin::new(&mut this.stream).poll_read(cx, &mut read))?;
        buf.put_slice(read.filled());
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("https://cp.example").unwrap();
        assert_eq!(
            (u.as_str(), u.path(), u.authority.as_str(), u.port),
            ("https://cp.example/", "/", "cp.example", 443)
        );
        let u = Url::parse("https://CP.example:8443/hearth/").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.authority.as_str()), ("cp.example", 8443, "cp.example:8443"));
        assert_eq!(u.join("/agent/v1/self").as_str(), "https://cp.example:8443/hearth/agent/v1/self");
        assert_eq!(u.join("/agent/v1/self").path(), "/hearth/agent/v1/self");
        let u = Url::parse("https://[::1]:8443").unwrap();
        assert_eq!((u.host.as_str(), u.authority.as_str(), addr(&u)), ("::1", "[::1]:8443", "[::1]:8443".into()));
        assert_eq!(u.join("/x").as_str(), "https://[::1]:8443/x");

        assert_eq!(Url::parse("http://cp.example").unwrap_err(), "must start with https://");
        assert_eq!(Url::parse("cp.example").unwrap_err(), "must start with https://");
        assert_eq!(Url::parse("https://cp.example/?x=1").unwrap_err(), "must not have a query or fragment");
        assert_eq!(Url::parse("https://cp.example/#top").unwrap_err(), "must not have a query or fragment");
        assert_eq!(Url::parse("https://me:pw@cp.example/").unwrap_err(), "must not have a user name or password");
        assert!(Url::parse("https://").is_err());
        assert!(Url::parse("").is_err());
        assert!(Url::parse("https://cp example/").is_err());
    }

    /// A CA (PEM) and a server certificate and key it issued for 127.0.0.1.
    fn pki() -> (String, String, String) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
        (ca_pem, cert.pem(), key.serialize_pem())
    }

    /// A TLS server for one connection: it reads the request (head and `Content-Length`
    /// body) and hands it back through the join handle, after writing `answer` — the pieces
    /// with a pause between them — and closing.
    async fn serve(answer: Vec<&'static [u8]>) -> (Url, Vec<u8>, JoinHandle<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ca, cert, key) = pki();
        let tls = hearth_protocol::tls::server_config(cert.as_bytes(), key.as_bytes()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("https://{}/base/", listener.local_addr().unwrap())).unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(mut stream) = tokio_rustls::TlsAcceptor::from(Arc::new(tls)).accept(tcp).await else {
                return String::new();
            };
            let mut request = Vec::new();
            let mut buf = [0; 4096];
            loop {
                let n = stream.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |n| n.parse::<usize>().unwrap());
                    if request.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            for piece in answer {
                if stream.write_all(piece).await.is_err() || stream.flush().await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let _ = stream.shutdown().await;
            String::from_utf8(request).unwrap()
        });
        (url, ca.into_bytes(), server)
    }

    fn client(ca: &[u8]) -> Client {
        Client::new(hearth_protocol::tls::client_config(ca).unwrap())
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(5))
    }

    #[tokio::test]
    async fn a_get_with_headers_and_a_streamed_body() {
        let (url, ca, server) =
            serve(vec![b"HTTP/1.1 206 Partial Content\r\ncontent-length: 11\r\n\r\nhello", b" world"]).await;
        let url = url.join("/file");
        let mut response = client(&ca).get(&url, &[(hyper::header::RANGE, "bytes=5-".into())]).await.unwrap();
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(response.chunk().await.unwrap().unwrap(), "hello");
        assert_eq!(response.chunk().await.unwrap().unwrap(), " world");
        assert!(response.chunk().await.unwrap().is_none());
        let request = server.await.unwrap();
        let authority = url.authority.clone();
        assert!(request.starts_with("GET /base/file HTTP/1.1\r\n"), "{request}");
        for header in [format!("host: {authority}"), format!("user-agent: {AGENT}"), "range: bytes=5-".into()] {
            assert!(request.lines().any(|l| l == header), "{header} in {request}");
        }
    }

    #[tokio::test]
    async fn a_json_post_and_the_whole_answer() {
        let (url, ca, server) = serve(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n{\"a\":1}"]).await;
        let response = client(&ca).post_json(&url.join("/api/v1/enroll"), r#"{"token":"t"}"#.into()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.bytes(MAX_ANSWER_BYTES).await.unwrap(), br#"{"a":1}"#);
        let request = server.await.unwrap();
        assert!(request.starts_with("POST /base/api/v1/enroll HTTP/1.1\r\n"), "{request}");
        assert!(request.lines().any(|l| l == "content-type: application/json"), "{request}");
        assert!(request.ends_with("\r\n\r\n{\"token\":\"t\"}"), "{request}");
    }

    #[tokio::test]
    async fn limits_and_cut_answers() {
        // Longer than the limit.
        let (url, ca, _server) = serve(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123456789"]).await;
        let response = client(&ca).get(&url, &[]).await.unwrap();
        assert!(matches!(response.bytes(9).await, Err(Error::TooLong(9))));

        // The start of an error answer.
        let (url, ca, _server) = serve(vec![b"HTTP/1.1 500 Oops\r\ncontent-length: 10\r\n\r\n0123456789"]).await;
        let response = client(&ca).get(&url, &[]).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.start(4).await, b"0123");

        // Closed before the announced length.
        let (url, ca, _server) = serve(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123"]).await;
        let response = client(&ca).get(&url, &[]).await.unwrap();
        let err = response.bytes(100).await.unwrap_err();
        assert!(matches!(err, Error::Http(_)), "{err}");

        // Nothing for longer than the read timeout.
        let (url, ca, _server) =
            serve(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123", b"", b"", b"", b""]).await;
        let mut response = client(&ca).read_timeout(Duration::from_millis(500)).get(&url, &[]).await.unwrap();
        assert_eq!(response.chunk().await.unwrap().unwrap(), "0123");
        let err = response.chunk().await.unwrap_err();
        assert!(matches!(err, Error::ReadTimeout(_)), "{err}");

        // The whole request within a limit.
        let (url, ca, _server) = serve(vec![b"HTTP/1.1 200 OK\r\n", b"", b"", b""]).await;
        let err = within(Duration::from_millis(500), client(&ca).get(&url, &[])).await.unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{err}");
    }

    #[tokio::test]
    async fn a_server_from_another_ca_is_refused() {
        let (url, _, _server) = serve(vec![]).await;
        let (other_ca, _, _) = pki();
        let err = client(other_ca.as_bytes()).get(&url, &[]).await.unwrap_err();
        assert!(matches!(err, Error::Tls(_)), "{err}");
        assert!(err.to_string().starts_with("TLS handshake: invalid peer certificate"), "{err}");
    }

    #[tokio::test]
    async fn connection_refused_is_a_connect_error() {
        let (ca, _, _) = pki();
        let err = client(ca.as_bytes()).get(&Url::parse("https://127.0.0.1:1/x").unwrap(), &[]).await.unwrap_err();
        assert!(matches!(err, Error::Connect { .. }), "{err}");
        assert!(err.to_string().starts_with("cannot connect to 127.0.0.1:1: "), "{err}");
    }
}
