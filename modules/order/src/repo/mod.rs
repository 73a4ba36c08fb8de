//! All of the order module's SQL, one file per table group. Functions take
//! a connection so callers run several in one transaction.
//!
//! Diesel's query builder for the reads and plain writes; raw SQL
//! (`db::sql`, prepared once per connection) where it cannot say the
//! statement, each with its reason beside it: the event store's `unnest`
//! append, the saga's lease terms and ownership `CASE`s, the keys' ages on
//! the database's clock.

pub(crate) mod carts;
mod events;
pub(crate) mod keys;
pub(crate) mod sagas;

pub(crate) use events::{
    AppendError, Appended, Writes, append, append_all, append_known, collided, create,
    customer_orders, fold, fold_into, load_state, now, order_ids, rebuild, timeline,
};
pub(crate) use sagas::{Direction, SagaOutcome, SagaRow};
