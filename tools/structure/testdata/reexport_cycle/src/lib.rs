//! Rings that exist only through re-exports: the root's `pub use`, a module's
//! `pub use`, and a glob import.
mod a;
mod b;
mod c;
mod d;
mod e;
mod f;

pub use a::Thing;
