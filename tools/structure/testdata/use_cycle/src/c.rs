//! c -> a through a glob import of a sibling, written with `super::`.
use super::a::*;
pub struct C;
