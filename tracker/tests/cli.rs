//! The `tracker` command line: token management, studies from YAML specs, and the refusals of
//! `serve` on unsafe or bad settings, each with a readable message and a non-zero exit.

use std::process::{Command, Output};

fn tracker(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tracker")).args(args).env_remove("RUST_LOG").output().expect("run tracker")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn tokens_are_created_listed_and_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}/t.db", dir.path().display());
    let created = tracker(&["token", "create", "--name", "alice", "--scope", "write", "--backend-store-uri", &store]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let token = text(&created.stdout).trim().to_owned();
    assert!(token.starts_with("trk_") && token.len() > 80, "printed token: {token}");

    let list = text(&tracker(&["token", "list", "--backend-store-uri", &store]).stdout);
    assert!(list.contains("alice") && list.contains("write") && list.contains("active"), "{list}");
    assert!(!list.contains(token.rsplit('_').next().unwrap()), "list never shows the secret");

    let revoked = tracker(&["token", "revoke", "alice", "--backend-store-uri", &store]);
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    let list = text(&tracker(&["token", "list", "--backend-store-uri", &store]).stdout);
    assert!(list.contains("revoked"), "{list}");

    let again = tracker(&["token", "revoke", "alice", "--backend-store-uri", &store]);
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("No active token"), "{}", text(&again.stderr));

    let bad_scope = tracker(&["token", "create", "--name", "x", "--scope", "root", "--backend-store-uri", &store]);
    assert!(!bad_scope.status.success());
    assert!(text(&bad_scope.stderr).contains("expected read, worker, write or admin"), "{}", text(&bad_scope.stderr));
}

#[test]
fn serve_refuses_a_public_address_without_auth() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}/t.db", dir.path().display());
    let out = tracker(&["serve", "--host", "0.0.0.0", "--port", "0", "--backend-store-uri", &store]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("refusing to listen on 0.0.0.0"), "{}", text(&out.stderr));

    // --auth without any token would lock everyone out: refused too.
    let out = tracker(&["serve", "--host", "0.0.0.0", "--port", "0", "--auth", "--backend-store-uri", &store]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no active token"), "{}", text(&out.stderr));
}

#[test]
fn serve_explains_bad_settings() {
    let out = tracker(&["serve", "--port", "0", "--backend-store-uri", "mysql://db/x"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("unsupported scheme"), "{}", text(&out.stderr));
    let out = tracker(&["serve", "--host", "not-an-ip", "--port", "0"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("is not an IP address"), "{}", text(&out.stderr));
}

#[test]
fn studies_are_created_from_yaml_specs_and_bad_ones_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}/t.db", dir.path().display());
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/study/spec.yaml");
    let created = tracker(&["study", "create", spec, "--backend-store-uri", &store]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    assert!(text(&created.stdout).contains("Created study 'example-lora'"), "{}", text(&created.stdout));
    let shown = text(&tracker(&["study", "show", "example-lora", "--backend-store-uri", &store]).stdout);
    assert!(shown.contains("study example-lora (running)") && shown.contains("objective eval_loss (minimize)"), "{shown}");

    let typo = dir.path().join("typo.yml");
    std::fs::write(&typo, std::fs::read_to_string(spec).unwrap().replace("max_trials:", "max_trails:")).unwrap();
    let out = tracker(&["study", "create", typo.to_str().unwrap(), "--backend-store-uri", &store]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("typo.yml") && err.contains("unknown field `max_trails`") && err.contains("line 3"), "{err}");
}
