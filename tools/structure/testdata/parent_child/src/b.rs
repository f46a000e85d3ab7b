//! b -> a, through the root's re-export.
pub fn call() {
    let _ = crate::helper();
}
