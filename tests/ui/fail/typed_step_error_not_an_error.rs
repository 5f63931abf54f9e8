use es_core::event;
use serde::Deserialize;

#[event(version = 2)]
#[upcast(from = 1, typed = CommentAddedV1)]
pub struct CommentAdded {
    pub author: String,
    pub body: String,
}

#[derive(Deserialize)]
pub struct CommentAddedV1 {
    pub text: String,
}

/// Not an error: neither `Display` nor `std::error::Error`.
pub struct Unreadable;

impl TryFrom<CommentAddedV1> for CommentAdded {
    type Error = Unreadable;

    fn try_from(v1: CommentAddedV1) -> Result<Self, Unreadable> {
        Ok(CommentAdded { author: "unknown".into(), body: v1.text })
    }
}

fn main() {}
