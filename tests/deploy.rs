//! The deploy files: every bcproxy config they carry or reference passes `bcproxy check`, and
//! the Dockerfile and systemd unit point at things that exist. (YAML syntax is checked by
//! `.ci/run`, with PyYAML.)

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_bcproxy");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `bcproxy check` on a config with the deploy-time paths pointed at temporary files.
fn check(config: &Path, env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("api-key");
    std::fs::write(&key, "test-key\n").unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["check", "--config"])
        .arg(config)
        .env_remove("BCPROXY_CONFIG");
    let text = std::fs::read_to_string(config).unwrap();
    if text.contains("api_key_file") {
        cmd.env("BCPROXY__UPSTREAM__API_KEY_FILE", &key);
    }
    if text.contains("redis_password_file") {
        let password = dir.path().join("redis-password");
        std::fs::write(&password, "redis-pw\n").unwrap();
        cmd.env("BCPROXY__CLUSTER__REDIS_PASSWORD_FILE", password);
    }
    if text.contains("state_file") {
        cmd.env(
            "BCPROXY__BUDGET__STATE_FILE",
            dir.path().join("budget.json"),
        );
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The block scalar under `bcproxy.toml: |` in a Kubernetes manifest.
fn config_map_toml(manifest: &str) -> String {
    let mut lines = manifest
        .lines()
        .skip_while(|l| l.trim() != "bcproxy.toml: |")
        .skip(1);
    let first = lines
        .clone()
        .find(|l| !l.trim().is_empty())
        .expect("a TOML block");
    let indent = first.len() - first.trim_start().len();
    let mut toml = String::new();
    for line in lines.by_ref() {
        if !line.trim().is_empty() && line.len() - line.trim_start().len() < indent {
            break;
        }
        toml.push_str(line.get(indent..).unwrap_or(""));
        toml.push('\n');
    }
    toml
}

#[test]
fn every_deploy_config_passes_check() {
    let root = root();
    check(&root.join("deploy/bcproxy.toml"), &[]);
    check(
        &root.join("deploy/compose/demo.toml"),
        &[("BCPROXY__UPSTREAM__API_KEY", "sim-api-key-0000")],
    );
    let manifest = std::fs::read_to_string(root.join("deploy/kubernetes/sidecar.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let embedded = dir.path().join("bcproxy.toml");
    std::fs::write(&embedded, config_map_toml(&manifest)).unwrap();
    assert!(
        std::fs::read_to_string(&embedded)
            .unwrap()
            .contains("[upstream]")
    );
    check(&embedded, &[]);
    // The manifest mounts what the config reads, and probes the admin port it opens.
    assert!(manifest.contains("mountPath: /etc/bcproxy/secret"));
    assert!(manifest.contains("path: /readyz") && manifest.contains("path: /healthz"));
    assert!(
        manifest.contains("containerPort: 9090") && manifest.contains("addr = \"0.0.0.0:9090\"")
    );
}

/// The cluster example: its config passes `check`, it runs several replicas, mounts the Redis
/// password the config reads, names each sidecar after its pod, and its Redis never evicts the
/// budget's keys. The compose demo runs two sidecars and a Redis.
#[test]
fn the_cluster_examples_share_one_redis() {
    let root = root();
    let manifest = std::fs::read_to_string(root.join("deploy/kubernetes/cluster.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let embedded = dir.path().join("bcproxy.toml");
    let toml = config_map_toml(&manifest);
    assert!(
        toml.contains("[cluster]") && toml.contains("redis_url = \"redis://bcproxy-redis:6379/0\"")
    );
    std::fs::write(&embedded, &toml).unwrap();
    check(&embedded, &[]);
    assert!(manifest.contains("replicas: 3"));
    assert!(manifest.contains("expected_instances = 3"));
    assert!(manifest.contains("mountPath: /etc/bcproxy/redis"));
    assert!(manifest.contains("name: BCPROXY__CLUSTER__INSTANCE"));
    assert!(manifest.contains("fieldPath: metadata.name"));
    assert!(manifest.contains("noeviction"));
    assert!(manifest.contains("kind: Service") && manifest.contains("name: bcproxy-redis"));

    let compose = std::fs::read_to_string(root.join("deploy/compose/compose.yaml")).unwrap();
    assert!(compose.contains("\n  redis:\n") && compose.contains("\n  bcproxy-b:\n"));
    assert!(compose.contains("127.0.0.1:8082:8080"));
    let demo = std::fs::read_to_string(root.join("deploy/compose/demo.toml")).unwrap();
    assert!(demo.contains("redis_url = \"redis://redis:6379/0\""));
}

#[test]
fn dockerfile_and_unit_point_at_what_exists() {
    let root = root();
    let dockerfile = std::fs::read_to_string(root.join("deploy/Dockerfile")).unwrap();
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for source in &parts[1..parts.len() - 1] {
            assert!(
                root.join(source).exists(),
                "Dockerfile copies {source}, which does not exist"
            );
        }
    }
    assert!(dockerfile.contains("USER nonroot"));
    assert!(dockerfile.contains("HEALTHCHECK") && dockerfile.contains("\"health\""));

    let unit = std::fs::read_to_string(root.join("deploy/systemd/bcproxy.service")).unwrap();
    for section in ["[Unit]", "[Service]", "[Install]"] {
        assert!(unit.contains(section), "the unit lacks {section}");
    }
    assert!(
        unit.contains("ExecStart=/usr/local/bin/bcproxy run --config /etc/bcproxy/bcproxy.toml")
    );
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    for key in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "LoadCredential=api-key",
    ] {
        assert!(unit.contains(key), "the unit lacks {key}");
    }
    let compose = std::fs::read_to_string(root.join("deploy/compose/compose.yaml")).unwrap();
    assert!(compose.contains("./demo.toml:/etc/bcproxy/demo.toml"));
    assert!(
        compose.contains("127.0.0.1:8080:8080"),
        "the demo must publish on loopback only"
    );
}
