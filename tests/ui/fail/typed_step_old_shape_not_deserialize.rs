use es_core::event;

#[event(version = 2)]
#[upcast(from = 1, typed = CommentAddedV1)]
pub struct CommentAdded {
    pub author: String,
    pub body: String,
}

/// Forgot `#[derive(serde::Deserialize)]`.
pub struct CommentAddedV1 {
    pub text: String,
}

impl From<CommentAddedV1> for CommentAdded {
    fn from(v1: CommentAddedV1) -> Self {
        CommentAdded { author: "unknown".into(), body: v1.text }
    }
}

fn main() {}
