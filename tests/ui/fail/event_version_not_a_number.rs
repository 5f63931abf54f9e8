use es_core::event;

fn add_source(payload: serde_json::Value) -> Result<serde_json::Value, es_core::UpcastError> {
    Ok(payload)
}

// The version written as a string: one error, not another about the step it makes look wrong.
#[event(version = "2")]
#[upcast(from = 1, json = add_source)]
pub struct FundsDeposited {
    pub amount: i64,
}

fn main() {}
