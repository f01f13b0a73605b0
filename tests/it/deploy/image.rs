//! The Dockerfile: stages, pins, user, health check, copied paths; and the image's command line
//! run from a directory laid out as the image.

use std::process::{Output, Stdio};
use std::time::Duration;

use outbox_relay_testkit::SchemaRegistryDouble;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use super::*;
use crate::harness::{self, RelayProcess};

#[test]
fn the_dockerfile_builds_with_the_pinned_toolchain_and_runs_as_a_numeric_non_root_user() {
    let stages = dockerfile();
    assert_eq!(
        stages.len(),
        2,
        "a build stage and a runtime stage: {stages:#?}"
    );
    let (build, runtime) = (&stages[0], &stages[1]);

    // The build stage: the exact rustc the project is built and tested with, not a moving tag.
    let version = rustc_version();
    assert_eq!(
        build.base,
        format!("rust:{version}-bookworm"),
        "the build stage's toolchain is the rustc used here"
    );
    let manifest: toml::Value = read("Cargo.toml").parse().unwrap();
    let msrv = manifest["package"]["rust-version"].as_str().unwrap();
    let as_numbers = |v: &str| -> Vec<u32> { v.split('.').map(|n| n.parse().unwrap()).collect() };
    assert!(
        as_numbers(&version) >= as_numbers(msrv),
        "{version} < rust-version {msrv}"
    );
    let build_name = build.name.as_deref().expect("the build stage is named");
    assert!(build
        .all("RUN")
        .any(|r| r.contains("cargo build --release")));

    // The runtime stage: small, Debian like the build stage (same glibc, same OpenSSL 3).
    assert!(
        runtime.base == "debian:bookworm-slim" || runtime.base.starts_with("gcr.io/distroless/cc"),
        "runtime base {}",
        runtime.base
    );
    let binary = runtime
        .copies()
        .into_iter()
        .find(|(from, _, _)| from.as_deref() == Some(build_name))
        .expect("the runtime copies the binary from the build stage");
    assert_eq!(binary.2, "/usr/local/bin/outbox-relay");

    // A numeric, non-root user (Kubernetes' runAsNonRoot can only verify a number).
    let user = runtime.last("USER").expect("USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("USER {user} is not numeric"));
    assert_ne!(uid, 0, "USER is root");
    assert!(
        runtime
            .instructions
            .iter()
            .rev()
            .take_while(|i| i.keyword != "USER")
            .all(|i| i.keyword != "RUN"),
        "nothing runs as root after USER"
    );

    // The command line is the relay's.
    assert_eq!(
        exec_form(runtime.last("ENTRYPOINT").unwrap()),
        ["outbox-relay"]
    );
    assert_eq!(exec_form(runtime.last("CMD").unwrap()), ["run"]);

    // HEALTHCHECK runs a subcommand the binary has.
    let healthcheck = runtime.last("HEALTHCHECK").expect("HEALTHCHECK");
    let cmd = healthcheck
        .split_once("CMD")
        .expect("HEALTHCHECK ... CMD [...]")
        .1;
    let cmd = exec_form(cmd.trim());
    assert_eq!(cmd[..2], ["outbox-relay", "healthcheck"], "{cmd:?}");
    let help = Command::new(env!("CARGO_BIN_EXE_outbox-relay"))
        .args(&cmd[1..])
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        help.status.success(),
        "{}",
        String::from_utf8_lossy(&help.stderr)
    );

    // EXPOSE is the port the image's environment makes the endpoint listen on, on every
    // interface (a probe or a scrape comes from outside the container).
    let env = runtime.env();
    let listen = &env["OUTBOX_RELAY__HTTP__LISTEN"];
    assert!(listen.starts_with("0.0.0.0:"), "{listen}");
    let port = listen.rsplit(':').next().unwrap();
    assert_eq!(runtime.last("EXPOSE"), Some(port));
}

#[test]
fn every_path_the_dockerfile_copies_exists_and_the_runtime_paths_are_in_the_image() {
    let stages = dockerfile();
    let runtime = runtime_stage(&stages);
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    for stage in &stages {
        for (from, sources, dest) in stage.copies() {
            if from.is_some() {
                continue;
            }
            for source in sources.iter().filter(|s| !s.contains('*')) {
                assert!(
                    repo().join(source).exists(),
                    "COPY {source} {dest}: no such path"
                );
                let top = source.split('/').next().unwrap();
                assert!(
                    !ignored.iter().any(|i| i == top),
                    "COPY {source}: .dockerignore drops it"
                );
            }
        }
    }

    // The paths the relay reads at runtime are in the image: its config file, and the schema
    // directory the config names (auto_register).
    let env = runtime.env();
    let config_path = &env["OUTBOX_RELAY_CONFIG"];
    let config_file = repo_path_of(runtime, config_path).unwrap_or_else(|| {
        panic!("OUTBOX_RELAY_CONFIG={config_path} is not copied into the image")
    });
    assert_eq!(config_file, repo().join("config/relay.toml"));
    let schemas = &env["OUTBOX_RELAY__REGISTRY__SCHEMAS_DIR"];
    let schemas_dir = repo_path_of(runtime, schemas)
        .unwrap_or_else(|| panic!("registry.schemas_dir {schemas} is not copied into the image"));
    assert!(
        schemas_dir.join("mcp.conversations-value.avsc").is_file(),
        "{}",
        schemas_dir.display()
    );
    // The relative schemas_dir of the file itself resolves from WORKDIR to the same directory.
    let workdir = runtime.last("WORKDIR").expect("WORKDIR");
    let in_file: toml::Value = std::fs::read_to_string(&config_file)
        .unwrap()
        .parse()
        .unwrap();
    let relative = in_file["registry"]["schemas_dir"].as_str().unwrap();
    assert_eq!(Path::new(workdir).join(relative), Path::new(schemas));

    // The dependency layer creates every target the manifests declare (cargo refuses a manifest
    // whose target files are missing), so a new bench or binary cannot break the build unseen.
    let build = &stages[0];
    let stubs: String = build.all("RUN").collect::<Vec<_>>().join(" ");
    for (manifest, dir) in [("Cargo.toml", ""), ("testkit/Cargo.toml", "testkit/")] {
        let m: toml::Value = read(manifest).parse().unwrap();
        let mut targets = vec![m
            .get("lib")
            .and_then(|l| l["path"].as_str())
            .unwrap_or("src/lib.rs")
            .to_owned()];
        for kind in ["bin", "test", "bench"] {
            for t in m.get(kind).and_then(|t| t.as_array()).into_iter().flatten() {
                let path = match (t.get("path"), kind) {
                    (Some(p), _) => p.as_str().unwrap().to_owned(),
                    (None, "bench") => format!("benches/{}.rs", t["name"].as_str().unwrap()),
                    (None, _) => panic!("{manifest}: a {kind} target without a path"),
                };
                targets.push(path);
            }
        }
        for target in targets {
            let path = format!("{dir}{target}");
            assert!(
                stubs.contains(&path),
                "the dependency layer does not create {path}"
            );
        }
    }
}

/// A directory laid out as the image: every runtime COPY at its destination under `root`
/// (the binary from this build), and the image's environment with its paths moved under `root`.
struct ImageLayout {
    root: tempfile::TempDir,
    env: BTreeMap<String, String>,
    workdir: PathBuf,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    healthcheck: Vec<String>,
}

impl ImageLayout {
    fn new() -> Self {
        let stages = dockerfile();
        let runtime = runtime_stage(&stages);
        let root = tempfile::tempdir().unwrap();
        let under = |p: &str| root.path().join(p.trim_start_matches('/'));
        for (from, sources, dest) in runtime.copies() {
            let target = under(&dest);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            match from {
                Some(_) => {
                    std::fs::copy(env!("CARGO_BIN_EXE_outbox-relay"), &target).unwrap();
                }
                None => copy_tree(&repo().join(&sources[0]), &target),
            }
        }
        let dests: Vec<String> = runtime.copies().into_iter().map(|(_, _, d)| d).collect();
        let env = runtime
            .env()
            .into_iter()
            .map(|(k, v)| {
                let moved = dests.iter().any(|d| v.starts_with(d.as_str()));
                (
                    k,
                    if moved {
                        under(&v).display().to_string()
                    } else {
                        v
                    },
                )
            })
            .collect();
        let workdir = under(runtime.last("WORKDIR").unwrap());
        let healthcheck = runtime.last("HEALTHCHECK").unwrap();
        Self {
            env,
            workdir,
            entrypoint: exec_form(runtime.last("ENTRYPOINT").unwrap()),
            cmd: exec_form(runtime.last("CMD").unwrap()),
            healthcheck: exec_form(healthcheck.split_once("CMD").unwrap().1.trim()),
            root,
        }
    }

    /// `argv` as the image runs it: the program found on the image's PATH (/usr/local/bin), the
    /// image's environment only, plus `overrides`, from WORKDIR.
    fn command(&self, argv: &[String], overrides: &[(&str, String)]) -> Command {
        let program = self.root.path().join("usr/local/bin").join(&argv[0]);
        assert!(program.is_file(), "{} is not in the image", argv[0]);
        let mut cmd = Command::new(program);
        cmd.args(&argv[1..])
            .env_clear()
            .envs(&self.env)
            .current_dir(&self.workdir);
        for (k, v) in overrides {
            cmd.env(k, v);
        }
        cmd
    }

    /// ENTRYPOINT + `args` (CMD when empty).
    fn relay(&self, args: &[&str], overrides: &[(&str, String)]) -> Command {
        let mut argv = self.entrypoint.clone();
        if args.is_empty() {
            argv.extend(self.cmd.iter().cloned());
        } else {
            argv.extend(args.iter().map(|a| a.to_string()));
        }
        self.command(&argv, overrides)
    }
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
}

fn output_text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_image_layout_passes_config_check_with_the_dockerfile_environment_alone() {
    let image = ImageLayout::new();
    let out = image.relay(&["config", "check"], &[]).output().unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let schemas = image.root.path().join("etc/outbox-relay/schemas");
    assert!(
        stdout.contains(&format!(
            "schemas_dir = {:?}",
            schemas.display().to_string()
        )),
        "{stdout}"
    );
    assert!(stdout.contains("listen = \"0.0.0.0:9464\""), "{stdout}");
    assert!(
        stdout.contains("[topics.\"mcp.conversations\"]"),
        "{stdout}"
    );
}

#[test]
fn the_healthcheck_exits_1_when_no_relay_answers_or_the_endpoint_is_off() {
    let image = ImageLayout::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let probe = |listen: String| {
        image
            .command(
                &image.healthcheck,
                &[("OUTBOX_RELAY__HTTP__LISTEN", listen)],
            )
            .output()
            .unwrap()
    };
    let out = probe(format!("0.0.0.0:{port}"));
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("GET http://127.0.0.1:{port}/healthz")),
        "{text}"
    );
    let out = probe(String::new());
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("http.listen is empty"), "{text}");
}

// Two workers: the registry double answers the relay while the test runs its commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_layout_migrates_relays_and_answers_its_healthcheck() {
    let image = ImageLayout::new();
    let registry = SchemaRegistryDouble::start().await;
    let suffix = Uuid::new_v4().simple().to_string();
    let schema = format!("t_{}", &suffix[..12]);
    let topic = format!("it-{}", &suffix[..12]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // What a deployment sets (compose, Kubernetes): where the services are. The endpoint keeps
    // the image's 0.0.0.0, on a free port.
    let overrides = [
        ("OUTBOX_RELAY__DATABASE__URL", harness::database_url()),
        ("OUTBOX_RELAY__DATABASE__SCHEMA", schema.clone()),
        (
            "OUTBOX_RELAY__KAFKA__BOOTSTRAP_SERVERS",
            harness::kafka_bootstrap(),
        ),
        ("OUTBOX_RELAY__REGISTRY__URL", registry.url()),
        ("OUTBOX_RELAY__HTTP__LISTEN", format!("0.0.0.0:{port}")),
    ];

    let out = image.relay(&["migrate"], &overrides).output().unwrap();
    assert!(out.status.success(), "migrate: {}", output_text(&out));
    harness::create_topic(&topic, 1).await;

    let log_dir = harness::log_dir("deploy-image-layout");
    let log = log_dir.join("relay.log");
    let child = image
        .relay(&[], &overrides)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut relay = RelayProcess {
        child,
        log: log.clone(),
    };

    // The image's HEALTHCHECK command line, and its readiness variant, as the engine runs them.
    let healthcheck = |extra: &[&str]| {
        let mut argv = image.healthcheck.clone();
        argv.extend(extra.iter().map(|a| a.to_string()));
        image.command(&argv, &overrides).output().unwrap()
    };
    harness::wait_until(
        Duration::from_secs(60),
        "healthcheck --ready exits 0",
        || {
            relay.assert_running();
            std::future::ready(healthcheck(&["--ready"]).status.success())
        },
    )
    .await;
    let live = healthcheck(&[]);
    assert!(live.status.success(), "{}", output_text(&live));
    assert!(
        String::from_utf8_lossy(&live.stdout)
            .contains(&format!("http://127.0.0.1:{port}/healthz answered 200")),
        "{}",
        output_text(&live)
    );

    // The catalogue the image carries was registered at startup.
    let subjects: Vec<String> = reqwest::get(format!("{}/subjects", registry.url()))
        .await
        .unwrap()
        .text()
        .await
        .map(|body| serde_json::from_str(&body).unwrap())
        .unwrap();
    let expected: BTreeSet<String> = std::fs::read_dir(repo().join("schemas"))
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .to_str()?
                .strip_suffix(".avsc")
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(subjects.into_iter().collect::<BTreeSet<_>>(), expected);

    // And it relays.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&harness::database_url())
        .await
        .unwrap();
    let id: i64 = sqlx::query_scalar(&format!(
        "INSERT INTO \"{schema}\".outbox (topic, key, payload) VALUES ($1, 'k', '{{\"n\": 1}}') RETURNING id"
    ))
    .bind(&topic)
    .fetch_one(&pool)
    .await
    .unwrap();
    let status_sql = format!("SELECT status FROM \"{schema}\".outbox WHERE id = $1");
    harness::wait_until(Duration::from_secs(30), "the row is delivered", || async {
        let status: String = sqlx::query_scalar(&status_sql)
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        status == "delivered"
    })
    .await;

    harness::signal(&relay.child, nix::sys::signal::Signal::SIGTERM);
    let (status, _) = harness::wait_exit(&mut relay.child, Duration::from_secs(30))
        .await
        .unwrap_or_else(|| {
            panic!(
                "no exit after SIGTERM; log:\n{}",
                harness::log_tail(&log, 30)
            )
        });
    assert!(
        status.success(),
        "{status}; log:\n{}",
        harness::log_tail(&log, 30)
    );
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
}
