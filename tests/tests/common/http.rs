//! The axum side of the HTTP helper tests: an item service on a cache (`/items/{id}`,
//! `/fresh/{id}`), and requests sent to such routers in process (tower `oneshot`), alone or many
//! at once.

// Each test binary that declares `mod common;` uses a part of these.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atomcache::http::{CachedResponse, HttpCache};
use atomcache::Cache;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderName, HeaderValue, Request, StatusCode};
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

/// What the item endpoints serve: `version` counts the computations of `id`, this one included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub id: u32,
    pub version: usize,
}

/// The computations of the item endpoints, per item id, counted across every router given the
/// same `Computations`.
#[derive(Debug, Clone, Default)]
pub struct Computations(Arc<Mutex<BTreeMap<u32, usize>>>);

impl Computations {
    /// Counts a computation of `id`; returns how many there were of it, this one included.
    fn count(&self, id: u32) -> usize {
        let mut counts = self.0.lock().unwrap();
        let n = counts.entry(id).or_default();
        *n += 1;
        *n
    }

    /// How many computations of `id` there were (`None` before the first).
    pub fn of(&self, id: u32) -> Option<usize> {
        self.0.lock().unwrap().get(&id).copied()
    }

    /// How many computations there were, of every id.
    pub fn total(&self) -> usize {
        self.0.lock().unwrap().values().sum()
    }
}

#[derive(Clone)]
struct App {
    cache: Cache,
    computations: Computations,
    compute: Duration,
}

async fn load(app: &App, id: u32) -> Item {
    let version = app.computations.count(id);
    tokio::time::sleep(app.compute).await;
    Item { id, version }
}

/// `no-cache` is ignored here.
async fn item(
    State(app): State<App>,
    http: HttpCache,
    Path(id): Path<u32>,
) -> CachedResponse<Item> {
    http.wrap(app.cache.get_or_compute(&id.to_string(), || load(&app, id)))
        .await
}

/// `no-cache` forces a fresh value here.
async fn fresh_item(
    State(app): State<App>,
    http: HttpCache,
    Path(id): Path<u32>,
) -> CachedResponse<Item> {
    http.honor_no_cache()
        .wrap(app.cache.get_or_compute(&id.to_string(), || load(&app, id)))
        .await
}

/// A router serving [`Item`]s cached in `cache`: `/items/{id}` ignores `Cache-Control:
/// no-cache`, `/fresh/{id}` honors it. A computation of an item takes `compute` and counts in
/// `computations`.
pub fn item_router(cache: Cache, computations: &Computations, compute: Duration) -> Router {
    let app = App {
        cache,
        computations: computations.clone(),
        compute,
    };
    Router::new()
        .route("/items/{id}", get(item))
        .route("/fresh/{id}", get(fresh_item))
        .with_state(app)
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub etag: Option<String>,
    pub cache_control: Option<String>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The `max-age` its `Cache-Control` header gives, if that is one.
    pub fn max_age(&self) -> Option<u64> {
        self.cache_control
            .as_deref()?
            .strip_prefix("max-age=")?
            .parse()
            .ok()
    }
}

/// A `GET` of `uri` with `headers`, sent to `router` in process.
pub async fn request(router: &Router, uri: &str, headers: &[(HeaderName, &str)]) -> Answer {
    let mut request = Request::builder().uri(uri);
    for (name, value) in headers {
        request = request.header(name, *value);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (status, etag, cache_control) = {
        let header = |name| {
            response
                .headers()
                .get(name)
                .map(|v: &HeaderValue| v.to_str().unwrap().to_owned())
        };
        (
            response.status(),
            header(header::ETAG),
            header(header::CACHE_CONTROL),
        )
    };
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap()
        .to_vec();
    Answer {
        status,
        etag,
        cache_control,
        body,
    }
}

/// `n` concurrent [`request`]s of `uri` with `headers`, request `i` to `routers[i % len]`, all
/// sent before any is awaited; their answers, in that order.
pub async fn concurrently(
    routers: &[Router],
    n: usize,
    uri: &str,
    headers: &[(HeaderName, &str)],
) -> Vec<Answer> {
    let headers: Vec<(HeaderName, String)> = headers
        .iter()
        .map(|(name, value)| (name.clone(), (*value).to_owned()))
        .collect();
    let requests: Vec<_> = (0..n)
        .map(|i| {
            let (router, uri, headers) = (
                routers[i % routers.len()].clone(),
                uri.to_owned(),
                headers.clone(),
            );
            tokio::spawn(async move {
                let headers: Vec<(HeaderName, &str)> = headers
                    .iter()
                    .map(|(name, value)| (name.clone(), value.as_str()))
                    .collect();
                request(&router, &uri, &headers).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for r in requests {
        answers.push(r.await.expect("request task"));
    }
    answers
}
