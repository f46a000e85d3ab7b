//! b -> c through a plain use line.
use crate::c::C;
pub struct B(C);
pub mod other {}
