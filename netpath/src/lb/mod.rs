//! Load balancing: port-forwards and services as frontends with backends
//! ([`frontends`]: what the maps hold and what they should, with stable ids
//! and backend indices), the Maglev tables the datapath picks backends from
//! ([`maglev`]), the per-frontend diff ([`plan`]) the reconciler executes,
//! and what `netpath service` / `netpath port-forward` show ([`inspect`]).

pub mod frontends;
pub mod inspect;
pub mod maglev;
pub mod plan;
