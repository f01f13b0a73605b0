//! JSON payload → Avro binary datum, for one already-fetched Avro schema.
//!
//! Owns the rules for mapping the jsonb payload of an outbox row onto an Avro schema, and the
//! binary encoding itself. The schema is parsed once (by `apache_avro`) in [`AvroEncoder::new`]
//! and compiled into a small arena of nodes with named types and `Ref`s resolved, record
//! defaults pre-encoded and enum symbols indexed, so [`AvroEncoder::encode`] walks the JSON
//! value once and writes bytes directly: no `types::Value` tree, no schema re-resolution
//! (rebuilding the resolved schema was ~90% of encode time in apache avro-rs issue #371). Tests
//! prove the bytes decode with `apache_avro::from_avro_datum`.
//!
//! The mapping, which is also the product's contract with event authors:
//! - **records**: a JSON object. A missing field takes the schema's default, else it is an error.
//!   A key the record does not declare is an error ("not in the schema"): the relay refuses to
//!   drop data silently. An explicit `null` is a value, not "missing".
//! - **int / long**: JSON numbers that are exactly an integer in range, read from their text
//!   (`2`, `2.0`, `2e0`; see `serialize::number`); `1.5`, `1.0000000000000000001` or `2^40` for an
//!   `int` is an error naming the value. **float / double** accept any JSON number and take the
//!   nearest value, rounded once from its text; overflow (`1e400`) is an error.
//! - **bytes**: a JSON string, written as its UTF-8 bytes, or an array of numbers 0–255.
//!   **fixed**: the same, and the byte count must equal the size. (Record defaults for bytes and
//!   fixed follow the Avro spec instead: one byte per code point 0–255.)
//! - **enum**: the symbol as a string; an unknown symbol names the allowed ones.
//! - **unions**: natural JSON (`null` or the bare value; branches are tried in schema order and
//!   the first that encodes wins) or Avro's JSON wrapper (`{"string": "x"}`,
//!   `{"com.example.Rec": {..}}`, full or short name; logical types use the underlying type name,
//!   e.g. `{"long": 1}`). A one-key object naming a branch is read as a wrapper first.
//! - **logical types**: `timestamp-*` / `local-timestamp-*` from integers or RFC 3339 strings
//!   (sub-unit digits are floored); `date` from integer days or `YYYY-MM-DD`; `time-millis` /
//!   `time-micros` from integers within one day; `uuid` from a valid UUID string (written in
//!   canonical lowercase form); `decimal` (bytes or fixed, precision ≤ 38) from a decimal string
//!   (`"12.34"`) or a JSON number (its exact digits), rejected when it needs more places than
//!   `scale` or more digits than `precision`, never rounded. `big-decimal` is not supported.
//! - **free-form JSON** (product convention): a field whose type is `string` or a union with
//!   `string` and that carries `"outbox.json": true` accepts any JSON value and writes its
//!   compact JSON text (`serde_json::to_string`, numbers as written; a JSON string is written
//!   quoted). In such a
//!   union, wrapper objects are *not* unwrapped: the object is the data.

use std::collections::HashMap;

use apache_avro::schema::{
    DecimalSchema, InnerDecimalSchema, Name, RecordField, RecordSchema, Schema, UnionSchema,
    UuidSchema,
};
use serde_json::Value;

use super::{EncodeError, SchemaError};

#[path = "avro_logical.rs"]
mod logical;
#[path = "avro_walk.rs"]
mod walk;

#[cfg(test)]
#[path = "avro_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "avro_logical_tests.rs"]
mod logical_tests;

#[cfg(test)]
#[path = "avro_proptest.rs"]
mod proptests;

#[cfg(test)]
#[path = "avro_number_tests.rs"]
mod number_tests;

/// Encodes JSON payloads for one Avro schema. Build once per schema id and share (`Send + Sync`).
#[derive(Debug)]
pub struct AvroEncoder {
    nodes: Vec<Node>,
    root: NodeId,
}

impl AvroEncoder {
    /// Parses `schema_json` (the schema text as registered) and prepares everything `encode`
    /// needs. Fails on invalid schema text, unknown type names, defaults that do not fit their
    /// field, a misplaced `"outbox.json"` attribute and unsupported logical types.
    pub fn new(schema_json: &str) -> Result<Self, SchemaError> {
        Self::with_references(schema_json, &[])
    }

    /// As [`new`](Self::new), with the texts of referenced schemas (Confluent schema
    /// references, dependencies first) whose named types `schema_json` may use.
    pub fn with_references(schema_json: &str, referenced: &[&str]) -> Result<Self, SchemaError> {
        let invalid = |e: apache_avro::Error| SchemaError(format!("invalid Avro schema: {e}"));
        let (schema, named) = if referenced.is_empty() {
            (Schema::parse_str(schema_json).map_err(invalid)?, Vec::new())
        } else {
            Schema::parse_str_with_list(schema_json, referenced).map_err(invalid)?
        };
        let mut compiler = Compiler::default();
        // The referenced types first, so that the schema's names of them resolve.
        for referenced in &named {
            compiler.compile(referenced, false)?;
        }
        let root = compiler.compile(&schema, false)?;
        let mut encoder = AvroEncoder {
            nodes: compiler.nodes,
            root,
        };
        encoder.encode_defaults(compiler.defaults)?;
        Ok(encoder)
    }

    /// Full name of the top-level record (for the record subject strategies); `None` for
    /// non-record schemas.
    pub fn record_name(&self) -> Option<String> {
        match &self.nodes[self.root] {
            Node::Record(r) => Some(r.name.clone()),
            _ => None,
        }
    }

    /// Does the top-level record (or any record branch of a top-level union) declare a field
    /// with this name?
    pub fn has_top_level_field(&self, name: &str) -> bool {
        let declares = |id: NodeId| match &self.nodes[id] {
            Node::Record(r) => r.index.contains_key(name),
            _ => false,
        };
        match &self.nodes[self.root] {
            Node::Union(u) => u.branches.iter().any(|b| declares(b.node)),
            _ => declares(self.root),
        }
    }

    /// Appends the Avro binary encoding (no framing, no schema id) of `payload` to `out`.
    /// On error `out` is left as it was.
    pub fn encode(&self, payload: &Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        let result = self.encode_node(self.root, payload, out, Mode::Payload);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// Encodes every record default once, so a missing field costs one `extend_from_slice`.
    fn encode_defaults(&mut self, defaults: Vec<PendingDefault>) -> Result<(), SchemaError> {
        for d in defaults {
            let field_node = match &self.nodes[d.record] {
                Node::Record(r) => r.fields[d.field].node,
                _ => unreachable!("defaults are only collected for records"),
            };
            let mut bytes = Vec::new();
            self.encode_node(field_node, &d.value, &mut bytes, Mode::Default)
                .map_err(|e| SchemaError(format!("the default of field `{}`: {e}", d.label)))?;
            if let Node::Record(r) = &mut self.nodes[d.record] {
                r.fields[d.field].default = Some(bytes);
            }
        }
        Ok(())
    }
}

/// Index into [`AvroEncoder::nodes`]. An arena (not `Box`es) because named types can be
/// referenced from several places and can be recursive.
type NodeId = usize;

/// A compiled schema node: what `encode` needs and nothing else.
#[derive(Debug)]
enum Node {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    /// A `string` marked `"outbox.json": true`: any JSON value, written as its JSON text.
    JsonText,
    Array(NodeId),
    Map(NodeId),
    Union(Box<UnionNode>),
    Record(Box<RecordNode>),
    Enum(Box<EnumNode>),
    Fixed {
        name: String,
        size: usize,
    },
    /// `fixed`: the size when the decimal is a `fixed`, else it is `bytes`.
    Decimal {
        precision: usize,
        scale: usize,
        fixed: Option<usize>,
    },
    Uuid(UuidRepr),
    Date,
    TimeMillis,
    TimeMicros,
    Timestamp {
        unit: logical::TimeUnit,
        local: bool,
    },
}

#[derive(Debug)]
enum UuidRepr {
    String,
    Bytes,
    Fixed,
}

#[derive(Debug)]
struct UnionNode {
    branches: Vec<Branch>,
    /// Whether `{"<branch name>": value}` is read as Avro's JSON wrapper form. Off for unions
    /// holding a free-form JSON branch, where such an object is data.
    wrapper_form: bool,
}

#[derive(Debug)]
struct Branch {
    node: NodeId,
    /// Names this branch answers to in the wrapper form: the type name, or full and short name.
    names: Vec<String>,
}

#[derive(Debug)]
struct RecordNode {
    name: String,
    fields: Vec<Field>,
    /// Field name → position; used for `has_top_level_field` and to find unknown keys.
    index: HashMap<String, usize>,
}

#[derive(Debug)]
struct Field {
    name: String,
    node: NodeId,
    /// The default, already Avro-encoded.
    default: Option<Vec<u8>>,
}

#[derive(Debug)]
struct EnumNode {
    name: String,
    symbols: Vec<String>,
    index: HashMap<String, usize>,
}

/// Payload values follow the rules in the module docs; record defaults follow the Avro spec
/// (bytes as code points 0–255, a union default belongs to the first branch, a free-form JSON
/// default is already the text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Payload,
    Default,
}

struct PendingDefault {
    record: NodeId,
    field: usize,
    value: Value,
    label: String,
}

#[derive(Default)]
struct Compiler {
    nodes: Vec<Node>,
    named: HashMap<String, NodeId>,
    defaults: Vec<PendingDefault>,
}

impl Compiler {
    fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Registers a named type before its children are compiled, so recursive references
    /// resolve to it.
    fn register(&mut self, name: &Name, node: Node) -> NodeId {
        let id = self.push(node);
        self.named.insert(name.fullname(None), id);
        id
    }

    /// `json_text`: the enclosing field carries `"outbox.json": true`.
    fn compile(&mut self, schema: &Schema, json_text: bool) -> Result<NodeId, SchemaError> {
        let node = match schema {
            Schema::Null => Node::Null,
            Schema::Boolean => Node::Boolean,
            Schema::Int => Node::Int,
            Schema::Long => Node::Long,
            Schema::Float => Node::Float,
            Schema::Double => Node::Double,
            Schema::Bytes => Node::Bytes,
            Schema::String if json_text => Node::JsonText,
            Schema::String => Node::String,
            Schema::Array(a) => {
                let items = self.compile(&a.items, false)?;
                Node::Array(items)
            }
            Schema::Map(m) => {
                let values = self.compile(&m.types, false)?;
                Node::Map(values)
            }
            Schema::Union(u) => return self.compile_union(u, json_text),
            Schema::Record(r) => return self.compile_record(r),
            Schema::Enum(e) => {
                let node = Node::Enum(Box::new(EnumNode {
                    name: e.name.fullname(None),
                    index: e
                        .symbols
                        .iter()
                        .enumerate()
                        .map(|(i, s)| (s.clone(), i))
                        .collect(),
                    symbols: e.symbols.clone(),
                }));
                return Ok(self.register(&e.name, node));
            }
            Schema::Fixed(f) => {
                let node = Node::Fixed {
                    name: f.name.fullname(None),
                    size: f.size,
                };
                return Ok(self.register(&f.name, node));
            }
            Schema::Decimal(d) => return self.compile_decimal(d),
            Schema::Uuid(UuidSchema::String) => Node::Uuid(UuidRepr::String),
            Schema::Uuid(UuidSchema::Bytes) => Node::Uuid(UuidRepr::Bytes),
            Schema::Uuid(UuidSchema::Fixed(f)) => {
                let node = Node::Uuid(UuidRepr::Fixed);
                return Ok(self.register(&f.name, node));
            }
            Schema::Duration(f) => {
                let node = Node::Fixed {
                    name: f.name.fullname(None),
                    size: f.size,
                };
                return Ok(self.register(&f.name, node));
            }
            Schema::Date => Node::Date,
            Schema::TimeMillis => Node::TimeMillis,
            Schema::TimeMicros => Node::TimeMicros,
            Schema::TimestampMillis => timestamp(logical::TimeUnit::Millis, false),
            Schema::TimestampMicros => timestamp(logical::TimeUnit::Micros, false),
            Schema::TimestampNanos => timestamp(logical::TimeUnit::Nanos, false),
            Schema::LocalTimestampMillis => timestamp(logical::TimeUnit::Millis, true),
            Schema::LocalTimestampMicros => timestamp(logical::TimeUnit::Micros, true),
            Schema::LocalTimestampNanos => timestamp(logical::TimeUnit::Nanos, true),
            Schema::BigDecimal => {
                return Err(SchemaError(
                    "the `big-decimal` logical type is not supported".into(),
                ))
            }
            Schema::Ref { name } => {
                let full = name.fullname(None);
                return self
                    .named
                    .get(&full)
                    .copied()
                    .ok_or_else(|| SchemaError(format!("unknown type name `{full}`")));
            }
        };
        if json_text && !matches!(node, Node::JsonText) {
            return Err(SchemaError(
                "\"outbox.json\" is only allowed on fields of type string or a union with string"
                    .into(),
            ));
        }
        Ok(self.push(node))
    }

    fn compile_union(&mut self, u: &UnionSchema, json_text: bool) -> Result<NodeId, SchemaError> {
        let mut branches = Vec::with_capacity(u.variants().len());
        for variant in u.variants() {
            let is_string = matches!(variant, Schema::String);
            let node = self.compile(variant, json_text && is_string)?;
            branches.push(Branch {
                node,
                names: wrapper_names(variant),
            });
        }
        if json_text && !u.variants().iter().any(|v| matches!(v, Schema::String)) {
            return Err(SchemaError(
                "\"outbox.json\" is only allowed on fields of type string or a union with string"
                    .into(),
            ));
        }
        Ok(self.push(Node::Union(Box::new(UnionNode {
            branches,
            wrapper_form: !json_text,
        }))))
    }

    fn compile_record(&mut self, r: &RecordSchema) -> Result<NodeId, SchemaError> {
        let name = r.name.fullname(None);
        let id = self.register(&r.name, Node::Null);
        let mut fields = Vec::with_capacity(r.fields.len());
        for (i, f) in r.fields.iter().enumerate() {
            let json_text = is_json_text(f)
                .map_err(|e| SchemaError(format!("field `{}` of `{name}`: {e}", f.name)))?;
            let node = self
                .compile(&f.schema, json_text)
                .map_err(|e| SchemaError(format!("field `{}` of `{name}`: {}", f.name, e.0)))?;
            if let Some(value) = &f.default {
                let label = format!("{name}.{}", f.name);
                self.defaults.push(PendingDefault {
                    record: id,
                    field: i,
                    value: value.clone(),
                    label,
                });
            }
            fields.push(Field {
                name: f.name.clone(),
                node,
                default: None,
            });
        }
        let index = fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        self.nodes[id] = Node::Record(Box::new(RecordNode {
            name,
            fields,
            index,
        }));
        Ok(id)
    }

    fn compile_decimal(&mut self, d: &DecimalSchema) -> Result<NodeId, SchemaError> {
        if d.precision == 0 || d.precision > logical::MAX_DECIMAL_PRECISION {
            return Err(SchemaError(format!(
                "decimal precision {} is outside the supported 1..={}",
                d.precision,
                logical::MAX_DECIMAL_PRECISION
            )));
        }
        let (precision, scale) = (d.precision, d.scale);
        Ok(match &d.inner {
            InnerDecimalSchema::Bytes => self.push(Node::Decimal {
                precision,
                scale,
                fixed: None,
            }),
            InnerDecimalSchema::Fixed(f) => {
                let fixed = Some(f.size);
                self.register(
                    &f.name,
                    Node::Decimal {
                        precision,
                        scale,
                        fixed,
                    },
                )
            }
        })
    }
}

fn timestamp(unit: logical::TimeUnit, local: bool) -> Node {
    Node::Timestamp { unit, local }
}

/// Reads the field's `"outbox.json"` attribute: absent or `false` → plain, `true` → free-form.
fn is_json_text(field: &RecordField) -> Result<bool, String> {
    match field.custom_attributes.get("outbox.json") {
        None | Some(Value::Bool(false)) => Ok(false),
        Some(Value::Bool(true)) => Ok(true),
        Some(other) => Err(format!(
            "\"outbox.json\" must be true or false, not {other}"
        )),
    }
}

/// The keys a union branch answers to in Avro's JSON wrapper form.
fn wrapper_names(schema: &Schema) -> Vec<String> {
    let named = |n: &Name| {
        let full = n.fullname(None);
        if n.namespace().is_some() {
            vec![full, n.name().to_owned()]
        } else {
            vec![full]
        }
    };
    let primitive = |s: &str| vec![s.to_owned()];
    match schema {
        Schema::Null => primitive("null"),
        Schema::Boolean => primitive("boolean"),
        Schema::Int | Schema::Date | Schema::TimeMillis => primitive("int"),
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => primitive("long"),
        Schema::Float => primitive("float"),
        Schema::Double => primitive("double"),
        Schema::Bytes | Schema::BigDecimal | Schema::Uuid(UuidSchema::Bytes) => primitive("bytes"),
        Schema::String | Schema::Uuid(UuidSchema::String) => primitive("string"),
        Schema::Array(_) => primitive("array"),
        Schema::Map(_) => primitive("map"),
        Schema::Union(_) => Vec::new(),
        Schema::Record(r) => named(&r.name),
        Schema::Enum(e) => named(&e.name),
        Schema::Fixed(f) | Schema::Duration(f) | Schema::Uuid(UuidSchema::Fixed(f)) => {
            named(&f.name)
        }
        Schema::Decimal(d) => match &d.inner {
            InnerDecimalSchema::Bytes => primitive("bytes"),
            InnerDecimalSchema::Fixed(f) => named(&f.name),
        },
        Schema::Ref { name } => named(name),
    }
}
