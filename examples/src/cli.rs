//! The examples' build of the `es-cli` command line: both aggregates, both Lead projections.

use es_cli::{Cli, CliStore};
use es_core::RegistryError;

use crate::lead::Lead;
use crate::lead_models::{lead_runners, LeadTables};
use crate::ticket::Ticket;

/// The command line over `store` (its Lead tables must exist: [`LeadTables::create_tables`]).
pub fn command_line<S: LeadTables + CliStore>(store: S) -> Result<Cli<S>, RegistryError> {
    let (search, analysis) = lead_runners(&store);
    Ok(Cli::new(store)
        .aggregate::<Ticket>()?
        .aggregate::<Lead>()?
        .projection(search)
        .projection(analysis))
}
