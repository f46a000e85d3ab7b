//! a -> b through a nested use tree with a rename.
use crate::{b::{B as Bee, other}};
pub struct A(Bee);
