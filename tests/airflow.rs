//! The Airflow side under `cargo nextest run`: runs integrations/airflow/run-tests.sh (the
//! package's unit tests and a real Airflow 3 `airflow dags test` through this crate's binary).
//! The script creates or reuses a cached virtualenv; if Python, pip or Airflow cannot be set up
//! this test fails, it is never skipped.

use std::path::Path;
use std::process::Command;

#[test]
fn airflow_package_tests_and_a_real_airflow_3_run_through_airgate() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("integrations/airflow/run-tests.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(["-q", "-rfEs"])
        .env("AIRGATE_BIN", env!("CARGO_BIN_EXE_airgate"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{} failed ({}):\n{stdout}\n{stderr}", script.display(), out.status);
    let summary = stdout.lines().rev().find(|l| l.contains(" passed")).unwrap_or_default();
    assert!(!summary.contains("skipped") && !summary.contains("deselected"), "every Airflow test must run: {summary}");
    // Visible in `cargo nextest run --no-capture` and in the failure output of later edits.
    println!("{summary}");
}
