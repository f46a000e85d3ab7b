//! a -> b through a path; b reaches a only through the root's re-export.
pub struct Thing;

pub fn wrap() {
    let _ = crate::b::Wrapper;
}
