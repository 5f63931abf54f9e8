use es_core::event;

#[event]
pub struct LeadEntered {
    #[pii]
    pub name: String,
    #[pii(subject)]
    pub phone: es_core::pii::Forgettable<String>,
}

#[event(subject = person_id)]
pub struct NoteTaken {
    #[pii]
    pub author: es_core::pii::Forgettable<String>,
}

#[event(subject = author_id)]
pub struct NoteSigned {
    #[pii]
    pub author_id: es_core::pii::Forgettable<String>,
}

#[event(subject = author_id)]
pub struct NoteRead {
    pub author_id: String,
}

fn main() {}
