//! The deployment files (`Dockerfile`, `docker-compose.yml`, `deploy/kubernetes/`), checked
//! without a container engine (none runs where these tests run): each file is parsed and
//! cross-checked against the relay (its Cargo targets, its `Config`, its HTTP routes), and the
//! image's command line runs from a directory laid out the way the Dockerfile lays out the image.
//!
//! - `image`: the Dockerfile, and its command line run from the image's layout;
//! - `compose`: docker-compose.yml;
//! - `kubernetes`: deploy/kubernetes/.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use figment::providers::{Format as _, Serialized, Toml};
use figment::Figment;
use outbox_relay::config::{Config, ENV_PREFIX};
use yaml_rust2::Yaml;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

#[derive(Debug)]
struct Stage {
    base: String,
    name: Option<String>,
    instructions: Vec<Instruction>,
}

impl Stage {
    fn all<'a>(&'a self, keyword: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.instructions
            .iter()
            .filter(move |i| i.keyword == keyword)
            .map(|i| i.args.as_str())
    }

    fn last<'a>(&'a self, keyword: &'a str) -> Option<&'a str> {
        self.all(keyword).last()
    }

    /// `ENV` as name → value (both `ENV A=1 B=2` and `ENV A 1`).
    fn env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for args in self.all("ENV") {
            if !args.contains('=') {
                let (k, v) = args.split_once(' ').expect("ENV name value");
                env.insert(k.to_owned(), v.trim().to_owned());
                continue;
            }
            for pair in args.split_whitespace() {
                let (k, v) = pair.split_once('=').expect("ENV NAME=value");
                env.insert(k.to_owned(), v.trim_matches('"').to_owned());
            }
        }
        env
    }

    /// `COPY` as (`--from` stage, sources, destination).
    fn copies(&self) -> Vec<(Option<String>, Vec<String>, String)> {
        self.all("COPY")
            .map(|args| {
                let mut from = None;
                let mut words: Vec<String> = Vec::new();
                for w in args.split_whitespace() {
                    if let Some(stage) = w.strip_prefix("--from=") {
                        from = Some(stage.to_owned());
                    } else if !w.starts_with("--") {
                        words.push(w.to_owned());
                    }
                }
                let dest = words.pop().expect("COPY has a destination");
                (from, words, dest)
            })
            .collect()
    }
}

/// A JSON-array (exec form) argument list.
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("not exec form ({e}): {args}"))
}

fn dockerfile() -> Vec<Stage> {
    let text = read("Dockerfile");
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let keyword = keyword.to_ascii_uppercase();
        let args = args.trim().to_owned();
        if keyword == "FROM" {
            let words: Vec<&str> = args.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some((*name).to_owned()),
                [_] => None,
                _ => panic!("FROM {args}"),
            };
            stages.push(Stage {
                base: words[0].to_owned(),
                name,
                instructions: Vec::new(),
            });
        } else {
            stages
                .last_mut()
                .expect("an instruction before FROM")
                .instructions
                .push(Instruction { keyword, args });
        }
    }
    stages
}

/// The runtime stage (the last) and the stage it copies the binary from.
fn runtime_stage(stages: &[Stage]) -> &Stage {
    stages.last().expect("a stage")
}

/// The image's absolute paths that the runtime stage copies from the repository, as
/// (path in the image, path in the repository).
fn copied_from_repo(runtime: &Stage) -> Vec<(PathBuf, PathBuf)> {
    runtime
        .copies()
        .into_iter()
        .filter(|(from, _, _)| from.is_none())
        .map(|(_, sources, dest)| {
            assert_eq!(sources.len(), 1, "one source per runtime COPY: {sources:?}");
            (PathBuf::from(dest), repo().join(&sources[0]))
        })
        .collect()
}

/// A path of the image as the repository holds it (through the runtime stage's COPYs).
fn repo_path_of(runtime: &Stage, image_path: &str) -> Option<PathBuf> {
    copied_from_repo(runtime)
        .into_iter()
        .find_map(|(dest, src)| {
            Path::new(image_path).strip_prefix(&dest).ok().map(|rest| {
                if rest.as_os_str().is_empty() {
                    src.clone()
                } else {
                    src.join(rest)
                }
            })
        })
}

/// The image's environment with every path it names replaced by the repository's copy, so that
/// a `Config` can be loaded from it here.
fn image_env_on_host(runtime: &Stage) -> BTreeMap<String, String> {
    runtime
        .env()
        .into_iter()
        .map(|(k, v)| {
            let v = repo_path_of(runtime, &v).map_or(v, |p| p.display().to_string());
            (k, v)
        })
        .collect()
}

fn rustc_version() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .arg("--version")
        .output()
        .expect("rustc --version");
    let text = String::from_utf8(out.stdout).unwrap();
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    text.split_whitespace()
        .nth(1)
        .expect("a version")
        .to_owned()
}

/// `defaults → file → environment` as `Config::load` builds it, from an explicit environment:
/// `OUTBOX_RELAY__SECTION__KEY` becomes `section.key` (figment's `Env::prefixed(..).split("__")`
/// does the same from the process environment, which a test must not change). Variables without
/// the prefix (`OUTBOX_RELAY_CONFIG`, `PGHOST`) are not config keys.
fn config_from(file_text: &str, env: &[BTreeMap<String, String>]) -> Result<Config, String> {
    let mut figment = Figment::new().merge(Toml::string(file_text));
    let mut merged = BTreeMap::new();
    for layer in env {
        merged.extend(layer.clone());
    }
    for (name, value) in &merged {
        let Some(key) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let key = key
            .split("__")
            .collect::<Vec<_>>()
            .join(".")
            .to_ascii_lowercase();
        let value: figment::value::Value = value.parse().expect("infallible");
        figment = figment.merge(Serialized::default(&key, value));
    }
    Config::from_figment(figment).map_err(|e| e.to_string())
}

fn yaml_text(y: &Yaml) -> String {
    match y {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn yaml_map(y: &Yaml) -> BTreeMap<String, String> {
    match y {
        Yaml::BadValue | Yaml::Null => BTreeMap::new(),
        Yaml::Hash(h) => h
            .iter()
            .map(|(k, v)| (yaml_text(k), yaml_text(v)))
            .collect(),
        other => panic!("not a mapping: {other:?}"),
    }
}

fn yaml_strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| v.iter().map(yaml_text).collect())
        .unwrap_or_default()
}

/// Every topic the relay config names: its topics and their dead-letter topics.
fn configured_topics(config: &Config) -> BTreeSet<String> {
    let mut topics: BTreeSet<String> = config.topics.keys().cloned().collect();
    topics.extend(config.topic_defaults.dead_letter_topic.clone());
    topics.extend(
        config
            .topics
            .values()
            .filter_map(|t| t.dead_letter_topic.clone()),
    );
    topics
}

mod compose;
mod image;
mod kubernetes;
