//! b's file is named by `#[path]`, and declares a child of its own beside it: the
//! ring a -> b -> a is found only if both files are followed.
mod a;
#[path = "elsewhere/b_impl.rs"]
mod b;
