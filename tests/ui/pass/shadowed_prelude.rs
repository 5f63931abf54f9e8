//! Generated code uses absolute paths: user code that shadows prelude names still compiles.
#![allow(dead_code)]

use es_core::{event, Aggregate, Apply};

type Result<T> = core::result::Result<T, ()>;
type Option = ();
type Vec = ();
struct Some;
struct Ok;
struct String;

#[event(version = 2)]
#[upcast(from = 1, json = up)]
pub struct Noted {
    pub text: std::string::String,
}

fn up(v: serde_json::Value) -> core::result::Result<serde_json::Value, es_core::UpcastError> {
    core::result::Result::Ok(v)
}

#[event]
pub enum NoteEvent {
    Noted(Noted),
}

#[derive(Default, serde::Serialize, serde::Deserialize, Aggregate)]
#[aggregate(event = NoteEvent)]
pub struct Note;

impl Apply<Noted> for Note {
    fn apply(&mut self, _: &Noted) {}
}

fn main() {}
