"""Optional client-side validation: check a value against the Avro schema of its topic's subject
(``{topic}-value``) before anything is written, raising ``SchemaValidationError``, so a value the
relay would park never becomes a row. Needs fastavro (the ``avro`` extra).

The value is checked the way the relay will encode it: a ``string`` field marked
``"outbox.json": true`` takes any JSON (the relay writes its compact JSON text), an absent
field with a default takes the default, and a field the schema does not have is an error.

    validator = AvroSchemaValidator.from_directory("schemas")          # <subject>.avsc files
    validator = AvroSchemaValidator.from_registry("http://registry:8081")  # latest versions
    publisher = OutboxEventPublisher(conn, validator=validator)
"""

from __future__ import annotations

import json
import pathlib
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, Optional

from .errors import SchemaValidationError, SerializationError
from .publisher import value_subject

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


class AvroSchemaValidator:
    """Validates values against Avro schemas, by subject.

    ``require_schema``: a topic whose subject has no schema is refused (the default), or let
    through unchecked (``False``).
    """

    def __init__(
        self,
        lookup: Callable[[str], Optional[Any]],
        *,
        require_schema: bool = True,
    ):
        self._lookup = lookup
        self._require = require_schema
        self._parsed: Dict[str, Optional["tuple[Any, Any]"]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_directory(cls, path: str | pathlib.Path, **kwargs: Any) -> "AvroSchemaValidator":
        """Schemas from ``<subject>.avsc`` files (the layout of the project's ``schemas/``)."""
        schemas = {
            file.stem: json.loads(file.read_text())
            for file in pathlib.Path(path).glob("*.avsc")
        }
        return cls(schemas.get, **kwargs)

    @classmethod
    def from_registry(cls, url: str, *, timeout: float = 5.0, **kwargs: Any) -> "AvroSchemaValidator":
        """The latest version of each subject from a Confluent-compatible Schema Registry,
        fetched once per subject and cached."""

        def fetch(subject: str) -> Optional[Any]:
            quoted = urllib.parse.quote(subject, safe="")
            request = f"{url.rstrip('/')}/subjects/{quoted}/versions/latest"
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    body = json.load(response)
            except urllib.error.HTTPError as error:
                if error.code == 404:
                    return None
                raise SerializationError(f"Schema Registry: {subject}: HTTP {error.code}") from error
            except (OSError, ValueError) as error:
                raise SerializationError(f"Schema Registry unreachable: {error}") from error
            if body.get("schemaType", "AVRO") != "AVRO":
                raise SchemaValidationError(f"subject {subject} is {body['schemaType']}, not Avro")
            return json.loads(body["schema"])

        return cls(fetch, **kwargs)

    def validate(self, topic: str, value: Dict[str, Any]) -> None:
        subject = value_subject(topic)
        schema = self._schema(subject)
        if schema is None:
            if self._require:
                raise SchemaValidationError(f"no schema for subject {subject}")
            return
        import fastavro.validation

        raw, parsed = schema
        try:
            datum = _to_avro(raw, value, {}, "value")
            fastavro.validation.validate(datum, parsed, raise_errors=True)
        except (_Mismatch, fastavro.validation.ValidationError) as error:
            raise SchemaValidationError(f"value does not match subject {subject}: {error}") from error

    def _schema(self, subject: str) -> Optional["tuple[Any, Any]"]:
        with self._lock:
            if subject not in self._parsed:
                raw = self._lookup(subject)
                if raw is None:
                    self._parsed[subject] = None
                else:
                    import fastavro

                    self._parsed[subject] = (raw, fastavro.parse_schema(raw))
            return self._parsed[subject]


class _Mismatch(Exception):
    pass


def _to_avro(schema: Any, value: Any, named: Dict[str, Any], at: str) -> Any:
    """The value as the relay will encode it: outbox.json fields as JSON text, unknown record
    fields refused. Named types are collected as they are met (enough for the catalogue)."""
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return value
        return _to_avro(named[schema], value, named, at) if schema in named else value
    if isinstance(schema, list):
        # The first branch the value fits, as the relay picks it (records: fields and enum
        # symbols decide; fastavro checks the primitives of the result).
        errors = []
        for branch in schema:
            try:
                return _to_avro(branch, value, named, at)
            except _Mismatch as error:
                errors.append(str(error))
        raise _Mismatch(f"{at}: fits no branch of the union ({'; '.join(errors)})")
    kind = schema.get("type")
    if kind in ("record", "error"):
        full = _full_name(schema)
        named[full] = schema
        named[schema["name"]] = schema
        if not isinstance(value, dict):
            raise _Mismatch(f"{at}: expected an object for record {full}")
        fields = {field["name"]: field for field in schema["fields"]}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise _Mismatch(f"{at}.{unknown[0]}: not a field of record {full}")
        out = {}
        for name, field in fields.items():
            if name not in value:
                if "default" not in field:
                    raise _Mismatch(f"{at}.{name}: missing (no default in record {full})")
                out[name] = field["default"]
                continue
            field_value = value[name]
            if field.get("outbox.json") or (isinstance(field["type"], dict) and field["type"].get("outbox.json")):
                out[name] = json.dumps(field_value, separators=(",", ":"), allow_nan=False)
            else:
                out[name] = _to_avro(field["type"], field_value, named, f"{at}.{name}")
        return out
    if kind in ("enum", "fixed"):
        named[_full_name(schema)] = schema
        named[schema["name"]] = schema
        if kind == "enum" and value not in schema["symbols"]:
            raise _Mismatch(f"{at}: {value!r} is not a symbol of enum {_full_name(schema)}; "
                            f"allowed: {', '.join(schema['symbols'])}")
        return value
    if kind == "array" and isinstance(value, list):
        return [_to_avro(schema["items"], item, named, f"{at}[{i}]") for i, item in enumerate(value)]
    if kind == "map" and isinstance(value, dict):
        return {k: _to_avro(schema["values"], v, named, f"{at}.{k}") for k, v in value.items()}
    return value


def _full_name(schema: Dict[str, Any]) -> str:
    name = str(schema["name"])
    if "." in name or not schema.get("namespace"):
        return name
    return f"{schema['namespace']}.{name}"
