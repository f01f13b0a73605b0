//! `schema-registry-double [--port N] [--basic-auth user:pass] [--register subject=TYPE:path ...]`
//!
//! Serves the Confluent Schema Registry test double until SIGTERM or SIGINT. The first line on
//! stdout is `listening on http://127.0.0.1:PORT`, so a parent process can wait for it.

use std::io::Write as _;
use std::process::ExitCode;

use outbox_relay_testkit::{DoubleOptions, SchemaRegistryDouble};
use tokio::signal::unix::{signal, SignalKind};

const USAGE: &str = "usage: schema-registry-double [--port N] [--basic-auth user:pass] \
                     [--register subject=AVRO|JSON|PROTOBUF:path/to/schema ...]";

struct Args {
    options: DoubleOptions,
    /// (subject, schema type, file path)
    registrations: Vec<(String, String, String)>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        options: DoubleOptions::default(),
        registrations: Vec::new(),
    };
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--port" => {
                let port = value()?;
                args.options.port = port.parse().map_err(|_| format!("bad port {port:?}"))?;
            }
            "--basic-auth" => {
                let credentials = value()?;
                let (user, password) = credentials
                    .split_once(':')
                    .ok_or("--basic-auth takes user:pass")?;
                args.options.basic_auth = Some((user.to_owned(), password.to_owned()));
            }
            "--register" => {
                let spec = value()?;
                let bad = || format!("--register takes subject=TYPE:path, got {spec:?}");
                let (subject, rest) = spec.rsplit_once('=').ok_or_else(bad)?;
                let (schema_type, path) = rest.split_once(':').ok_or_else(bad)?;
                let schema_type = schema_type.to_ascii_uppercase();
                if !["AVRO", "JSON", "PROTOBUF"].contains(&schema_type.as_str()) {
                    return Err(bad());
                }
                args.registrations
                    .push((subject.to_owned(), schema_type, path.to_owned()));
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    // Read every schema file before listening, so a bad one fails before anyone connects.
    let mut schemas = Vec::new();
    for (subject, schema_type, path) in args.registrations {
        match std::fs::read_to_string(&path) {
            Ok(text) => schemas.push((subject, schema_type, text)),
            Err(e) => {
                eprintln!("cannot read {path}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let double = SchemaRegistryDouble::start_with(args.options).await;
    for (subject, schema_type, text) in schemas {
        let id = double.register(&subject, &schema_type, &text);
        eprintln!("registered {subject} ({schema_type}) as id {id}");
    }
    // Handle SIGTERM before announcing the URL: a parent that signals as soon as it reads the
    // line must not kill us with the default action (this raced in the binary's own test).
    let mut terminate = signal(SignalKind::terminate()).expect("can handle SIGTERM");
    println!("listening on {}", double.url());
    let _ = std::io::stdout().flush();

    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    // Aborts the server and its keep-alive connections instead of waiting for idle clients.
    double.go_down().await;
    ExitCode::SUCCESS
}
