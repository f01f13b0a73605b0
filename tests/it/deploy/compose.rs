//! docker-compose.yml: services, health checks, start order, topics, environment.

use yaml_rust2::YamlLoader;

use super::*;

fn compose() -> Yaml {
    YamlLoader::load_from_str(&read("docker-compose.yml"))
        .unwrap()
        .remove(0)
}

/// The conditions a service waits for, as dependency → condition.
fn depends_on(service: &Yaml) -> BTreeMap<String, String> {
    match &service["depends_on"] {
        Yaml::BadValue => BTreeMap::new(),
        Yaml::Array(names) => names
            .iter()
            .map(|n| (yaml_text(n), "service_started".into()))
            .collect(),
        Yaml::Hash(h) => h
            .iter()
            .map(|(k, v)| (yaml_text(k), yaml_text(&v["condition"])))
            .collect(),
        other => panic!("depends_on: {other:?}"),
    }
}

/// A compose service of the relay's image: the environment it runs with is the image's, then
/// its own.
fn compose_relay_config(service: &Yaml) -> Result<Config, String> {
    let stages = dockerfile();
    let runtime = runtime_stage(&stages);
    let image_env = image_env_on_host(runtime);
    let file = std::fs::read_to_string(&image_env["OUTBOX_RELAY_CONFIG"]).unwrap();
    config_from(&file, &[image_env, yaml_map(&service["environment"])])
}

#[test]
fn the_compose_stack_starts_each_service_after_what_it_needs_is_healthy() {
    let compose = compose();
    let services = &compose["services"];
    let names: BTreeSet<String> = services.as_hash().unwrap().keys().map(yaml_text).collect();
    for name in [
        "postgres",
        "kafka",
        "schema-registry",
        "topics",
        "migrate",
        "relay",
        "demo-producer",
    ] {
        assert!(names.contains(name), "no service {name}: {names:?}");
    }
    // The long-running services say when they are up.
    for name in ["postgres", "kafka", "schema-registry", "relay"] {
        let test = yaml_strings(&services[name]["healthcheck"]["test"]);
        assert_eq!(
            test.first().map(String::as_str),
            Some("CMD"),
            "{name}: healthcheck {test:?}"
        );
    }
    // Apache Kafka and a real Confluent Schema Registry, at pinned versions.
    let pinned = |image: &str, repository: &str| {
        let version = image
            .strip_prefix(&format!("{repository}:"))
            .unwrap_or_else(|| panic!("{image}"));
        assert!(
            version.split('.').count() == 3 && version.split('.').all(|n| n.parse::<u32>().is_ok()),
            "{image} is not pinned to a release"
        );
    };
    pinned(services["kafka"]["image"].as_str().unwrap(), "apache/kafka");
    pinned(
        services["topics"]["image"].as_str().unwrap(),
        "apache/kafka",
    );
    pinned(
        services["schema-registry"]["image"].as_str().unwrap(),
        "confluentinc/cp-schema-registry",
    );
    assert!(
        yaml_map(&services["kafka"]["environment"])["KAFKA_PROCESS_ROLES"].contains("controller"),
        "KRaft"
    );

    let waits = |name: &str| depends_on(&services[name]);
    let expect = |name: &str, on: &str, condition: &str| {
        assert_eq!(
            waits(name).get(on).map(String::as_str),
            Some(condition),
            "{name} waits for {on}"
        );
    };
    expect("schema-registry", "kafka", "service_healthy");
    expect("topics", "kafka", "service_healthy");
    expect("migrate", "postgres", "service_healthy");
    expect("relay", "migrate", "service_completed_successfully");
    expect("relay", "topics", "service_completed_successfully");
    expect("relay", "schema-registry", "service_healthy");
    expect("relay", "kafka", "service_healthy");
    expect("demo-producer", "relay", "service_healthy");

    // migrate and relay are the image of the Dockerfile; the relay's health check is the image's
    // subcommand, and compose waits out its shutdown bound before SIGKILL.
    for name in ["migrate", "relay"] {
        assert_eq!(
            services[name]["build"].as_str(),
            Some("."),
            "{name} builds the Dockerfile"
        );
    }
    assert_eq!(yaml_strings(&services["migrate"]["command"]), ["migrate"]);
    assert_eq!(yaml_strings(&services["relay"]["command"]), ["run"]);
    assert_eq!(
        yaml_strings(&services["relay"]["healthcheck"]["test"]),
        ["CMD", "outbox-relay", "healthcheck", "--ready"]
    );
    let config = compose_relay_config(&services["relay"]).unwrap();
    let grace = services["relay"]["stop_grace_period"].as_str().unwrap();
    let grace_ms: u64 = grace.strip_suffix('s').unwrap().parse::<u64>().unwrap() * 1000;
    assert!(
        grace_ms > config.relay.shutdown_timeout_ms,
        "stop_grace_period {grace}"
    );
}

#[test]
fn the_compose_topics_job_creates_every_topic_the_relay_config_names() {
    let compose = compose();
    let services = &compose["services"];
    let config = compose_relay_config(&services["relay"]).unwrap();
    let wanted = configured_topics(&config);
    assert_eq!(wanted.len(), 7, "the seed's seven topics: {wanted:?}");
    let job = yaml_map(&services["topics"]["environment"]);
    let created: BTreeSet<String> = job["TOPICS"]
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let missing: Vec<_> = wanted.difference(&created).collect();
    assert!(
        missing.is_empty(),
        "the topics job does not create {missing:?}"
    );
    assert!(job["PARTITIONS"].parse::<u32>().unwrap() >= 1);
    assert_eq!(job["REPLICATION_FACTOR"], "1", "one broker");
    let script = yaml_strings(&services["topics"]["command"]).join("\n");
    for var in [
        "$$TOPICS",
        "$$PARTITIONS",
        "$$REPLICATION_FACTOR",
        "--create",
    ] {
        assert!(script.contains(var), "the topics job does not use {var}");
    }

    // The demo producer publishes only to configured topics, through migration 0006's function.
    let demo = yaml_strings(&services["demo-producer"]["command"]).join("\n");
    let published: BTreeSet<String> = demo
        .split("topic=")
        .skip(1)
        .map(|rest| rest.split_whitespace().next().unwrap().to_owned())
        .collect();
    assert_eq!(
        published,
        config.topics.keys().cloned().collect::<BTreeSet<_>>()
    );
    assert!(demo.contains("outbox_publish("));
    assert!(read("migrations/0006_publish_functions.sql").contains("\"${table}_publish\"("));
}

#[test]
fn the_compose_relay_environment_is_made_of_real_config_keys() {
    let compose = compose();
    let services = &compose["services"];
    for name in ["migrate", "relay"] {
        let config =
            compose_relay_config(&services[name]).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(config.kafka.bootstrap_servers, "kafka:9092");
        assert_eq!(config.registry.url, "http://schema-registry:8081");
        assert!(config.database.url.redacted().contains("@postgres:5432/"));
        assert_eq!(config.http.address().unwrap().port(), 9464);
    }
    // The same check refuses a misspelled variable.
    let mut service = services["relay"].clone();
    if let Yaml::Hash(h) = &mut service {
        let env = h.get_mut(&Yaml::String("environment".into())).unwrap();
        if let Yaml::Hash(env) = env {
            env.insert(
                Yaml::String("OUTBOX_RELAY__KAFKA__BOOTSTRAP_SERVER".into()),
                Yaml::String("kafka:9092".into()),
            );
        }
    }
    let refused = compose_relay_config(&service).unwrap_err();
    assert!(
        refused.contains("unknown key `kafka.bootstrap_server`"),
        "{refused}"
    );
}
