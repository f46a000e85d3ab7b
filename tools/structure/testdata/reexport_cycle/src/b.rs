//! b -> a: `crate::Thing` is `a::Thing`, re-exported by the root.
use crate::Thing;

pub struct Wrapper(pub Option<Thing>);
