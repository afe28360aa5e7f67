//! Arbitrary bytes as a heap file: open, read everything, run the integrity walk, write.
//! Any outcome but a panic, a hang or an unbounded allocation is fine.
//! (The body: `pheap::testkit::targets::open_walk`.)
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pheap::testkit::targets::open_walk(data);
});
