//! Compatibility checking, as a Confluent-compatible registry does it before registering a new
//! version: under the subject's level (BACKWARD by default), the new schema is checked against
//! the latest version (or every version, for the `_TRANSITIVE` levels).
//!
//! - **Avro**: Avro's schema-resolution rules, through `apache_avro::schema_compatibility`
//!   (fields added or removed with or without defaults, promotions int→long→float→double,
//!   string↔bytes, enum symbols, unions, named types, nested records, arrays and maps). A
//!   resolution that works only for some data ("partial": an enum symbol or a union branch the
//!   reader lacks) counts as incompatible, as Confluent's checker says.
//! - **JSON Schema and Protobuf**: not implemented. A new version under any level but `NONE`
//!   is refused with an explicit "compatibility checking not implemented" (422, 42299), rather
//!   than accepted as if it had been checked.
//! - A new version of another schema type than the previous one is incompatible.

use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use apache_avro::Schema;

/// One level, as spelt in `/config` bodies.
pub(crate) const LEVELS: [&str; 7] = [
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
    "NONE",
];

/// A schema ready to be checked: its type and, for Avro, the parsed schema.
pub(crate) struct Candidate {
    pub(crate) schema_type: String,
    pub(crate) avro: Option<Schema>,
}

/// Why a check could not say yes.
#[derive(Debug, PartialEq)]
pub(crate) enum Verdict {
    Compatible,
    /// What is incompatible, one message per problem.
    Incompatible(Vec<String>),
    /// The double cannot check this schema type.
    NotImplemented(String),
}

/// Checks `new` against `previous` (oldest first) under `level`.
pub(crate) fn check(level: &str, new: &Candidate, previous: &[Candidate]) -> Verdict {
    if level == "NONE" || previous.is_empty() {
        return Verdict::Compatible;
    }
    let against: &[Candidate] = if level.ends_with("_TRANSITIVE") {
        previous
    } else {
        &previous[previous.len() - 1..]
    };
    let backward = level.starts_with("BACKWARD") || level.starts_with("FULL");
    let forward = level.starts_with("FORWARD") || level.starts_with("FULL");
    let mut messages = Vec::new();
    for (i, old) in against.iter().enumerate().rev() {
        if old.schema_type != new.schema_type {
            messages.push(format!(
                "the schema type changed from {} to {}",
                old.schema_type, new.schema_type
            ));
            continue;
        }
        let (Some(old_avro), Some(new_avro)) = (&old.avro, &new.avro) else {
            return Verdict::NotImplemented(format!(
                "compatibility checking not implemented for {}; set the subject's compatibility \
                 to NONE to register it",
                new.schema_type
            ));
        };
        let version = if against.len() == previous.len() {
            format!("version {}", i + 1)
        } else {
            "the latest version".to_owned()
        };
        if backward {
            if let Some(why) = avro_can_read(old_avro, new_avro) {
                messages.push(format!(
                    "BACKWARD: the new schema cannot read data written with {version}: {why}"
                ));
            }
        }
        if forward {
            if let Some(why) = avro_can_read(new_avro, old_avro) {
                messages.push(format!(
                    "FORWARD: {version} cannot read data written with the new schema: {why}"
                ));
            }
        }
    }
    if messages.is_empty() {
        Verdict::Compatible
    } else {
        Verdict::Incompatible(messages)
    }
}

/// `None` when `reader` can read everything `writer` writes; otherwise why not.
fn avro_can_read(writer: &Schema, reader: &Schema) -> Option<String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => None,
        Ok(Compatibility::Partial) => Some(
            "only some values can be read (an enum symbol or a union branch of the writer is \
             missing in the reader)"
                .to_owned(),
        ),
        Err(e) => Some(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avro(text: &str) -> Candidate {
        Candidate {
            schema_type: "AVRO".to_owned(),
            avro: Some(Schema::parse_str(text).expect("a valid Avro schema")),
        }
    }

    fn record(fields: &str) -> String {
        format!(r#"{{"type":"record","name":"R","fields":[{fields}]}}"#)
    }

    const ID: &str = r#"{"name":"id","type":"long"}"#;
    const NOTE_DEFAULT: &str = r#"{"name":"note","type":["null","string"],"default":null}"#;
    const NOTE: &str = r#"{"name":"note","type":"string"}"#;
    const NOTE_NO_DEFAULT: &str = r#"{"name":"note","type":["null","string"]}"#;

    fn verdict(level: &str, old: &str, new: &str) -> bool {
        match check(level, &avro(new), &[avro(old)]) {
            Verdict::Compatible => true,
            Verdict::Incompatible(_) => false,
            Verdict::NotImplemented(why) => panic!("{why}"),
        }
    }

    #[test]
    fn avro_changes_are_judged_by_the_schema_resolution_rules() {
        let id = record(ID);
        let id_note = record(&format!("{ID},{NOTE}"));
        let id_note_default = record(&format!("{ID},{NOTE_DEFAULT}"));
        let int_field = record(r#"{"name":"id","type":"int"}"#);
        let float_field = record(r#"{"name":"id","type":"float"}"#);
        let string_field = record(r#"{"name":"id","type":"string"}"#);
        let bytes_field = record(r#"{"name":"id","type":"bytes"}"#);
        let enum_ab = r#"{"type":"enum","name":"E","symbols":["A","B"]}"#;
        let enum_abc = r#"{"type":"enum","name":"E","symbols":["A","B","C"]}"#;
        let nested = |t: &str| record(&format!(r#"{{"name":"inner","type":{t}}}"#));
        let inner_id = record(ID).replace("\"R\"", "\"Inner\"");
        let inner_id_note = record(&format!("{ID},{NOTE}")).replace("\"R\"", "\"Inner\"");
        let inner_id_note_default =
            record(&format!("{ID},{NOTE_DEFAULT}")).replace("\"R\"", "\"Inner\"");
        #[rustfmt::skip]
        let table: Vec<(&str, String, String, bool, &str)> = vec![
            ("BACKWARD", id.clone(), id_note_default.clone(), true, "added field with a default"),
            ("BACKWARD", id.clone(), id_note.clone(), false, "added field without a default"),
            ("BACKWARD", id_note.clone(), id.clone(), true, "removed field"),
            ("FORWARD", id_note.clone(), id.clone(), false, "removed field without a default"),
            ("FORWARD", id_note_default.clone(), id.clone(), true, "removed field with a default"),
            ("FORWARD", id.clone(), id_note.clone(), true, "added field, forward"),
            ("FULL", id.clone(), id_note.clone(), false, "added field without default, full"),
            ("FULL", id.clone(), id_note_default.clone(), true, "added optional field, full"),
            ("BACKWARD", int_field.clone(), id.clone(), true, "int promoted to long"),
            ("BACKWARD", id.clone(), int_field.clone(), false, "long narrowed to int"),
            ("BACKWARD", int_field.clone(), float_field.clone(), true, "int promoted to float"),
            ("BACKWARD", string_field.clone(), bytes_field.clone(), true, "string read as bytes"),
            ("BACKWARD", bytes_field.clone(), string_field.clone(), true, "bytes read as string"),
            ("BACKWARD", string_field.clone(), id.clone(), false, "string changed to long"),
            ("BACKWARD", enum_ab.into(), enum_abc.into(), true, "enum symbol added"),
            ("BACKWARD", enum_abc.into(), enum_ab.into(), false, "enum symbol removed"),
            ("BACKWARD", r#""string""#.into(), r#"["null","string"]"#.into(), true, "union widened"),
            ("BACKWARD", r#"["null","string"]"#.into(), r#""string""#.into(), false, "union narrowed"),
            ("BACKWARD", r#"{"type":"array","items":"int"}"#.into(), r#"{"type":"array","items":"long"}"#.into(), true, "array items promoted"),
            ("BACKWARD", r#"{"type":"map","values":"long"}"#.into(), r#"{"type":"map","values":"int"}"#.into(), false, "map values narrowed"),
            ("BACKWARD", nested(&inner_id), nested(&inner_id_note), false, "nested record: field added without default"),
            ("BACKWARD", nested(&inner_id), nested(&inner_id_note_default), true, "nested record: field added with default"),
            ("BACKWARD", id.clone(), id.replace("\"R\"", "\"Other\""), false, "record renamed"),
            ("NONE", id.clone(), string_field.clone(), true, "anything goes under NONE"),
        ];
        for (level, old, new, expected, what) in table {
            assert_eq!(verdict(level, &old, &new), expected, "{what} under {level}");
        }
    }

    #[test]
    fn transitive_levels_check_every_version_and_plain_levels_only_the_latest() {
        let v1 = avro(&record(ID));
        let v2 = avro(&record(&format!("{ID},{NOTE_DEFAULT}")));
        // v3 drops `id` and its `note` has no default: fine against v2, which has `note`, but
        // not against v1, which does not.
        let v3 = avro(&record(NOTE_NO_DEFAULT));
        assert_eq!(check("BACKWARD", &v3, &[v1, v2]), Verdict::Compatible);
        let v1 = avro(&record(ID));
        let v2 = avro(&record(&format!("{ID},{NOTE_DEFAULT}")));
        let v3 = avro(&record(NOTE_NO_DEFAULT));
        assert!(matches!(
            check("BACKWARD_TRANSITIVE", &v3, &[v1, v2]),
            Verdict::Incompatible(m) if m.len() == 1 && m[0].contains("version 1")
        ));
    }

    #[test]
    fn a_changed_schema_type_is_incompatible_and_other_types_are_not_claimed() {
        let json = |_: ()| Candidate {
            schema_type: "JSON".to_owned(),
            avro: None,
        };
        assert!(matches!(
            check("BACKWARD", &json(()), &[avro(r#""string""#)]),
            Verdict::Incompatible(_)
        ));
        assert!(matches!(
            check("BACKWARD", &json(()), &[json(())]),
            Verdict::NotImplemented(why) if why.contains("not implemented for JSON")
        ));
        assert_eq!(check("NONE", &json(()), &[json(())]), Verdict::Compatible);
    }
}
