//! The Airflow side under `cargo nextest run`: runs integrations/airflow/run-tests.sh (the
//! package's unit tests and a real Airflow 3 `airflow dags test` through this crate's binary).
//! The script creates or reuses a cached virtualenv; if Python, pip or Airflow cannot be set up
//! this test fails, it is never skipped.
//!
//! The kube-apiserver stand-in of tests/e2e_kubernetes.rs runs here too, holding the task-pod
//! fixtures: `tests/test_kube_standin.py` reads it with the official `kubernetes` Python client,
//! so the stand-in airgate's pod lookups are tested against is checked against the real client.

mod kube_api;
mod support;

use std::path::Path;
use std::process::Command;

/// The bearer token the stand-in accepts from the Python client.
const API_TOKEN: &str = "standin-reader-token";

#[test]
fn airflow_package_tests_and_a_real_airflow_3_run_through_airgate() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let pki = support::pki();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("kube-ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let api = runtime.block_on(kube_api::KubeApi::start(&pki, &support::test_signing_key(), API_TOKEN));
    for pod in ["pod_sales.json", "pod_mapped.json", "pod_long_dag.json"] {
        api.put(&kube_api::fixture(pod));
    }

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("integrations/airflow/run-tests.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(["-q", "-rfEs"])
        .env("AIRGATE_BIN", env!("CARGO_BIN_EXE_airgate"))
        .env("AIRGATE_KUBE_STANDIN_URL", format!("https://{}", api.addr))
        .env("AIRGATE_KUBE_STANDIN_CA", &ca)
        .env("AIRGATE_KUBE_STANDIN_TOKEN", API_TOKEN)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{} failed ({}):\n{stdout}\n{stderr}", script.display(), out.status);
    let summary = stdout.lines().rev().find(|l| l.contains(" passed")).unwrap_or_default();
    assert!(!summary.contains("skipped") && !summary.contains("deselected"), "every Airflow test must run: {summary}");
    // Visible in `cargo nextest run --no-capture` and in the failure output of later edits.
    println!("{summary}");
    assert!(api.gets() >= 4, "the Python client never reached the stand-in");
}
