//! Three modules in a ring through `use` lines, and one that only depends on them.
mod a;
mod b;
mod c;
mod d;
