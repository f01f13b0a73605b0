//! The classification table of registry answers, subject encoding and bounds.

use super::*;

#[test]
fn the_status_decides_the_verdict_before_any_text_is_read() {
    for (status, verdict) in [
        (400, Verdict::Refused),
        (404, Verdict::Refused),
        (405, Verdict::Refused),
        (409, Verdict::Refused),
        (414, Verdict::Refused),
        (415, Verdict::Refused),
        (422, Verdict::Refused),
        (401, Verdict::Credentials),
        (403, Verdict::Credentials),
        (408, Verdict::Outage),
        (429, Verdict::Outage),
        (500, Verdict::Outage),
        (502, Verdict::Outage),
        (503, Verdict::Outage),
        (302, Verdict::Outage),
    ] {
        assert_eq!(classify_status(status), verdict, "HTTP {status}");
    }
}

#[test]
fn a_refusal_names_what_was_asked_with_the_registrys_message_and_code() {
    let e = classify(
        404,
        r#"{"error_code": 40401, "message": "Subject 'x' not found."}"#,
        "subject `x`",
    );
    let RegistryError::Refused(text) = e else {
        panic!("404 must refuse, got {e:?}");
    };
    assert_eq!(
        text,
        "subject `x`: Subject 'x' not found (HTTP 404, error 40401)"
    );
}

#[test]
fn a_401_without_error_code_or_json_is_still_a_credentials_outage() {
    for body in [r#"{"message": "Unauthorized"}"#, "<html>401</html>", ""] {
        let e = classify(401, body, "subject `x`");
        let RegistryError::Outage(text) = e else {
            panic!("401 must be an outage, got {e:?}");
        };
        assert!(text.contains("registry.username"), "{text}");
        assert!(text.contains("HTTP 401"), "{text}");
    }
}

#[test]
fn an_error_code_in_the_body_does_not_override_the_status() {
    // A 405 whose body claims a server error is still an answer about the request.
    let e = classify(
        405,
        r#"{"error_code": 50001, "message": "boom"}"#,
        "subject `x`",
    );
    assert!(matches!(e, RegistryError::Refused(_)), "{e:?}");
    let e = classify(
        503,
        r#"{"error_code": 40401, "message": "odd"}"#,
        "subject `x`",
    );
    assert!(matches!(e, RegistryError::Outage(_)), "{e:?}");
}

#[test]
fn subjects_are_percent_encoded_as_one_path_segment() {
    assert_eq!(encode_segment("orders-value"), "orders-value");
    assert_eq!(encode_segment("a.b_c~d"), "a.b_c~d");
    assert_eq!(encode_segment("x?y/z"), "x%3Fy%2Fz");
    assert_eq!(encode_segment("50% #1"), "50%25%20%231");
    assert_eq!(encode_segment("é"), "%C3%A9");
}

#[test]
fn an_overlong_or_empty_subject_is_refused_before_any_request() {
    assert!(check_subject(&"s".repeat(MAX_SUBJECT_LEN)).is_ok());
    let Err(RegistryError::Refused(why)) = check_subject(&"s".repeat(MAX_SUBJECT_LEN + 1)) else {
        panic!("an overlong subject must be refused");
    };
    assert!(
        why.contains("256 characters") && why.contains("255"),
        "{why}"
    );
    assert!(matches!(check_subject(""), Err(RegistryError::Refused(_))));
}

#[test]
fn a_schema_of_another_type_than_the_topic_is_refused_naming_both() {
    assert!(check_type("AVRO", Format::Avro, 1, "s").is_ok());
    let Err(RegistryError::Refused(why)) = check_type("JSON", Format::Avro, 7, "subject `s`")
    else {
        panic!("a JSON schema on an Avro topic must be refused");
    };
    assert_eq!(
        why,
        "subject `s` (id 7) is a JSON schema, but the topic is configured as AVRO"
    );
}
