//! deploy/kubernetes/: ports, probes, config, secrets, selectors.

use yaml_rust2::YamlLoader;

use super::*;

/// Every document of every YAML file, with its file name.
fn kubernetes() -> Vec<(String, Yaml)> {
    let dir = repo().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let name = file.file_name().unwrap().to_str().unwrap().to_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}")) {
            docs.push((name.clone(), doc));
        }
    }
    docs
}

fn kind<'a>(docs: &'a [(String, Yaml)], kind: &str) -> Vec<&'a Yaml> {
    docs.iter()
        .filter(|(_, d)| d["kind"].as_str() == Some(kind))
        .map(|(_, d)| d)
        .collect()
}

fn one<'a>(docs: &'a [(String, Yaml)], k: &str) -> &'a Yaml {
    let found = kind(docs, k);
    assert_eq!(found.len(), 1, "one {k}");
    found[0]
}

/// The HTTP routes the relay serves (src/http.rs).
fn routes() -> BTreeSet<String> {
    read("src/http.rs")
        .split(".route(\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .collect()
}

/// An environment variable from a Secret: (variable, Secret, key).
type SecretRef = (String, String, String);

/// A pod's container's environment, with every secretKeyRef given a stand-in value.
fn container_env(container: &Yaml) -> (BTreeMap<String, String>, Vec<SecretRef>) {
    let mut env = BTreeMap::new();
    let mut secrets = Vec::new();
    for var in container["env"].as_vec().into_iter().flatten() {
        let name = yaml_text(&var["name"]);
        let value = match (&var["value"], &var["valueFrom"]["secretKeyRef"]) {
            (Yaml::BadValue, Yaml::Hash(_)) => {
                let r = &var["valueFrom"]["secretKeyRef"];
                secrets.push((name.clone(), yaml_text(&r["name"]), yaml_text(&r["key"])));
                if name.ends_with("__URL") {
                    "postgres://relay:stand-in@postgres.db.svc:5432/outbox".to_owned()
                } else {
                    "stand-in".to_owned()
                }
            }
            (v, Yaml::BadValue) => yaml_text(v),
            other => panic!("{name}: {other:?}"),
        };
        env.insert(name, value);
    }
    (env, secrets)
}

/// The config a pod of `pod_spec` runs with: the ConfigMap's relay.toml (checked to be the file
/// OUTBOX_RELAY_CONFIG names, through the pod's mounts), the image's environment, the pod's.
fn pod_config(docs: &[(String, Yaml)], pod_spec: &Yaml) -> (Config, Vec<SecretRef>) {
    let container = &pod_spec["containers"][0];
    let (env, secrets) = container_env(container);
    let config_path = PathBuf::from(&env["OUTBOX_RELAY_CONFIG"]);
    let mount = container["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|m| config_path.parent() == Some(Path::new(m["mountPath"].as_str().unwrap())))
        .unwrap_or_else(|| {
            panic!(
                "OUTBOX_RELAY_CONFIG {} is on no mount",
                config_path.display()
            )
        });
    let volume = pod_spec["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mount's volume");
    let map_name = volume["configMap"]["name"]
        .as_str()
        .expect("a ConfigMap volume");
    let map = kind(docs, "ConfigMap")
        .into_iter()
        .find(|m| m["metadata"]["name"].as_str() == Some(map_name))
        .unwrap_or_else(|| panic!("no ConfigMap {map_name}"));
    let file_key = config_path.file_name().unwrap().to_str().unwrap();
    let file = map["data"][file_key]
        .as_str()
        .unwrap_or_else(|| panic!("{map_name} has no {file_key}"));

    // The image's environment names its schema directory (over the file's): read where the
    // repository has it.
    let stages = dockerfile();
    let image_env = image_env_on_host(runtime_stage(&stages));
    let config = config_from(file, &[image_env, env])
        .unwrap_or_else(|e| panic!("{map_name}/{file_key}: {e}"));
    (config, secrets)
}

fn labels(y: &Yaml) -> BTreeMap<String, String> {
    yaml_map(y)
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn the_kubernetes_deployment_agrees_with_the_relay_on_ports_probes_config_and_limits() {
    let docs = kubernetes();
    let deployment = one(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"].as_i64(), Some(2));
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let (config, _) = pod_config(&docs, pod);

    // The container port is the port the relay listens on, in the ConfigMap and in effect.
    let port = container["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str() == Some("http"))
        .expect("port http");
    let port = port["containerPort"].as_i64().unwrap() as u16;
    assert_eq!(config.http.address().unwrap().port(), port);
    let map = one(&docs, "ConfigMap");
    let in_map: toml::Value = map["data"]["relay.toml"].as_str().unwrap().parse().unwrap();
    let listen = in_map["http"]["listen"].as_str().unwrap();
    assert_eq!(listen, format!("0.0.0.0:{port}"));

    // Probes: liveness on /healthz, readiness on /readyz, both served by src/http.rs.
    let routes = routes();
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert!(
            routes.contains(path),
            "{path} is not a route of src/http.rs: {routes:?}"
        );
        assert_eq!(get["port"].as_str(), Some("http"), "{probe} port");
    }

    // Locked down: the image's non-root UID, read-only root, no capabilities, /tmp writable.
    let stages = dockerfile();
    let uid: i64 = runtime_stage(&stages)
        .last("USER")
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(pod["securityContext"]["runAsUser"].as_i64(), Some(uid));
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(yaml_strings(&security["capabilities"]["drop"]), ["ALL"]);
    let tmp = container["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"].as_str() == Some("/tmp"))
        .expect("/tmp mounted");
    let tmp_volume = pod["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|v| v["name"] == tmp["name"])
        .unwrap();
    assert!(!tmp_volume["emptyDir"].is_badvalue(), "/tmp is an emptyDir");

    // SIGKILL comes after the relay's own shutdown bound.
    let grace_ms = pod["terminationGracePeriodSeconds"].as_i64().unwrap() as u64 * 1000;
    assert!(
        grace_ms > config.relay.shutdown_timeout_ms,
        "{grace_ms} <= {}",
        config.relay.shutdown_timeout_ms
    );

    // Memory from BENCHMARKS.md's peak RSS (<= 32 MiB): a request with headroom, a limit.
    let mib = |q: &Yaml| -> u64 {
        q.as_str()
            .unwrap()
            .strip_suffix("Mi")
            .unwrap()
            .parse()
            .unwrap()
    };
    let resources = &container["resources"];
    assert!(mib(&resources["requests"]["memory"]) >= 2 * 32);
    assert!(mib(&resources["limits"]["memory"]) >= mib(&resources["requests"]["memory"]));
    assert!(
        read("BENCHMARKS.md").contains("(≤ 32 MiB)"),
        "the RSS figure the sizing is from"
    );
}

#[test]
fn the_kubernetes_config_is_a_valid_relay_config_and_secrets_name_real_config_keys() {
    let docs = kubernetes();
    let deployment = one(&docs, "Deployment");
    let job = one(&docs, "Job");
    for (what, pod) in [
        ("Deployment", &deployment["spec"]["template"]["spec"]),
        ("Job", &job["spec"]["template"]["spec"]),
    ] {
        let (config, secrets) = pod_config(&docs, pod);
        assert!(!secrets.is_empty(), "{what}: no secret");
        for (name, secret, _) in &secrets {
            assert!(
                name.starts_with(ENV_PREFIX),
                "{what}: {name} is not a config key"
            );
            assert_eq!(secret, "outbox-relay", "{what}: {name}");
        }
        // The database URL (its password) comes from the Secret, never from the ConfigMap.
        assert!(
            secrets
                .iter()
                .any(|(n, _, _)| n == "OUTBOX_RELAY__DATABASE__URL"),
            "{what}"
        );
        assert!(config.database.url.expose().contains("stand-in"), "{what}");
        assert_eq!(
            configured_topics(&config).len(),
            7,
            "{what}: the seed's topics"
        );
    }
    assert_eq!(
        yaml_strings(&job["spec"]["template"]["spec"]["containers"][0]["args"]),
        ["migrate"]
    );
    assert_eq!(
        yaml_strings(&deployment["spec"]["template"]["spec"]["containers"][0]["args"]),
        ["run"]
    );
    let map = one(&docs, "ConfigMap");
    let file = map["data"]["relay.toml"].as_str().unwrap();
    assert!(
        !file.contains("[database]\nurl") && !file.contains("password"),
        "a secret in the ConfigMap"
    );

    // The same load refuses a key the relay does not have.
    let refused = config_from(&format!("{file}\n[relays]\nbatch_size = 1\n"), &[]).unwrap_err();
    assert!(refused.contains("unknown key `relays"), "{refused}");
}

#[test]
fn the_kubernetes_selectors_pick_the_relay_pods_and_the_metrics_port() {
    let docs = kubernetes();
    let deployment = one(&docs, "Deployment");
    let pod_labels = labels(&deployment["spec"]["template"]["metadata"]["labels"]);
    assert!(selects(
        &labels(&deployment["spec"]["selector"]["matchLabels"]),
        &pod_labels
    ));

    let pdb = one(&docs, "PodDisruptionBudget");
    assert!(selects(
        &labels(&pdb["spec"]["selector"]["matchLabels"]),
        &pod_labels
    ));
    assert!(
        pdb["spec"]["minAvailable"].as_i64().unwrap()
            < deployment["spec"]["replicas"].as_i64().unwrap()
    );

    let service = one(&docs, "Service");
    let service_selector = labels(&service["spec"]["selector"]);
    assert!(selects(&service_selector, &pod_labels));
    let service_port = &service["spec"]["ports"][0];
    let container_ports: Vec<String> = deployment["spec"]["template"]["spec"]["containers"][0]
        ["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|p| yaml_text(&p["name"]))
        .collect();
    assert!(container_ports.contains(&yaml_text(&service_port["targetPort"])));
    assert_eq!(
        service["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true)
    );

    let monitor = one(&docs, "ServiceMonitor");
    assert!(selects(
        &labels(&monitor["spec"]["selector"]["matchLabels"]),
        &labels(&service["metadata"]["labels"])
    ));
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], service_port["name"]);
    assert!(routes().contains(endpoint["path"].as_str().unwrap()));

    // The migration Job's pod is not a relay: neither the PDB nor the Service picks it.
    let job = one(&docs, "Job");
    let job_labels = labels(&job["spec"]["template"]["metadata"]["labels"]);
    assert!(!selects(&service_selector, &job_labels));
    assert!(!selects(
        &labels(&pdb["spec"]["selector"]["matchLabels"]),
        &job_labels
    ));

    // kustomization.yaml lists files that exist, and every manifest but the Job.
    let kustomization = YamlLoader::load_from_str(&read("deploy/kubernetes/kustomization.yaml"))
        .unwrap()
        .remove(0);
    let resources: BTreeSet<String> = yaml_strings(&kustomization["resources"])
        .into_iter()
        .collect();
    let files: BTreeSet<String> = docs
        .iter()
        .filter(|(_, d)| {
            d["kind"]
                .as_str()
                .is_some_and(|k| k != "Kustomization" && k != "Job")
        })
        .map(|(f, _)| f.clone())
        .collect();
    assert_eq!(resources, files);
}
