//! The tracer on every kind of type an event payload is made of.
// The types here exist to be traced; their fields are never read.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::{trace_shape, Shape};

fn traced<T: serde::de::DeserializeOwned>() -> String {
    match trace_shape::<T>() {
        Ok(shape) => shape.to_string(),
        Err(error) => panic!("{error}"),
    }
}

#[derive(Deserialize)]
struct Plain {
    title: String,
    count: u32,
    ratio: f64,
    done: bool,
    small: i8,
    big: u128,
    letter: char,
}

#[test]
fn a_plain_struct_lists_its_fields_in_order_with_their_kinds() {
    assert_eq!(
        traced::<Plain>(),
        "{\n  title: str,\n  count: u32,\n  ratio: f64,\n  done: bool,\n  small: i8,\n  big: u128,\n  letter: char,\n}"
    );
}

#[derive(Deserialize)]
struct Marker;

#[test]
fn unit_structs_and_leaves_alone() {
    assert_eq!(traced::<Marker>(), "unit");
    assert_eq!(traced::<()>(), "unit");
    assert_eq!(traced::<String>(), "str");
    assert_eq!(traced::<i64>(), "i64");
    assert_eq!(traced::<bool>(), "bool");
    assert_eq!(traced::<Option<u16>>(), "option<u16>");
    assert_eq!(traced::<Vec<f32>>(), "seq<f32>");
    assert_eq!(traced::<(String, u8)>(), "(str, u8)");
    assert_eq!(traced::<(String,)>(), "(str,)");
}

#[derive(Deserialize)]
struct Collections {
    tags: Vec<String>,
    counts: BTreeMap<String, u64>,
    scores: HashMap<String, Vec<i32>>,
    pair: (String, bool, u8),
    note: Option<String>,
}

#[test]
fn collections_options_and_tuples() {
    assert_eq!(
        traced::<Collections>(),
        "{\n  tags: seq<str>,\n  counts: map<str, u64>,\n  scores: map<str, seq<i32>>,\n  pair: (str, bool, u8),\n  note?: option<str>,\n}"
    );
}

#[derive(Deserialize)]
struct Address {
    city: String,
    zip: Option<String>,
}

#[derive(Deserialize)]
struct Customer {
    name: String,
    address: Address,
}

#[derive(Deserialize)]
struct Order {
    customer: Customer,
    lines: Vec<Line>,
}

#[derive(Deserialize)]
struct Move {
    from: Address,
    to: Address,
}

#[derive(Deserialize)]
struct Line {
    sku: String,
    qty: u32,
}

#[test]
fn nested_structs_render_indented() {
    assert_eq!(
        traced::<Order>(),
        "{
  customer: {
    name: str,
    address: {
      city: str,
      zip?: option<str>,
    },
  },
  lines: seq<{
    sku: str,
    qty: u32,
  }>,
}"
    );
}

#[test]
fn a_type_used_twice_side_by_side_is_not_recursive() {
    assert_eq!(
        traced::<Move>(),
        "{\n  from: {\n    city: str,\n    zip?: option<str>,\n  },\n  to: {\n    city: str,\n    zip?: option<str>,\n  },\n}"
    );
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Renamed {
    followup_on: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    retries: u8,
    #[serde(rename = "@odd name")]
    odd: bool,
    #[serde(alias = "headline", alias = "subject")]
    title: String,
}

#[test]
fn serde_names_defaults_and_aliases() {
    assert_eq!(
        traced::<Renamed>(),
        "{\n  followupOn: str,\n  type: str,\n  retries?: u8,\n  \"@odd name\": bool,\n  title|headline|subject: str,\n}"
    );
}

#[derive(Deserialize)]
#[serde(default)]
#[derive(Default)]
struct AllDefault {
    a: String,
    b: Vec<u8>,
}

#[test]
fn a_struct_level_default_makes_every_field_optional() {
    assert_eq!(traced::<AllDefault>(), "{\n  a?: str,\n  b?: seq<u8>,\n}");
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Priority {
    Low,
    High,
    RightNow,
}

#[derive(Deserialize)]
enum Change {
    Cleared,
    Set(String),
    Moved(u32, u32),
    Renamed { from: String, to: Option<String> },
    Wrapped((String,)),
}

#[derive(Deserialize)]
struct WithEnums {
    priority: Priority,
    change: Change,
}

#[test]
fn unit_only_and_data_carrying_enums() {
    assert_eq!(
        traced::<WithEnums>(),
        "{
  priority: enum { low, high, right_now },
  change: enum {
    Cleared,
    Set(str),
    Moved(u32, u32),
    Renamed {
      from: str,
      to?: option<str>,
    },
    Wrapped((str,)),
  },
}"
    );
}

#[derive(Deserialize)]
struct Leaves {
    at: chrono::DateTime<chrono::Utc>,
    id: uuid::Uuid,
    day: chrono::NaiveDate,
    raw: serde_json::Value,
    count: std::num::NonZeroU32,
    stamps: (chrono::DateTime<chrono::Utc>, uuid::Uuid, String),
    by_id: BTreeMap<uuid::Uuid, chrono::DateTime<chrono::Utc>>,
}

#[test]
fn timestamps_uuids_values_and_picky_leaves() {
    // The tuple and the map need their first parts made up (a timestamp, a UUID) to reach the
    // later ones, and the struct needs every field made up to learn which are required.
    assert_eq!(
        traced::<Leaves>(),
        "{
  at: str,
  id: str,
  day: str,
  raw: any,
  count: u32,
  stamps: (str, str, str),
  by_id: map<str, str>,
}"
    );
}

#[derive(Deserialize)]
struct Node {
    label: String,
    children: Vec<Node>,
    parent: Option<Box<Node>>,
}

#[derive(Deserialize)]
enum Expr {
    Lit(i64),
    Add(Box<Expr>, Box<Expr>),
}

#[test]
fn recursive_types_are_cut_at_the_repeat() {
    assert_eq!(
        traced::<Node>(),
        "{\n  label: str,\n  children: seq<recursive(Node)>,\n  parent?: option<recursive(Node)>,\n}"
    );
    assert_eq!(
        traced::<Expr>(),
        "enum {\n  Lit(i64),\n  Add(recursive(Expr), recursive(Expr)),\n}"
    );
}

#[derive(Deserialize)]
struct Meters(f64);

#[derive(Deserialize)]
struct Point(i32, i32);

#[derive(Deserialize)]
struct Newtypes {
    length: Meters,
    at: Point,
}

#[derive(Deserialize)]
#[serde(tag = "type")]
enum Tagged {
    A { x: u8 },
}

#[derive(Deserialize)]
struct Flattened {
    id: String,
    #[serde(flatten)]
    rest: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Opaque {
    tagged: Tagged,
    flat: Flattened,
}

#[test]
fn newtypes_are_transparent_and_self_describing_parts_are_any() {
    assert_eq!(traced::<Newtypes>(), "{\n  length: f64,\n  at: (i32, i32),\n}");
    assert_eq!(traced::<Opaque>(), "{\n  tagged: any,\n  flat: any,\n}");
}

#[test]
fn renaming_a_rust_type_does_not_change_the_shape() {
    #[derive(Deserialize)]
    struct Place {
        city: String,
        zip: Option<String>,
    }
    assert_eq!(trace_shape::<Address>().ok(), trace_shape::<Place>().ok());
}

#[test]
fn a_type_that_asks_for_nothing_cannot_be_traced() {
    struct Silent;
    impl<'de> Deserialize<'de> for Silent {
        fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            Err(serde::de::Error::custom("never asks"))
        }
    }
    let error = trace_shape::<Silent>().err().map(|error| error.to_string());
    assert!(
        error.as_deref().is_some_and(|error| error.contains("never asks")),
        "{error:?}"
    );
}

#[test]
fn unreachable_parts_are_unknown() {
    // The second element is behind a string no sample satisfies.
    struct Picky;
    impl<'de> Deserialize<'de> for Picky {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let text = String::deserialize(deserializer)?;
            if text == "magic" {
                Ok(Picky)
            } else {
                Err(serde::de::Error::custom("not magic"))
            }
        }
    }
    #[derive(Deserialize)]
    struct Behind(Picky, u8);
    let shape = trace_shape::<Behind>();
    assert_eq!(
        shape.as_ref().map(ToString::to_string).ok().as_deref(),
        Some("(str, unknown)")
    );
    assert!(shape.is_ok_and(|shape| shape.has_unknown()));
}

#[test]
fn the_canonical_text_parses_back_to_the_same_shape() {
    for text in [
        traced::<Order>(),
        traced::<WithEnums>(),
        traced::<Renamed>(),
        traced::<Node>(),
        traced::<Leaves>(),
    ] {
        let parsed: Shape = text.parse().unwrap_or_else(|error| panic!("{error}\n{text}"));
        assert_eq!(parsed.to_string(), text);
        assert_eq!(
            parsed.fingerprint(),
            text.parse::<Shape>().map(|s| s.fingerprint()).unwrap_or_default()
        );
    }
}

#[derive(Deserialize)]
enum Expr2 {
    Add(Box<Expr2>, Box<Expr2>),
    Lit(i64),
}

#[derive(Deserialize)]
struct Misc {
    took: std::time::Duration,
    ip: std::net::IpAddr,
    set: std::collections::BTreeSet<String>,
    nested: Option<Option<u8>>,
    outcome: Result<u8, String>,
    key: [u8; 3],
    e: Expr2,
    after: String,
}

#[test]
fn std_types_and_a_recursive_enum_whose_first_variant_recurses() {
    // Reaching `Add`'s second element needs a made-up first one: the made-up values follow the
    // choices of the enum's first position, so `Lit` ends the recursion after one failed try.
    assert_eq!(
        traced::<Misc>(),
        "{
  took: {
    secs: u64,
    nanos: u32,
  },
  ip: str,
  set: seq<str>,
  nested?: option<option<u8>>,
  outcome: enum {
    Ok(u8),
    Err(str),
  },
  key: (u8, u8, u8),
  e: enum {
    Add(recursive(Expr2), recursive(Expr2)),
    Lit(i64),
  },
  after: str,
}"
    );
}

#[test]
fn a_deserialize_impl_that_panics_on_a_made_up_value_is_survived() {
    struct Touchy;
    impl<'de> Deserialize<'de> for Touchy {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            match u8::deserialize(deserializer)? {
                1 => Ok(Touchy),
                other => panic!("Touchy got {other}"),
            }
        }
    }
    #[derive(Deserialize)]
    struct Pair(Touchy, String);
    // The panic on 0 blames the sample; 1 is tried next and the second element is reached.
    assert_eq!(traced::<Pair>(), "(u8, str)");
}
