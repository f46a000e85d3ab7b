//! f -> e: `crate::e::Made` is found by following e's glob import back into f.
pub struct Made;

pub fn made() -> crate::e::Made {
    Made
}
