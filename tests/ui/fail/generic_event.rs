use es_core::event;

#[event]
pub struct Wrapped<T> {
    pub inner: T,
}

fn main() {}
