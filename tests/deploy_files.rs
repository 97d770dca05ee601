//! Structural checks of the deployment files that no Docker engine or cluster verifies here:
//! `docker/Dockerfile`, `.dockerignore`, `docker/compose.yaml` (+ its airgate and Prometheus
//! configs) and every manifest under `docker/k8s/`. They parse the files and check the facts the
//! deployment guide relies on: ports, probe paths, non-root users, mounts that hot reload needs,
//! and names that must agree across files.

use serde_norway::Value;
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every non-empty document of a (possibly multi-document) YAML file.
fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            <Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn toml_file(path: &Path) -> toml::Table {
    read(path).parse().unwrap_or_else(|e| panic!("{} is not valid TOML: {e}", path.display()))
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str().unwrap_or_else(|| panic!("{what}: expected a string, got {v:?}"))
}

/// Every string value in a TOML document, depth first.
fn toml_strings(v: &toml::Value, out: &mut Vec<String>) {
    match v {
        toml::Value::String(s) => out.push(s.clone()),
        toml::Value::Array(items) => items.iter().for_each(|i| toml_strings(i, out)),
        toml::Value::Table(t) => t.values().for_each(|i| toml_strings(i, out)),
        _ => {}
    }
}

fn listen_port(config: &toml::Table, section: &str) -> (String, u16) {
    let listen = config[section]["listen"].as_str().unwrap_or_else(|| panic!("[{section}] listen missing"));
    let addr: std::net::SocketAddr = listen.parse().unwrap_or_else(|_| panic!("[{section}] listen {listen:?}"));
    (addr.ip().to_string(), addr.port())
}

// ---------------------------------------------------------------------------------------------
// Dockerfile and .dockerignore
// ---------------------------------------------------------------------------------------------

/// Dockerfile instructions as `(KEYWORD, arguments)`, continuation lines joined, comments dropped.
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (current.is_empty() && trimmed.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, args) = current.split_once(char::is_whitespace).unwrap_or((&current, ""));
                out.push((keyword.to_ascii_uppercase(), args.trim().to_owned()));
                current.clear();
            }
        }
    }
    assert!(current.is_empty(), "Dockerfile ends inside a continuation line");
    out
}

#[test]
fn dockerfile_builds_release_and_runs_non_root_on_distroless() {
    let instructions = dockerfile_instructions(&read(&repo().join("docker/Dockerfile")));
    let froms: Vec<usize> = instructions.iter().enumerate().filter(|(_, (k, _))| k == "FROM").map(|(i, _)| i).collect();
    assert!(froms.len() >= 2, "multi-stage build expected");
    assert!(
        instructions.iter().all(|(k, _)| k != "HEALTHCHECK"),
        "no HEALTHCHECK: probes use /healthz and /readyz on the admin port"
    );

    let (_, build_from) = &instructions[froms[0]];
    assert!(build_from.starts_with("rust:") && build_from.contains("-bookworm"), "build stage: {build_from}");
    assert!(
        instructions.iter().any(|(k, a)| k == "RUN" && a.contains("cargo build --release --locked")),
        "release build with the committed lock file"
    );

    let runtime = &instructions[*froms.last().unwrap()..];
    let (_, runtime_from) = &runtime[0];
    assert!(runtime_from.starts_with("gcr.io/distroless/cc-debian12:nonroot"), "runtime base: {runtime_from}");
    let args = |keyword: &str| -> Vec<&str> {
        runtime.iter().filter(|(k, _)| k == keyword).map(|(_, a)| a.as_str()).collect()
    };

    let users = args("USER");
    let user = users.last().expect("runtime stage sets USER");
    let uid = user.split(':').next().unwrap();
    assert!(!matches!(uid, "root" | "0" | ""), "USER must not be root: {user}");
    assert!(uid.parse::<u32>().is_ok(), "numeric USER so that runAsNonRoot can verify it: {user}");

    let exposed: BTreeSet<&str> = args("EXPOSE").iter().flat_map(|a| a.split_whitespace()).collect();
    assert!(exposed.contains("8080") && exposed.contains("9090"), "EXPOSE 8080 9090: {exposed:?}");

    assert!(
        args("ENV").iter().any(|a| a.replace(' ', "=") == "AIRGATE_CONFIG=/etc/airgate/airgate.toml"),
        "ENV AIRGATE_CONFIG=/etc/airgate/airgate.toml"
    );
    assert!(
        args("COPY").iter().any(|a| a.starts_with("--from=") && a.ends_with(" /usr/local/bin/airgate")),
        "binary copied to /usr/local/bin/airgate"
    );
    assert_eq!(args("ENTRYPOINT"), [r#"["/usr/local/bin/airgate"]"#]);
    assert_eq!(args("CMD"), [r#"["run"]"#]);
    assert!(args("LABEL").iter().any(|a| a.contains("org.opencontainers.image.title")), "OCI labels");
}

#[test]
fn dockerignore_keeps_build_outputs_out_and_sources_in() {
    let text = read(&repo().join(".dockerignore"));
    let patterns: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    for needed in ["target/", ".git/"] {
        assert!(patterns.contains(&needed), ".dockerignore must exclude {needed}");
    }
    for kept in ["src", "src/", "Cargo.toml", "Cargo.lock", "benches", "benches/", "*.rs", "*.toml"] {
        assert!(!patterns.contains(&kept), ".dockerignore must not exclude {kept}");
    }
}

// ---------------------------------------------------------------------------------------------
// docker/compose.yaml
// ---------------------------------------------------------------------------------------------

fn published_container_ports(service: &Value) -> BTreeSet<u16> {
    service["ports"]
        .as_sequence()
        .map(|ports| {
            ports
                .iter()
                .map(|p| {
                    // "127.0.0.1:8080:8080" or "8080:8080" or "8080": the container port is last.
                    let text = str_of(p, "ports[]");
                    text.rsplit(':').next().unwrap().split('/').next().unwrap().parse().unwrap()
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_runs_airgate_redis_prometheus_and_an_upstream() {
    let dir = repo().join("docker");
    let docs = yaml_docs(&dir.join("compose.yaml"));
    assert_eq!(docs.len(), 1);
    let services = &docs[0]["services"];
    for name in ["airgate", "redis", "prometheus", "upstream"] {
        assert!(services[name].is_mapping(), "compose service {name} missing");
    }
    for (name, service) in services.as_mapping().unwrap() {
        let name = str_of(name, "service name");
        assert!(service["image"].is_string() || service["build"].is_mapping(), "{name}: image or build");
    }

    let airgate = &services["airgate"];
    let context = dir.join(str_of(&airgate["build"]["context"], "build.context"));
    let dockerfile = context.join(str_of(&airgate["build"]["dockerfile"], "build.dockerfile"));
    assert!(context.join("Cargo.toml").is_file(), "build context is the repository root");
    assert!(dockerfile.is_file(), "{} exists", dockerfile.display());
    assert!(published_container_ports(airgate).is_superset(&BTreeSet::from([8080, 9090])));

    let mounts = airgate["volumes"].as_sequence().expect("airgate volumes");
    let config_mount = mounts
        .iter()
        .find(|m| m["target"].as_str() == Some("/etc/airgate/airgate.toml"))
        .expect("config mounted at /etc/airgate/airgate.toml");
    let config_path = dir.join(str_of(&config_mount["source"], "config source"));
    assert!(config_path.is_file(), "{} exists", config_path.display());
    assert_eq!(config_mount["read_only"].as_bool(), Some(true));
    assert_eq!(airgate["environment"]["AIRGATE_CONFIG"].as_str(), Some("/etc/airgate/airgate.toml"));

    // The container config must be reachable from outside the container.
    let config = toml_file(&config_path);
    assert_eq!(listen_port(&config, "server"), ("0.0.0.0".to_owned(), 8080));
    assert_eq!(listen_port(&config, "admin"), ("0.0.0.0".to_owned(), 9090));

    // Every `env:` secret reference in the config is set by the compose file.
    let mut strings = Vec::new();
    toml_strings(&toml::Value::Table(config.clone()), &mut strings);
    let env_refs: Vec<&str> = strings.iter().filter_map(|s| s.strip_prefix("env:")).collect();
    assert!(!env_refs.is_empty());
    for name in env_refs {
        assert!(airgate["environment"][name].is_string(), "env:{name} is not set for the airgate service");
    }
    assert!(!strings.iter().any(|s| s.contains("urn:airflow.apache.org:task")));

    // Redis and the upstream named in the config are compose services.
    let redis_url = config["rate_limits"]["redis_url"].as_str().expect("redis_url");
    assert!(redis_url.starts_with("redis://redis:"), "{redis_url}");
    for upstream in config["upstreams"].as_array().unwrap() {
        let url = upstream["url"].as_str().unwrap();
        let host = url.split("://").nth(1).unwrap().split([':', '/']).next().unwrap();
        assert!(services[host].is_mapping(), "upstream host {host} is not a compose service");
    }

    // Prometheus gets its config from docker/prometheus.yml and scrapes airgate's admin port.
    let prom_mount = services["prometheus"]["volumes"]
        .as_sequence()
        .and_then(|v| v.iter().find(|m| m["target"].as_str() == Some("/etc/prometheus/prometheus.yml")))
        .expect("prometheus.yml mounted");
    let prom = yaml_docs(&dir.join(str_of(&prom_mount["source"], "prometheus source")));
    let targets: Vec<String> = prom[0]["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|job| job["static_configs"].as_sequence().cloned().unwrap_or_default())
        .flat_map(|sc| sc["targets"].as_sequence().cloned().unwrap_or_default())
        .map(|t| str_of(&t, "targets[]").to_owned())
        .collect();
    assert!(targets.iter().any(|t| t == "airgate:9090"), "prometheus targets: {targets:?}");
}

// ---------------------------------------------------------------------------------------------
// docker/k8s/
// ---------------------------------------------------------------------------------------------

struct Manifests {
    files: Vec<PathBuf>,
    objects: Vec<Value>,
}

impl Manifests {
    fn load() -> Self {
        let dir = repo().join("docker/k8s");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect();
        files.sort();
        assert!(!files.is_empty());
        let objects = files.iter().flat_map(|f| yaml_docs(f)).collect();
        Manifests { files, objects }
    }

    fn one(&self, kind: &str, name: &str) -> &Value {
        let found: Vec<&Value> = self
            .objects
            .iter()
            .filter(|o| o["kind"].as_str() == Some(kind) && o["metadata"]["name"].as_str() == Some(name))
            .collect();
        assert_eq!(found.len(), 1, "exactly one {kind} named {name}");
        found[0]
    }

    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"].as_str() == Some(kind)).collect()
    }
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_mapping().expect("selector labels");
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn aks_config() -> toml::Table {
    toml_file(&repo().join("config/aks.toml"))
}

#[test]
fn every_manifest_is_a_named_kubernetes_object_listed_in_the_kustomization() {
    let m = Manifests::load();
    for object in &m.objects {
        assert!(object["apiVersion"].is_string(), "apiVersion missing: {object:?}");
        assert!(object["kind"].is_string(), "kind missing: {object:?}");
        if object["kind"].as_str() != Some("Kustomization") {
            assert!(object["metadata"]["name"].is_string(), "metadata.name missing: {object:?}");
        }
    }
    let kinds: BTreeSet<&str> = m.objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in [
        "Deployment",
        "Service",
        "ServiceAccount",
        "ConfigMap",
        "SecretProviderClass",
        "PodDisruptionBudget",
        "ServiceMonitor",
    ] {
        assert!(kinds.contains(kind), "docker/k8s has no {kind}");
    }

    let kustomization = m.of_kind("Kustomization");
    assert_eq!(kustomization.len(), 1);
    let listed: BTreeSet<&str> =
        kustomization[0]["resources"].as_sequence().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    for file in &m.files {
        let name = file.file_name().unwrap().to_str().unwrap();
        if name != "kustomization.yaml" {
            assert!(listed.contains(name), "kustomization.yaml does not list {name}");
        }
    }
}

#[test]
fn configmap_carries_config_aks_toml_verbatim() {
    let m = Manifests::load();
    let cm = m.one("ConfigMap", "airgate-config");
    let embedded = str_of(&cm["data"]["airgate.toml"], "data.airgate.toml");
    assert_eq!(
        embedded,
        read(&repo().join("config/aks.toml")),
        "docker/k8s/configmap.yaml drifted from config/aks.toml"
    );
}

#[test]
fn deployment_probes_security_and_mounts() {
    let m = Manifests::load();
    let config = aks_config();
    let deploy = m.one("Deployment", "airgate");
    let spec = &deploy["spec"];
    assert!(spec["replicas"].as_u64().unwrap() >= 2, "two replicas or more");
    let pod_labels = &spec["template"]["metadata"]["labels"];
    assert!(labels_match(&spec["selector"]["matchLabels"], pod_labels));
    let pod = &spec["template"]["spec"];

    // Non-root, read-only, no privilege escalation.
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_ne!(pod["securityContext"]["runAsUser"].as_u64(), Some(0));
    let containers = pod["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0].as_str(), Some("ALL"));

    // Ports agree with the configuration's listeners.
    let port = |name: &str| -> u16 {
        c["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no container port named {name}")) as u16
    };
    assert_eq!(listen_port(&config, "server"), ("0.0.0.0".to_owned(), port("https")));
    assert_eq!(listen_port(&config, "admin"), ("0.0.0.0".to_owned(), port("admin")));
    assert_eq!(port("admin"), 9090);

    // Probes on the admin port.
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(c[probe]["httpGet"]["path"].as_str(), Some(path), "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"].as_str(), Some("admin"), "{probe}");
    }

    // The grace period covers preStop + shutdown_grace + 10 s.
    let grace = humantime::parse_duration(config["server"]["shutdown_grace"].as_str().unwrap()).unwrap();
    let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64().unwrap_or(0);
    let termination = pod["terminationGracePeriodSeconds"].as_u64().expect("terminationGracePeriodSeconds");
    assert!(termination >= pre_stop + grace.as_secs() + 10, "terminationGracePeriodSeconds {termination}");

    // Workload identity.
    assert_eq!(pod_labels["azure.workload.identity/use"].as_str(), Some("true"));
    let sa = m.one("ServiceAccount", str_of(&pod["serviceAccountName"], "serviceAccountName"));
    assert!(sa["metadata"]["annotations"]["azure.workload.identity/client-id"].is_string());

    // Volumes: the ConfigMap as a directory at /etc/airgate (no subPath, or reloads never arrive),
    // the Key Vault CSI mount, and the synced TLS secret.
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    assert!(mounts.iter().all(|mnt| mnt["subPath"].is_null()), "subPath mounts never see updates");
    let volumes = pod["volumes"].as_sequence().unwrap();
    let volume_at = |path: &str| -> &Value {
        let mnt = mounts
            .iter()
            .find(|mnt| mnt["mountPath"].as_str() == Some(path))
            .unwrap_or_else(|| panic!("nothing mounted at {path}"));
        volumes.iter().find(|v| v["name"] == mnt["name"]).unwrap_or_else(|| panic!("volume for {path}"))
    };
    let args: Vec<&str> = c["args"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(args[0], "run");
    if let Some(i) = args.iter().position(|a| *a == "--config") {
        assert_eq!(args[i + 1], "/etc/airgate/airgate.toml");
    }
    m.one("ConfigMap", str_of(&volume_at("/etc/airgate")["configMap"]["name"], "configMap.name"));
    let csi = &volume_at("/mnt/secrets-store")["csi"];
    assert_eq!(csi["driver"].as_str(), Some("secrets-store.csi.k8s.io"));
    let spc = m.one("SecretProviderClass", str_of(&csi["volumeAttributes"]["secretProviderClass"], "spc"));

    // Every `file:/mnt/secrets-store/...` reference in the config is an object of the provider class.
    let objects_text = str_of(&spc["spec"]["parameters"]["objects"], "parameters.objects");
    let objects: Value = serde_norway::from_str(objects_text).unwrap();
    let object_files: BTreeSet<String> = objects["array"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|o| {
            let o: Value = serde_norway::from_str(o.as_str().unwrap()).unwrap();
            o["objectAlias"].as_str().or(o["objectName"].as_str()).unwrap().to_owned()
        })
        .collect();
    let mut strings = Vec::new();
    toml_strings(&toml::Value::Table(config.clone()), &mut strings);
    let referenced: Vec<&str> = strings.iter().filter_map(|s| s.strip_prefix("file:/mnt/secrets-store/")).collect();
    assert!(!referenced.is_empty());
    for file in referenced {
        assert!(object_files.contains(file), "{file} is not mounted by the SecretProviderClass");
    }

    // The TLS files come from the Secret the provider class syncs.
    let tls = config["server"]["tls"].as_table().expect("aks.toml terminates TLS");
    let tls_dir = Path::new(tls["cert"].as_str().unwrap()).parent().unwrap().to_str().unwrap().to_owned();
    assert_eq!(Path::new(tls["key"].as_str().unwrap()).parent().unwrap().to_str().unwrap(), tls_dir);
    let secret_name = str_of(&volume_at(&tls_dir)["secret"]["secretName"], "tls secretName");
    let synced = spc["spec"]["secretObjects"].as_sequence().unwrap();
    assert!(
        synced
            .iter()
            .any(|s| s["secretName"].as_str() == Some(secret_name) && s["type"].as_str() == Some("kubernetes.io/tls")),
        "TLS secret {secret_name} is not synced by the SecretProviderClass"
    );
}

#[test]
fn services_pdb_and_service_monitor_select_the_pods() {
    let m = Manifests::load();
    let deploy = m.one("Deployment", "airgate");
    let pod_labels = &deploy["spec"]["template"]["metadata"]["labels"];

    let proxy = m.one("Service", "airgate");
    assert!(labels_match(&proxy["spec"]["selector"], pod_labels));
    let proxy_ports = proxy["spec"]["ports"].as_sequence().unwrap();
    assert!(
        proxy_ports.iter().all(|p| p["targetPort"].as_str() != Some("admin")),
        "workers' Service exposes no admin port"
    );
    assert!(proxy_ports.iter().any(|p| p["targetPort"].as_str() == Some("https")));

    let pdb = m.one("PodDisruptionBudget", "airgate");
    assert!(labels_match(&pdb["spec"]["selector"]["matchLabels"], pod_labels));
    assert_eq!(pdb["spec"]["minAvailable"].as_u64(), Some(1));

    let monitor = m.one("ServiceMonitor", "airgate");
    let selected: Vec<&Value> = m
        .of_kind("Service")
        .into_iter()
        .filter(|s| labels_match(&monitor["spec"]["selector"]["matchLabels"], &s["metadata"]["labels"]))
        .collect();
    assert_eq!(selected.len(), 1, "the ServiceMonitor selects exactly the admin Service");
    let admin = selected[0];
    assert!(labels_match(&admin["spec"]["selector"], pod_labels));
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["path"].as_str(), Some("/metrics"));
    let port_name = str_of(&endpoint["port"], "endpoints[0].port");
    assert!(
        admin["spec"]["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|p| p["name"].as_str() == Some(port_name) && p["targetPort"].as_str() == Some("admin")),
        "ServiceMonitor port {port_name} is the admin port"
    );

    let annotations = &deploy["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"].as_str(), Some("9090"));
    assert_eq!(annotations["prometheus.io/path"].as_str(), Some("/metrics"));
}

// ---------------------------------------------------------------------------------------------
// config/*.toml and docker/*.toml
// ---------------------------------------------------------------------------------------------

/// `(key path, value)` of every string in a TOML value.
fn toml_leaves(v: &toml::Value, at: String, out: &mut Vec<(String, String)>) {
    match v {
        toml::Value::String(s) => out.push((at, s.clone())),
        toml::Value::Array(items) => {
            items.iter().enumerate().for_each(|(i, item)| toml_leaves(item, format!("{at}[{i}]"), out))
        }
        toml::Value::Table(t) => t.iter().for_each(|(k, item)| toml_leaves(item, format!("{at}.{k}"), out)),
        _ => {}
    }
}

#[test]
fn example_configs_name_secrets_only_by_reference() {
    let mut files: Vec<PathBuf> = ["config", "docker"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(repo().join(dir)).unwrap().map(|e| e.unwrap().path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    for file in files {
        let mut leaves = Vec::new();
        toml_leaves(&toml::Value::Table(toml_file(&file)), String::new(), &mut leaves);
        for (at, value) in leaves {
            let key = at.rsplit('.').next().unwrap();
            let is_reference = value.starts_with("env:") || value.starts_with("file:");
            if matches!(key, "subscription_key" | "shared_secret" | "signing_key" | "token" | "secret") {
                assert!(is_reference, "{}: {at} must be an env:/file: reference", file.display());
            }
            if key == "redis_url" && !is_reference {
                assert!(!value.contains('@'), "{}: {at} carries credentials; use a reference", file.display());
            }
            assert_ne!(value, "urn:airflow.apache.org:task", "{}: {at}", file.display());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// docker/k8s/airflow/: the Airflow side of pod identity (contract §9)
// ---------------------------------------------------------------------------------------------

/// The `[issuers.kubernetes]` issuer of config/aks.toml.
fn aks_kubernetes_issuer(config: &toml::Table) -> &toml::Table {
    let issuers = config["issuers"].as_array().unwrap();
    let found: Vec<&toml::Table> =
        issuers.iter().filter_map(|i| i.as_table()).filter(|i| i.contains_key("kubernetes")).collect();
    assert_eq!(found.len(), 1, "config/aks.toml has one kubernetes issuer");
    found[0]
}

fn strings_of(v: &toml::Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
}

#[test]
fn pod_identity_rbac_mounts_and_task_pod_template_agree_with_aks_toml() {
    let config = aks_config();
    let issuer = aks_kubernetes_issuer(&config);
    let k8s = issuer["kubernetes"].as_table().unwrap();
    let namespaces = strings_of(&k8s["namespaces"]);
    let service_accounts = strings_of(&k8s["service_accounts"]);
    let audiences = strings_of(&issuer["audiences"]);
    assert!(issuer.get("required_scope").is_none());

    // airgate's side: its service account gets pods in every allowed namespace, and nothing more.
    let m = Manifests::load();
    let deploy = m.one("Deployment", "airgate");
    let pod = &deploy["spec"]["template"]["spec"];
    let sa = str_of(&pod["serviceAccountName"], "serviceAccountName");
    let sa_ns = str_of(&deploy["metadata"]["namespace"], "deployment namespace");
    let rbac = yaml_docs(&repo().join("docker/k8s/airflow/rbac.yaml"));
    let kustomization = yaml_docs(&repo().join("docker/k8s/airflow/kustomization.yaml"));
    assert!(kustomization[0].get("namespace").is_none(), "no namespace transform on the Airflow side");
    let listed: Vec<&str> =
        kustomization[0]["resources"].as_sequence().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert_eq!(listed, ["rbac.yaml"]);
    for ns in &namespaces {
        let role = rbac
            .iter()
            .find(|o| o["kind"] == "Role" && o["metadata"]["namespace"].as_str() == Some(ns))
            .unwrap_or_else(|| panic!("no Role in namespace {ns}"));
        let rules = role["rules"].as_sequence().unwrap();
        assert_eq!(rules.len(), 1);
        let list =
            |k: &str| -> Vec<&str> { rules[0][k].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap()).collect() };
        assert_eq!((list("apiGroups"), list("resources"), list("verbs")), (vec![""], vec!["pods"], vec!["get"]));
        let binding = rbac
            .iter()
            .find(|o| o["kind"] == "RoleBinding" && o["metadata"]["namespace"].as_str() == Some(ns))
            .unwrap_or_else(|| panic!("no RoleBinding in namespace {ns}"));
        assert_eq!(binding["roleRef"]["kind"], "Role");
        assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
        let subject = &binding["subjects"][0];
        assert_eq!((subject["kind"].as_str(), subject["name"].as_str()), (Some("ServiceAccount"), Some(sa)));
        assert_eq!(subject["namespace"].as_str(), Some(sa_ns));
    }

    // airgate's API token and CA are mounted where the issuer reads them.
    let token_path = k8s.get("token").map_or("/var/run/secrets/kubernetes.io/serviceaccount/token".to_owned(), |t| {
        t.as_str().unwrap().strip_prefix("file:").expect("a file token").to_owned()
    });
    let ca_path = k8s
        .get("ca_file")
        .map_or("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt", |c| c.as_str().unwrap())
        .to_owned();
    let container = &pod["containers"][0];
    let mount_of = |file: &str| -> (String, String) {
        let dir = Path::new(file).parent().unwrap().to_str().unwrap();
        let mount = container["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["mountPath"].as_str() == Some(dir))
            .unwrap_or_else(|| panic!("nothing mounted at {dir}"));
        let name = str_of(&mount["name"], "mount name").to_owned();
        (name, Path::new(file).file_name().unwrap().to_str().unwrap().to_owned())
    };
    let volume = |name: &str| -> &Value {
        pod["volumes"].as_sequence().unwrap().iter().find(|v| v["name"].as_str() == Some(name)).unwrap()
    };
    let (token_volume, token_file) = mount_of(&token_path);
    let sources = volume(&token_volume)["projected"]["sources"].as_sequence().unwrap();
    let sa_token = sources.iter().find_map(|s| s.get("serviceAccountToken")).expect("a projected API token");
    assert_eq!(sa_token["path"].as_str(), Some(token_file.as_str()));
    assert!(sa_token.get("audience").is_none(), "airgate's own token is for the API server");
    let (ca_volume, ca_file) = mount_of(&ca_path);
    let ca = volume(&ca_volume)["projected"]["sources"]
        .as_sequence()
        .unwrap()
        .iter()
        .find_map(|s| s.get("configMap"))
        .expect("the cluster CA");
    assert_eq!(ca["name"], "kube-root-ca.crt");
    assert_eq!(ca["items"][0]["path"].as_str(), Some(ca_file.as_str()));

    // The task pods' side: a projected token for airgate's audience where airgate-airflow reads it.
    let template = &yaml_docs(&repo().join("docker/k8s/airflow/pod-template.yaml"))[0];
    assert_eq!(template["kind"], "Pod");
    assert!(namespaces.iter().any(|n| template["metadata"]["namespace"].as_str() == Some(n)));
    assert!(service_accounts.iter().any(|s| template["spec"]["serviceAccountName"].as_str() == Some(s)));
    let base = &template["spec"]["containers"][0];
    assert_eq!(base["name"], "base", "the KubernetesExecutor's container name");
    let mount = base["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["mountPath"] == "/var/run/secrets/airgate")
        .expect("token mounted at /var/run/secrets/airgate");
    let projected =
        template["spec"]["volumes"].as_sequence().unwrap().iter().find(|v| v["name"] == mount["name"]).unwrap();
    let t = &projected["projected"]["sources"][0]["serviceAccountToken"];
    assert!(audiences.iter().any(|a| t["audience"].as_str() == Some(a)), "audience {:?}", t["audience"]);
    assert_eq!(t["audience"], "urn:airgate");
    assert_eq!(t["path"], "token");
    assert_eq!(t["expirationSeconds"].as_u64(), Some(3600));
    let max_lifetime = issuer["max_lifetime"].as_str().unwrap();
    let max = humantime::parse_duration(max_lifetime).unwrap();
    assert!(max.as_secs() >= 3600, "max_lifetime {max_lifetime} is shorter than the projected token's life");
}
