//! All of the order module's SQL, one file per table group. Functions take
//! a connection so callers run several in one transaction.
//!
//! Raw SQL, each statement prepared once per connection (`db::sql`). The
//! event store appends with `unnest` arrays, the saga's statements write
//! their lease term and flag column into the text and return whether the
//! lease is still ours, and the keys' ages are judged by the database's
//! clock: the query builder cannot say these as one statement. Carts and
//! the plain reads could move to it.

pub(crate) mod carts;
mod events;
pub(crate) mod keys;
pub(crate) mod sagas;

pub(crate) use events::{
    AppendError, append, append_all, create, customer_orders, fold, load_state, now, order_ids,
    rebuild, timeline,
};
pub(crate) use sagas::{Direction, SagaOutcome, SagaRow};
