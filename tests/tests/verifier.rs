//! The XDP program's size as the kernel's verifier sees it: the verifier
//! walks every path of the program and refuses one that takes more than a
//! million instructions to check. A change that multiplies paths (an
//! unrolled loop with branching inside, say) can push the program over that
//! limit long before it fails to load; this keeps the walk well below it,
//! so there is room for what comes next, and loading stays fast (the daemon
//! verifies the program on every start). And the object's maps are the
//! ones lb-common names: a map renamed on one side only fails here, not at
//! an operator's load.
use lb_common::maps;
use lb_tests::fixture::{self, Fixture};

/// Half the kernel's limit.
const BUDGET: u32 = 500_000;

#[test]
fn the_program_verifies_well_within_the_kernels_limit() {
    fixture::with_netns(|| {
        let fx = Fixture::load(13);
        let info = fx.program().info().expect("program info");
        let walked = info
            .verified_instruction_count()
            .expect("the kernel reports verified instructions (5.16+)");
        eprintln!("verifier walked {walked} instructions");
        assert!(
            walked <= BUDGET,
            "the verifier walked {walked} instructions to check lb_xdp; keep it under {BUDGET}"
        );
    });
}

/// The same data path compiled for tc (`lb_tc`, `daemon.tc_interfaces`):
/// the daemon verifies it on every start too.
#[test]
fn the_tc_program_verifies_well_within_the_kernels_limit() {
    fixture::with_netns(|| {
        let mut fx = Fixture::load(13);
        fx.load_tc();
        let info = fx.tc_program().info().expect("program info");
        let walked = info
            .verified_instruction_count()
            .expect("the kernel reports verified instructions (5.16+)");
        eprintln!("verifier walked {walked} instructions for lb_tc");
        assert!(
            walked <= BUDGET,
            "the verifier walked {walked} instructions to check lb_tc; keep it under {BUDGET}"
        );
    });
}

#[test]
fn the_objects_maps_are_the_ones_lb_common_names() {
    fixture::with_netns(|| {
        let fx = Fixture::load(13);
        let mut expected: Vec<String> = maps::ALL
            .iter()
            .chain(maps::UNPINNED.iter())
            .map(|s| (*s).to_owned())
            .collect();
        expected.sort();
        assert_eq!(
            fx.map_names(),
            expected,
            "maps of the built lb_xdp object vs lb_common::maps::ALL + UNPINNED"
        );
        for legacy in maps::LEGACY {
            assert!(
                !fx.map_names().iter().any(|n| n == legacy),
                "{legacy} is listed as legacy but the object still has it"
            );
        }
    });
}

/// The dsr health probes' encapsulation program (`lb_probe_encap`, tc):
/// loads, stays far within the verifier's walk, and has the maps
/// lb_common::probe names.
#[test]
fn the_probe_program_verifies_and_has_its_named_maps() {
    use lb_tests::probe::ProbeFixture;
    let fx = ProbeFixture::load(&[]);
    let info = fx.program().info().expect("program info");
    let walked = info
        .verified_instruction_count()
        .expect("the kernel reports verified instructions (5.16+)");
    eprintln!("verifier walked {walked} instructions for lb_probe_encap");
    assert!(walked <= BUDGET, "lb_probe_encap: {walked} > {BUDGET}");
    let mut expected: Vec<String> = lb_common::probe::ALL
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    expected.sort();
    assert_eq!(fx.map_names(), expected);
}
