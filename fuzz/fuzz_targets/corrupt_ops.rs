//! Build a heap from the input's first part (operations), corrupt it with the input's second
//! part (offset/xor edits), reopen, and read, walk and write. Any outcome but a panic, a hang or
//! an unbounded allocation is fine; a heap that was not corrupted must hold exactly the model.
//! The heap's key-hash seed comes from the input, so every input replays exactly.
//! (The body: `pheap::testkit::targets::corrupt_ops`.)
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pheap::testkit::targets::corrupt_ops(data);
});
