//! The daemon's writers against the kernel's real map layouts: what
//! `KernelMaps` writes must be what the XDP program reads. (The fixture
//! tests fill maps with plain map updates; the daemon writes the Maglev map
//! through mmap, whose element layout is the kernel's, not ours.)
use aya::{
    EbpfLoader,
    maps::{Array, Map, MapData},
};
use lb::bpf::ring_mmap::RingMap;
use lb_common::maps;
use lb_tests::fixture::object_path;

#[test]
fn ring_written_through_mmap_reads_back_through_the_syscall() {
    let ring_size = 13u32;
    let slots = 4u32;
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(maps::MAGLEV, slots * ring_size)
        .load_file(object_path())
        .expect("load the XDP object (run as root via `cargo xtask test`)");
    let map = ebpf.take_map(maps::MAGLEV).expect("MAGLEV map");
    let Map::Array(data) = &map else {
        panic!("MAGLEV is not an array map");
    };
    let id = data.info().expect("MAGLEV info").id();
    let mut ring = RingMap::new(map).expect("mmap MAGLEV");

    let tables: Vec<Vec<u32>> = (0..slots)
        .map(|s| (0..ring_size).map(|i| s * 1000 + i * 7 + 1).collect())
        .collect();
    for (slot, table) in tables.iter().enumerate() {
        ring.write(slot as u32, table).expect("write ring");
    }

    // A second, independent handle reads element by element with
    // BPF_MAP_LOOKUP_ELEM, exactly what the program sees.
    let reader: Array<MapData, u32> =
        Array::try_from(Map::Array(MapData::from_id(id).expect("MAGLEV by id"))).expect("array");
    for (slot, table) in tables.iter().enumerate() {
        for (i, want) in table.iter().enumerate() {
            let index = slot as u32 * ring_size + i as u32;
            let got = reader.get(&index, 0).expect("lookup");
            assert_eq!(got, *want, "MAGLEV[{index}] (slot {slot}, entry {i})");
        }
        assert_eq!(
            ring.read(slot as u32, ring_size as usize).as_ref(),
            Some(table)
        );
    }
    assert_eq!(
        ring.read(slots, ring_size as usize),
        None,
        "reading past the map is refused"
    );
    assert!(
        ring.write(slots, &tables[0]).is_err(),
        "writing past the map is refused"
    );
}
