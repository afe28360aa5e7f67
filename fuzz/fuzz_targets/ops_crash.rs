//! Random operation sequences on the simulated disk against a model, with process crashes,
//! power losses of four kinds (durable only, a random subset of unsynced writes, a torn last
//! write, lost growth), injected I/O failures and full disks met by growth. A crash strikes the
//! live process: its handle and any open write transaction are dropped only after the crash
//! image is taken, so nothing they would do on close reaches it. After every crash the heap must
//! open, pass the integrity walk and hold the state of an acknowledged commit no older than the
//! last durable one, or of a commit whose call failed and that no later write transaction has
//! settled (DESIGN §4.6).
//!
//! The body is the crate's test kit (`pheap::testkit::targets`): the same harness runs the
//! model tests, and the crate's tests replay the committed corpus through it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pheap::testkit::targets::ops_crash(data);
});
