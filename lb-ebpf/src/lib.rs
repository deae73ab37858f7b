//! What the crate's programs share: packet access ([`frame`]), wire headers,
//! checksum arithmetic, header parsing and dsr's outer header. Each program
//! (`lb_xdp` in `main.rs`, the benchmark harness and the target-side
//! decapsulation program in `bin/`) has its own maps and entry points; nothing here
//! declares a map, so an object carries only the maps its program uses.
#![no_std]

pub mod csum;
pub mod frame;
pub mod headers;
pub mod outer;
pub mod parse;
