//! The L2 speaker against a real datapath whose announcement map is tiny:
//! an attempt that fails part-way leaves nothing answered for once it is no
//! longer wanted. Loads the datapath (root) in a network namespace of its
//! own, where the announcements it sends go out on that namespace's `lo`;
//! attaches nothing.

use std::{collections::BTreeSet, net::IpAddr};

use control_plane::{
    announce::{Announcer, Speaker, l2::L2},
    metrics::Metrics,
};
use nix::sched::{CloneFlags, unshare};
use xdp_lb::{Datapath, L2Link, LoadOptions, MapSizes};

fn vips(addrs: &[&str]) -> BTreeSet<IpAddr> {
    addrs
        .iter()
        .map(|a| a.parse().expect("test address"))
        .collect()
}

fn announced(dp: &Datapath) -> BTreeSet<IpAddr> {
    dp.l2_announcements()
        .expect("read the announcements")
        .into_iter()
        .map(|(addr, _)| addr)
        .collect()
}

#[test]
fn before_its_first_announcement_the_speaker_shows_what_the_map_holds() {
    let test = std::thread::spawn(|| {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET) (run as root)");
        let mut dp = Datapath::load_with(&LoadOptions {
            sizes: MapSizes {
                services: 4,
                backends: 4,
                conntrack: 64,
                addresses: 4,
                fragments: xdp_lb::DEFAULT_FRAGMENT_ENTRIES,
            },
            pin_dir: None,
        })
        .expect("load the datapath (as root)");
        let link = L2Link {
            ifindex: 1,
            mac: [0x02, 0, 0, 0, 0, 1],
        };
        // What an earlier agent left: one address on this link, one on
        // another (not this speaker's).
        dp.announce_l2("198.19.0.1".parse().unwrap(), link)
            .expect("an earlier agent's announcement");
        let elsewhere = L2Link { ifindex: 7, ..link };
        dp.announce_l2("198.19.0.9".parse().unwrap(), elsewhere)
            .expect("an announcement on another link");
        let metrics = Metrics::new();
        let mut announcer = Announcer::new(vec![Speaker::L2(L2::new("lo".into(), link))]);
        let view = &announcer.views(&dp)[0];
        assert_eq!(
            view.vips,
            ["198.19.0.1".parse::<IpAddr>().unwrap()],
            "{view:?}"
        );
        assert!(view.left_by_earlier_agent, "{view:?}");

        // Once this agent announces, it shows its own.
        announcer.update(vips(&["198.19.0.2"]), &mut dp, &metrics);
        let view = &announcer.views(&dp)[0];
        assert_eq!(
            view.vips,
            ["198.19.0.2".parse::<IpAddr>().unwrap()],
            "{view:?}"
        );
        assert!(!view.left_by_earlier_agent, "{view:?}");
    });
    if let Err(panic) = test.join() {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn an_announcement_that_failed_part_way_is_withdrawn_once_unwanted() {
    let test = std::thread::spawn(|| {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET) (run as root)");
        let mut dp = Datapath::load_with(&LoadOptions {
            sizes: MapSizes {
                services: 4,
                backends: 4,
                conntrack: 64,
                // Two announcements at most.
                addresses: 2,
                fragments: xdp_lb::DEFAULT_FRAGMENT_ENTRIES,
            },
            pin_dir: None,
        })
        .expect("load the datapath (as root)");
        // `lo` of this namespace: index 1.
        let link = L2Link {
            ifindex: 1,
            mac: [0x02, 0, 0, 0, 0, 1],
        };
        let metrics = Metrics::new();
        let mut announcer = Announcer::new(vec![Speaker::L2(L2::new("lo".into(), link))]);

        announcer.update(BTreeSet::new(), &mut dp, &metrics);
        assert_eq!(announcer.views(&dp)[0].error, None);

        // Three in a map of two: two are written before the third fails.
        let three = vips(&["198.19.0.1", "198.19.0.2", "198.19.0.3"]);
        announcer.update(three.clone(), &mut dp, &metrics);
        assert_eq!(
            announcer.views(&dp)[0].error.as_deref(),
            Some(
                "announcing 198.19.0.3: the L2 announcement map is full (2 entries): raise \
                 --max-addresses"
            )
        );
        let partial = announced(&dp);
        assert_eq!(partial.len(), 2, "{partial:?}");
        assert!(partial.is_subset(&three), "{partial:?}");

        // None wanted any more: the two written by the failed attempt go
        // too. Before, the speaker went on from its last success (nothing)
        // and left them answered for.
        announcer.update(BTreeSet::new(), &mut dp, &metrics);
        assert_eq!(announcer.views(&dp)[0].error, None);
        assert_eq!(announced(&dp), BTreeSet::new());
    });
    if let Err(panic) = test.join() {
        std::panic::resume_unwind(panic);
    }
}
