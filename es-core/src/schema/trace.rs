//! Traces the JSON shape of a `Deserialize` type with a deserializer of our own.
//!
//! A type's `Deserialize` impl tells its deserializer what it wants (`deserialize_struct` with its
//! field names, `deserialize_enum` with its variants, `deserialize_option`, ...). The tracer
//! answers along one chosen path per run and records every request it sees before handing a
//! value back, so a run that fails later (a timestamp refusing a sample string, a missing field)
//! still tells what it reached. Runs repeat until every reachable position is known:
//!
//! 1. **reach**: one run per position, feeding only what leads there (one field of a struct, one
//!    variant of an enum, one element of a sequence), breadth first from the root;
//! 2. **fields**: for each struct, runs that present some of its fields and read back which one
//!    the visitor says is missing (the required ones), then each field twice to learn, from the
//!    duplicate-field error, which names are aliases of one field.
//!
//! Values the tracer must make up (the elements before the wanted one in a tuple, the fields
//! present in a fields run) come from small lists of samples; a sample the visitor refuses is
//! replaced by the next one in the next run.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess, VariantAccess, Visitor,
};

use super::shape::{Field, Shape, Variant, VariantData};

/// More runs than this for one type means something is wrong (or the type is enormous).
const MAX_RUNS: usize = 10_000;
/// Runs spent on one goal before giving up on it.
const MAX_TRIES: usize = 64;
/// Deeper than this is a recursion the name check did not catch.
const MAX_DEPTH: usize = 64;

/// Sample strings, in the order tried: plain, then the text forms of common leaf types
/// (timestamps, UUIDs, numbers, dates, times) that refuse arbitrary text.
const STR_SAMPLES: [&str; 9] = [
    "",
    "1970-01-01T00:00:00Z",
    "00000000-0000-0000-0000-000000000000",
    "0",
    "1970-01-01",
    "00:00:00",
    "1970-01-01T00:00:00",
    "a",
    "a@example.com",
];

/// Why a type's shape could not be traced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShapeError {
    /// The type's `Deserialize` impl never asked the tracer for anything it could record.
    #[error(
        "the shape of `{type_name}` could not be traced: its Deserialize impl asked for nothing \
         the tracer understands ({detail})"
    )]
    Untraceable {
        /// The Rust type.
        type_name: &'static str,
        /// What the last run reported.
        detail: String,
    },
    /// Tracing needed more runs than the bound.
    #[error("tracing the shape of `{type_name}` needed more than {limit} runs; the type is too large to trace")]
    TooManyRuns {
        /// The Rust type.
        type_name: &'static str,
        /// The bound.
        limit: usize,
    },
}

/// Traces the JSON shape of `T`: what its stored payloads look like.
///
/// ```
/// use es_core::schema::trace_shape;
///
/// #[derive(serde::Deserialize)]
/// struct Opened { title: String, #[serde(default)] tags: Vec<String>, note: Option<String> }
///
/// let shape = trace_shape::<Opened>()?;
/// assert_eq!(shape.to_string(), "{\n  title: str,\n  tags?: seq<str>,\n  note?: option<str>,\n}");
/// # Ok::<(), es_core::schema::ShapeError>(())
/// ```
pub fn trace_shape<T: DeserializeOwned>() -> Result<Shape, ShapeError> {
    let mut tracer = Explorer::<T>::new();
    tracer.reach_all()?;
    tracer.probe_fields()?;
    let state = tracer.state.borrow();
    if !state.nodes.contains_key(&Vec::new()) {
        return Err(ShapeError::Untraceable {
            type_name: std::any::type_name::<T>(),
            detail: tracer.last_error.clone().unwrap_or_else(|| "no request".to_owned()),
        });
    }
    Ok(state.build(&Vec::new()))
}

/// One step from a position to a position inside it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Step {
    Field(&'static str),
    Variant(&'static str),
    Some,
    Elem(usize),
    Key,
    Value,
    Inner,
}

type Path = Vec<Step>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaf {
    Bool,
    I8,
    I16,
    I32,
    I64,
    I128,
    U8,
    U16,
    U32,
    U64,
    U128,
    F32,
    F64,
    Char,
    Str,
    Bytes,
    Unit,
    /// A struct's field key when it is read as a map (`#[serde(flatten)]`).
    Identifier,
    Any,
}

/// What was asked for at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Leaf(Leaf),
    Option,
    Seq,
    Map,
    Tuple(usize),
    Struct(&'static [&'static str]),
    UnitStruct,
    Newtype,
    Enum(&'static [&'static str]),
    UnitVariant,
    /// A type already traced further up, and how many values can be made up for it.
    Recursive(&'static str, usize),
}

impl Node {
    /// How many different values the tracer can make up here.
    fn candidates(&self) -> usize {
        match self {
            Node::Leaf(Leaf::Str | Leaf::Identifier) => STR_SAMPLES.len(),
            Node::Leaf(Leaf::Any) => 6,
            Node::Leaf(Leaf::Unit) => 1,
            Node::Leaf(_) | Node::Option | Node::Seq | Node::Map => 2,
            Node::Enum(variants) => variants.len().max(1),
            Node::Recursive(_, choices) => (*choices).max(1),
            _ => 1,
        }
    }

    fn children(&self) -> Vec<Step> {
        match self {
            Node::Option => vec![Step::Some],
            Node::Seq => vec![Step::Elem(0)],
            Node::Map => vec![Step::Key, Step::Value],
            Node::Tuple(len) => (0..*len).map(Step::Elem).collect(),
            Node::Struct(fields) => fields.iter().map(|&field| Step::Field(field)).collect(),
            Node::Newtype => vec![Step::Inner],
            Node::Enum(variants) => variants.iter().map(|&variant| Step::Variant(variant)).collect(),
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// The goal was reached: unwind.
    Stop,
    /// Nothing more can be made up here; `blame` names the position that should change.
    Stuck,
    Missing(&'static str),
    Duplicate(&'static str),
    Other(String),
}

/// The error type the traced visitors see. `blame` names the position whose made-up value caused
/// it, so that the next run can try another.
#[derive(Debug)]
struct TraceError {
    kind: Kind,
    blame: Option<Path>,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Stop => f.write_str("stopped"),
            Kind::Stuck => f.write_str("no value accepted"),
            Kind::Missing(field) => write!(f, "missing field `{field}`"),
            Kind::Duplicate(field) => write!(f, "duplicate field `{field}`"),
            Kind::Other(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for TraceError {}

impl de::Error for TraceError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::of(Kind::Other(msg.to_string()))
    }

    fn missing_field(field: &'static str) -> Self {
        Self::of(Kind::Missing(field))
    }

    fn duplicate_field(field: &'static str) -> Self {
        Self::of(Kind::Duplicate(field))
    }
}

impl TraceError {
    fn of(kind: Kind) -> Self {
        Self { kind, blame: None }
    }
}

/// What a run is for: reach `at`, or (when `present` is set) feed the struct at `at` exactly these
/// keys and record what its visitor says.
#[derive(Debug, Default)]
struct Goal {
    at: Path,
    present: Option<Vec<&'static str>>,
}

/// What a struct's visitor said to the keys of a fields run.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Said {
    Accepted,
    Missing(&'static str),
    Duplicate(&'static str),
}

/// What a struct's fields runs learned.
#[derive(Debug, Default)]
struct FieldFacts {
    required: BTreeSet<&'static str>,
    /// Whether every absent field was seen accepted as absent.
    settled: bool,
    /// Key -> the field it names, for aliases.
    primary: BTreeMap<&'static str, &'static str>,
}

#[derive(Debug, Default)]
struct State {
    nodes: BTreeMap<Path, Node>,
    choice: BTreeMap<Path, usize>,
    exhausted: BTreeSet<Path>,
    facts: BTreeMap<Path, FieldFacts>,
    goal: Goal,
    // Per run:
    reached: bool,
    said: Option<Result<Said, TraceError>>,
    last_leaf: Option<Path>,
}

struct Explorer<T> {
    state: RefCell<State>,
    runs: usize,
    last_error: Option<String>,
    marker: std::marker::PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Explorer<T> {
    fn new() -> Self {
        Self {
            state: RefCell::new(State::default()),
            runs: 0,
            last_error: None,
            marker: std::marker::PhantomData,
        }
    }

    /// One run from the root towards the current goal. Returns the position to blame when the
    /// goal was not reached.
    fn run(&mut self) -> Result<Option<Path>, ShapeError> {
        self.runs += 1;
        if self.runs > MAX_RUNS {
            return Err(ShapeError::TooManyRuns {
                type_name: std::any::type_name::<T>(),
                limit: MAX_RUNS,
            });
        }
        {
            let mut state = self.state.borrow_mut();
            state.reached = false;
            state.said = None;
            state.last_leaf = None;
        }
        let result = T::deserialize(Tracer {
            state: &self.state,
            path: Vec::new(),
            ancestors: Vec::new(),
        });
        match result {
            Ok(_) => Ok(None),
            Err(error) => {
                if error.kind != Kind::Stop {
                    self.last_error = Some(error.to_string());
                }
                Ok(error.blame)
            }
        }
    }

    /// Tries another value at `blame`; false when nothing is left to try there.
    fn advance(&self, blame: &Path) -> bool {
        let mut state = self.state.borrow_mut();
        if state.exhausted.contains(blame) {
            return false;
        }
        let candidates = state.nodes.get(blame).map_or(1, Node::candidates);
        let next = state.choice.get(blame).copied().unwrap_or(0) + 1;
        if next >= candidates {
            // Marking it exhausted is progress too: its parent now makes up something else.
            state.exhausted.insert(blame.clone());
        } else {
            state.choice.insert(blame.clone(), next);
        }
        true
    }

    fn reach_all(&mut self) -> Result<(), ShapeError> {
        let mut queue = VecDeque::from([Vec::new()]);
        while let Some(target) = queue.pop_front() {
            self.state.borrow_mut().goal = Goal {
                at: target.clone(),
                present: None,
            };
            for _ in 0..MAX_TRIES {
                let blame = self.run()?;
                let state = self.state.borrow();
                if state.reached {
                    if let Some(node) = state.nodes.get(&target) {
                        queue.extend(node.children().into_iter().map(|step| extend(&target, step)));
                    }
                    break;
                }
                drop(state);
                match blame {
                    Some(blame) if self.advance(&blame) => continue,
                    _ => break,
                }
            }
        }
        Ok(())
    }

    /// Runs the fields runs of every struct found.
    fn probe_fields(&mut self) -> Result<(), ShapeError> {
        let structs: Vec<(Path, &'static [&'static str])> = self
            .state
            .borrow()
            .nodes
            .iter()
            .filter_map(|(path, node)| match node {
                Node::Struct(fields) => Some((path.clone(), *fields)),
                _ => None,
            })
            .collect();
        for (path, fields) in structs {
            let mut facts = FieldFacts::default();
            // Present the required fields found so far; the visitor names the next one missing.
            let mut present = Vec::new();
            for _ in 0..=fields.len() {
                match self.say(&path, present.clone())? {
                    Some(Said::Accepted) => {
                        facts.settled = true;
                        break;
                    }
                    Some(Said::Missing(field)) if !present.contains(&field) => {
                        facts.required.insert(field);
                        present.push(field);
                    }
                    _ => break,
                }
            }
            // A key given twice makes the visitor name the field it belongs to.
            for &key in fields {
                if let Some(Said::Duplicate(field)) = self.say(&path, vec![key, key])? {
                    facts.primary.insert(key, field);
                }
            }
            self.state.borrow_mut().facts.insert(path, facts);
        }
        Ok(())
    }

    /// Feeds `present` to the struct at `at` until its visitor gives an answer about them.
    fn say(&mut self, at: &Path, present: Vec<&'static str>) -> Result<Option<Said>, ShapeError> {
        self.state.borrow_mut().goal = Goal {
            at: at.clone(),
            present: Some(present),
        };
        for _ in 0..MAX_TRIES {
            let run_blame = self.run()?;
            let said = self.state.borrow_mut().said.take();
            let blame = match said {
                Some(Ok(said)) => return Ok(Some(said)),
                Some(Err(error)) => error.blame,
                None => run_blame,
            };
            match blame {
                Some(blame) if self.advance(&blame) => continue,
                _ => return Ok(None),
            }
        }
        Ok(None)
    }
}

fn extend(path: &Path, step: Step) -> Path {
    let mut path = path.clone();
    path.push(step);
    path
}

/// How the tracer behaves at a position in the current run.
enum Mode {
    /// This is the goal.
    Goal,
    /// The goal is further along this step.
    Route(Step),
    /// Off the route: make up a value the visitor accepts.
    Make,
}

/// The deserializer handed to the traced type, at one position.
#[derive(Clone)]
struct Tracer<'s> {
    state: &'s RefCell<State>,
    path: Path,
    /// The named types being traced further up, to cut recursion.
    ancestors: Vec<(&'static str, &'static [&'static str])>,
}

impl<'s> Tracer<'s> {
    fn child(&self, step: Step) -> Self {
        Self {
            state: self.state,
            path: extend(&self.path, step),
            ancestors: self.ancestors.clone(),
        }
    }

    fn within(mut self, name: &'static str, names: &'static [&'static str]) -> Self {
        self.ancestors.push((name, names));
        self
    }

    fn is_recursive(&self, name: &'static str, names: &'static [&'static str]) -> bool {
        self.ancestors
            .iter()
            .any(|&(seen, seen_names)| seen == name && seen_names == names)
    }

    /// Records what was asked here (the first answer wins: types ask the same each run).
    fn record(&self, node: Node) {
        self.state.borrow_mut().nodes.entry(self.path.clone()).or_insert(node);
    }

    fn mode(&self) -> Mode {
        let state = self.state.borrow();
        let at = &state.goal.at;
        if *at == self.path {
            Mode::Goal
        } else if at.starts_with(&self.path) {
            Mode::Route(at[self.path.len()].clone())
        } else {
            Mode::Make
        }
    }

    fn choice(&self) -> usize {
        self.state.borrow().choice.get(&self.path).copied().unwrap_or(0)
    }

    fn stop<V>(&self) -> Result<V, TraceError> {
        self.state.borrow_mut().reached = true;
        Err(TraceError::of(Kind::Stop))
    }

    /// Nothing can be made up here (any more): the parent must try something else.
    fn stuck<V>(&self) -> Result<V, TraceError> {
        let blame = (!self.path.is_empty()).then(|| self.path[..self.path.len() - 1].to_vec());
        Err(TraceError {
            kind: Kind::Stuck,
            blame,
        })
    }

    /// A position this run should not have come to (the goal lies elsewhere).
    fn lost<V>(&self) -> Result<V, TraceError> {
        Err(TraceError {
            kind: Kind::Stuck,
            blame: None,
        })
    }

    /// Whether to give up making a value here before trying.
    fn cannot_make(&self) -> bool {
        self.path.len() > MAX_DEPTH || self.state.borrow().exhausted.contains(&self.path)
    }

    /// Blames a fresh error from a visitor called here on the value that caused it: the last
    /// sample handed out below this position (a `try_from` type refuses after its inner value
    /// was accepted), else this position itself.
    fn settle<V>(&self, result: Result<V, TraceError>) -> Result<V, TraceError> {
        result.map_err(|error| self.blame(error))
    }

    fn blame(&self, mut error: TraceError) -> TraceError {
        if error.blame.is_none() && matches!(error.kind, Kind::Other(_) | Kind::Missing(_) | Kind::Duplicate(_)) {
            let state = self.state.borrow();
            let blame = match (&error.kind, &state.last_leaf) {
                (Kind::Other(_), Some(leaf)) if leaf.starts_with(&self.path) => leaf.clone(),
                _ => self.path.clone(),
            };
            error.blame = Some(blame);
        }
        error
    }

    fn leaf<'de, V: Visitor<'de>>(self, leaf: Leaf, visitor: V) -> Result<V::Value, TraceError> {
        self.record(Node::Leaf(leaf));
        match self.mode() {
            Mode::Goal => self.stop(),
            Mode::Route(_) => self.lost(),
            Mode::Make => {
                if self.cannot_make() {
                    return self.stuck();
                }
                self.state.borrow_mut().last_leaf = Some(self.path.clone());
                let sample = self.choice();
                let result = feed(leaf, sample, visitor, &self);
                self.settle(result)
            }
        }
    }

    fn option<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(Node::Option);
        let result = match self.mode() {
            Mode::Goal => return self.stop(),
            Mode::Route(Step::Some) => visitor.visit_some(self.child(Step::Some)),
            Mode::Route(_) => return self.lost(),
            Mode::Make if self.cannot_make() => return self.stuck(),
            Mode::Make if self.choice() == 0 => visitor.visit_none(),
            Mode::Make => visitor.visit_some(self.child(Step::Some)),
        };
        self.settle(result)
    }

    /// Sequences and tuples: `len` is `None` for a sequence (one element is enough to learn it).
    fn elements<'de, V: Visitor<'de>>(self, len: Option<usize>, visitor: V) -> Result<V::Value, TraceError> {
        self.record(len.map_or(Node::Seq, Node::Tuple));
        let count = match (self.mode(), len) {
            (Mode::Goal, _) => return self.stop(),
            (Mode::Route(Step::Elem(0)), None) => 1,
            (Mode::Route(Step::Elem(index)), Some(len)) if index < len => index + 1,
            (Mode::Route(_), _) => return self.lost(),
            (Mode::Make, _) if self.cannot_make() => return self.stuck(),
            (Mode::Make, None) => self.choice(),
            (Mode::Make, Some(len)) => len,
        };
        let steps = (0..count).map(|index| Step::Elem(if len.is_some() { index } else { 0 }));
        let result = visitor.visit_seq(Elements {
            parent: self.clone(),
            steps: steps.collect(),
        });
        self.settle(result)
    }

    fn map<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(Node::Map);
        let entries = match self.mode() {
            Mode::Goal => return self.stop(),
            Mode::Route(Step::Key | Step::Value) => 1,
            Mode::Route(_) => return self.lost(),
            Mode::Make if self.cannot_make() => return self.stuck(),
            Mode::Make => self.choice(),
        };
        let result = visitor.visit_map(Entries {
            parent: self.clone(),
            left: entries,
        });
        self.settle(result)
    }

    fn fields<'de, V: Visitor<'de>>(self, fields: &'static [&'static str], visitor: V) -> Result<V::Value, TraceError> {
        self.record(Node::Struct(fields));
        let keys: Vec<&'static str> = match self.mode() {
            Mode::Goal => {
                let present = self.state.borrow().goal.present.clone();
                let Some(present) = present else {
                    return self.stop();
                };
                let result = visitor.visit_map(Keys::new(self.clone(), present));
                let said = match result {
                    Ok(_) => Ok(Said::Accepted),
                    Err(TraceError {
                        kind: Kind::Missing(field),
                        blame: None,
                    }) => Ok(Said::Missing(field)),
                    Err(TraceError {
                        kind: Kind::Duplicate(field),
                        blame: None,
                    }) => Ok(Said::Duplicate(field)),
                    Err(error) => Err(self.blame(error)),
                };
                self.state.borrow_mut().said = Some(said);
                return self.stop();
            }
            Mode::Route(Step::Field(field)) => vec![field],
            Mode::Route(_) => return self.lost(),
            Mode::Make if self.cannot_make() => return self.stuck(),
            Mode::Make => {
                // Leave out the fields nothing could be made for: they may be optional.
                let state = self.state.borrow();
                fields
                    .iter()
                    .copied()
                    .filter(|&field| !state.exhausted.contains(&extend(&self.path, Step::Field(field))))
                    .collect()
            }
        };
        let result = visitor.visit_map(Keys::new(self.clone(), keys));
        self.settle(result)
    }

    fn newtype<'de, S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, TraceError> {
        self.record(Node::Newtype);
        let result = match self.mode() {
            Mode::Goal => return self.stop(),
            Mode::Route(Step::Inner) => seed.deserialize(self.child(Step::Inner)),
            Mode::Route(_) => return self.lost(),
            Mode::Make if self.cannot_make() => return self.stuck(),
            Mode::Make => seed.deserialize(self.child(Step::Inner)),
        };
        self.settle(result)
    }

    /// A named type: a type already being traced on this path is recursive. There the tracer
    /// stops reaching further (the content is the type's, traced above) but still makes up values
    /// (`Err` when the caller must not go on).
    fn named<V>(
        self,
        name: &'static str,
        names: &'static [&'static str],
        choices: usize,
    ) -> Result<Self, Result<V, TraceError>> {
        if self.is_recursive(name, names) {
            self.record(Node::Recursive(name, choices));
            match self.mode() {
                Mode::Goal => return Err(self.stop()),
                Mode::Route(_) => return Err(self.lost()),
                Mode::Make => {}
            }
        }
        Ok(self.within(name, names))
    }
}

/// Hands the visitor sample number `sample` of the leaf's kind.
fn feed<'de, V: Visitor<'de>>(leaf: Leaf, sample: usize, visitor: V, at: &Tracer<'_>) -> Result<V::Value, TraceError> {
    let one = sample == 1;
    match leaf {
        Leaf::Bool => visitor.visit_bool(one),
        Leaf::I8 => visitor.visit_i8(i8::from(one)),
        Leaf::I16 => visitor.visit_i16(i16::from(one)),
        Leaf::I32 => visitor.visit_i32(i32::from(one)),
        Leaf::I64 => visitor.visit_i64(i64::from(one)),
        Leaf::I128 => visitor.visit_i128(i128::from(one)),
        Leaf::U8 => visitor.visit_u8(u8::from(one)),
        Leaf::U16 => visitor.visit_u16(u16::from(one)),
        Leaf::U32 => visitor.visit_u32(u32::from(one)),
        Leaf::U64 => visitor.visit_u64(u64::from(one)),
        Leaf::U128 => visitor.visit_u128(u128::from(one)),
        Leaf::F32 => visitor.visit_f32(f32::from(u8::from(one))),
        Leaf::F64 => visitor.visit_f64(f64::from(u8::from(one))),
        Leaf::Char => visitor.visit_char(if one { '0' } else { 'a' }),
        Leaf::Str | Leaf::Identifier => visitor.visit_str(STR_SAMPLES.get(sample).copied().unwrap_or("")),
        Leaf::Bytes => visitor.visit_bytes(if one { b"0" } else { b"" }),
        Leaf::Unit => visitor.visit_unit(),
        Leaf::Any => match sample {
            0 => visitor.visit_unit(),
            1 => visitor.visit_str(""),
            2 => visitor.visit_u64(0),
            3 => visitor.visit_bool(false),
            4 => visitor.visit_map(Entries {
                parent: at.clone(),
                left: 0,
            }),
            _ => visitor.visit_seq(Elements {
                parent: at.clone(),
                steps: VecDeque::new(),
            }),
        },
    }
}

/// The elements of a sequence or tuple, each at its own position.
struct Elements<'s> {
    parent: Tracer<'s>,
    steps: VecDeque<Step>,
}

impl<'de> SeqAccess<'de> for Elements<'_> {
    type Error = TraceError;

    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, TraceError> {
        match self.steps.pop_front() {
            Some(step) => seed.deserialize(self.parent.child(step)).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.steps.len())
    }
}

/// The entries of a map: at most one, its key and value at their positions.
struct Entries<'s> {
    parent: Tracer<'s>,
    left: usize,
}

impl<'de> MapAccess<'de> for Entries<'_> {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, TraceError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(self.parent.child(Step::Key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, TraceError> {
        seed.deserialize(self.parent.child(Step::Value))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// The keys of a struct, each value at the position of its key.
struct Keys<'s> {
    parent: Tracer<'s>,
    keys: VecDeque<&'static str>,
    current: Option<&'static str>,
}

impl<'s> Keys<'s> {
    fn new(parent: Tracer<'s>, keys: Vec<&'static str>) -> Self {
        Self {
            parent,
            keys: keys.into(),
            current: None,
        }
    }
}

impl<'de> MapAccess<'de> for Keys<'_> {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, TraceError> {
        let Some(key) = self.keys.pop_front() else {
            return Ok(None);
        };
        self.current = Some(key);
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, TraceError> {
        match self.current {
            Some(key) => seed.deserialize(self.parent.child(Step::Field(key))),
            None => Err(TraceError::of(Kind::Other("a value asked for before its key".into()))),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.keys.len())
    }
}

/// The variant chosen for an enum.
struct Chosen<'s> {
    tracer: Tracer<'s>,
    variant: &'static str,
}

impl<'de, 's> EnumAccess<'de> for Chosen<'s> {
    type Error = TraceError;
    type Variant = Tracer<'s>;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Tracer<'s>), TraceError> {
        let value = seed.deserialize(self.variant.into_deserializer())?;
        Ok((value, self.tracer.child(Step::Variant(self.variant))))
    }
}

/// The content of a variant, at the variant's position.
impl<'de> VariantAccess<'de> for Tracer<'_> {
    type Error = TraceError;

    fn unit_variant(self) -> Result<(), TraceError> {
        self.record(Node::UnitVariant);
        match self.mode() {
            Mode::Goal => self.stop(),
            Mode::Route(_) => self.lost(),
            Mode::Make => Ok(()),
        }
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, TraceError> {
        self.newtype(seed)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, TraceError> {
        self.elements(Some(len), visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.fields(fields, visitor)
    }
}

macro_rules! leaves {
    ($($method:ident => $leaf:ident,)*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
            self.leaf(Leaf::$leaf, visitor)
        })*
    };
}

impl<'de> de::Deserializer<'de> for Tracer<'_> {
    type Error = TraceError;

    leaves! {
        deserialize_any => Any,
        deserialize_ignored_any => Any,
        deserialize_bool => Bool,
        deserialize_i8 => I8,
        deserialize_i16 => I16,
        deserialize_i32 => I32,
        deserialize_i64 => I64,
        deserialize_i128 => I128,
        deserialize_u8 => U8,
        deserialize_u16 => U16,
        deserialize_u32 => U32,
        deserialize_u64 => U64,
        deserialize_u128 => U128,
        deserialize_f32 => F32,
        deserialize_f64 => F64,
        deserialize_char => Char,
        deserialize_str => Str,
        deserialize_string => Str,
        deserialize_bytes => Bytes,
        deserialize_byte_buf => Bytes,
        deserialize_unit => Unit,
        deserialize_identifier => Identifier,
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.option(visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, TraceError> {
        self.record(Node::UnitStruct);
        match self.mode() {
            Mode::Goal => self.stop(),
            Mode::Route(_) => self.lost(),
            Mode::Make => {
                let result = visitor.visit_unit();
                self.settle(result)
            }
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        match self.named(name, &[], 1) {
            Ok(tracer) => {
                tracer.record(Node::Newtype);
                let result = match tracer.mode() {
                    Mode::Goal => return tracer.stop(),
                    Mode::Route(Step::Inner) => visitor.visit_newtype_struct(tracer.child(Step::Inner)),
                    Mode::Route(_) => return tracer.lost(),
                    Mode::Make if tracer.cannot_make() => return tracer.stuck(),
                    Mode::Make => visitor.visit_newtype_struct(tracer.child(Step::Inner)),
                };
                tracer.settle(result)
            }
            Err(done) => done,
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.elements(None, visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, TraceError> {
        self.elements(Some(len), visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        match self.named(name, &[], 1) {
            Ok(tracer) => tracer.elements(Some(len), visitor),
            Err(done) => done,
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.map(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        match self.named(name, fields, 1) {
            Ok(tracer) => tracer.fields(fields, visitor),
            Err(done) => done,
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let tracer = match self.named(name, variants, variants.len()) {
            Ok(tracer) => tracer,
            Err(done) => return done,
        };
        tracer.record(Node::Enum(variants));
        let variant = match tracer.mode() {
            Mode::Goal => return tracer.stop(),
            Mode::Route(Step::Variant(variant)) => variant,
            Mode::Route(_) => return tracer.lost(),
            Mode::Make if tracer.cannot_make() => return tracer.stuck(),
            Mode::Make => match variants.get(tracer.choice()) {
                Some(&variant) => variant,
                None => return tracer.stuck(),
            },
        };
        let result = visitor.visit_enum(Chosen {
            tracer: tracer.clone(),
            variant,
        });
        tracer.settle(result)
    }

    fn is_human_readable(&self) -> bool {
        // Events are stored as JSON: types that store differently in binary formats (timestamps,
        // UUIDs) must show their JSON form.
        true
    }
}

impl State {
    fn build(&self, path: &Path) -> Shape {
        let Some(node) = self.nodes.get(path) else {
            return Shape::Unknown;
        };
        let at = |step| extend(path, step);
        match node {
            Node::Leaf(leaf) => leaf_shape(*leaf),
            Node::Option => Shape::Option(Box::new(self.build(&at(Step::Some)))),
            Node::Seq => Shape::Seq(Box::new(self.build(&at(Step::Elem(0))))),
            Node::Map => {
                // A struct read as a map (`#[serde(flatten)]`) asks for its keys as identifiers.
                if self.nodes.get(&at(Step::Key)) == Some(&Node::Leaf(Leaf::Identifier)) {
                    return Shape::Any;
                }
                Shape::Map(
                    Box::new(self.build(&at(Step::Key))),
                    Box::new(self.build(&at(Step::Value))),
                )
            }
            Node::Tuple(len) => Shape::Tuple(self.tuple(path, *len)),
            Node::Struct(fields) => Shape::Struct(self.fields(path, fields)),
            Node::UnitStruct | Node::UnitVariant => Shape::Unit,
            Node::Newtype => self.build(&at(Step::Inner)),
            Node::Enum(variants) => Shape::Enum(
                variants
                    .iter()
                    .map(|&name| Variant {
                        name: name.to_owned(),
                        data: self.variant(&at(Step::Variant(name))),
                    })
                    .collect(),
            ),
            Node::Recursive(name, _) => Shape::Recursive((*name).to_owned()),
        }
    }

    fn tuple(&self, path: &Path, len: usize) -> Vec<Shape> {
        (0..len)
            .map(|index| self.build(&extend(path, Step::Elem(index))))
            .collect()
    }

    fn variant(&self, path: &Path) -> VariantData {
        match self.nodes.get(path) {
            None => VariantData::Unknown,
            Some(Node::UnitVariant) => VariantData::Unit,
            Some(Node::Newtype) => VariantData::Newtype(self.build(&extend(path, Step::Inner))),
            Some(Node::Tuple(len)) => VariantData::Tuple(self.tuple(path, *len)),
            Some(Node::Struct(fields)) => VariantData::Struct(self.fields(path, fields)),
            Some(_) => VariantData::Unknown,
        }
    }

    /// The fields of a struct in declaration order, aliases folded into the field they name.
    fn fields(&self, path: &Path, keys: &[&'static str]) -> Vec<Field> {
        let facts = self.facts.get(path);
        let primary_of = |key: &'static str| facts.and_then(|facts| facts.primary.get(key)).copied().unwrap_or(key);
        let mut fields: Vec<Field> = Vec::new();
        for &key in keys {
            let primary = primary_of(key);
            if let Some(field) = fields.iter_mut().find(|field| field.name == primary) {
                if key != primary {
                    field.aliases.push(key.to_owned());
                }
                continue;
            }
            let shape = self.build(&extend(path, Step::Field(primary)));
            let optional = match facts {
                Some(facts) if facts.required.contains(primary) => false,
                Some(facts) if facts.settled => true,
                // Not settled: only what could not be missing for sure is claimed optional.
                _ => matches!(shape, Shape::Option(_)),
            };
            let mut field = Field {
                name: primary.to_owned(),
                aliases: Vec::new(),
                shape,
                optional,
            };
            if key != primary {
                field.aliases.push(key.to_owned());
            }
            fields.push(field);
        }
        for field in &mut fields {
            field.aliases.sort();
        }
        fields
    }
}

fn leaf_shape(leaf: Leaf) -> Shape {
    match leaf {
        Leaf::Bool => Shape::Bool,
        Leaf::I8 => Shape::I8,
        Leaf::I16 => Shape::I16,
        Leaf::I32 => Shape::I32,
        Leaf::I64 => Shape::I64,
        Leaf::I128 => Shape::I128,
        Leaf::U8 => Shape::U8,
        Leaf::U16 => Shape::U16,
        Leaf::U32 => Shape::U32,
        Leaf::U64 => Shape::U64,
        Leaf::U128 => Shape::U128,
        Leaf::F32 => Shape::F32,
        Leaf::F64 => Shape::F64,
        Leaf::Char => Shape::Char,
        Leaf::Str | Leaf::Identifier => Shape::Str,
        Leaf::Bytes => Shape::Bytes,
        Leaf::Unit => Shape::Unit,
        Leaf::Any => Shape::Any,
    }
}
