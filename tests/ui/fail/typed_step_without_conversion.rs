use es_core::event;
use serde::Deserialize;

#[event(version = 2)]
#[upcast(from = 1, typed = CommentAddedV1)]
pub struct CommentAdded {
    pub author: String,
    pub body: String,
}

/// No `From` or `TryFrom` into `CommentAdded`.
#[derive(Deserialize)]
pub struct CommentAddedV1 {
    pub text: String,
}

fn main() {}
