//! Local simulators of the two remote systems, served over real sockets.
//!
//! Each simulator is written from the public API reference with its own wire types: nothing
//! here is shared with the clients in `crate::anaplan` and `crate::crm`, so a wrong path or field
//! name cannot hide on both sides at once.

pub mod anaplan;
pub mod crm;
