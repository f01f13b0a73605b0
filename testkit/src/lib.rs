//! Test doubles for outbox-relay.
//!
//! - [`SchemaRegistryDouble`] (this file): an in-process HTTP server speaking the Confluent Schema
//!   Registry REST API, which a test can take down, bring back and make fail.
//! - `registry` (private): the registry's state and REST semantics, without networking.
//! - `compat` (private): compatibility checking of a new version against earlier ones.
//!
//! The `schema-registry-double` binary serves the same double from the command line, for tools
//! written in other languages.

mod compat;
mod registry;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use registry::{ApiError, Reference, Registry, SchemaRequest};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// How to start a [`SchemaRegistryDouble`].
#[derive(Debug, Default, Clone)]
pub struct DoubleOptions {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// When set, every request must carry these HTTP basic credentials.
    pub basic_auth: Option<(String, String)>,
}

/// A Confluent Schema Registry test double listening on 127.0.0.1. Clones share one registry.
#[derive(Clone)]
pub struct SchemaRegistryDouble {
    shared: Arc<Shared>,
}

struct Shared {
    port: u16,
    /// The `Authorization` header value that is accepted, when auth is on.
    authorization: Option<String>,
    registry: Mutex<Registry>,
    requests: AtomicU64,
    /// 0 = answer normally.
    failing_status: AtomicU16,
    /// The accept loop; it owns every open connection, so aborting it drops them all.
    server: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl SchemaRegistryDouble {
    /// Starts on a free port, without auth.
    pub async fn start() -> Self {
        Self::start_with(DoubleOptions::default()).await
    }

    /// Starts with `options`. Panics if the port can't be bound: this is test code.
    pub async fn start_with(options: DoubleOptions) -> Self {
        let listener = bind(options.port).await;
        let port = listener
            .local_addr()
            .expect("listener has an address")
            .port();
        let authorization = options.basic_auth.map(|(user, password)| {
            format!("Basic {}", BASE64.encode(format!("{user}:{password}")))
        });
        let shared = Arc::new(Shared {
            port,
            authorization,
            registry: Mutex::new(Registry::default()),
            requests: AtomicU64::new(0),
            failing_status: AtomicU16::new(0),
            server: tokio::sync::Mutex::new(None),
        });
        *shared.server.lock().await = Some(tokio::spawn(serve(listener, Arc::clone(&shared))));
        Self { shared }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.shared.port)
    }

    pub fn port(&self) -> u16 {
        self.shared.port
    }

    /// HTTP requests received so far, on every path, including refused ones.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Stops listening and drops every open connection: clients then get "connection refused".
    /// The registry's contents are kept for [`come_back`](Self::come_back).
    pub async fn go_down(&self) {
        if let Some(server) = self.shared.server.lock().await.take() {
            server.abort();
            // Awaiting the aborted task guarantees the listener and connections are dropped.
            let _ = server.await;
        }
    }

    /// Listens again on the same port, with the same contents. A no-op when already up.
    pub async fn come_back(&self) {
        let mut server = self.shared.server.lock().await;
        if server.is_none() {
            let listener = bind(self.shared.port).await;
            *server = Some(tokio::spawn(serve(listener, Arc::clone(&self.shared))));
        }
    }

    /// `Some(status)` makes every request answer `status` with error code 50001; `None` heals.
    pub fn fail_with(&self, status: Option<u16>) {
        self.shared
            .failing_status
            .store(status.unwrap_or(0), Ordering::SeqCst);
    }

    /// Registers a schema directly, without HTTP, and returns its id (an identical schema
    /// already registered under any subject keeps its id). Panics on an invalid schema.
    pub fn register(&self, subject: &str, schema_type: &str, schema: &str) -> u32 {
        self.register_with_references(subject, schema_type, schema, &[])
    }

    /// As [`register`](Self::register), with schema references: (name, subject, version).
    /// Panics on an invalid or incompatible schema or a reference to a missing version.
    pub fn register_with_references(
        &self,
        subject: &str,
        schema_type: &str,
        schema: &str,
        references: &[(&str, &str, u32)],
    ) -> u32 {
        let request = SchemaRequest {
            schema_type: schema_type.to_owned(),
            text: schema.to_owned(),
            references: references
                .iter()
                .map(|(name, subject, version)| Reference {
                    name: (*name).to_owned(),
                    subject: (*subject).to_owned(),
                    version: i64::from(*version),
                })
                .collect(),
        };
        let mut registry = self.shared.registry.lock().expect("registry lock poisoned");
        match registry.register(subject, &request) {
            Ok(id) => id,
            Err(e) => panic!("cannot register {subject}: {}", e.message),
        }
    }

    /// Sets the compatibility level of `subject` (`None`: the global level), as
    /// `PUT /config[/subject]` does. Panics on an unknown level.
    pub fn set_compatibility(&self, subject: Option<&str>, level: &str) {
        let path: Vec<String> = std::iter::once("config".to_owned())
            .chain(subject.map(str::to_owned))
            .collect();
        let body = serde_json::json!({ "compatibility": level }).to_string();
        let mut registry = self.shared.registry.lock().expect("registry lock poisoned");
        if let Err(e) = registry.handle("PUT", &path, &HashMap::new(), body.as_bytes()) {
            panic!("cannot set compatibility {level}: {}", e.message);
        }
    }
}

async fn bind(port: u16) -> TcpListener {
    // Tokio sets SO_REUSEADDR, so coming back on the same port is not blocked by TIME_WAIT.
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpListener::bind(address)
        .await
        .unwrap_or_else(|e| panic!("cannot listen on {address}: {e}"))
}

/// Accepts connections until aborted. Connections live in a `JoinSet` owned by this future,
/// so aborting it closes them too (unlike a server that detaches one task per connection).
async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = Arc::clone(&shared);
                let service = hyper::service::service_fn(move |request| {
                    let shared = Arc::clone(&shared);
                    async move { Ok::<_, Infallible>(respond(&shared, request).await) }
                });
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn respond(shared: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let (status, body) = match answer(shared, request).await {
        Ok(body) => (200, body),
        Err(error) => (error.status, error.body()),
    };
    Response::builder()
        .status(status)
        .header("content-type", CONTENT_TYPE)
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

async fn answer(
    shared: &Shared,
    request: Request<Incoming>,
) -> Result<serde_json::Value, ApiError> {
    let failing = shared.failing_status.load(Ordering::SeqCst);
    if failing != 0 {
        return Err(ApiError::new(
            failing,
            50001,
            "Error in the backend data store (injected by the test double)",
        ));
    }
    if let Some(expected) = &shared.authorization {
        let given = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            return Err(ApiError::new(401, 401, "Unauthorized"));
        }
    }
    let method = request.method().as_str().to_owned();
    let path: Vec<String> = request
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(decode)
        .collect();
    let query: HashMap<String, String> = request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect();
    let body = request
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::new(400, 400, format!("cannot read the request body: {e}")))?
        .to_bytes();
    let mut registry = shared.registry.lock().expect("registry lock poisoned");
    registry.handle(&method, &path, &query, &body)
}

fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}
