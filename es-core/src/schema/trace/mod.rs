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

use serde::de::{self, DeserializeOwned};

use super::shape::Shape;
use tracer::Tracer;

mod access;
mod build;
mod tracer;

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

/// What was asked for at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    /// A scalar: one of the [`Shape`]s without parts (`Bool` to `Unit`, and `Any`).
    Leaf(Shape),
    /// A struct's field key when it is read as a map (`#[serde(flatten)]`).
    Identifier,
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
            Node::Leaf(Shape::Str) | Node::Identifier => STR_SAMPLES.len(),
            Node::Leaf(Shape::Any) => 6,
            Node::Leaf(Shape::Unit) => 1,
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
    /// Recursive positions -> the position where their type starts, whose choices they share.
    same_as: BTreeMap<Path, Path>,
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
        // A Deserialize impl that panics on a made-up value (an `unreachable!` in a hand-written
        // visitor) must not bring a tool checking the lock down: the value is blamed instead.
        let state = &self.state;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            T::deserialize(Tracer::root(state)).map(drop)
        }));
        match result {
            Ok(Ok(())) => Ok(None),
            Ok(Err(error)) => {
                if error.kind != Kind::Stop {
                    self.last_error = Some(error.to_string());
                }
                Ok(error.blame)
            }
            Err(_) => {
                self.last_error = Some("the Deserialize impl panicked".to_owned());
                Ok(self.state.borrow().last_leaf.clone())
            }
        }
    }

    /// Tries another value at `blame`; false when nothing is left to try there.
    fn advance(&self, blame: &Path) -> bool {
        let mut state = self.state.borrow_mut();
        let blame = &state.key(blame).clone();
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

impl State {
    /// The position whose choices a position uses: its own, or at a recursive position the one
    /// where its type starts.
    fn key<'p>(&'p self, path: &'p Path) -> &'p Path {
        self.same_as.get(path).unwrap_or(path)
    }
}

fn extend(path: &Path, step: Step) -> Path {
    let mut path = path.clone();
    path.push(step);
    path
}
