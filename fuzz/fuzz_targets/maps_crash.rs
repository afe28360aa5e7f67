//! As `ops_crash`, with nested maps, values of several parts (up to 1 MiB) and tagged values
//! among the operations (`Op::decode_maps`): crashes, power losses and injected failures must
//! leave every map, part and tag as an acknowledged commit had them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pheap::testkit::targets::maps_crash(data);
});
