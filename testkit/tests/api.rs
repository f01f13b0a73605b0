//! Drives the Schema Registry double over HTTP, one behaviour per test, as Confluent answers.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use outbox_relay_testkit::{DoubleOptions, SchemaRegistryDouble};
use prost::Message as _;
use serde_json::{json, Value};

const AVRO: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"}]}"#;
const AVRO_V2: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"note","type":["null","string"],"default":null}]}"#;
const JSON_SCHEMA: &str = r#"{"type":"object","properties":{"id":{"type":"integer"}}}"#;
const PROTO: &str = r#"syntax = "proto3";
package shop.v1;
import "google/protobuf/timestamp.proto";
message OrderPlaced { int64 id = 1; google.protobuf.Timestamp at = 2; }
"#;

async fn call(
    double: &SchemaRegistryDouble,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client.request(method, format!("{}{path}", double.url()));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the double answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

async fn register(double: &SchemaRegistryDouble, subject: &str, body: Value) -> (u16, Value) {
    call(
        double,
        "POST",
        &format!("/subjects/{subject}/versions"),
        Some(body),
    )
    .await
}

/// The JSON a schema text holds, to compare schemas whatever their key order.
fn parsed(text: &Value) -> Value {
    serde_json::from_str(text.as_str().expect("schema text")).expect("schema text is JSON")
}

fn error_code(body: &Value) -> i64 {
    body["error_code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no error_code in {body}"))
}

#[tokio::test]
async fn registering_answers_an_id_and_the_same_schema_again_keeps_id_and_version() {
    let double = SchemaRegistryDouble::start().await;
    let (status, first) = register(&double, "orders-value", json!({ "schema": AVRO })).await;
    assert_eq!(status, 200);
    assert_eq!(first, json!({ "id": 1 }));
    let (_, again) = register(
        &double,
        "orders-value",
        json!({ "schema": AVRO, "schemaType": "AVRO" }),
    )
    .await;
    assert_eq!(again, first);
    let (_, versions) = call(&double, "GET", "/subjects/orders-value/versions", None).await;
    assert_eq!(versions, json!([1]));
}

#[tokio::test]
async fn identical_schemas_share_one_id_across_subjects_and_differing_ones_do_not() {
    let double = SchemaRegistryDouble::start().await;
    let (_, a) = register(&double, "a-value", json!({ "schema": AVRO })).await;
    let (_, b) = register(&double, "b-value", json!({ "schema": AVRO })).await;
    double.set_compatibility(Some("b-value"), "NONE");
    let (_, json_schema) = register(
        &double,
        "b-value",
        json!({ "schema": JSON_SCHEMA, "schemaType": "JSON" }),
    )
    .await;
    assert_eq!(a["id"], b["id"]);
    assert_ne!(a["id"], json_schema["id"]);
    let (_, versions) = call(&double, "GET", "/subjects/b-value/versions", None).await;
    assert_eq!(versions, json!([1, 2]));
}

#[tokio::test]
async fn schema_by_id_omits_schema_type_for_avro_and_names_it_otherwise() {
    let double = SchemaRegistryDouble::start().await;
    let (_, avro) = register(&double, "a", json!({ "schema": AVRO })).await;
    let (_, proto) = register(
        &double,
        "p",
        json!({ "schema": PROTO, "schemaType": "PROTOBUF" }),
    )
    .await;
    let (status, body) = call(
        &double,
        "GET",
        &format!("/schemas/ids/{}?deleted=true", avro["id"]),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(parsed(&body["schema"]), parsed(&json!(AVRO)));
    assert!(body.get("schemaType").is_none(), "{body}");
    let path = format!("/schemas/ids/{}?subject=p&fetchMaxId=false", proto["id"]);
    let (_, body) = call(&double, "GET", &path, None).await;
    assert_eq!(body["schemaType"], "PROTOBUF");
    assert_eq!(body["schema"], PROTO.trim());
}

#[tokio::test]
async fn invalid_schemas_of_every_type_answer_42201() {
    let double = SchemaRegistryDouble::start().await;
    for (schema_type, schema) in [
        ("AVRO", "{not json"),
        ("AVRO", r#"{"type":"record","fields":[]}"#),
        ("AVRO", r#""no_such_primitive""#),
        ("JSON", "[1, 2"),
        ("PROTOBUF", "message { broken"),
        ("XML", "<a/>"),
    ] {
        let (status, body) = register(
            &double,
            "s",
            json!({ "schema": schema, "schemaType": schema_type }),
        )
        .await;
        assert_eq!(
            (status, error_code(&body)),
            (422, 42201),
            "{schema_type} {schema}: {body}"
        );
    }
    let (status, _) = call(&double, "GET", "/subjects/s/versions", None).await;
    assert_eq!(status, 404, "nothing was registered");
}

#[tokio::test]
async fn avro_primitive_names_and_unions_are_valid_schemas() {
    let double = SchemaRegistryDouble::start().await;
    for (subject, schema) in [
        ("s", r#""string""#),
        ("u", r#"["null","long"]"#),
        ("i", r#"{"type":"int"}"#),
    ] {
        let (status, body) = register(&double, subject, json!({ "schema": schema })).await;
        assert_eq!(status, 200, "{schema}: {body}");
    }
}

#[tokio::test]
async fn a_reference_to_a_missing_subject_or_version_answers_42201() {
    let double = SchemaRegistryDouble::start().await;
    double.register(
        "other",
        "PROTOBUF",
        "syntax = \"proto3\";\nmessage Other { int64 id = 1; }\n",
    );
    for reference in [
        json!({ "name": "other.proto", "subject": "missing", "version": 1 }),
        json!({ "name": "other.proto", "subject": "other", "version": 2 }),
    ] {
        let body = json!({ "schema": PROTO, "schemaType": "PROTOBUF", "references": [reference] });
        let (status, body) = register(&double, "s", body).await;
        assert_eq!((status, error_code(&body)), (422, 42201), "{body}");
    }
}

const MONEY: &str = r#"{"type":"record","name":"Money","namespace":"shop.v1","fields":[{"name":"cents","type":"long"}]}"#;
const PRICED: &str = r#"{"type":"record","name":"Priced","namespace":"shop.v1","fields":[{"name":"price","type":"shop.v1.Money"}]}"#;

#[tokio::test]
async fn an_avro_schema_naming_a_type_of_another_subject_is_accepted_with_its_reference() {
    let double = SchemaRegistryDouble::start().await;
    let (status, body) = register(&double, "priced", json!({ "schema": PRICED })).await;
    assert_eq!(
        (status, error_code(&body)),
        (422, 42201),
        "unknown name without reference"
    );
    let (_, money) = register(&double, "money", json!({ "schema": MONEY })).await;
    let reference = json!({ "name": "shop.v1.Money", "subject": "money", "version": 1 });
    let (status, priced) = register(
        &double,
        "priced",
        json!({ "schema": PRICED, "references": [reference] }),
    )
    .await;
    assert_eq!(status, 200, "{priced}");
    let (_, by_id) = call(
        &double,
        "GET",
        &format!("/schemas/ids/{}", priced["id"]),
        None,
    )
    .await;
    assert_eq!(by_id["references"], json!([reference]));
    let (_, version) = call(&double, "GET", "/subjects/priced/versions/1", None).await;
    assert_eq!(version["references"], json!([reference]));
    let path = format!("/schemas/ids/{}/referencedby", money["id"]);
    let (_, referenced_by) = call(&double, "GET", &path, None).await;
    assert_eq!(referenced_by, json!([priced["id"]]));
}

#[tokio::test]
async fn a_protobuf_schema_importing_another_subject_by_reference_compiles_and_serializes() {
    let double = SchemaRegistryDouble::start().await;
    double.register(
        "money",
        "PROTOBUF",
        "syntax = \"proto3\";\npackage shop.v1;\nmessage Money { int64 cents = 1; }\n",
    );
    let priced = "syntax = \"proto3\";\npackage shop.v1;\nimport \"shop/v1/money.proto\";\nmessage Priced { shop.v1.Money price = 1; }\n";
    let (status, _) = register(
        &double,
        "priced",
        json!({ "schema": priced, "schemaType": "PROTOBUF" }),
    )
    .await;
    assert_eq!(status, 422, "an unresolved import is refused");
    let reference = json!({ "name": "shop/v1/money.proto", "subject": "money", "version": 1 });
    let body = json!({ "schema": priced, "schemaType": "PROTOBUF", "references": [reference] });
    let (status, registered) = register(&double, "priced", body).await;
    assert_eq!(status, 200, "{registered}");
    let path = format!("/schemas/ids/{}?format=serialized", registered["id"]);
    let (status, serialized) = call(&double, "GET", &path, None).await;
    assert_eq!(status, 200, "{serialized}");
    assert_eq!(serialized["references"], json!([reference]));
}

#[tokio::test]
async fn served_avro_and_json_schema_text_is_compact_with_sorted_keys() {
    let double = SchemaRegistryDouble::start().await;
    let spaced = "{ \"type\": \"record\", \"name\": \"Order\",\n  \"fields\": [ {\"type\": \"long\", \"name\": \"id\"} ] }";
    let id = double.register("a", "AVRO", spaced);
    let (_, body) = call(&double, "GET", &format!("/schemas/ids/{id}"), None).await;
    assert_eq!(
        body["schema"],
        r#"{"fields":[{"name":"id","type":"long"}],"name":"Order","type":"record"}"#
    );
    let id = double.register("j", "JSON", r#"{ "type": "object", "properties": {} }"#);
    let (_, body) = call(&double, "GET", &format!("/schemas/ids/{id}"), None).await;
    assert_eq!(body["schema"], r#"{"properties":{},"type":"object"}"#);
}

const AVRO_V2_NO_DEFAULT: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"note","type":"string"}]}"#;

#[tokio::test]
async fn an_incompatible_new_version_is_refused_with_409_under_the_default_backward_level() {
    let double = SchemaRegistryDouble::start().await;
    double.register("s", "AVRO", AVRO);
    let (status, body) = register(&double, "s", json!({ "schema": AVRO_V2_NO_DEFAULT })).await;
    assert_eq!((status, error_code(&body)), (409, 409), "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "Schema being registered is incompatible with an earlier schema for subject \"s\""
        ) && message.contains("note"),
        "{message}"
    );
    let (_, versions) = call(&double, "GET", "/subjects/s/versions", None).await;
    assert_eq!(versions, json!([1]), "nothing was registered");
    let (status, _) = register(&double, "s", json!({ "schema": AVRO_V2 })).await;
    assert_eq!(status, 200, "a field with a default is a compatible change");
}

#[tokio::test]
async fn a_subject_level_of_none_accepts_what_backward_refuses_and_deleting_it_restores_backward() {
    let double = SchemaRegistryDouble::start().await;
    double.register("s", "AVRO", AVRO);
    let none = Some(json!({ "compatibility": "NONE" }));
    call(&double, "PUT", "/config/s", none).await;
    let (status, _) = register(&double, "s", json!({ "schema": AVRO_V2_NO_DEFAULT })).await;
    assert_eq!(status, 200);
    let (status, deleted) = call(&double, "DELETE", "/config/s", None).await;
    assert_eq!(
        (status, deleted),
        (200, json!({ "compatibilityLevel": "NONE" }))
    );
    let (status, body) = call(&double, "DELETE", "/config/s", None).await;
    assert_eq!((status, error_code(&body)), (404, 40408));
    let (status, _) = register(&double, "s", json!({ "schema": AVRO })).await;
    assert_eq!(
        status, 200,
        "v1 again is already registered: same id, no check"
    );
    let renamed = AVRO.replace("\"id\"", "\"key\"");
    let (status, _) = register(&double, "s", json!({ "schema": renamed })).await;
    assert_eq!(status, 409, "BACKWARD applies again");
}

#[tokio::test]
async fn forward_and_full_levels_check_the_other_direction() {
    let double = SchemaRegistryDouble::start().await;
    double.register("f", "AVRO", AVRO_V2_NO_DEFAULT);
    call(
        &double,
        "PUT",
        "/config/f",
        Some(json!({ "compatibility": "FORWARD" })),
    )
    .await;
    let (status, _) = register(&double, "f", json!({ "schema": AVRO })).await;
    assert_eq!(status, 409, "old readers need `note`, which has no default");
    double.register("full", "AVRO", AVRO);
    double.set_compatibility(Some("full"), "FULL");
    let (status, _) = register(&double, "full", json!({ "schema": AVRO_V2_NO_DEFAULT })).await;
    assert_eq!(status, 409, "new readers need `note`, which has no default");
    let (status, _) = register(&double, "full", json!({ "schema": AVRO_V2 })).await;
    assert_eq!(
        status, 200,
        "a field with a default is read and ignored both ways"
    );
}

#[tokio::test]
async fn the_compatibility_endpoint_answers_is_compatible_and_verbose_messages() {
    let double = SchemaRegistryDouble::start().await;
    double.register("s", "AVRO", AVRO);
    let path = "/compatibility/subjects/s/versions/latest";
    let (status, ok) = call(&double, "POST", path, Some(json!({ "schema": AVRO_V2 }))).await;
    assert_eq!((status, ok), (200, json!({ "is_compatible": true })));
    let (_, bad) = call(
        &double,
        "POST",
        path,
        Some(json!({ "schema": AVRO_V2_NO_DEFAULT })),
    )
    .await;
    assert_eq!(bad, json!({ "is_compatible": false }));
    let verbose = format!("{path}?verbose=true");
    let (_, bad) = call(
        &double,
        "POST",
        &verbose,
        Some(json!({ "schema": AVRO_V2_NO_DEFAULT })),
    )
    .await;
    assert_eq!(bad["is_compatible"], false);
    assert!(
        bad["messages"][0].as_str().unwrap().contains("note"),
        "{bad}"
    );
    let (status, body) = call(
        &double,
        "POST",
        "/compatibility/subjects/s/versions/7",
        Some(json!({ "schema": AVRO })),
    )
    .await;
    assert_eq!((status, error_code(&body)), (404, 40402));
}

#[tokio::test]
async fn json_schema_and_protobuf_compatibility_is_not_claimed_except_under_none() {
    let double = SchemaRegistryDouble::start().await;
    double.register("j", "JSON", JSON_SCHEMA);
    let other = r#"{"type":"object","properties":{"id":{"type":"string"}}}"#;
    let body = json!({ "schema": other, "schemaType": "JSON" });
    let (status, refused) = register(&double, "j", body.clone()).await;
    assert_eq!((status, error_code(&refused)), (422, 42299));
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("compatibility checking not implemented for JSON"),
        "{refused}"
    );
    let path = "/compatibility/subjects/j/versions/latest";
    let (status, _) = call(&double, "POST", path, Some(body.clone())).await;
    assert_eq!(status, 422);
    double.set_compatibility(Some("j"), "NONE");
    let (status, _) = register(&double, "j", body).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn unknown_schema_id_answers_40403() {
    let double = SchemaRegistryDouble::start().await;
    let (status, body) = call(&double, "GET", "/schemas/ids/7", None).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({ "error_code": 40403, "message": "Schema 7 not found" })
    );
}

#[tokio::test]
async fn serialized_format_answers_the_base64_file_descriptor_of_a_protobuf_schema() {
    let double = SchemaRegistryDouble::start().await;
    let id = double.register("p", "PROTOBUF", PROTO);
    let (status, body) = call(
        &double,
        "GET",
        &format!("/schemas/ids/{id}?format=serialized"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let bytes = BASE64
        .decode(body["schema"].as_str().unwrap())
        .expect("base64");
    let file =
        prost_types::FileDescriptorProto::decode(bytes.as_slice()).expect("a FileDescriptorProto");
    assert_eq!(file.package(), "shop.v1");
    assert_eq!(file.message_type[0].name(), "OrderPlaced");
    assert_eq!(file.dependency, ["google/protobuf/timestamp.proto"]);
}

#[tokio::test]
async fn serialized_format_also_applies_to_a_subject_version() {
    // confluent-kafka's ProtobufSerializer asks for it with use.latest.version.
    let double = SchemaRegistryDouble::start().await;
    let id = double.register("p", "PROTOBUF", PROTO);
    let (_, by_id) = call(
        &double,
        "GET",
        &format!("/schemas/ids/{id}?format=serialized"),
        None,
    )
    .await;
    let path = "/subjects/p/versions/latest?format=serialized&deleted=true";
    let (status, latest) = call(&double, "GET", path, None).await;
    assert_eq!(status, 200);
    assert_ne!(latest["schema"], PROTO);
    assert_eq!(latest["schema"], by_id["schema"]);
    assert_eq!(
        (latest["id"].clone(), latest["version"].clone()),
        (json!(id), json!(1))
    );
}

#[tokio::test]
async fn a_protobuf_schema_registered_as_a_base64_descriptor_is_served_back_as_is() {
    // confluent-kafka's Python ProtobufSerializer registers schemas this way.
    let double = SchemaRegistryDouble::start().await;
    let text_id = double.register("p", "PROTOBUF", PROTO);
    let (_, serialized) = call(
        &double,
        "GET",
        &format!("/schemas/ids/{text_id}?format=serialized"),
        None,
    )
    .await;
    let descriptor = serialized["schema"].as_str().unwrap().to_owned();
    let (status, body) = register(
        &double,
        "q",
        json!({ "schema": descriptor, "schemaType": "PROTOBUF" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let path = format!("/schemas/ids/{}?format=serialized", body["id"]);
    let (_, again) = call(&double, "GET", &path, None).await;
    assert_eq!(again["schema"], descriptor.as_str());
}

#[tokio::test]
async fn schema_id_versions_list_every_subject_and_version_holding_it() {
    let double = SchemaRegistryDouble::start().await;
    double.register("a", "AVRO", AVRO_V2);
    let id = double.register("a", "AVRO", AVRO);
    double.register("b", "AVRO", AVRO);
    let (_, body) = call(&double, "GET", &format!("/schemas/ids/{id}/versions"), None).await;
    assert_eq!(
        body,
        json!([{ "subject": "a", "version": 2 }, { "subject": "b", "version": 1 }])
    );
    let (_, subjects) = call(&double, "GET", &format!("/schemas/ids/{id}/subjects"), None).await;
    assert_eq!(subjects, json!(["a", "b"]));
}

#[tokio::test]
async fn subjects_lists_every_registered_subject() {
    let double = SchemaRegistryDouble::start().await;
    let (_, empty) = call(&double, "GET", "/subjects", None).await;
    assert_eq!(empty, json!([]));
    double.register("orders-value", "AVRO", AVRO);
    double.register("orders-key", "AVRO", r#""string""#);
    let (_, body) = call(&double, "GET", "/subjects", None).await;
    assert_eq!(body, json!(["orders-key", "orders-value"]));
}

#[tokio::test]
async fn unknown_subject_answers_40401() {
    let double = SchemaRegistryDouble::start().await;
    for path in [
        "/subjects/nope/versions",
        "/subjects/nope/versions/latest",
        "/subjects/nope/versions/1",
    ] {
        let (status, body) = call(&double, "GET", path, None).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(
            body,
            json!({ "error_code": 40401, "message": "Subject 'nope' not found." })
        );
    }
}

#[tokio::test]
async fn a_version_answers_subject_version_id_schema_and_type() {
    let double = SchemaRegistryDouble::start().await;
    double.register("orders-value", "AVRO", AVRO);
    double.set_compatibility(Some("orders-value"), "NONE");
    let id = double.register("orders-value", "JSON", JSON_SCHEMA);
    let (status, body) = call(&double, "GET", "/subjects/orders-value/versions/2", None).await;
    assert_eq!(status, 200);
    let expected = json!({
        "subject": "orders-value", "version": 2, "id": id,
        "schema": r#"{"properties":{"id":{"type":"integer"}},"type":"object"}"#,
        "schemaType": "JSON", "references": [],
    });
    assert_eq!(body, expected);
    let (_, first) = call(&double, "GET", "/subjects/orders-value/versions/1", None).await;
    assert!(first.get("schemaType").is_none(), "{first}");
}

#[tokio::test]
async fn latest_and_minus_one_answer_the_newest_version() {
    let double = SchemaRegistryDouble::start().await;
    double.register("s", "AVRO", AVRO);
    let newest = double.register("s", "AVRO", AVRO_V2);
    for version in ["latest", "-1"] {
        let (_, body) = call(
            &double,
            "GET",
            &format!("/subjects/s/versions/{version}"),
            None,
        )
        .await;
        assert_eq!(
            (body["version"].clone(), body["id"].clone()),
            (json!(2), json!(newest)),
            "{version}"
        );
    }
}

#[tokio::test]
async fn unknown_version_answers_40402() {
    let double = SchemaRegistryDouble::start().await;
    double.register("s", "AVRO", AVRO);
    let (status, body) = call(&double, "GET", "/subjects/s/versions/3", None).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({ "error_code": 40402, "message": "Version 3 not found." })
    );
}

#[tokio::test]
async fn a_version_that_is_not_a_positive_integer_or_latest_answers_42202() {
    let double = SchemaRegistryDouble::start().await;
    double.register("s", "AVRO", AVRO);
    for version in ["0", "-2", "first", "99999999999"] {
        let (status, body) = call(
            &double,
            "GET",
            &format!("/subjects/s/versions/{version}"),
            None,
        )
        .await;
        assert_eq!((status, error_code(&body)), (422, 42202), "{version}");
    }
}

#[tokio::test]
async fn lookup_answers_the_version_holding_the_schema() {
    let double = SchemaRegistryDouble::start().await;
    double.register("s", "AVRO", AVRO_V2);
    let id = double.register("s", "AVRO", AVRO);
    // Whitespace differs from what was registered: the lookup still matches, as Confluent's does.
    let spaced = AVRO.replace(',', ", ");
    let body = json!({ "schema": spaced });
    let (status, found) = call(
        &double,
        "POST",
        "/subjects/s?normalize=false&deleted=true",
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(
        (found["id"].clone(), found["version"].clone()),
        (json!(id), json!(2))
    );
    assert_eq!(found["subject"], "s");
}

#[tokio::test]
async fn lookup_under_an_unknown_subject_answers_40401() {
    let double = SchemaRegistryDouble::start().await;
    let (status, body) = call(
        &double,
        "POST",
        "/subjects/nope",
        Some(json!({ "schema": AVRO })),
    )
    .await;
    assert_eq!((status, error_code(&body)), (404, 40401));
}

#[tokio::test]
async fn lookup_of_a_schema_not_under_the_subject_answers_40403() {
    let double = SchemaRegistryDouble::start().await;
    double.register("s", "AVRO", AVRO);
    double.register("other", "AVRO", AVRO_V2);
    let (status, body) = call(
        &double,
        "POST",
        "/subjects/s",
        Some(json!({ "schema": AVRO_V2 })),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({ "error_code": 40403, "message": "Schema not found" })
    );
}

#[tokio::test]
async fn config_starts_backward_and_stores_global_and_subject_levels() {
    let double = SchemaRegistryDouble::start().await;
    let (_, global) = call(&double, "GET", "/config", None).await;
    assert_eq!(global, json!({ "compatibilityLevel": "BACKWARD" }));
    let (_, put) = call(
        &double,
        "PUT",
        "/config",
        Some(json!({ "compatibility": "FULL" })),
    )
    .await;
    assert_eq!(put, json!({ "compatibility": "FULL" }));
    let (_, global) = call(&double, "GET", "/config", None).await;
    assert_eq!(global, json!({ "compatibilityLevel": "FULL" }));

    let (status, _) = call(&double, "GET", "/config/s", None).await;
    assert_eq!(status, 404, "no subject level yet");
    let (_, put) = call(
        &double,
        "PUT",
        "/config/s",
        Some(json!({ "compatibility": "NONE" })),
    )
    .await;
    assert_eq!(put, json!({ "compatibility": "NONE" }));
    let (_, subject) = call(&double, "GET", "/config/s", None).await;
    assert_eq!(subject, json!({ "compatibilityLevel": "NONE" }));
    let (status, body) = call(
        &double,
        "PUT",
        "/config",
        Some(json!({ "compatibility": "SIDEWAYS" })),
    )
    .await;
    assert_eq!((status, error_code(&body)), (422, 42203));
    let (status, deleted) = call(&double, "DELETE", "/config/s", None).await;
    assert_eq!(
        (status, deleted),
        (200, json!({ "compatibilityLevel": "NONE" }))
    );
}

#[tokio::test]
async fn unknown_path_answers_404_with_code_404() {
    let double = SchemaRegistryDouble::start().await;
    let (status, body) = call(&double, "GET", "/no/such/thing", None).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({ "error_code": 404, "message": "HTTP 404 Not Found" })
    );
}

#[tokio::test]
async fn answers_carry_the_schema_registry_content_type() {
    let double = SchemaRegistryDouble::start().await;
    let response = reqwest::get(format!("{}/subjects", double.url()))
        .await
        .unwrap();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/vnd.schemaregistry.v1+json");
}

#[tokio::test]
async fn basic_auth_refuses_missing_or_wrong_credentials_with_401() {
    let options = DoubleOptions {
        port: 0,
        basic_auth: Some(("relay".into(), "s3cret".into())),
    };
    let double = SchemaRegistryDouble::start_with(options).await;
    let client = reqwest::Client::new();
    let url = format!("{}/subjects", double.url());
    let missing = client.get(&url).send().await.unwrap();
    assert_eq!(missing.status().as_u16(), 401);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "error_code": 401, "message": "Unauthorized" })
    );
    let wrong = client
        .get(&url)
        .basic_auth("relay", Some("guess"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let right = client
        .get(&url)
        .basic_auth("relay", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(right.status().as_u16(), 200);
}

#[tokio::test]
async fn a_subject_with_a_slash_encoded_as_2f_is_decoded() {
    let double = SchemaRegistryDouble::start().await;
    let (status, _) = register(&double, "team%2Forders-value", json!({ "schema": AVRO })).await;
    assert_eq!(status, 200);
    let (_, subjects) = call(&double, "GET", "/subjects", None).await;
    assert_eq!(subjects, json!(["team/orders-value"]));
    let (_, latest) = call(
        &double,
        "GET",
        "/subjects/team%2Forders-value/versions/latest",
        None,
    )
    .await;
    assert_eq!(latest["subject"], "team/orders-value");
}

#[tokio::test]
async fn fail_with_makes_every_request_answer_that_status_until_healed() {
    let double = SchemaRegistryDouble::start().await;
    let id = double.register("s", "AVRO", AVRO);
    for status in [500, 503] {
        double.fail_with(Some(status));
        let (answered, body) = call(&double, "GET", &format!("/schemas/ids/{id}"), None).await;
        assert_eq!((answered, error_code(&body)), (status, 50001));
    }
    double.fail_with(None);
    let (status, _) = call(&double, "GET", &format!("/schemas/ids/{id}"), None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn going_down_refuses_connections_and_coming_back_keeps_port_and_state() {
    let double = SchemaRegistryDouble::start().await;
    let id = double.register("s", "AVRO", AVRO);
    // One client throughout, so a pooled keep-alive connection would be reused if it survived.
    let client = reqwest::Client::new();
    let url = format!("{}/schemas/ids/{id}", double.url());
    assert_eq!(
        client.get(&url).send().await.unwrap().status().as_u16(),
        200
    );

    double.go_down().await;
    let refused = client
        .get(&url)
        .send()
        .await
        .expect_err("the double is down");
    assert!(refused.is_connect(), "{refused:?}");
    let port = double.port();

    double.come_back().await;
    assert_eq!(double.port(), port);
    let back = client.get(&url).send().await.unwrap();
    assert_eq!(back.status().as_u16(), 200);
    let body: Value = back.json().await.unwrap();
    assert_eq!(parsed(&body["schema"]), parsed(&json!(AVRO)));
}

#[tokio::test]
async fn requests_counts_every_request_on_every_path() {
    let double = SchemaRegistryDouble::start().await;
    assert_eq!(double.requests(), 0);
    double.register("s", "AVRO", AVRO);
    assert_eq!(double.requests(), 0, "direct registration is not a request");
    call(&double, "GET", "/subjects", None).await;
    call(&double, "GET", "/no/such/thing", None).await;
    double.fail_with(Some(503));
    call(&double, "GET", "/subjects", None).await;
    assert_eq!(double.requests(), 3);
}

#[tokio::test]
async fn a_fixed_port_is_honoured() {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let double = SchemaRegistryDouble::start_with(DoubleOptions {
        port: free,
        basic_auth: None,
    })
    .await;
    assert_eq!(double.port(), free);
    assert_eq!(double.url(), format!("http://127.0.0.1:{free}"));
}

#[test]
fn the_binary_announces_its_url_serves_preregistered_schemas_and_exits_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("srd-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let schema_path = dir.join("order.proto");
    std::fs::File::create(&schema_path)
        .unwrap()
        .write_all(PROTO.as_bytes())
        .unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_schema-registry-double"))
        .args(["--basic-auth", "u:p", "--register"])
        .arg(format!(
            "team/orders-value=PROTOBUF:{}",
            schema_path.display()
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first_line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    let url = first_line
        .trim()
        .strip_prefix("listening on ")
        .expect(&first_line)
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, body) = runtime.block_on(async {
        let response = reqwest::Client::new()
            .get(format!(
                "{url}/subjects/team%2Forders-value/versions/latest"
            ))
            .basic_auth("u", Some("p"))
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap(),
        )
    });
    assert_eq!(status, 200);
    assert_eq!(
        (body["id"].clone(), body["schemaType"].clone()),
        (json!(1), json!("PROTOBUF"))
    );

    let started = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    loop {
        if let Some(exit) = child.try_wait().unwrap() {
            assert!(exit.success(), "{exit}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir_all(dir);
}
