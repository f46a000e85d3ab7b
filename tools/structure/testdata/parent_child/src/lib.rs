//! References between a module and its own submodules, which are no edge at the top
//! level; b -> a is the only top-level edge. Inside a, x and y depend on each other:
//! a cycle one level down, reported only when asked for.
mod a;
mod b;

pub use a::helper;
