//! The reconciler against a real datapath: a service or backend given an ID
//! that another held before starts with its counters at zero, on every CPU.
//! Loads the datapath (root) in a network namespace of the test's own, and
//! runs frames through `xdp_lb` with `BPF_PROG_TEST_RUN`; nothing is
//! attached or sent.

use std::net::SocketAddr;

use consistent_hash::SizingPolicy;
use control_plane::{
    model::{Model, ServiceName},
    reconcile::{Desired, Reconciler},
    source::file,
};
use netns_tests::packets::{SERVER4, tcp4};
use xdp_lb::{Counter, Datapath, LoadOptions, MapSizes, ProgramName};

const SIZES: MapSizes = MapSizes {
    services: 16,
    backends: 16,
    conntrack: 1024,
    addresses: 16,
    fragments: xdp_lb::DEFAULT_FRAGMENT_ENTRIES,
};

/// Runs `f` on a thread in a network namespace of its own, so that nothing
/// the datapath looks up (routes, neighbours) is the machine's.
fn in_private_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET) (tests run as root)");
            f()
        })
        .join()
        .expect("the test thread")
    })
}

/// One service on `SERVER4:port` with `backends` (198.18.2.i:8080).
fn model(name: &str, port: u16, backends: &[u8]) -> Model {
    let [a, b, c, d] = SERVER4;
    let backends: Vec<String> = backends
        .iter()
        .map(|i| format!("{{address: \"198.18.2.{i}:8080\"}}"))
        .collect();
    let yaml = format!(
        "services:\n  - name: {name}\n    frontends: [{{address: {a}.{b}.{c}.{d}, port: {port}}}]\n    \
         backends: [{}]\n",
        backends.join(", ")
    );
    file::parse(&yaml).unwrap_or_else(|e| panic!("{e}"))
}

fn sync(r: &mut Reconciler, dp: &mut Datapath, m: &Model) {
    let desired = Desired::new(m, |_: &ServiceName, _: SocketAddr| true);
    r.sync(&desired, dp).expect("sync");
}

/// Sends one SYN from the client to `SERVER4:port`.
fn send_syn(dp: &Datapath, src_port: u16, port: u16) {
    dp.test_run(ProgramName::XdpLb, &tcp4(src_port, port, b""))
        .expect("BPF_PROG_TEST_RUN");
}

#[test]
fn a_reused_service_or_backend_id_starts_with_zero_counters() {
    in_private_netns(|| {
        let mut dp = Datapath::load_with(&LoadOptions {
            sizes: SIZES,
            pin_dir: None,
        })
        .expect("load the datapath (as root)");
        let mut r = Reconciler::new(1, SizingPolicy::default(), dp.sizes());

        sync(&mut r, &mut dp, &model("web", 80, &[1]));
        let web = r.service_id(&ServiceName("web".into())).expect("an ID");
        let web_backend = r
            .backend("198.18.2.1:8080".parse().unwrap())
            .expect("a record");
        for src_port in 40000..40003 {
            send_syn(&dp, src_port, 80);
        }
        assert_eq!(dp.service_stats(web).unwrap().packets, 3);
        assert_eq!(dp.backend_stats(web_backend.id).unwrap().packets, 3);

        // web goes, and api takes its IDs.
        sync(&mut r, &mut dp, &Model::default());
        sync(&mut r, &mut dp, &model("api", 443, &[9]));
        let api = r.service_id(&ServiceName("api".into())).expect("an ID");
        let api_backend = r
            .backend("198.18.2.9:8080".parse().unwrap())
            .expect("a record");
        assert_eq!(
            (api, api_backend.id),
            (web, web_backend.id),
            "the IDs are reused"
        );
        assert_eq!(dp.service_stats(api).unwrap(), Counter::default());
        assert_eq!(
            dp.backend_stats(api_backend.id).unwrap(),
            Counter::default()
        );

        send_syn(&dp, 40000, 443);
        assert_eq!(dp.service_stats(api).unwrap().packets, 1);
        assert_eq!(dp.backend_stats(api_backend.id).unwrap().packets, 1);
    });
}
