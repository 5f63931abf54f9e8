use es_core::event;

pub struct Attachment {
    pub bytes: Vec<u8>,
}

#[event]
pub struct FileAttached {
    pub attachment: Attachment,
}

fn main() {}
