//! A loopback stand-in of the kube-apiserver, speaking its protocol: HTTPS with a test CA, bearer
//! auth, `v1.Pod` objects, `v1.Status` bodies for 401/403/404/503, and the OIDC discovery + JWKS
//! documents the API server serves itself. Used by tests/e2e_kubernetes.rs (airgate's pod
//! lookups) and tests/airflow.rs, where the official `kubernetes` Python client reads it — the
//! check that the stand-in speaks the protocol the real client library expects.
#![allow(dead_code)]

use crate::support::{Pki, tls_acceptor};
use airgate::identity::mint::SigningKey;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use serde_json::{Value, json};
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};
use tokio::net::TcpListener;

/// The issuer of the projected tokens (an AKS OIDC issuer URL).
pub const ISSUER: &str = "https://oidc.prod-aks.azure.test/tenant/cluster/";

/// A task pod of `tests/fixtures/kubernetes/` (made by `generate_pods.py`).
pub fn fixture(file: &str) -> Value {
    let path = format!("{}/tests/fixtures/kubernetes/{file}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Normal,
    /// Every pod GET answers this status with a `v1.Status` body.
    Status(u16),
    /// Every pod GET has its connection dropped (API unreachable).
    Drop,
}

struct ApiState {
    pods: Mutex<HashMap<String, Value>>,
    accepted_token: Mutex<String>,
    mode: Mutex<Mode>,
    pod_gets: AtomicUsize,
    jwks: String,
    addr: Mutex<Option<SocketAddr>>,
}

pub struct KubeApi {
    pub addr: SocketAddr,
    state: Arc<ApiState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn status_body(code: u16, reason: &str, message: &str) -> String {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
    .to_string()
}

fn json_response(status: u16, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

async fn api_answer(req: Request<Incoming>, st: Arc<ApiState>) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let path = req.uri().path().to_owned();
    let addr = st.addr.lock().unwrap().unwrap();
    if path == "/.well-known/openid-configuration" {
        let doc = json!({"issuer": ISSUER, "jwks_uri": format!("https://{addr}/openid/v1/jwks"),
            "response_types_supported": ["id_token"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"]});
        return Ok(json_response(200, doc.to_string()));
    }
    if path == "/openid/v1/jwks" {
        return Ok(json_response(200, st.jwks.clone()));
    }
    let Some(rest) = path.strip_prefix("/api/v1/namespaces/") else {
        return Ok(json_response(
            404,
            status_body(404, "NotFound", "the server could not find the requested resource"),
        ));
    };
    st.pod_gets.fetch_add(1, Ordering::SeqCst);
    let mode = *st.mode.lock().unwrap();
    match mode {
        Mode::Drop => return Err(std::io::Error::other("dropping the connection")),
        Mode::Status(403) => {
            return Ok(json_response(
                403,
                status_body(
                    403,
                    "Forbidden",
                    "pods is forbidden: User \"system:serviceaccount:airgate:airgate\" cannot get resource \"pods\"",
                ),
            ));
        }
        Mode::Status(code) => {
            return Ok(json_response(code, status_body(code, "InternalError", "etcdserver: request timed out")));
        }
        Mode::Normal => {}
    }
    let expected = format!("Bearer {}", st.accepted_token.lock().unwrap());
    if req.headers().get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return Ok(json_response(401, status_body(401, "Unauthorized", "Unauthorized")));
    }
    let Some((ns, name)) = rest.split_once("/pods/") else {
        return Ok(json_response(404, status_body(404, "NotFound", "not found")));
    };
    match st.pods.lock().unwrap().get(&format!("{ns}/{name}")) {
        Some(pod) => Ok(json_response(200, pod.to_string())),
        None => Ok(json_response(
            404,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": format!("pods \"{name}\" not found"), "reason": "NotFound",
                   "details": {"name": name, "kind": "pods"}, "code": 404})
            .to_string(),
        )),
    }
}

impl KubeApi {
    pub async fn start(pki: &Pki, key: &SigningKey, token: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ApiState {
            pods: Mutex::new(HashMap::new()),
            accepted_token: Mutex::new(token.to_owned()),
            mode: Mutex::new(Mode::Normal),
            pod_gets: AtomicUsize::new(0),
            jwks: json!({"keys": [key.public_jwk()]}).to_string(),
            addr: Mutex::new(Some(addr)),
        });
        let acceptor = tls_acceptor(pki);
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (st, acceptor) = (st.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let svc = service_fn(move |req| api_answer(req, st.clone()));
                    let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(tls), svc).await;
                });
            }
        });
        KubeApi { addr, state, task }
    }

    pub fn put(&self, pod: &Value) {
        let m = &pod["metadata"];
        let key = format!("{}/{}", m["namespace"].as_str().unwrap(), m["name"].as_str().unwrap());
        self.state.pods.lock().unwrap().insert(key, pod.clone());
    }

    pub fn remove(&self, ns: &str, name: &str) {
        self.state.pods.lock().unwrap().remove(&format!("{ns}/{name}"));
    }

    pub fn mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    pub fn accept_token(&self, token: &str) {
        *self.state.accepted_token.lock().unwrap() = token.to_owned();
    }

    pub fn gets(&self) -> usize {
        self.state.pod_gets.load(Ordering::SeqCst)
    }
}
