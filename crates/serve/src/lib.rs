//! `irtdb serve`: a JSON API and a web page over one collection.
//!
//! axum routes requests to handlers that hand the work to an [`irtdb_engine::service::Service`]
//! on tokio's blocking pool (decoding, the model's forward and the search are CPU work), bounded
//! by a semaphore; everything that reaches the file system goes through the service, which serves
//! files only by image id and only under the collection root. Limits: the upload size (413), the
//! decoder's pixel and memory limits (413 for a decompression bomb), `k` ≤ [`MAX_K`] (400), a
//! time limit per request (503). Every error is JSON: `{"error": MESSAGE, "status": CODE}`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http_body_util::BodyExt;
use irtdb_engine::service::{ErrorKind, Service, ServiceError, ServiceOptions};
use irtdb_image::DecodeLimits;
use tokio::sync::Semaphore;

/// The largest `k` a query may ask for.
pub const MAX_K: usize = 1000;
/// The largest HNSW `ef` a query may ask for.
pub const MAX_EF: usize = 10_000;

const INDEX_HTML: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");
const STYLE_CSS: &str = include_str!("web/style.css");
const OPENAPI: &str = include_str!("openapi.json");

/// How `irtdb serve` runs.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub db: std::path::PathBuf,
    pub bind: SocketAddr,
    /// Model instances (concurrent forwards).
    pub workers: usize,
    /// Largest upload in bytes (413 beyond).
    pub max_upload: usize,
    /// Time limit of one request (503 beyond).
    pub timeout: Duration,
    pub limits: DecodeLimits,
}

impl ServeOptions {
    pub fn new(db: std::path::PathBuf) -> Self {
        Self {
            db,
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 1,
            max_upload: 20 << 20,
            timeout: Duration::from_secs(60),
            limits: DecodeLimits::default(),
        }
    }
}

/// What the handlers share.
#[derive(Debug)]
pub struct AppState {
    pub service: Service,
    max_upload: usize,
    /// Bounds the blocking work in flight (queries, thumbnails, duplicates).
    blocking: Semaphore,
}

/// An error answer: a status and a message, sent as JSON.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let status = match e.kind {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.message, "status": self.status.as_u16()});
        (self.status, Json(body)).into_response()
    }
}

type ApiResult<T> = std::result::Result<T, ApiError>;

/// Opens the collection and builds the router (for tests and benchmarks that run in-process).
pub fn app(opts: &ServeOptions) -> Result<(Router, Arc<AppState>)> {
    let service = Service::open(&ServiceOptions {
        db: opts.db.clone(),
        workers: opts.workers,
        limits: opts.limits,
    })?;
    let permits = (4 * opts.workers.max(1)).max(8);
    let state = Arc::new(AppState {
        service,
        max_upload: opts.max_upload,
        blocking: Semaphore::new(permits),
    });
    Ok((router(Arc::clone(&state), opts.timeout), state))
}

fn router(state: Arc<AppState>, timeout: Duration) -> Router {
    Router::new()
        .route("/", get(|| async { page(INDEX_HTML, "text/html; charset=utf-8") }))
        .route("/app.js", get(|| async { page(APP_JS, "text/javascript; charset=utf-8") }))
        .route("/style.css", get(|| async { page(STYLE_CSS, "text/css; charset=utf-8") }))
        .route("/api/openapi.json", get(|| async { page(OPENAPI, "application/json") }))
        .route("/api/info", get(info))
        .route("/api/query", get(query_by_id).post(query_upload))
        .route("/api/images/{id}/thumbnail", get(thumbnail))
        .route("/api/images/{id}/file", get(file))
        .route("/api/duplicates", get(duplicates))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "no such route; see /api/openapi.json")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route; see /api/openapi.json",
            )
        })
        .layer(middleware::from_fn(move |req: Request, next: Next| limit_time(req, next, timeout)))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// Serves until SIGINT or SIGTERM; `on_listening` gets the bound address (port 0 picks one).
pub async fn serve(opts: ServeOptions, on_listening: impl FnOnce(SocketAddr)) -> Result<()> {
    let (app, _state) = app(&opts)?;
    let listener = tokio::net::TcpListener::bind(opts.bind)
        .await
        .with_context(|| format!("cannot listen on {}", opts.bind))?;
    on_listening(listener.local_addr()?);
    axum::serve(listener, app).with_graceful_shutdown(stop_signal()).await?;
    Ok(())
}

/// [`serve`] on a new multi-threaded tokio runtime, for callers without one (the CLI).
pub fn serve_blocking(opts: ServeOptions, on_listening: impl FnOnce(SocketAddr)) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("irtdb-serve")
        .build()
        .context("starting the async runtime")?
        .block_on(serve(opts, on_listening))
}

async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// JSON from a typed value: an f32 keeps its shortest form (as `irtdb query --json` prints it),
/// which going through `serde_json::Value` (f64) would lose.
fn typed_json(value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("serialising: {e}"))
            .into_response(),
    }
}

fn page(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body)
        .into_response()
}

async fn limit_time(req: Request, next: Next, timeout: Duration) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the request took longer than {} s; try again later", timeout.as_secs_f64()),
        )
        .into_response(),
    }
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    r
}

/// Runs `f` on the blocking pool, within the bound on blocking work in flight.
async fn blocking<T: Send + 'static>(
    state: &Arc<AppState>,
    f: impl FnOnce(&Service) -> std::result::Result<T, ServiceError> + Send + 'static,
) -> ApiResult<T> {
    let _permit =
        state.blocking.acquire().await.map_err(|_| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping")
        })?;
    let st = Arc::clone(state);
    match tokio::task::spawn_blocking(move || f(&st.service)).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => {
            Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("internal error: {e}")))
        }
    }
}

/// Query parameters, parsed by hand so that every mistake gets a JSON 400 that names it.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(raw: Option<String>) -> Self {
        let raw = raw.unwrap_or_default();
        Params(form_urlencoded::parse(raw.as_bytes()).into_owned().collect())
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn int(&self, name: &str, min: i64, max: i64) -> ApiResult<Option<i64>> {
        let Some(v) = self.get(name) else { return Ok(None) };
        let n: i64 = v.trim().parse().map_err(|_| {
            ApiError::bad(format!("parameter {name} must be a whole number (got {v:?})"))
        })?;
        if n < min || n > max {
            return Err(ApiError::bad(format!(
                "parameter {name} must be between {min} and {max} (got {n})"
            )));
        }
        Ok(Some(n))
    }

    fn flag(&self, name: &str) -> ApiResult<bool> {
        match self.get(name) {
            None => Ok(false),
            Some("1" | "true" | "yes" | "") => Ok(true),
            Some("0" | "false" | "no") => Ok(false),
            Some(v) => Err(ApiError::bad(format!("parameter {name} must be 0 or 1 (got {v:?})"))),
        }
    }

    /// k, ef and exact of a query.
    fn search(&self) -> ApiResult<(usize, Option<usize>, bool)> {
        let k = self.int("k", 1, MAX_K as i64)?.unwrap_or(10) as usize;
        let ef = self.int("ef", 1, MAX_EF as i64)?.map(|e| e as usize);
        Ok((k, ef, self.flag("exact")?))
    }
}

fn image_id(
    path: std::result::Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> ApiResult<i64> {
    let Path(raw) = path.map_err(|e| ApiError::bad(format!("bad image id in the path: {e}")))?;
    let id: i64 = raw.parse().map_err(|_| {
        ApiError::bad(format!(
            "an image is named by its numeric id (as in the query results), not {raw:?}"
        ))
    })?;
    Ok(id)
}

async fn info(State(state): State<Arc<AppState>>) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(blocking(&state, |s| s.info()).await?))
}

async fn query_by_id(
    State(state): State<Arc<AppState>>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(raw);
    let (k, ef, exact) = p.search()?;
    let Some(id) = p.int("id", i64::MIN, i64::MAX)? else {
        return Err(ApiError::bad(
            "GET /api/query needs id=N (an image of the collection); to query by a new image, \
             POST it",
        ));
    };
    let answer = blocking(&state, move |s| s.query_id(id, k, ef, exact)).await?;
    Ok(typed_json(&answer))
}

async fn query_upload(
    State(state): State<Arc<AppState>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let p = Params::parse(raw);
    let (k, ef, exact) = p.search()?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let bytes = if content_type.starts_with("multipart/form-data") {
        let bytes = read_limited(&headers, body, state.max_upload).await?;
        multipart_image(&headers, bytes).await?
    } else if content_type.starts_with("image/")
        || content_type.starts_with("application/octet-stream")
    {
        read_limited(&headers, body, state.max_upload).await?
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "send the image as the request body with Content-Type image/... (or as the \
                 multipart/form-data field 'image'), not {:?}",
                if content_type.is_empty() { "no Content-Type" } else { content_type.as_str() }
            ),
        ));
    };
    if bytes.is_empty() {
        return Err(ApiError::bad("the request has no image: the body is empty"));
    }
    let answer = blocking(&state, move |s| s.query_bytes(&bytes, k, ef, exact)).await?;
    Ok(typed_json(&answer))
}

/// The body, at most `limit` bytes. A larger one is answered 413; up to 4 × `limit` of it is read
/// and dropped first, so that a client that sends its whole body before reading still sees the
/// answer (beyond that the connection is closed on it).
async fn read_limited(headers: &HeaderMap, body: Body, limit: usize) -> ApiResult<Bytes> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the upload is larger than this server's limit of {} MiB (irtdb serve \
                 --max-upload-mib)",
                limit >> 20
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > 4 * limit as u64) {
        return Err(too_large());
    }
    let mut body = body;
    let mut out = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad(format!("reading the upload failed: {e}")))?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= limit {
                out.extend_from_slice(&data);
            } else if seen > 4 * limit {
                break;
            }
        }
    }
    if seen > limit {
        return Err(too_large());
    }
    Ok(Bytes::from(out))
}

/// The `image` field of a multipart/form-data body.
async fn multipart_image(headers: &HeaderMap, bytes: Bytes) -> ApiResult<Bytes> {
    let mut req = axum::http::Request::builder()
        .method(Method::POST)
        .body(Body::from(bytes))
        .expect("a request from parts");
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        req.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
    }
    let mut form = axum::extract::Multipart::from_request(req, &())
        .await
        .map_err(|e| ApiError::bad(format!("unreadable multipart/form-data body: {e}")))?;
    loop {
        let field = form
            .next_field()
            .await
            .map_err(|e| ApiError::bad(format!("unreadable multipart/form-data body: {e}")))?;
        let Some(field) = field else {
            return Err(ApiError::bad("the multipart/form-data body has no field named 'image'"));
        };
        if field.name() == Some("image") {
            return field
                .bytes()
                .await
                .map_err(|e| ApiError::bad(format!("unreadable multipart field 'image': {e}")));
        }
    }
}

async fn thumbnail(
    State(state): State<Arc<AppState>>,
    path: std::result::Result<Path<String>, axum::extract::rejection::PathRejection>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let id = image_id(path)?;
    let size = Params::parse(raw).int("size", 16, 1024)?.unwrap_or(256) as u32;
    let jpeg = blocking(&state, move |s| s.thumbnail(id, size)).await?;
    Ok((
        [(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "private, max-age=60")],
        jpeg,
    )
        .into_response())
}

async fn file(
    State(state): State<Arc<AppState>>,
    path: std::result::Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> ApiResult<Response> {
    let id = image_id(path)?;
    let path = blocking(&state, move |s| s.image_file(id)).await?;
    let bytes = tokio::fs::read(&path).await.map_err(|e| {
        ApiError::new(StatusCode::NOT_FOUND, format!("image {id}'s file cannot be read now: {e}"))
    })?;
    let mime = image::guess_format(&bytes)
        .map(|f| f.to_mime_type())
        .ok()
        .or_else(|| {
            let ext = path.extension()?.to_str()?.to_ascii_lowercase();
            Some(match ext.as_str() {
                "heic" | "heif" | "hif" => "image/heif",
                "avif" => "image/avif",
                _ => return None,
            })
        })
        .unwrap_or("application/octet-stream");
    Ok(([(header::CONTENT_TYPE, mime), (header::CACHE_CONTROL, "private, max-age=60")], bytes)
        .into_response())
}

async fn duplicates(
    State(state): State<Arc<AppState>>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(raw);
    let threshold = match p.get("threshold") {
        None => irtdb_engine::dups::DEFAULT_THRESHOLD,
        Some(v) => match v.trim().parse::<f32>() {
            Ok(t) if t.is_finite() && (-1.0..=1.0).contains(&t) => t,
            _ => {
                return Err(ApiError::bad(format!(
                    "parameter threshold must be a cosine between -1 and 1 (got {v:?})"
                )))
            }
        },
    };
    let report = blocking(&state, move |s| s.duplicates(threshold)).await?;
    Ok(typed_json(&*report))
}
