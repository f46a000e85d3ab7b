//! One pipeline at run time: starting and stopping it ([`runtime`]), which wires its
//! disk buffer, the topology's inlet and sender ([`crate::topology`]) and its exporter,
//! the scrape targets it follows ([`targets`], [`kubelet`]), and the disk budget the
//! pipelines' buffers share ([`budget`]).

pub mod budget;
pub mod kubelet;
pub mod runtime;
pub mod targets;
