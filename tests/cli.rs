//! The binary as a user runs it: `check` on good and bad files, `run` refusing a bad file with
//! exit 2, SIGHUP and file-change reloads, and SIGTERM draining to exit 0.

mod support;

use std::{
    process::Command,
    time::{Duration, Instant},
};
use support::Binary;

fn airgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_airgate"))
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[[upstreams]]
name = "apim"
url = "https://contoso.azure-api.net"
[[routes]]
name = "sales"
path_prefix = "/sales/"
upstream = "apim"
allow = { pipelines = ["sales_*"] }
"#;

#[test]
fn check_accepts_a_good_file_and_prints_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = airgate().args(["check", "--config"]).arg(write(dir.path(), "a.toml", GOOD)).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("sales /sales/"), "{text}");
    assert!(text.contains("apim -> https://contoso.azure-api.net"), "{text}");
}

#[test]
fn check_reports_every_problem_with_path_and_line_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = r#"
[server]
listen = "not-an-address"
max_request_body = "ten"
colour = "blue"
[[upstreams]]
name = "apim"
url = "https://contoso.azure-api.net"
subscription_key = "hunter2-literal-secret"
[[routes]]
name = "a"
path_prefix = "/a/"
upstream = "apim"
allow = { pipelines = ["x"] }
[[routes]]
name = "b"
path_prefix = "b"
upstream = "nowhere"
"#;
    let out = airgate().args(["check", "--config"]).arg(write(dir.path(), "bad.toml", bad)).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "server.listen (line 3",
        "server.max_request_body (line 4",
        "server.colour (line 5, column 1): unknown key",
        "upstreams[0].subscription_key (line 9",
        "routes[1].path_prefix (line 17",
        "routes[1].upstream (line 18",
        "routes[1].allow",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(!err.contains("hunter2"), "a literal secret must not be echoed:\n{err}");
}

#[test]
fn check_reports_toml_syntax_errors_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let out = airgate()
        .args(["check", "--config"])
        .arg(write(dir.path(), "s.toml", "[server]\nlisten = \"x\n"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn run_refuses_a_bad_file_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = airgate().args(["run", "--config"]).arg(write(dir.path(), "b.toml", "[bogus]\n")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));
}

#[test]
fn example_configs_pass_check() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for dir in ["config", "docker"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let out = airgate().args(["check", "--config"]).arg(&path).output().unwrap();
                assert!(out.status.success(), "{}:\n{}", path.display(), String::from_utf8_lossy(&out.stderr));
                checked += 1;
            }
        }
    }
    assert!(checked >= 1, "no example configuration found in config/");
}

fn http_get(addr: impl std::net::ToSocketAddrs, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, out)
}

fn metric(admin: std::net::SocketAddr, needle: &str) -> bool {
    http_get(admin, "/metrics").1.lines().any(|l| l.starts_with(needle))
}

#[test]
fn sighup_and_file_change_reload_and_sigterm_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "a.toml", GOOD);
    let mut run = Binary::spawn(&path);
    assert_eq!(http_get(run.proxy, "/new/x").0, 404);

    // A bad file is refused; the old configuration keeps serving.
    std::fs::write(&path, "[broken\n").unwrap();
    run.hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !metric(run.admin, "airgate_config_reloads_total{result=\"error\"}") {
        assert!(Instant::now() < deadline, "no reload error counted");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(http_get(run.proxy, "/sales/x").0, 401, "the old routes still answer");

    // A good file with a new route applies (file change is noticed; SIGHUP also reloads).
    let next = GOOD.to_owned()
        + "[[routes]]\nname = \"new\"\npath_prefix = \"/new/\"\nupstream = \"apim\"\nallow = { pipelines = [\"*\"] }\n";
    std::fs::write(&path, next).unwrap();
    run.hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(run.proxy, "/new/x").0 != 401 {
        assert!(Instant::now() < deadline, "the new route never appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(metric(run.admin, "airgate_config_reloads_total{result=\"success\"}"));

    run.signal("-TERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(Instant::now() < deadline, "airgate did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_container_config_is_found_through_airgate_config() {
    // The image sets AIRGATE_CONFIG and runs `airgate run` without --config.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("docker/Dockerfile")).unwrap();
    assert!(dockerfile.contains("AIRGATE_CONFIG=/etc/airgate/airgate.toml"), "the image must set AIRGATE_CONFIG");
    let out = airgate().arg("check").env("AIRGATE_CONFIG", root.join("docker/airgate.compose.toml")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("admin 0.0.0.0:9090"));
}
