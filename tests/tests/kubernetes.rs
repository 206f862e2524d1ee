//! deploy/kubernetes: every object valid against the Kubernetes and prometheus-operator schemas,
//! strictly (tests/kubernetes/validate.js: kubernetes-models' validators and the TypeScript
//! compiler's excess-property check, installed by `cargo xtask setup --test-deps`), the objects
//! consistent with each other and with what monitor serves, the container's arguments and the
//! ConfigMap's monitor.toml accepted by the real binary, and the capabilities the DaemonSet adds
//! each needed and together enough: the daemon run with the manifest's arguments and config
//! under exactly that capability set. The same checks run on the optional TLS variant (the
//! `#tls ` lines uncommented) and must catch a set of breakages made on purpose.
mod common;

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    str::FromStr as _,
    time::{Duration, Instant},
};

use caps::Capability;
use common::*;
use serde_json::Value;

/// The flag the optional TLS variant passes (exporter-toolkit's name), which `monitor run` may
/// not have yet.
const WEB_CONFIG_FLAG: &str = "--web.config.file";
/// The prefix of the optional TLS lines in the manifests.
const TLS_PREFIX: &str = "#tls ";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn manifests_dir() -> PathBuf {
    repo().join("deploy/kubernetes")
}

/// The validator's node_modules: MONITOR_TEST_NODE_MODULES (`cargo xtask test` sets it), else
/// the one `cargo xtask setup --test-deps` installed for the committed pins (its marker holds
/// them) in the tool cache.
fn node_modules() -> PathBuf {
    if let Some(dir) = std::env::var_os("MONITOR_TEST_NODE_MODULES") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("kubernetes-models").is_dir() && dir.join("typescript").is_dir(),
            "MONITOR_TEST_NODE_MODULES={} holds no kubernetes-models and typescript: run `cargo \
             xtask setup --test-deps`, which installs them and prints the directory",
            dir.display()
        );
        return dir;
    }
    let pins: Vec<u8> = ["package.json", "package-lock.json"]
        .iter()
        .flat_map(|name| {
            let path = repo().join("tests/kubernetes").join(name);
            std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        })
        .collect();
    // Where xtask's setup::cache_dir() is.
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("monitor-tools");
    let found = std::fs::read_dir(&cache)
        .into_iter()
        .flatten()
        .flatten()
        .find(|e| {
            e.file_name().to_string_lossy().starts_with("node-")
                && std::fs::read(e.path().join(".complete")).is_ok_and(|m| m == pins)
        });
    match found {
        Some(entry) => entry.path().join("node_modules"),
        None => panic!(
            "the Kubernetes manifest validator (kubernetes-models, TypeScript) is not installed \
             for tests/kubernetes/package-lock.json in {}: run `cargo xtask setup --test-deps` \
             (npm ci into the tool cache), or set MONITOR_TEST_NODE_MODULES",
            cache.display()
        ),
    }
}

/// One YAML document as the validator read it.
struct Document {
    file: PathBuf,
    line: u64,
    object: Value,
}

impl Document {
    fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or("")
    }

    fn at(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// The YAML files of a manifest directory, the kustomization (not an API object: read, not
/// checked against a schema) marked.
fn yaml_files(dir: &Path) -> Vec<(PathBuf, bool)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let schema = p.file_name().is_none_or(|n| n != "kustomization.yaml");
            (p, schema)
        })
        .collect()
}

/// Runs the validator once on every YAML file of `dirs`: per directory, its documents and the
/// schema errors found in it.
fn validate(dirs: &[PathBuf]) -> Vec<(Vec<Document>, Vec<String>)> {
    let script = repo().join("tests/kubernetes/validate.js");
    let mut cmd = Command::new("node");
    cmd.arg(&script).env("NODE_PATH", node_modules());
    for dir in dirs {
        for (file, schema) in yaml_files(dir) {
            if !schema {
                cmd.arg("--parse-only");
            }
            cmd.arg(file);
        }
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "node could not run ({e}): `cargo xtask setup --test-deps` installs Node.js and npm \
             (Debian's nodejs and npm) and the validator's modules"
        )
    });
    let code = out.status.code();
    assert!(
        code == Some(0) || code == Some(1),
        "{} could not check the manifests ({}):\n{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        let text = String::from_utf8_lossy(&out.stdout);
        panic!(
            "validate.js printed no JSON ({e}), {} bytes, starting:\n{}",
            text.len(),
            text.chars().take(2000).collect::<String>()
        )
    });
    let file_of = |v: &Value| PathBuf::from(v["file"].as_str().expect("a file"));
    let mut result: Vec<(Vec<Document>, Vec<String>)> =
        dirs.iter().map(|_| (Vec::new(), Vec::new())).collect();
    let dir_index = |file: &Path| {
        dirs.iter()
            .position(|d| file.parent() == Some(d.as_path()))
            .unwrap_or_else(|| panic!("{} is in none of the directories", file.display()))
    };
    for d in report["documents"].as_array().expect("documents") {
        let file = file_of(d);
        result[dir_index(&file)].0.push(Document {
            line: d["line"].as_u64().unwrap_or(0),
            object: d["object"].clone(),
            file,
        });
    }
    let errors = report["errors"].as_array().expect("errors");
    for e in errors {
        let file = file_of(e);
        let path = e["path"].as_str().unwrap_or("");
        result[dir_index(&file)].1.push(format!(
            "{}:{}: {}{}{} ({})",
            file.display(),
            e["line"],
            path,
            if path.is_empty() { "" } else { ": " },
            e["message"].as_str().unwrap_or("?"),
            e["by"].as_str().unwrap_or("?")
        ));
    }
    // The exit code and the errors must agree, or the JSON is not what the script meant.
    assert_eq!(
        code == Some(1),
        !errors.is_empty(),
        "validate.js exit {code:?}"
    );
    result
}

/// Everything wrong with one manifest directory: the validator's errors and the checks below.
fn problems(documents: &[Document], schema_errors: Vec<String>, dir: &Path) -> Vec<String> {
    let mut problems = schema_errors;
    if let Err(e) = consistency(documents, dir, &mut problems) {
        problems.push(e);
    }
    problems
}

/// The one document of `kind`.
fn one<'a>(documents: &'a [Document], kind: &str) -> Result<&'a Document, String> {
    let found: Vec<&Document> = documents.iter().filter(|d| d.kind() == kind).collect();
    match found.as_slice() {
        [d] => Ok(d),
        other => Err(format!(
            "expected one {kind}, found {}: {:?}",
            other.len(),
            other.iter().map(|d| d.at()).collect::<Vec<_>>()
        )),
    }
}

fn ptr<'a>(v: &'a Value, pointer: &str) -> &'a Value {
    v.pointer(pointer).unwrap_or(&Value::Null)
}

fn string_map(v: &Value) -> Vec<(String, String)> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether every label of `selector` is in `labels` (a matchLabels selector selects them).
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = string_map(selector);
    let labels = string_map(labels);
    !selector.is_empty() && selector.iter().all(|s| labels.contains(s))
}

/// The value of `--name=VALUE` or `--name VALUE` in `args`.
fn flag(args: &[String], name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if let Some(v) = a.strip_prefix(&prefix) {
            Some(v.to_owned())
        } else if a == name {
            args.get(i + 1).cloned()
        } else {
            None
        }
    })
}

/// The mount of the volume whose definition satisfies `is`, and that definition.
fn mount_of<'a>(
    pod: &'a Value,
    container: &'a Value,
    is: impl Fn(&Value) -> bool,
) -> Option<(&'a Value, &'a Value)> {
    let volume = ptr(pod, "/volumes").as_array()?.iter().find(|v| is(v))?;
    let mount = ptr(container, "/volumeMounts")
        .as_array()?
        .iter()
        .find(|m| m["name"] == volume["name"])?;
    Some((mount, volume))
}

/// The container port a probe or Service names (by name or number).
fn container_port(container: &Value, port: &Value) -> Option<u64> {
    let ports = ptr(container, "/ports").as_array()?;
    match port {
        Value::String(name) => ports
            .iter()
            .find(|p| p["name"] == name.as_str())
            .and_then(|p| p["containerPort"].as_u64()),
        Value::Number(n) => n
            .as_u64()
            .filter(|n| ports.iter().any(|p| p["containerPort"] == *n)),
        _ => None,
    }
}

/// The checks across objects, against monitor and its other deploy files. Problems found go to
/// `problems`; an Err is one that stops the rest (an object missing).
fn consistency(
    documents: &[Document],
    dir: &Path,
    problems: &mut Vec<String>,
) -> Result<(), String> {
    let mut problem = |p: String| problems.push(p);

    // The kustomization lists exactly the other files, and its namespace is the one made.
    let kustomization = documents
        .iter()
        .find(|d| {
            d.file
                .file_name()
                .is_some_and(|n| n == "kustomization.yaml")
        })
        .ok_or("no kustomization.yaml")?;
    let listed: BTreeSet<String> = ptr(&kustomization.object, "/resources")
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    let present: BTreeSet<String> = yaml_files(dir)
        .into_iter()
        .filter(|(_, schema)| *schema)
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for missing in present.difference(&listed) {
        problem(format!(
            "{}: resources does not list {missing}",
            kustomization.at()
        ));
    }
    for extra in listed.difference(&present) {
        problem(format!(
            "{}: resources lists {extra}, which is not there",
            kustomization.at()
        ));
    }
    let namespace = one(documents, "Namespace")?;
    if ptr(&kustomization.object, "/namespace") != ptr(&namespace.object, "/metadata/name") {
        problem(format!(
            "{}: namespace {} is not the Namespace made in {}",
            kustomization.at(),
            ptr(&kustomization.object, "/namespace"),
            namespace.at()
        ));
    }
    // hostPID, host paths and added capabilities are refused below the privileged level.
    if ptr(
        &namespace.object,
        "/metadata/labels/pod-security.kubernetes.io~1enforce",
    ) != "privileged"
    {
        problem(format!(
            "{}: pod-security.kubernetes.io/enforce must be privileged for hostPID, hostPath and added capabilities",
            namespace.at()
        ));
    }

    let ds = one(documents, "DaemonSet")?;
    let pod = ptr(&ds.object, "/spec/template/spec");
    let pod_labels = ptr(&ds.object, "/spec/template/metadata/labels");
    if !selects(ptr(&ds.object, "/spec/selector/matchLabels"), pod_labels) {
        problem(format!(
            "{}: the selector does not select the pod template's labels",
            ds.at()
        ));
    }
    if pod["hostPID"] != true {
        problem(format!(
            "{}: hostPID must be true: the target is in other pods",
            ds.at()
        ));
    }
    let containers = ptr(pod, "/containers")
        .as_array()
        .cloned()
        .unwrap_or_default();
    let [container] = containers.as_slice() else {
        return Err(format!(
            "{}: expected one container, found {}",
            ds.at(),
            containers.len()
        ));
    };
    if !container["command"].is_null() {
        problem(format!(
            "{}: command replaces the image's entrypoint (the monitor binary): give args only",
            ds.at()
        ));
    }
    let args: Vec<String> = ptr(container, "/args")
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a.as_str().unwrap_or("").to_owned())
        .collect();
    if args.first().map(String::as_str) != Some("run") {
        problem(format!(
            "{}: args must start with the run subcommand: {args:?}",
            ds.at()
        ));
    }
    check_args(&args, ds, &mut problem);
    if let Some(comm) = flag(&args, "--comm") {
        // The kernel keeps 15 bytes of a name (TASK_COMM_LEN): a longer one never matches.
        if comm.len() > 15 {
            problem(format!(
                "{}: --comm {comm:?} is longer than the 15 bytes of /proc/PID/comm",
                ds.at()
            ));
        }
    } else {
        problem(format!(
            "{}: no --comm: the example watches an application by name",
            ds.at()
        ));
    }

    // The config file is the ConfigMap's, mounted where --config points.
    let config_path = flag(&args, "--config").ok_or(format!("{}: no --config", ds.at()))?;
    let config_path = Path::new(&config_path);
    let configmap = one(documents, "ConfigMap")?;
    let (config_mount, _) = mount_of(pod, container, |v| {
        v["configMap"]["name"] == *ptr(&configmap.object, "/metadata/name")
    })
    .ok_or(format!(
        "{}: the ConfigMap {} is not mounted",
        ds.at(),
        configmap.at()
    ))?;
    if config_mount["mountPath"].as_str().map(Path::new) != config_path.parent() {
        problem(format!(
            "{}: --config {} is not in the ConfigMap's mount {}",
            ds.at(),
            config_path.display(),
            config_mount["mountPath"]
        ));
    }
    let key = config_path.file_name().unwrap().to_string_lossy();
    let toml_text = ptr(&configmap.object, &format!("/data/{key}"))
        .as_str()
        .ok_or(format!("{}: no data key {key} (--config)", configmap.at()))?;
    check_config(toml_text, &configmap.at(), &mut problem);
    let config: toml::Table = toml_text
        .parse()
        .map_err(|e| format!("{}: {e}", configmap.at()))?;

    // Served on the pod's addresses, on the port the probes, the Service and Prometheus use.
    let listen: SocketAddr = match flag(&args, "--listen") {
        Some(l) => l
            .parse()
            .map_err(|e| format!("{}: --listen {l}: {e}", ds.at()))?,
        None => config
            .get("listen")
            .and_then(|l| l.as_str())
            .unwrap_or("127.0.0.1:8001")
            .parse()
            .map_err(|e| format!("{}: listen: {e}", configmap.at()))?,
    };
    if !listen.ip().is_unspecified() {
        problem(format!(
            "{}: listen {listen} is not every address of the pod: Prometheus scrapes the pod IP",
            configmap.at()
        ));
    }
    let metrics_port = container_port(container, &Value::from("metrics"));
    if metrics_port != Some(u64::from(listen.port())) {
        problem(format!(
            "{}: the container port named metrics ({metrics_port:?}) is not the daemon's {}",
            ds.at(),
            listen.port()
        ));
    }
    let tls = flag(&args, WEB_CONFIG_FLAG).is_some();
    for (probe, path) in [
        ("livenessProbe", "/-/healthy"),
        ("readinessProbe", "/-/ready"),
    ] {
        let get = &container[probe]["httpGet"];
        if get["path"] != path {
            problem(format!(
                "{}: {probe} must GET {path}, not {}",
                ds.at(),
                get["path"]
            ));
        }
        if container_port(container, &get["port"]) != Some(u64::from(listen.port())) {
            problem(format!(
                "{}: {probe}'s port {} is not the daemon's",
                ds.at(),
                get["port"]
            ));
        }
        let scheme = get["scheme"].as_str().unwrap_or("HTTP");
        if scheme != if tls { "HTTPS" } else { "HTTP" } {
            problem(format!(
                "{}: {probe} scheme {scheme} with TLS {tls}",
                ds.at()
            ));
        }
    }

    // The state directory outlives the pod, on the node.
    let state_dir = config
        .get("alerting")
        .and_then(|a| a.get("state_dir"))
        .and_then(|s| s.as_str())
        .unwrap_or("/var/lib/monitor");
    match mount_of(pod, container, |v| {
        !v["hostPath"].is_null() && v["hostPath"]["path"] != "/sys/fs/cgroup"
    }) {
        Some((m, v)) if m["mountPath"] == state_dir && m["readOnly"] != true => {
            if v["hostPath"]["type"] != "DirectoryOrCreate" {
                problem(format!(
                    "{}: the state hostPath must be DirectoryOrCreate",
                    ds.at()
                ));
            }
        }
        _ => problem(format!(
            "{}: state_dir {state_dir} is not a writable hostPath mount",
            ds.at()
        )),
    }
    // With a read-only root, SQLite (the history store) needs a writable temporary directory.
    if ptr(container, "/securityContext/readOnlyRootFilesystem") == true
        && !ptr(container, "/volumeMounts")
            .as_array()
            .is_some_and(|ms| {
                ms.iter()
                    .any(|m| m["mountPath"] == "/tmp" && m["readOnly"] != true)
            })
    {
        problem(format!(
            "{}: the root filesystem is read-only and /tmp is no writable mount (SQLite's temporary files)",
            ds.at()
        ));
    }
    match mount_of(pod, container, |v| {
        v["hostPath"]["path"] == "/sys/fs/cgroup"
    }) {
        Some((m, _)) if m["readOnly"] == true => {}
        _ => problem(format!(
            "{}: the host's /sys/fs/cgroup must be mounted read-only",
            ds.at()
        )),
    }
    if tls {
        let web = flag(&args, WEB_CONFIG_FLAG).unwrap_or_default();
        match mount_of(pod, container, |v| !v["secret"].is_null()) {
            Some((m, _)) if m["mountPath"].as_str().map(Path::new) == Path::new(&web).parent() => {}
            _ => problem(format!(
                "{}: {WEB_CONFIG_FLAG} {web} is not in a Secret's mount",
                ds.at()
            )),
        }
    }

    check_security(ptr(container, "/securityContext"), ds, &mut problem);

    // The headless Service selects the pods and names the port.
    let service = one(documents, "Service")?;
    if !selects(ptr(&service.object, "/spec/selector"), pod_labels) {
        problem(format!(
            "{}: the selector does not select the DaemonSet's pods",
            service.at()
        ));
    }
    if ptr(&service.object, "/spec/clusterIP") != "None" {
        problem(format!(
            "{}: not headless: Prometheus must reach every pod",
            service.at()
        ));
    }
    let service_ports = ptr(&service.object, "/spec/ports")
        .as_array()
        .cloned()
        .unwrap_or_default();
    for p in &service_ports {
        let target = if p["targetPort"].is_null() {
            &p["port"]
        } else {
            &p["targetPort"]
        };
        if container_port(container, target) != Some(u64::from(listen.port())) {
            problem(format!(
                "{}: port {} goes to {target}, not the daemon's",
                service.at(),
                p["name"]
            ));
        }
    }
    // The alerts on monitor itself select its scrape job, which the operator names after the
    // Service.
    let service_name = ptr(&service.object, "/metadata/name")
        .as_str()
        .unwrap_or("");
    let rules =
        std::fs::read_to_string(repo().join("deploy/prometheus/monitor.rules.yml")).unwrap();
    if !rules.contains(&format!("job=\\\"{service_name}\\\"")) {
        problem(format!(
            "{}: the scrape job will be {service_name:?}, which deploy/prometheus/monitor.rules.yml does not select",
            service.at()
        ));
    }

    // The ServiceMonitor selects the Service and scrapes its named port at /metrics.
    let sm = one(documents, "ServiceMonitor")?;
    if !selects(
        ptr(&sm.object, "/spec/selector/matchLabels"),
        ptr(&service.object, "/metadata/labels"),
    ) {
        problem(format!(
            "{}: the selector does not select the Service's labels",
            sm.at()
        ));
    }
    let endpoints = ptr(&sm.object, "/spec/endpoints")
        .as_array()
        .cloned()
        .unwrap_or_default();
    if endpoints.is_empty() {
        problem(format!("{}: no endpoints", sm.at()));
    }
    for e in &endpoints {
        if !service_ports.iter().any(|p| p["name"] == e["port"]) {
            problem(format!(
                "{}: endpoint port {} is no port name of the Service",
                sm.at(),
                e["port"]
            ));
        }
        if !(e["path"].is_null() || e["path"] == "/metrics") {
            problem(format!(
                "{}: monitor serves /metrics, not {}",
                sm.at(),
                e["path"]
            ));
        }
        let scheme = e["scheme"].as_str().unwrap_or("http");
        if scheme != if tls { "https" } else { "http" } {
            problem(format!(
                "{}: endpoint scheme {scheme} with TLS {tls}",
                sm.at()
            ));
        }
    }
    Ok(())
}

/// Capabilities the kernel knows, the refusals only the runtime would report, and the
/// settings bpf(2) needs.
fn check_security(sc: &Value, ds: &Document, problem: &mut impl FnMut(String)) {
    for (key, want) in [
        ("privileged", false),
        ("allowPrivilegeEscalation", false),
        ("readOnlyRootFilesystem", true),
    ] {
        if sc[key] != want {
            problem(format!("{}: securityContext.{key} must be {want}", ds.at()));
        }
    }
    if ptr(sc, "/capabilities/drop") != &serde_json::json!(["ALL"]) {
        problem(format!("{}: capabilities.drop must be [ALL]", ds.at()));
    }
    for name in added_capabilities(sc) {
        if let Err(e) = capability(&name) {
            problem(format!("{}: capabilities.add: {e}", ds.at()));
        }
    }
    // containerd's RuntimeDefault allows bpf(2) only with CAP_SYS_ADMIN.
    let seccomp = ptr(sc, "/seccompProfile/type")
        .as_str()
        .unwrap_or("RuntimeDefault");
    if seccomp == "RuntimeDefault" {
        problem(format!(
            "{}: seccompProfile RuntimeDefault refuses bpf(2) without CAP_SYS_ADMIN: Unconfined or a Localhost profile",
            ds.at()
        ));
    }
}

fn added_capabilities(sc: &Value) -> Vec<String> {
    ptr(sc, "/capabilities/add")
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c.as_str().unwrap_or("").to_owned())
        .collect()
}

/// A capability as Kubernetes names it (BPF or CAP_BPF).
fn capability(name: &str) -> Result<Capability, String> {
    let full = if name.starts_with("CAP_") {
        name.to_owned()
    } else {
        format!("CAP_{name}")
    };
    Capability::from_str(&full).map_err(|_| format!("{name} is no capability the kernel has"))
}

/// The real CLI parses the arguments: `monitor ARGS --help` parses each flag and value and
/// stops before the checks that need a whole command line (the live test runs it whole).
fn check_args(args: &[String], ds: &Document, problem: &mut impl FnMut(String)) {
    let out = Command::new(monitor_bin())
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    if !out.status.success() {
        problem(format!(
            "{}: `monitor {}` is refused: {}",
            ds.at(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
}

/// `monitor check-config` on the ConfigMap's file.
fn check_config(text: &str, at: &str, problem: &mut impl FnMut(String)) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("monitor.toml");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(monitor_bin())
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    if !out.status.success() {
        problem(format!(
            "{at}: monitor check-config refuses its monitor.toml: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
}

/// A copy of the manifests with the optional `#tls ` lines uncommented (what the README's sed
/// does).
fn tls_variant(into: &Path) -> PathBuf {
    let dir = into.join("kubernetes-tls");
    std::fs::create_dir_all(&dir).unwrap();
    let mut changed = 0;
    for (file, _) in yaml_files(&manifests_dir()) {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut out = String::new();
        for line in text.lines() {
            let trimmed = line.trim_start();
            match trimmed.strip_prefix(TLS_PREFIX) {
                Some(rest) => {
                    changed += 1;
                    out.push_str(&line[..line.len() - trimmed.len()]);
                    out.push_str(rest);
                }
                None => out.push_str(line),
            }
            out.push('\n');
        }
        std::fs::write(dir.join(file.file_name().unwrap()), out).unwrap();
    }
    assert!(changed > 0, "no {TLS_PREFIX:?} lines in the manifests");
    dir
}

fn report(what: &str, problems: &[String]) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

#[test]
fn manifests_are_valid_and_consistent() {
    let scratch = tempfile::tempdir().unwrap();
    let dirs = [manifests_dir(), tls_variant(scratch.path())];
    let mut checked = validate(&dirs).into_iter();
    let (documents, errors) = checked.next().unwrap();
    assert_eq!(
        documents.iter().map(|d| d.kind()).collect::<BTreeSet<_>>(),
        BTreeSet::from([
            "ConfigMap",
            "DaemonSet",
            "Kustomization",
            "Namespace",
            "Service",
            "ServiceMonitor"
        ]),
        "the objects deploy/kubernetes is expected to hold"
    );
    report("deploy/kubernetes", &problems(&documents, errors, &dirs[0]));
    let (documents, errors) = checked.next().unwrap();
    report(
        "deploy/kubernetes with the #tls lines uncommented",
        &problems(&documents, errors, &dirs[1]),
    );
}

/// Each breakage, made on a copy, must be reported naming what is wrong: the schema checks are
/// strict (unknown fields, types, required fields, enums) and the consistency checks bite.
#[test]
fn breakages_are_caught() {
    // (file, text, replacement, what the report must name)
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "daemonset.yaml",
            "hostPID: true",
            "hostPid: true",
            "hostPid",
        ),
        (
            "daemonset.yaml",
            "containerPort: 8001",
            "containerPort: \"8001\"",
            "containerPort",
        ),
        (
            "daemonset.yaml",
            "  selector:\n    matchLabels:\n      app.kubernetes.io/name: monitor\n  updateStrategy:",
            "  updateStrategy:",
            "selector",
        ),
        (
            "daemonset.yaml",
            "- name: monitor\n          # Built",
            "- # Built",
            "required property name",
        ),
        ("daemonset.yaml", "- PERFMON", "- PREFMON", "PREFMON"),
        (
            "daemonset.yaml",
            "mountPropagation: None",
            "mountPropagation: none",
            "mountPropagation",
        ),
        (
            "daemonset.yaml",
            "path: /-/ready",
            "path: /ready",
            "/-/ready",
        ),
        (
            "daemonset.yaml",
            "- --comm=my-app",
            "- --com=my-app",
            "--com",
        ),
        (
            "daemonset.yaml",
            "- --comm=my-app",
            "- --comm=my-application-server",
            "15 bytes",
        ),
        (
            "daemonset.yaml",
            "type: Unconfined\n",
            "type: RuntimeDefault\n",
            "seccompProfile",
        ),
        (
            "daemonset.yaml",
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesystem: false",
            "readOnlyRootFilesystem",
        ),
        (
            "daemonset.yaml",
            "mountPath: /etc/monitor\n",
            "mountPath: /etc/monitor/conf\n",
            "--config",
        ),
        (
            "service.yaml",
            "  selector:\n    app.kubernetes.io/name: monitor",
            "  selector:\n    app.kubernetes.io/name: monitr",
            "select",
        ),
        (
            "service.yaml",
            "clusterIP: None",
            "clusterIP: None\n  clusterIp: None",
            "clusterIp",
        ),
        (
            "service.yaml",
            "name: monitor\n  labels",
            "name: monitor-metrics\n  labels",
            "monitor.rules.yml",
        ),
        (
            "servicemonitor.yaml",
            "interval: 15s",
            "intervall: 15s",
            "intervall",
        ),
        (
            "servicemonitor.yaml",
            "- port: metrics",
            "- port: metric",
            "metric",
        ),
        ("servicemonitor.yaml", "path: /metrics", "path: 9", "path"),
        (
            "configmap.yaml",
            "openapi = false",
            "openapi = \"no\"",
            "openapi",
        ),
        (
            "configmap.yaml",
            "listen = \"0.0.0.0:8001\"",
            "listen = \"127.0.0.1:8001\"",
            "listen",
        ),
        (
            "configmap.yaml",
            "  name: monitor-config\n",
            "  name: monitor-config\n  name: other\n",
            "unique",
        ),
        (
            "kustomization.yaml",
            "  - service.yaml\n",
            "",
            "service.yaml",
        ),
        (
            "daemonset.yaml",
            "            - name: tmp\n              mountPath: /tmp\n",
            "",
            "/tmp",
        ),
        (
            "namespace.yaml",
            "enforce: privileged",
            "enforce: baseline",
            "privileged",
        ),
    ];
    let scratch = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = cases
        .iter()
        .enumerate()
        .map(|(i, (file, from, to, _))| {
            let dir = scratch.path().join(format!("case{i}"));
            std::fs::create_dir(&dir).unwrap();
            for (f, _) in yaml_files(&manifests_dir()) {
                std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
            }
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(
                text.matches(from).count(),
                1,
                "case {i}: {from:?} must occur once in {file} for the breakage to be the one meant"
            );
            std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
            dir
        })
        .collect();
    let mut missed = Vec::new();
    for ((i, (file, from, to, expect)), (documents, errors)) in
        cases.iter().enumerate().zip(validate(&dirs))
    {
        let found = problems(&documents, errors, &dirs[i]);
        if let Some(caught) = found.iter().find(|p| p.contains(expect)) {
            eprintln!("caught {file}: {from:?} -> {to:?}: {caught}");
        } else {
            missed.push(format!(
                "{file}: {from:?} -> {to:?}: nothing names {expect:?}; reported: {found:#?}"
            ));
        }
    }
    assert!(
        missed.is_empty(),
        "breakages not caught:\n{}",
        missed.join("\n")
    );
}

/// What goes wrong without each capability the DaemonSet adds, as this test observes it.
enum Without {
    /// The kernel programs do not load: /-/ready is 503.
    NotReady,
    /// The target's open fds are not counted (its fd directory is its owner's, mode 0500).
    FdsUncounted,
    /// The daemon cannot empty its bounding set after attaching: BPF and PERFMON stay in it
    /// (its effective and permitted sets drop them all the same).
    KeepsCapabilities,
    /// Nothing this kernel shows (why, in the string).
    NotObservableHere(&'static str),
}

fn without(cap: Capability) -> Option<Without> {
    Some(match cap {
        Capability::CAP_BPF | Capability::CAP_PERFMON => Without::NotReady,
        Capability::CAP_DAC_READ_SEARCH => Without::FdsUncounted,
        Capability::CAP_SETPCAP => Without::KeepsCapabilities,
        Capability::CAP_SYS_RESOURCE => Without::NotObservableHere(
            "it raises RLIMIT_MEMLOCK, which only kernels before 5.11 charge BPF maps to",
        ),
        _ => return None,
    })
}

/// What one run of the daemon showed, once it had sampled.
struct Observed {
    ready: (u16, String),
    healthy: u16,
    metrics: String,
    /// The daemon's effective capabilities after its drop.
    effective: u64,
    /// Its bounding set after the drop.
    bounding: u64,
    log: String,
    /// What strace wrote, when asked for.
    syscalls: Option<String>,
}

/// How the DaemonSet runs the daemon, taken from the manifests.
struct Setup {
    args: Vec<String>,
    config: toml::Table,
    probes: (String, String),
    target: String,
    /// readOnlyRootFilesystem.
    read_only_root: bool,
    /// Where writable emptyDir volumes are mounted (tmpfs in the sandbox).
    empty_dirs: Vec<String>,
}

impl Setup {
    fn from(documents: &[Document]) -> Self {
        let ds = one(documents, "DaemonSet").unwrap();
        let pod = ptr(&ds.object, "/spec/template/spec");
        let container = ptr(pod, "/containers/0");
        let args: Vec<String> = ptr(container, "/args")
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        let path = |probe: &str| {
            ptr(container, &format!("/{probe}/httpGet/path"))
                .as_str()
                .unwrap()
                .to_owned()
        };
        let configmap = one(documents, "ConfigMap").unwrap();
        let empty_dirs = ptr(container, "/volumeMounts")
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["readOnly"] != true)
            .filter(|m| {
                ptr(pod, "/volumes")
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|v| v["name"] == m["name"] && !v["emptyDir"].is_null())
            })
            .map(|m| m["mountPath"].as_str().unwrap().to_owned())
            .collect();
        Self {
            target: flag(&args, "--comm").unwrap(),
            config: ptr(&configmap.object, "/data/monitor.toml")
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
            probes: (path("livenessProbe"), path("readinessProbe")),
            read_only_root: ptr(container, "/securityContext/readOnlyRootFilesystem") == true,
            empty_dirs,
            args,
        }
    }

    /// Runs `monitor ARGS` as the container would: in a mount namespace of its own whose root
    /// is read-only when the manifest's is, with a tmpfs at each emptyDir mount; under `setpriv`
    /// giving exactly what a container with `caps` added gets (uid 0: the bounding set becomes
    /// the permitted and effective sets at exec; allowPrivilegeEscalation false is
    /// no_new_privs). The config is the ConfigMap's, listening on loopback and keeping its state
    /// in a scratch directory (writable, as the hostPath is). Under strace when `trace`.
    fn observe(&self, caps: &[Capability], trace: bool) -> Observed {
        // Not under /tmp, which the sandbox covers with its tmpfs.
        let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let port = free_port();
        let mut config = self.config.clone();
        config.insert("listen".into(), format!("127.0.0.1:{port}").into());
        let alerting = config
            .entry("alerting")
            .or_insert_with(|| toml::Table::new().into())
            .as_table_mut()
            .unwrap();
        alerting.insert(
            "state_dir".into(),
            scratch.path().join("state").display().to_string().into(),
        );
        let config_file = scratch.path().join("monitor.toml");
        std::fs::write(&config_file, toml::to_string(&config).unwrap()).unwrap();
        let mut args = self.args.clone();
        args.retain(|a| !a.starts_with("--config"));
        args.push(format!("--config={}", config_file.display()));
        let bounding: Vec<String> = caps
            .iter()
            .map(|c| {
                format!(
                    "+{}",
                    c.to_string().trim_start_matches("CAP_").to_lowercase()
                )
            })
            .collect();
        // The sandbox: the scratch directory a mount of its own (so it stays writable), the
        // emptyDirs, then the root read-only; propagation private, so the host sees none of it.
        let sandbox = "set -e; scratch=$1; ro=$2; shift 2; mount --bind \"$scratch\" \"$scratch\"; \
                       while [ \"$1\" != -- ]; do mount -t tmpfs -o size=64m tmpfs \"$1\"; shift; done; \
                       shift; if [ \"$ro\" = 1 ]; then mount -o remount,bind,ro /; fi; exec \"$@\"";
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            sandbox,
            "sh",
        ])
        .arg(scratch.path())
        .arg(if self.read_only_root { "1" } else { "0" })
        .args(&self.empty_dirs)
        .arg("--");
        // strace, when asked, follows setpriv into monitor and writes the calls it is told to
        // trace (seccomp-bpf: the others do not stop).
        let trace_file = scratch.path().join("syscalls");
        if trace {
            cmd.args([
                "strace",
                "-f",
                "-qq",
                "--seccomp-bpf",
                "-e",
                "trace=bpf,perf_event_open",
                "-o",
            ])
            .arg(&trace_file);
        }
        // Its own process group, which stop() ends whole (strace and the daemon it runs).
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let log_file = scratch.path().join("log");
        let mut child = cmd
            .args([
                "setpriv",
                "--inh-caps=-all",
                &format!("--bounding-set=-all,{}", bounding.join(",")),
                "--no-new-privs",
            ])
            .arg(monitor_bin())
            .args(&args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_file).unwrap())
            .spawn()
            .expect("starting unshare (util-linux)");
        let get = |path: &str| common::http_get(port, path).ok();
        let log = || std::fs::read_to_string(&log_file).unwrap_or_default();
        let metric = |text: &str, name: &str| metric_value(text, name, &[]);
        // Loading the programs parses the kernel's BTF: seconds on a loaded host. Sampled, and
        // the first sample's history batch written (or refused), unless no history is kept.
        let deadline = Instant::now() + Duration::from_secs(60);
        let (ready, metrics) = loop {
            if let (Some((status, body)), Some((_, metrics))) =
                (get(&self.probes.1), get("/metrics"))
            {
                let target_seen =
                    metrics.contains(&format!("app_up{{target=\"{}\"}}", self.target));
                let written = metric(&metrics, "monitor_history_points_written_total")
                    .is_none_or(|n| n > 0.0)
                    || metric(&metrics, "monitor_history_write_errors_total")
                        .is_some_and(|n| n > 0.0);
                if target_seen && written && !body.contains("no sample taken yet") {
                    break ((status, body), metrics);
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "monitor exited ({status}) under capabilities {caps:?}:\n{}",
                    log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "monitor did not sample within 60 s:\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let healthy = get(&self.probes.0).map_or(0, |(s, _)| s);
        // unshare and sh exec what follows them; under strace the daemon is strace's child.
        let daemon = match trace {
            true => std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
                .unwrap()
                .split_whitespace()
                .next()
                .expect("strace's child")
                .parse()
                .unwrap(),
            false => child.id(),
        };
        let status = std::fs::read_to_string(format!("/proc/{daemon}/status")).unwrap();
        let mask = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
                .unwrap()
        };
        let (effective, bounding) = (mask("CapEff:"), mask("CapBnd:"));
        stop(&mut child);
        Observed {
            ready,
            healthy,
            metrics,
            effective,
            bounding,
            log: log(),
            syscalls: trace.then(|| std::fs::read_to_string(&trace_file).unwrap()),
        }
    }
}

/// Ends the process group `child` leads (the daemon, and strace around it).
fn stop(child: &mut Child) {
    let group = -(child.id() as i32);
    // SAFETY: kill(2) on the process group of our own child.
    unsafe { libc::kill(group, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            // SAFETY: as above.
            unsafe { libc::kill(group, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The DaemonSet's capability set, arguments, monitor.toml and read-only root run the real
/// daemon against a target owned by another user (as an application's pod is): with the set,
/// it is ready (every program attached), counts the target's fds as /proc does, writes its
/// history and drops all but what it keeps; without any one of the capabilities, something
/// this test can see goes wrong (or the reason it cannot be seen on this kernel is stated).
#[test]
fn manifest_capabilities_are_needed_and_enough() {
    require_root();
    let (documents, errors) = validate(&[manifests_dir()]).pop().unwrap();
    report("deploy/kubernetes", &errors);
    let setup = Setup::from(&documents);
    let ds = one(&documents, "DaemonSet").unwrap();
    let caps: Vec<Capability> = added_capabilities(ptr(
        &ds.object,
        "/spec/template/spec/containers/0/securityContext",
    ))
    .iter()
    .map(|c| capability(c).unwrap())
    .collect();
    let comm = setup.target.clone();

    // The target: sleep under the --comm name, run by nobody (from a directory it may enter).
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let program = dir.path().join(&comm);
    let sleep = ["/usr/bin/sleep", "/bin/sleep"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("sleep");
    std::fs::copy(sleep, &program).unwrap();
    let target = Reaped(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&program)
            .arg("600")
            .spawn()
            .unwrap(),
    );
    let target_pid = target.0.id();
    // Its comm is set at exec: wait for it, so the daemon does not start before the target is.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{target_pid}/comm"))
        .map(|c| c.trim().to_owned())
        .ok()
        .as_deref()
        != Some(comm.as_str())
    {
        assert!(Instant::now() < deadline, "the target never ran as {comm}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The truth, read as root with every capability.
    let fds = std::fs::read_dir(format!("/proc/{target_pid}/fd"))
        .unwrap()
        .count() as f64;
    let value =
        |o: &Observed, name: &str| metric_value(&o.metrics, name, &[("target", comm.as_str())]);

    let all = setup.observe(&caps, true);
    let context = |o: &Observed| format!("ready {:?}\nlog:\n{}", o.ready, o.log);
    assert_eq!(all.healthy, 200, "{}", context(&all));
    assert_eq!(
        all.ready.0,
        200,
        "not ready with the manifest's capabilities: {}",
        context(&all)
    );
    assert_eq!(value(&all, "app_up"), Some(1.0), "{}", context(&all));
    assert_eq!(value(&all, "app_open_fds"), Some(fds), "{}", context(&all));
    let attached = samples(&all.metrics, "monitor_ebpf_attached");
    assert!(
        !attached.is_empty() && attached.iter().all(|(_, v)| *v == 1.0),
        "{attached:?}"
    );
    // The history store works under the read-only root (its directory and SQLite's temporary
    // files are where the manifest's volumes are).
    let history = |name: &str| metric_value(&all.metrics, name, &[]);
    assert!(
        history("monitor_history_points_written_total").is_some_and(|n| n > 0.0)
            && history("monitor_history_write_errors_total") == Some(0.0),
        "the history store did not write under the manifest's mounts: {}",
        context(&all)
    );
    // What the daemon keeps: DAC_READ_SEARCH, and BPF on kernels that check it at every map
    // access (before 6.5).
    let kept = Capability::CAP_DAC_READ_SEARCH.bitmask();
    let allowed = if kernel_version() >= (6, 5) {
        vec![kept]
    } else {
        vec![kept, kept | Capability::CAP_BPF.bitmask()]
    };
    assert!(
        allowed.contains(&all.effective),
        "effective capabilities {:x} after the drop: {}",
        all.effective,
        context(&all)
    );

    // What daemonset.yaml says of seccomp: of the calls a runtime's default profile keeps from
    // a container without CAP_SYS_ADMIN, monitor makes bpf(2) and never perf_event_open(2) (raw
    // tracepoints attach through bpf(2)), so a Localhost profile needs bpf added and no more.
    let calls = all.syscalls.as_deref().unwrap();
    assert!(
        calls.contains("bpf(BPF_PROG_LOAD") && calls.contains("bpf(BPF_RAW_TRACEPOINT_OPEN"),
        "strace saw no program loads or raw tracepoint attaches:\n{calls}"
    );
    assert!(
        !calls.contains("perf_event_open("),
        "monitor calls perf_event_open(2): daemonset.yaml's seccomp note (and the Localhost \
         profile it describes) must add it:\n{}",
        calls
            .lines()
            .filter(|l| l.contains("perf_event_open"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    for &cap in &caps {
        let Some(effect) = without(cap) else {
            panic!(
                "the DaemonSet adds {cap}, and this test does not know what goes wrong without it: \
                 add it to `without` with what it is needed for, or take it out of the manifest"
            );
        };
        if let Without::NotObservableHere(why) = effect {
            eprintln!("note: {cap} not tested for need here: {why}");
            continue;
        }
        let fewer: Vec<Capability> = caps.iter().copied().filter(|&c| c != cap).collect();
        let o = setup.observe(&fewer, false);
        let shown = match effect {
            Without::NotReady => o.ready.0 == 503 && o.ready.1.contains("kernel program"),
            Without::FdsUncounted => value(&o, "app_open_fds") != Some(fds),
            Without::KeepsCapabilities => {
                let bpf_perfmon = Capability::CAP_BPF.bitmask() | Capability::CAP_PERFMON.bitmask();
                o.bounding & bpf_perfmon == bpf_perfmon
            }
            Without::NotObservableHere(_) => unreachable!(),
        };
        assert!(
            shown,
            "without {cap} the daemon showed nothing of what it is needed for: {}\neffective {:x}",
            context(&o),
            o.effective
        );
    }
    drop(target);
}

/// A child killed and reaped when dropped, a failed assertion included.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
