//! `outbox-relay grants`: the SQL of three least-privilege roles for the configured outbox
//! table. Printed, not run: an administrator reads it and runs it with psql.
//!
//! - the **owner** may create in the schema and runs `outbox-relay migrate` (it creates the tables and
//!   the SECURITY DEFINER functions, which run with its rights);
//! - the **relay** reads, marks and deletes outbox rows (SELECT, UPDATE, DELETE: claims lock
//!   rows with `FOR UPDATE`, retention and `on_delivered = "delete"` delete them), arms the
//!   wakeup row, appends to the delivery log, and reads the migration ledger at startup.
//!   LISTEN, `pg_try_advisory_lock` and `pg_stat_user_tables` need no grant;
//! - the **application** inserts rows (INSERT only, so no `RETURNING`) or calls the publish
//!   functions, which return the event ids; it can read, change or delete nothing.

use clap::{Args, ValueEnum};

use crate::config::{check_identifier, Config};
use crate::outbox::TableName;

use super::UsageError;

#[derive(Debug, Args)]
pub struct GrantsArgs {
    /// The role that runs `outbox-relay migrate`: it owns the tables and functions.
    #[arg(long, default_value = "outbox_owner")]
    owner: String,
    /// The role `outbox-relay run` (and its operator commands) connect as.
    #[arg(long, default_value = "outbox_relay")]
    relay: String,
    /// The role the application writes events as.
    #[arg(long, default_value = "outbox_app")]
    app: String,
    /// `setup`: the roles and the schema, before `migrate` (as an administrator); `tables`:
    /// the privileges on what `migrate` created (as the owner); `all`: both.
    #[arg(long, value_enum, default_value_t = Part::All)]
    part: Part,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    Setup,
    Tables,
    All,
}

pub(super) fn grants(config: &Config, args: &GrantsArgs) -> anyhow::Result<()> {
    let table = TableName::new(&config.database.schema, &config.database.table)
        .map_err(anyhow::Error::msg)?;
    for (flag, name) in [
        ("--owner", &args.owner),
        ("--relay", &args.relay),
        ("--app", &args.app),
    ] {
        check_identifier(name).map_err(|why| {
            UsageError(format!("{flag} {name:?} is not a plain role name: {why}"))
        })?;
    }
    let roles = Roles {
        owner: &args.owner,
        relay: &args.relay,
        app: &args.app,
    };
    print!("{}", sql(&table, &roles, args.part));
    Ok(())
}

struct Roles<'a> {
    owner: &'a str,
    relay: &'a str,
    app: &'a str,
}

fn sql(table: &TableName, r: &Roles<'_>, part: Part) -> String {
    let (schema, name) = (table.schema(), table.table());
    let (owner, relay, app) = (r.owner, r.relay, r.app);
    let q = table.qualified();
    let mut out = format!(
        "-- Least-privilege roles for the outbox {q} (`outbox-relay grants`).\n\
         \\set ON_ERROR_STOP on\n"
    );
    if part != Part::Tables {
        out.push_str(&format!(
            "\n-- 1. Before `outbox-relay migrate`, as a superuser or a role with CREATEROLE and CREATE\n\
             -- on the database: the roles (without passwords: set them with\n\
             -- ALTER ROLE ... PASSWORD, or use another authentication), and the schema, in which\n\
             -- only \"{owner}\" (and the schema's owner) may create.\n\
             BEGIN;\n\
             DO $roles$\n\
             DECLARE r text;\n\
             BEGIN\n    \
                 FOREACH r IN ARRAY ARRAY['{owner}', '{relay}', '{app}'] LOOP\n        \
                     IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN\n            \
                         EXECUTE format('CREATE ROLE %I LOGIN', r);\n        \
                     END IF;\n    \
                 END LOOP;\n\
             END\n\
             $roles$;\n\
             CREATE SCHEMA IF NOT EXISTS \"{schema}\";\n\
             GRANT USAGE, CREATE ON SCHEMA \"{schema}\" TO \"{owner}\";\n\
             GRANT USAGE ON SCHEMA \"{schema}\" TO \"{relay}\", \"{app}\";\n\
             REVOKE CREATE ON SCHEMA \"{schema}\" FROM PUBLIC;\n\
             COMMIT;\n"
        ));
    }
    if part != Part::Setup {
        out.push_str(&format!(
            "\n-- 2. After `outbox-relay migrate` (and after each upgrade that adds a table), as\n\
             -- \"{owner}\" or a superuser: what the relay and the application may do.\n\
             BEGIN;\n\
             REVOKE ALL ON {q}, \"{schema}\".\"{name}_wakeup\", \"{schema}\".\"{name}_delivered\",\n    \
                 \"{schema}\"._sqlx_migrations FROM PUBLIC, \"{relay}\", \"{app}\";\n\
             -- The relay: claim (SELECT ... FOR UPDATE), mark, reschedule, park, replay (UPDATE),\n\
             -- retention and on_delivered = \"delete\" (DELETE); arm the wakeup; append to the\n\
             -- delivery log (and read it: check-order); read the migration ledger at startup.\n\
             GRANT SELECT, UPDATE, DELETE ON {q} TO \"{relay}\";\n\
             GRANT SELECT, UPDATE ON \"{schema}\".\"{name}_wakeup\" TO \"{relay}\";\n\
             GRANT SELECT, INSERT ON \"{schema}\".\"{name}_delivered\" TO \"{relay}\";\n\
             GRANT SELECT ON \"{schema}\"._sqlx_migrations TO \"{relay}\";\n\
             -- The application: INSERT (without RETURNING, which needs SELECT), or the publish\n\
             -- functions (SECURITY DEFINER; they return the event ids).\n\
             GRANT INSERT ON {q} TO \"{app}\";\n\
             GRANT EXECUTE ON FUNCTION\n    \
                 \"{schema}\".\"{name}_publish\"(text, text, jsonb, jsonb, text, integer, uuid),\n    \
                 \"{schema}\".\"{name}_publish_batch\"(jsonb)\n    \
                 TO \"{app}\";\n\
             COMMIT;\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_gets_no_insert_on_the_outbox_and_the_application_no_read() {
        let table = TableName::new("ops", "events").unwrap();
        let roles = Roles {
            owner: "o",
            relay: "r",
            app: "a",
        };
        let text = sql(&table, &roles, Part::All);
        assert!(text.contains("GRANT SELECT, UPDATE, DELETE ON \"ops\".\"events\" TO \"r\";"));
        assert!(text.contains("GRANT INSERT ON \"ops\".\"events\" TO \"a\";"));
        assert!(text.contains("\"ops\".\"events_publish_batch\"(jsonb)"));
        assert!(text.contains("GRANT USAGE, CREATE ON SCHEMA \"ops\" TO \"o\";"));
        for line in text.lines().filter(|l| l.starts_with("GRANT")) {
            assert!(
                !(line.contains("INSERT") && line.contains("\"r\"") && line.contains("events\" ")),
                "{line}"
            );
        }
        let setup = sql(&table, &roles, Part::Setup);
        assert!(setup.contains("CREATE SCHEMA") && !setup.contains("GRANT INSERT"));
        let tables = sql(&table, &roles, Part::Tables);
        assert!(!tables.contains("CREATE SCHEMA") && tables.contains("GRANT INSERT"));
    }
}
