//! Load balancing: the Maglev tables the datapath picks backends from.

pub mod maglev;
